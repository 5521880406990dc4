"""Redis mover: the target replicates the source, then is promoted; verified key by key.

prepare (the writers still write): the source's Redis also listens on its container address for the
while, the target gets `masterauth` and `REPLICAOF <source> 6379`, and its initial sync is waited for.
move (writers quiesced): the target's replication offset reaches the source's, `REPLICAOF NO ONE`
promotes it, the source listens on its configured addresses only again. So the writers wait only for
the last writes to arrive, not for a copy of everything.

A small Perl client (perl-base is on every Debian guest; the phase-1 Redis container has no Python
or Node) speaks RESP on 127.0.0.1: it sets masterauth (binary-safe, never in argv), digests every
database for verify (keys, TTLs, values) and discards (UNLINK: FLUSHALL/FLUSHDB are renamed away in
our redis.conf). The password reaches it on stdin and lives in REDISCLI_AUTH (environment, readable by
root only), never in argv.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable

from psa_provision.errors import GuestError
from psa_provision.secrets import Secrets
from psa_provision.services.mover import Check, compare, tab_lines
from psa_provision.services.redis import CONF, SECRET
from psa_provision.ssh import Connection

BATCH = 500  # keys per SCAN and per pipelined TYPE/PTTL/read round
SYNC_TIMEOUT = 900.0  # seconds for the target's initial sync (a full copy of the source)
CATCH_UP_TIMEOUT = 120.0  # seconds for the last writes to reach the target once the writers are quiesced


# Modes: follow HOST (masterauth from REDISCLI_AUTH, then REPLICAOF HOST 6379); digest (per db:
# `db<TAB>N<TAB>K keys, T with ttl, md5 ...` over the byte-sorted `key type value ttl-flag` lines;
# sort(1) spills to disk, so memory stays bounded; values are read by type, not as DUMP payloads: a
# replicated set or hash may iterate, and so serialize, in another order); discard (UNLINK every key).
PERL = r"""
use strict; use warnings; use IO::Socket::INET;
my ($mode, $arg) = @ARGV;
$| = 1; binmode STDOUT;
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => 6379, Proto => 'tcp')
  or die "redis on 127.0.0.1:6379: $!\n";
