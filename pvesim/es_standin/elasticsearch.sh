#!/bin/sh
# pvesim sandbox: starts the Elasticsearch STAND-IN (not Elasticsearch).
export PYTHONPATH=/usr/share/elasticsearch/lib PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 -m es_standin "$@"
