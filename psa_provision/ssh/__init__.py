"""SSH to guests: one lazily opened, reused Connection per host; scripts, files, trees and streams.

wire.py (how a script and its stdin go over the channel; results, counters), connection.py (the only
importer of fabric and paramiko: Connection, host-key pinning, waiting for sshd), files.py (directory
trees as one tar stream), stream.py (one guest's output piped into another's command), reach.py (TCP
probes). Secrets travel on stdin, never in argv; a Sensitive value is unwrapped by wire_bytes alone.
"""

from psa_provision.ssh.connection import (
    DROPPED,
    Connection,
    forget_host,
    pinned_hosts,
    wait_for_ssh,
)
from psa_provision.ssh.files import DEFAULT_EXCLUDE, put_tree_payload, tar_tree
from psa_provision.ssh.reach import reachable, tcp_open
from psa_provision.ssh.stream import Streamed, Tail, pump, stream_failure
from psa_provision.ssh.wire import (
    COUNTER,
    DEFAULT_TIMEOUT,
    RUN_FROM_STDIN,
    Result,
    SshCounter,
    as_user,
    command_for,
    wire_bytes,
)

__all__ = [
    "COUNTER", "DEFAULT_EXCLUDE", "DEFAULT_TIMEOUT", "DROPPED", "RUN_FROM_STDIN", "Connection",
    "Result", "SshCounter",
    "Streamed", "Tail", "as_user", "command_for", "forget_host", "pinned_hosts", "pump", "put_tree_payload",
    "reachable", "stream_failure", "tar_tree", "tcp_open", "wait_for_ssh", "wire_bytes",
]
