"""RabbitMQ's `psa-provision health` probe: the node answers a ping."""

PROBE = "probe rabbitmq rabbitmq-diagnostics -q ping"
