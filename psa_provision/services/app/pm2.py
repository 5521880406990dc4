"""PM2 of the app user, spelled once: its environment, whether its daemon runs, and its process list
(what `pm2 jlist` prints) reduced by Node.js on the guest (facts, health, status and migrate each ask
it for what they need).

The process list carries every app's environment (the .env's passwords): it is reduced on the guest
and never printed whole.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping

from . import APP_DIR, APP_HOME, APP_USER, ECOSYSTEM_FILE, PM2_HOME, UNIT

# PM2 as the app user, for a script that already runs as that user
ENV = f"export HOME={APP_HOME} PM2_HOME={PM2_HOME}\ncd {APP_DIR}\n"
PID_FILE = f"{PM2_HOME}/pm2.pid"
DUMP_FILE = f"{PM2_HOME}/dump.pm2"  # what `pm2 resurrect` restores at boot (written by `pm2 save`)
DUMP_BACKUP = f"{DUMP_FILE}.bak"  # `pm2 resurrect` falls back to it when DUMP_FILE is missing
# <name>-<pm_id>.pid of each live process: written by the process as it starts (ProcessContainer, or
# the daemon in fork mode), removed by the daemon when it exits (God.handleExit)
PIDS_DIR = f"{PM2_HOME}/pids"
# PM2 as the app user, from root
AS_APP_USER_ARGV = ["runuser", "-u", APP_USER, "--", "env", f"HOME={APP_HOME}", f"PM2_HOME={PM2_HOME}", "pm2"]
AS_APP_USER = " ".join(AS_APP_USER_ARGV)


def start_from_ecosystem() -> str:
    """Bash (root): the apps started from ecosystem.config.js, so each reads the .env as it is now, and
    that list saved for boot. `pm2 resurrect` (the unit's start) brings each app back with the
    environment it was saved with, not the .env's: on a container restored from a vzdump under a new
    address (restore, drill) that is production's, so the saved list goes first and the unit starts an
    empty daemon, as on a new container (`up`: unit started, then `pm2 start`, `pm2 save`)."""
    pm2 = f"cd {APP_DIR} && {AS_APP_USER}"
    return (f"systemctl stop {UNIT}\nrm -f {DUMP_FILE} {DUMP_BACKUP}\nsystemctl start {UNIT}\n"
            f"{pm2} start {ECOSYSTEM_FILE} >/dev/null\n{pm2} save >/dev/null\n")


# Without a running daemon `pm2 jlist` would start one: the tool asks this first and only looks.
DAEMON_ALIVE = f'kill -0 "$(cat {PID_FILE} 2>/dev/null)" 2>/dev/null'
# The process list as `pm2 jlist` prints it (the daemon's getMonitorData), asked through the RPC
# client shipped inside the pm2 package (pm2-axon-rpc) by the one Node.js that reduces it: the pm2 CLI
# loads its hundred modules first, and a converged phase 3 asks 16 app containers. `pm2 jlist` itself
# stays the way when that client cannot be loaded or the call fails (a line it prints before the JSON
# is skipped). Neither starts a daemon; callers ask DAEMON_ALIVE first.
PM2_DIR = 'PM2_DIR="$(dirname "$(dirname "$(readlink -f "$(command -v pm2)")")")"'
_LIST = ('};const cli=()=>{let t="";try{t=cp.execFileSync(CLI[0],CLI.slice(1),{encoding:"utf8",'
         'stdio:["ignore","pipe","ignore"]}).trim()}catch(e){}const i=t.lastIndexOf("\\n[");'
         'done(JSON.parse((i>=0?t.slice(i+1):t)||"[]"))};'
         'let axon,rpc;try{const at={paths:[process.env.PM2_DIR]};'
         'axon=require(require.resolve("pm2-axon",at));rpc=require(require.resolve("pm2-axon-rpc",at))}catch(e){}'
         'if(!rpc)cli();else{const req=axon.socket("req"),client=new rpc.Client(req);'
         'const late=setTimeout(()=>{req.close();cli()},10000);req.connect(process.env.PM2_HOME+"/rpc.sock");'
         'client.call("getMonitorData",{},(err,ps)=>{clearTimeout(late);req.close();'
         'if(err)cli();else done(ps)})}')


JLIST = ["pm2", "jlist"]
JLIST_AS_APP_USER = [*AS_APP_USER_ARGV, "jlist"]


def jlist(reducer: str, *args: str, as_root: bool = True) -> str:
    """Bash: one `node -e PROGRAM ARGS` running the JavaScript `reducer` over `ps` (the process list, see
    _LIST), which prints what the caller parses; `args` are its process.argv[1:]. As root the fallback
    `pm2 jlist` runs as the app user."""
    program = (f"const CLI={json.dumps(JLIST_AS_APP_USER if as_root else JLIST)};"
               f'const cp=require("child_process"),done=ps=>{{{reducer}' + _LIST)
    tail = "".join(f" {shlex.quote(a)}" for a in args)
    return f"{PM2_DIR} PM2_HOME={PM2_HOME} node -e {shlex.quote(program)}{tail}"


# {running: [{name, status, started}], saved: [name]}: the processes and the names in dump.pm2 (argv[1])
FACTS = jlist(
    'let d=[];try{d=JSON.parse(require("fs").readFileSync(process.argv[1]))}catch(e){}'
    "console.log(JSON.stringify({running:ps.map(p=>({name:p.name,status:p.pm2_env.status,"
    "started:p.pm2_env.pm_uptime})),saved:(Array.isArray(d)?d:[]).map(p=>p.name)}))", DUMP_FILE)


def live_facts(apps: Mapping[str, int]) -> str:
    """Bash defining `pm2_live`, which prints FACTS' document without a Node.js when exactly `apps`
    (name -> processes) run, and nothing otherwise (then the daemon is asked: FACTS).

    Exactly: a pid file per process, each process alive and a child of the daemon, no other pid file,
    the counts as wanted. Each such process is online or about to be (launching, stopping); a stopped,
    errored or restarting one has no process and no pid file. Its start is its pid file's write (PM2's
    pm_uptime is taken just before). What `pm2 resurrect` restores is dump.pm2 as `pm2 save` writes it
    (JSON indented by 2, so a process's own `name` is the key indented by 4); a dump in another form
    is left to the daemon's reader."""
    checks = "".join(f'  [ "${{count[{shlex.quote(name)}]:-0}}" = {int(n)} ] || return 0\n'
                      for name, n in sorted(apps.items()))
    return f"""pm2_live() {{
  local daemon pid ppid key value f base name line saved="" sep="" stamp
  local -a files=() stats=()
  local -A count=()
  read -r daemon < {PID_FILE} || [ -n "$daemon" ] || return 0  # PM2 ends no pid file with a newline
  for f in {PIDS_DIR}/*.pid; do
    [ -e "$f" ] || continue
    pid="" ppid=""
    read -r pid < "$f" || true
    if [[ $pid =~ ^[0-9]+$ ]]; then
      while read -r key value; do
        if [ "$key" = PPid: ]; then ppid=$value; break; fi
      done 2>/dev/null < "/proc/$pid/status"
    fi
    [ -n "$ppid" ] && [ "$ppid" = "$daemon" ] || return 0
    base=${{f##*/}}; base=${{base%.pid}}; name=${{base%-*}}
    [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || return 0
    count[$name]=$(( ${{count[$name]:-0}} + 1 ))
    files+=("$f")
  done
  [ ${{#count[@]}} = {len(apps)} ] || return 0
{checks}  mapfile -t stats < <(stat -c '%.6Y %n' -- "${{files[@]}}" 2>/dev/null)
  [ ${{#stats[@]}} = ${{#files[@]}} ] || return 0
  if [ -e {DUMP_FILE} ]; then
    read -r line < {DUMP_FILE} || true
    [ "$line" = "[" ] || return 0
    saved=$(sed -n 's/^    "name": "\\([A-Za-z0-9._-]*\\)",\\{{0,1\\}}$/"\\1"/p' {DUMP_FILE} | paste -sd, -)
  fi
  printf '{{"running":['
  for line in "${{stats[@]}}"; do
    stamp=${{line%% *}}; f=${{line#* }}; base=${{f##*/}}; base=${{base%.pid}}
    printf '%s{{"name":"%s","status":"online","started":%se-3}}' "$sep" "${{base%-*}}" "${{stamp/./}}"
    sep=,
  done
  printf '],"saved":[%s]}}\\n' "$saved"
}}
"""


# `name=online/total,...` per app (health's pm2 probe)
COUNTS = jlist(
    "const c={};for(const p of ps){c[p.name]=c[p.name]||[0,0];c[p.name][1]++;"
    'if(p.pm2_env.status==="online")c[p.name][0]++}'
    'console.log(Object.entries(c).map(([n,v])=>n+"="+v[0]+"/"+v[1]).join(","))')
# `pm2 NAME STATUS` per process (status's service table)
STATES = jlist('for(const p of ps)console.log("pm2",p.name,p.pm2_env.status)')


def online(app: str) -> str:
    """`online N`: how many instances of `app` are online (run as the app user, after ENV)."""
    return jlist('console.log("online",ps.filter(p=>p.name===process.argv[1]&&p.pm2_env.status==="online")'
                 ".length)", app, as_root=False)
