"""Phase 0 checklist (the seed's "Container Setup" and health check), per component of each container.

The checks live with their services (services/<name>/checks.py); this module gathers them, in the
seed's order, for pytest to collect. Every check names what it found when it fails. Secrets reach
the guest on stdin only.
"""

from psa_provision.services.app.checks import *  # noqa: F403
from psa_provision.services.container.checks import *  # noqa: F403
from psa_provision.services.elasticsearch.checks import *  # noqa: F403
from psa_provision.services.nodejs.checks import *  # noqa: F403
from psa_provision.services.postgresql.checks import *  # noqa: F403
from psa_provision.services.rabbitmq.checks import *  # noqa: F403
from psa_provision.services.redis.checks import *  # noqa: F403
from psa_provision.services.scripts.checks import *  # noqa: F403
