"""Test seams and helpers, apart from the product (like fabric.testing).

- `kill`: PSA_KILL_AT / PSA_KILL_DELAY make the process SIGKILL itself at a named step (resume tests).
- `sabotage`: PSA_MIGRATE_SABOTAGE damages a migration's target so that its verify fails (rollback tests).
- `record`: PSA_RECORD_COMMANDS appends every command line and script sent to a guest to a file.
- `loadgen`: the ticket load generator of the migration tests and the benchmark.

The product imports none of these. It calls the doors in psa_provision/seams.py, which import the
switches here only while PSA_TEST_HOOKS=1 is set and the inventory's Proxmox API is on loopback (the
sandbox), so a switch leaked into a production environment has no effect.
"""
