"""Redis mover: every key of every database with its TTL, DUMP on the source, RESTORE on the target.

A small Perl client (perl-base is on every Debian guest; the phase-1 Redis container has no Python
or Node) SCANs the source and writes `SELECT db` + `RESTORE key pttl payload REPLACE` as Redis
protocol to stdout; that streams into `redis-cli --pipe` on the target (AOF on there: the restored
keys are durable as they land). FLUSHALL/FLUSHDB are renamed away in our redis.conf, so discard
SCANs and UNLINKs. The password reaches both ends on stdin and lives in REDISCLI_AUTH (environment,
readable by root only), never in argv.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from psa_provision.movers import Check, compare, tab_lines
from psa_provision.secrets import Secrets
from psa_provision.ssh import Connection

SECRET = "redis.password"  # noqa: S105 - the key of the secret, not its value
BATCH = 500  # keys per SCAN and per pipelined DUMP/PTTL round

# Modes: dump (RESTORE stream on stdout); digest (per db: `db<TAB>N<TAB>K keys, T with ttl, md5 ...`
# over the byte-sorted `key type value ttl-flag` lines; sort(1) spills to disk, so memory stays
# bounded; values are read by type, not as DUMP payloads: a restored set or hash may iterate, and so
# serialize, in another order); discard (UNLINK every key).
PERL = r"""
use strict; use warnings; use IO::Socket::INET;
my ($mode) = @ARGV;
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
sub dumps {  # [key, payload, pttl] of keys still there, DUMP+PTTL pipelined
  my @keys = @_; print $s map { resp('DUMP', $_) . resp('PTTL', $_) } @keys;
  my @out;
  for my $k (@keys) { my $p = reply(); my $t = reply(); push @out, [$k, $p, $t] if defined $p && $t != -2 }
  @out;
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
if ($mode eq 'dump') {
  for my $db (@dbs) {
    print resp('SELECT', $db);
    each_batch($db, sub { print resp('RESTORE', $_->[0], $_->[2] > 0 ? $_->[2] : 0, $_->[1], 'REPLACE')
                            for dumps(@_) });
  }
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


# redis-cli --pipe exits non-zero when any command got an error reply.
LOAD = f"{AUTH}exec redis-cli -h 127.0.0.1 -p 6379 --no-auth-warning --pipe\n"


class RedisMover:
    """Moves every Redis database (see the module docstring)."""

    component = "redis"

    def move(self, src: Connection, dst: Connection, secrets: Secrets, log: Callable[[str], None]) -> None:
        """Empty the target, then stream RESTOREs of every key (TTL kept) into redis-cli --pipe."""
        self.discard(dst, secrets, log)
        password = _password(secrets)
        log(f"redis: streaming DUMP/RESTORE of every key from {src.host} into {dst.host}")
        streamed = src.stream_to(perl("dump"), dst, LOAD, stdin=password, header=password)
        log(f"redis: {streamed.bytes} bytes of RESTORE commands loaded on {dst.host} "
            f"({pipe_summary(streamed.target.stdout)})")

    def verify(self, src: Connection, dst: Connection, secrets: Secrets) -> list[Check]:
        """Per database: key count, how many carry a TTL, md5 of the sorted keys and DUMP payloads."""
        return checks(digest(src, secrets), digest(dst, secrets))

    def discard(self, dst: Connection, secrets: Secrets, log: Callable[[str], None]) -> None:
        """UNLINK every key of every database on dst (FLUSHALL is renamed away in our redis.conf)."""
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


def pipe_summary(stdout: str) -> str:
    """redis-cli --pipe's last line (`errors: 0, replies: N`), or what it printed."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


MOVER = RedisMover()
