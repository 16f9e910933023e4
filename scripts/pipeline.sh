#!/usr/bin/env bash
# The four pipeline processes of the local two-site stack, in the background:
#
#   sf-producer   continuum-producer for SF        (captures SF's writes into sf.cdc)
#   eu-consumer   continuum-consumer run at EU      (mirrors sf.cdc to EU, applies it to EU)
#   eu-producer   continuum-producer for EU        (heartbeats; EU's writes after a failover)
#   sf-consumer   continuum-consumer run at SF      (mirrors eu.cdc to SF, applies it to SF)
#
#   scripts/pipeline.sh start [PROC...]   start whichever is not running (default: all four)
#   scripts/pipeline.sh stop  [PROC...]   stop gracefully (SIGTERM, then SIGKILL after 60 s)
#   scripts/pipeline.sh kill  PROC        kill -9 (chaos tests)
#   scripts/pipeline.sh status
#   scripts/pipeline.sh env SITE          print the environment of SITE's processes (to eval),
#                                         for running other continuum verbs by hand
#
# Each reads config/<site>.toml, with the stack's addresses from .stack/env as environment
# overrides. `make run`'s pipeline captures every database but the tools' (the drill's, the
# bench's, the suites': `exclude` in config/<site>.toml); with CONTINUUM_PRODUCER_INCLUDE set,
# a pipeline is confined to the databases it names (and to its own topics, with
# CONTINUUM_SF_TOPIC / CONTINUUM_EU_TOPIC), and that exclude list does not apply. PID files: .stack/pids/<proc>.pid; logs: .stack/logs/<proc>.log. Processes are
# stopped by PID only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${STACK_DIR:-$ROOT/.stack}
BIN_DIR=${BIN_DIR:-$ROOT/target/debug}
PROCS=(sf-producer eu-consumer eu-producer sf-consumer)

log() { printf '[pipeline] %s\n' "$*" >&2; }
die() { printf '[pipeline] error: %s\n' "$*" >&2; exit 1; }

[[ -f $STACK_DIR/env ]] || die "no $STACK_DIR/env: run 'make up' first"
# shellcheck disable=SC1091
source "$STACK_DIR/env"

# pidfile, wait_gone (they use log, above, and alive, below).
# shellcheck source=scripts/procs.sh
source "$ROOT/scripts/procs.sh"

alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

running_pid() {
  local f pid exe
  f=$(pidfile "$1")
  [[ -s $f ]] || return 0
  pid=$(<"$f")
  alive "$pid" || return 0
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  [[ $exe == */continuum-* ]] || return 0
  echo "$pid"
}

valid() {
  local p
  for p in "${PROCS[@]}"; do [[ $p == "$1" ]] && return 0; done
  die "unknown process '$1'; processes are: ${PROCS[*]}"
}

# The environment both sites' processes share: every address from .stack/env.
common_env() {
  # A pipeline confined to its own databases (CONTINUUM_PRODUCER_INCLUDE: the drill's, a
  # suite's) captures exactly those: the exclude list of config/<site>.toml, which keeps `make
  # run`'s pipeline off the tools' databases, is not for it (unless it sets its own).
  if [[ -n ${CONTINUUM_PRODUCER_INCLUDE:-} && -z ${CONTINUUM_PRODUCER_EXCLUDE+set} ]]; then
    echo "CONTINUUM_PRODUCER_EXCLUDE="
  fi
  echo "CONTINUUM_SF_BROKERS=$SF_BROKERS"
  echo "CONTINUUM_EU_BROKERS=$EU_BROKERS"
  echo "CONTINUUM_SF_REGISTRY_URL=$SF_REGISTRY"
  echo "CONTINUUM_EU_REGISTRY_URL=$EU_REGISTRY"
  echo "CONTINUUM_SF_DB_HOST=$SF_DB_HOST"
  echo "CONTINUUM_SF_DB_PORT=$SF_DB_PORT"
  echo "CONTINUUM_SF_DB_PASSWORD=$SF_DB_PASSWORD"
  echo "CONTINUUM_EU_DB_HOST=$EU_DB_HOST"
  echo "CONTINUUM_EU_DB_PORT=$EU_DB_PORT"
  echo "CONTINUUM_EU_DB_PASSWORD=$EU_DB_PASSWORD"
  # Both MariaDB servers serve TLS with the stack's CA (scripts/stack.sh, "TLS"); the host name
  # is verified.
  if [[ -n ${STACK_TLS_CA:-} ]]; then
    echo "CONTINUUM_SF_DB_TLS_CA_FILE=$STACK_TLS_CA"
    echo "CONTINUUM_EU_DB_TLS_CA_FILE=$STACK_TLS_CA"
  fi
}

