"""Phase 1 checklist: phase 0's component checks, each run on the containers that run the component
(the conftest places them by the phase file), so a split topology is held to the same standard."""

from psa_provision.suites.test_phase0 import *  # noqa: F403
