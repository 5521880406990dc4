#!/bin/sh
# pvesim sandbox: starts the Elasticsearch STAND-IN (not Elasticsearch).
export PYTHONPATH=/usr/share/elasticsearch/lib
exec /usr/bin/python3 -m es_standin "$@"
