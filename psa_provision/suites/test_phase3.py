"""Phase 3 checklist: phase 0's component checks on the containers that run each component, plus the
HA state of the store clusters (services/<name>/cluster_checks.py)."""

from psa_provision.services.etcd.checks import *  # noqa: F403
from psa_provision.services.patroni.cluster_checks import *  # noqa: F403
from psa_provision.services.rabbitmq.cluster_checks import *  # noqa: F403
from psa_provision.services.redis.cluster_checks import *  # noqa: F403
from psa_provision.suites.test_phase0 import *  # noqa: F403
