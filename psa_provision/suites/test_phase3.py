"""Phase 3 checklist: phase 0's component checks on the containers that run each component, plus the
HA state (services/<name>/cluster_checks.py and the load balancer's checks): the store clusters, the
Elasticsearch cluster green with every member, every load balancer backend UP, the VIP on exactly one
load balancer."""

from psa_provision.services.elasticsearch.cluster_checks import *  # noqa: F403
from psa_provision.services.etcd.checks import *  # noqa: F403
from psa_provision.services.haproxy.checks import *  # noqa: F403
from psa_provision.services.keepalived.checks import *  # noqa: F403
from psa_provision.services.patroni.cluster_checks import *  # noqa: F403
from psa_provision.services.rabbitmq.cluster_checks import *  # noqa: F403
from psa_provision.services.redis.cluster_checks import *  # noqa: F403
from psa_provision.suites.test_phase0 import *  # noqa: F403
