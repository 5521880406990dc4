"""Elasticsearch STAND-IN for the pvesim sandbox (not Elasticsearch).

Elastic's apt repository cannot be reached here, so the sandbox packages this small server as
`elasticsearch`. It honours elasticsearch.yml, jvm.options(.d) heap settings and path.repo, and
answers the REST calls the tool and the bundled app make, in Elasticsearch 8's JSON shapes.
Runs inside the guest: Python stdlib only, no pvesim imports.
"""
