# shellcheck shell=bash
# Process helpers that scripts/stack.sh and scripts/pipeline.sh share; sourced by both, after
# they define `log` (a progress line on stderr) and `alive PID` (whether a process still runs).
# PID files live under $STACK_DIR/pids/. Processes are stopped by PID only, never by name.

pidfile() { echo "$STACK_DIR/pids/$1.pid"; }

# Waits for process $2 (the part or pipeline process $1), already asked to stop, to be gone:
# sends it SIGKILL once if it still runs after $3 seconds, then waits on. Removes its PID file.
wait_gone() {
  local part=$1 pid=$2 secs=$3 deadline killed=0
  deadline=$((SECONDS + secs))
  while alive "$pid"; do
    if ((SECONDS >= deadline && !killed)); then
      log "$part (pid $pid) did not stop within ${secs}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      killed=1
    fi
    sleep 0.2
  done
  rm -f "$(pidfile "$part")"
}