binmode $s;
sub resp { my $o = '*' . scalar(@_) . "\r\n"; $o .= '$' . length($_) . "\r\n" . $_ . "\r\n" for @_; $o }
sub reply {
  my $line = <$s>; die "redis closed the connection\n" unless defined $line;
  $line =~ s/\r\n\z//; my $t = substr($line, 0, 1, '');
  return $line if $t eq '+' or $t eq ':';
  die "redis: $line\n" if $t eq '-';
  if ($t eq '$') {
    return undef if $line < 0;
    my $buf = ''; while (length($buf) < $line + 2) {
      read($s, $buf, $line + 2 - length($buf), length($buf)) or die "redis: short read\n" }
    return substr($buf, 0, $line);
  }
  if ($t eq '*') { return undef if $line < 0; return [map { reply() } 1 .. $line] }
  die "redis: unexpected reply\n";
}
sub call { print $s resp(@_); reply() }
call('AUTH', $ENV{REDISCLI_AUTH}) if length($ENV{REDISCLI_AUTH} // '');
my @dbs = sort { $a <=> $b } (call('INFO', 'keyspace') =~ /^db(\d+):/mg);
sub each_batch {
  my ($db, $fn) = @_; call('SELECT', $db); my $cursor = '0';
  do { my $r = call('SCAN', $cursor, 'COUNT', __BATCH__); $cursor = $r->[0]; $fn->(@{$r->[1]}) if @{$r->[1]} }
    while ($cursor ne '0');
}
sub hex_of { my $v = shift; ref $v ? '[' . join(',', map { hex_of($_) } @$v) . ']'
                          : defined $v ? unpack('H*', $v) : 'nil' }
my %READ = (string => ['GET'], list => ['LRANGE', 0, -1], hash => ['HGETALL'], set => ['SMEMBERS'],
            zset => ['ZRANGE', 0, -1, 'WITHSCORES'], stream => ['XRANGE', '-', '+']);
sub values_of {  # `key type value ttl-flag` lines; hash fields and set members sorted (no fixed order)
  my @keys = @_; print $s map { resp('TYPE', $_) . resp('PTTL', $_) } @keys;
  my @meta = map { [reply(), reply()] } @keys;
  print $s map { my $r = $READ{$meta[$_][0]} || ['DUMP']; resp($r->[0], $keys[$_], @$r[1 .. $#$r]) }
    0 .. $#keys;
  my @out;
  for my $i (0 .. $#keys) {
    my ($type, $ttl) = @{$meta[$i]}; my $v = reply();
    next if $type eq 'none';
    if ($type eq 'hash') { my %h = @$v; $v = [map { ($_, $h{$_}) } sort keys %h] }
    elsif ($type eq 'set') { $v = [sort @$v] }
    push @out, join(' ', unpack('H*', $keys[$i]), $type, hex_of($v), $ttl > 0 ? 'ttl' : 'persist') . "\n";
  }
  @out;
}
if ($mode eq 'follow') {
  call('CONFIG', 'SET', 'masterauth', $ENV{REDISCLI_AUTH} // '');
  print call('REPLICAOF', $arg, '6379'), "\n";
} elsif ($mode eq 'digest') {
  for my $db (@dbs) {
    my ($n, $ttl, $sum) = (0, 0, "/tmp/psa-redis-digest.$$");  # sort spills to disk: memory stays bounded
    open(my $h, '|-', "LC_ALL=C sort -S 64M | md5sum > $sum") or die "sort | md5sum: $!\n";
    each_batch($db, sub { for (values_of(@_)) { $n++; $ttl++ if / ttl\n\z/; print $h $_ } });
    close($h) or die "sort | md5sum failed\n";
    open(my $f, '<', $sum) or die "$sum: $!\n"; my ($md5) = split(' ', scalar <$f>); close($f); unlink($sum);
    print "db\t$db\t$n keys, $ttl with ttl, md5 $md5\n";
  }
} elsif ($mode eq 'discard') {
  for my $db (@dbs) { each_batch($db, sub { call('UNLINK', @_) }) }
  my @left = (call('INFO', 'keyspace') =~ /^db(\d+:keys=\d+)/mg);
  die "keys left after discard: @left\n" if @left;
} else { die "mode?\n" }
""".replace("__BATCH__", str(BATCH))

# bash: the password (first stdin line) goes into the environment, never into argv.
AUTH = "IFS= read -r REDISCLI_AUTH\nexport REDISCLI_AUTH\n"


def perl(mode: str) -> str:
    """The bash script that runs the Perl client in `mode` (password on stdin)."""
    return f"{AUTH}exec perl -e {shlex.quote(PERL)} {mode}\n"


def cli(*args: str) -> str:
    """bash running one redis-cli command on the guest's loopback (password on stdin, not argv)."""
    words = " ".join(shlex.quote(a) for a in args)
    return f"{AUTH}exec redis-cli -h 127.0.0.1 -p 6379 --no-auth-warning {words}\n"


class RedisMover:
    """Moves every Redis database by replication (see the module docstring)."""

    component = "redis"

    def prepare(self, src: Connection, dst: Connection, secrets: Secrets, log: Callable[[str], None],
                *, source_ip: str) -> None:
        """The target follows the source and holds everything it held at the end of the initial sync."""
        binds = _run(src, secrets, "CONFIG", "GET", "bind").splitlines()[1:2] or ["127.0.0.1"]
        if source_ip not in binds[0].split():
            log(f"redis: {src.host} listens on {source_ip} too while {dst.host} replicates it")
            _ok(_run(src, secrets, "CONFIG", "SET", "bind", f"{binds[0]} {source_ip}"), "CONFIG SET bind")
        answer = dst.run(perl(f"follow {shlex.quote(source_ip)}"), stdin=_password(secrets)).stdout.strip()
        log(f"redis: {dst.host} replicates {source_ip}:6379 ({answer})")
        started = time.monotonic()
        info = wait_for(dst, secrets, SYNC_TIMEOUT, "the initial sync", lambda i: (
            i.get("role") == "slave" and i.get("master_link_status") == "up"
            and i.get("master_sync_in_progress") == "0"))
        log(f"redis: initial sync done in {time.monotonic() - started:.1f} s "
            f"(offset {info.get('slave_repl_offset')})")

    def move(self, src: Connection, dst: Connection, secrets: Secrets, log: Callable[[str], None]) -> None:
        """Writers quiesced: wait until the target has every write the source took, then promote it."""
        offset = int(replication(src, secrets).get("master_repl_offset", "0"))
        wait_for(dst, secrets, CATCH_UP_TIMEOUT, f"replication offset {offset}", lambda i: (
            i.get("master_link_status") == "up" and int(i.get("slave_repl_offset", "-1")) >= offset))
        _ok(_run(dst, secrets, "REPLICAOF", "NO", "ONE"), "REPLICAOF NO ONE")
        log(f"redis: {dst.host} caught up with {src.host} at offset {offset} and was promoted")
        restore_bind(src, secrets)

    def verify(self, src: Connection, dst: Connection, secrets: Secrets) -> list[Check]:
        """Per database: key count, how many carry a TTL, md5 of the sorted keys, types and values."""
        return checks(digest(src, secrets), digest(dst, secrets))

    def discard(self, dst: Connection, secrets: Secrets, log: Callable[[str], None]) -> None:
        """Stop following any source, then UNLINK every key of every database on dst."""
        _ok(_run(dst, secrets, "REPLICAOF", "NO", "ONE"), "REPLICAOF NO ONE")
        log(f"redis: unlinking every key on {dst.host}")
        dst.run(perl("discard"), stdin=_password(secrets))


def _password(secrets: Secrets) -> bytes:
    return (secrets.get(SECRET).value + "\n").encode()


def digest(conn: Connection, secrets: Secrets) -> str:
    """The digest mode's output on one side."""
    return conn.run(perl("digest"), stdin=_password(secrets)).stdout


def checks(source: str, target: str) -> list[Check]:
    """One Check per database either side has keys in (md5sum's trailing `  -` dropped)."""
    def clean(text: str) -> dict[str, str]:
        return {db: value.removesuffix("  -").strip() for db, value in tab_lines(text, "db").items()}

    return compare("redis db", clean(source), clean(target))


def _run(conn: Connection, secrets: Secrets, *args: str) -> str:
    return conn.run(cli(*args), stdin=_password(secrets)).stdout


def _ok(answer: str, what: str) -> None:
    """redis-cli prints an error reply and still exits 0: anything but OK is an error."""
    if not answer.strip().startswith("OK"):
        raise GuestError(f"redis: {what} answered {answer.strip()[:200]!r}")


def replication(conn: Connection, secrets: Secrets) -> dict[str, str]:
    """INFO replication as field -> value."""
    text = _run(conn, secrets, "INFO", "replication")
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


def wait_for(conn: Connection, secrets: Secrets, timeout: float, what: str,
             done: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    """Poll INFO replication on conn until done(info); GuestError naming `what` after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        info = replication(conn, secrets)
        if done(info):
            return info
        if time.monotonic() >= deadline:
            seen = {k: info.get(k) for k in ("role", "master_host", "master_link_status",
                                              "master_sync_in_progress", "slave_repl_offset")}
            raise GuestError(f"redis on {conn.host}: {what} not reached after {timeout:.0f} s ({seen})",
                             hint="the replica's /var/log/redis/redis-server.log says why")
        time.sleep(0.5)


def restore_bind(conn: Connection, secrets: Secrets) -> None:
    """The addresses redis.conf names again (prepare added the container address for the replica)."""
    words = conn.run(f"awk '$1 == \"bind\" {{ $1 = \"\"; print; exit }}' {CONF}\n").stdout.split()
    _ok(_run(conn, secrets, "CONFIG", "SET", "bind", " ".join(words or ["127.0.0.1"])), "CONFIG SET bind")


MOVER = RedisMover()