start_one() {
  local proc=$1 site kind pid cfg
  site=${proc%%-*}
  kind=${proc#*-}
  pid=$(running_pid "$proc")
  if [[ -n $pid ]]; then
    return 0
  fi
  cfg=$ROOT/config/$site.toml
  local args
  case $kind in
    producer) args=("$BIN_DIR/continuum-producer" --config "$cfg") ;;
    consumer) args=("$BIN_DIR/continuum-consumer" --config "$cfg" run) ;;
  esac
  [[ -x ${args[0]} ]] || die "${args[0]} is not built; run 'make build' (or make run, which builds)"
  mkdir -p "$STACK_DIR/pids" "$STACK_DIR/logs"
  log "starting $proc"
  (
    cd "$ROOT"
    mapfile -t envs < <(site_env "$site")
    exec env "${envs[@]}" setsid "${args[@]}" >>"$STACK_DIR/logs/$proc.log" 2>&1 </dev/null
  ) &
  echo $! >"$(pidfile "$proc")"
}

stop_one() {
  local proc=$1 pid
  pid=$(running_pid "$proc")
  [[ -n $pid ]] || { rm -f "$(pidfile "$proc")"; return 0; }
  log "stopping $proc (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$proc" "$pid" 60
}

kill_one() {
  local proc=$1 pid
  pid=$(running_pid "$proc")
  [[ -n $pid ]] || die "$proc is not running"
  kill -KILL "$pid"
  while alive "$pid"; do sleep 0.1; done
  rm -f "$(pidfile "$proc")"
}

status() {
  local p pid
  for p in "${PROCS[@]}"; do
    pid=$(running_pid "$p")
    if [[ -n $pid ]]; then
      printf '%-12s running  pid %s\n' "$p" "$pid"
    else
      printf '%-12s stopped\n' "$p"
    fi
  done
}

# The whole environment of one site's processes.
site_env() {
  local site=$1 SITE
  SITE=$(tr '[:lower:]' '[:upper:]' <<<"$site")
  local host_var=${SITE}_DB_HOST port_var=${SITE}_DB_PORT pw_var=${SITE}_DB_PASSWORD
  common_env
  echo "CONTINUUM_DB_HOST=${!host_var}"
  echo "CONTINUUM_DB_PORT=${!port_var}"
  echo "CONTINUUM_DB_PASSWORD=${!pw_var}"
  [[ -z ${STACK_TLS_CA:-} ]] || echo "CONTINUUM_DB_TLS_CA_FILE=$STACK_TLS_CA"
  echo "CONTINUUM_CONFIG=$ROOT/config/$site.toml"
}

cmd=${1:-}
shift || true
if [[ $cmd == env ]]; then
  [[ $# -eq 1 && ( $1 == sf || $1 == eu ) ]] || die "usage: $0 env sf|eu"
  site_env "$1" | sed 's/^/export /'
  exit 0
fi
targets=("$@")
((${#targets[@]})) || targets=("${PROCS[@]}")
for t in "${targets[@]}"; do valid "$t"; done
case $cmd in
  start)
    for t in "${targets[@]}"; do start_one "$t"; done
    # A process that dies at once (bad config, port taken) is reported here, not found later.
    sleep 1
    for t in "${targets[@]}"; do
      [[ -n $(running_pid "$t") ]] || { tail -n 20 "$STACK_DIR/logs/$t.log" >&2; die "$t exited at start; its log is $STACK_DIR/logs/$t.log"; }
    done
    status
    ;;
  stop) for t in "${targets[@]}"; do stop_one "$t"; done ;;
  kill)
    [[ $# -eq 1 ]] || die "usage: $0 kill PROC"
    kill_one "$1"
    ;;
  status) status ;;
  *) die "usage: $0 start|stop|kill|status [PROC...]" ;;
esac
