#!/usr/bin/env bash
# make drill: a scripted failover and failback on the local stack, timed step by step.
#
#  1. the pipeline runs and a workload writes to SF;
#  2. kill -9 the SF broker, then (2 s later) the SF MariaDB, mid-workload;
#  3. promote EU (it must be writable within 60 s of the kill);
#  4. a workload writes to EU;
#  5. SF's MariaDB returns as a replica (nothing applies to it yet);
#  6. `orphans` at SF lists the SF transactions that never reached EU; checked against the
#     workload's own log of committed transactions;
#  7. `orphans --rewind` at SF rolls them back (their SQL saved to a file first);
#  8. SF applies EU's writes (failback);
#  9. switchover back to SF (promote at SF; EU skips the orphans);
# 10. verify: SF and EU are identical.
#
# The drill uses its own databases and topics (DRILL_PREFIX, drill_<time> by default), so it
# leaves the stack's sf.cdc/eu.cdc alone, and it stops the pipeline processes (make run) it
# finds running, and starts them again at the end. `make run`'s pipeline never captures the
# drill's databases (config/*.toml exclude drill_*), so it does not replicate them a second
# time when it reads what the binlogs took meanwhile.
# Bounded version: DRILL_SF_SECONDS / DRILL_EU_SECONDS (defaults 20 and 15).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${STACK_DIR:-$ROOT/.stack}
BIN=${BIN_DIR:-$ROOT/target/debug}
cd "$ROOT"
# shellcheck disable=SC1091
source "$STACK_DIR/env"

PREFIX=${DRILL_PREFIX:-drill_$(date +%s)}
SF_SECONDS=${DRILL_SF_SECONDS:-20}
EU_SECONDS=${DRILL_EU_SECONDS:-15}
DIR=$STACK_DIR/drill/$PREFIX
mkdir -p "$DIR"
# The drill's pipeline captures its own databases only (and no exclude list: config/*.toml's
# keeps `make run`'s pipeline off drill_*), into topics of its own.
export CONTINUUM_PRODUCER_INCLUDE="${PREFIX}_*.*" CONTINUUM_PRODUCER_EXCLUDE=""
export CONTINUUM_SF_TOPIC="$PREFIX.sf.cdc" CONTINUUM_EU_TOPIC="$PREFIX.eu.cdc"

T0=$(date +%s.%N)
now() { python3 -c "import time; print(f'{time.time() - $T0:7.1f}s')"; }
TIMELINE=()
step() {
  local line
  line="$(now)  $*"
  TIMELINE+=("$line")
  printf '\n== %s\n' "$line"
}
fail() {
  printf '\ndrill FAILED: %s\n' "$*" >&2
  printf '%s\n' "${TIMELINE[@]}" >&2
  exit 1
}
consumer_at() {
  local site=$1
  shift
  (eval "$(scripts/pipeline.sh env "$site")" && "$BIN/continuum-consumer" "$@")
}
# shellcheck source=scripts/site-sql.sh
source "$ROOT/scripts/site-sql.sh"
# sql SITE STATEMENT
sql() { site_sql "$1" -e "$2"; }
# Waits until SITE's checkpoint for TOPIC covers POSITION in DOMAIN.
wait_applied() {
  local site=$1 topic=$2 position=$3 domain=$4 limit=$5 started=$SECONDS got
  while :; do
    got=$(sql "$site" "SELECT gtid_position FROM continuum.checkpoint WHERE source_topic = '$topic'" 2>/dev/null || true)
    if python3 - "$got" "$position" "$domain" <<'PY'; then return 0; fi
import sys
def pos(s):
    return {int(g.split('-')[0]): int(g.split('-')[2]) for g in s.split(',') if g}
got, want, d = pos(sys.argv[1]), pos(sys.argv[2]), int(sys.argv[3])
sys.exit(0 if d not in want or got.get(d, -1) >= want[d] else 1)
PY
    ((SECONDS - started < limit)) || fail "$site did not apply $topic up to $position (domain $domain) within ${limit}s; it is at: ${got:-nothing}"
    sleep 1
  done
}
workload() {
  local site=$1 seconds=$2 seed=$3 log=$4
  local S
  S=$(tr '[:lower:]' '[:upper:]' <<<"$site")
  local h=${S}_DB_HOST p=${S}_DB_PORT u=${S}_DB_ADMIN_USER pw=${S}_DB_ADMIN_PASSWORD
  "$BIN/workload" --prefix "$PREFIX" --databases 2 --duration "${seconds}s" --rate 20 --large-every 0 \
    --ddl off --seed "$seed" --host "${!h}" --port "${!p}" --user "${!u}" --password "${!pw}" \
    --reconnect-timeout 5s --log "$log"
}

# The drill's pipeline processes capture only the drill's databases into the drill's topics; at
# the end (passed or not) they are stopped, and the pipeline of `make run` is started again if
# it was running before.
WAS_RUNNING=$(scripts/pipeline.sh status | grep -c ' running ' || true)
restore_pipeline() {
  local rc=$?
  scripts/pipeline.sh stop >/dev/null 2>&1 || true
  if ((WAS_RUNNING > 0)); then
    (unset CONTINUUM_PRODUCER_INCLUDE CONTINUUM_PRODUCER_EXCLUDE CONTINUUM_SF_TOPIC CONTINUUM_EU_TOPIC && scripts/pipeline.sh start >/dev/null) || true
  fi
  exit "$rc"
}
trap restore_pipeline EXIT

step "1. pipeline running, workload on SF for up to ${SF_SECONDS}s"
scripts/stack.sh role sf-db primary >/dev/null 2>&1
scripts/stack.sh role eu-db replica >/dev/null 2>&1
scripts/pipeline.sh stop >/dev/null
scripts/pipeline.sh start >/dev/null
workload sf "$((SF_SECONDS * 3))" 5 "$DIR/sf.jsonl" >"$DIR/sf-workload.out" 2>&1 &
WL=$!
sleep "$SF_SECONDS"

step "2. kill -9 the SF broker, then the SF MariaDB"
# The broker first: SF goes on committing for a moment with nothing reaching EU, so it has
# orphans for step 7 to rewind.
KILL_AT=$(date +%s.%N)
scripts/stack.sh kill sf-broker
sleep 2
scripts/stack.sh kill sf-db
kill -TERM "$WL" 2>/dev/null || true
wait "$WL" 2>/dev/null || true
echo "SF workload committed $(wc -l <"$DIR/sf.jsonl") transactions before the kill"

step "3. promote EU"
consumer_at eu promote --drain-timeout 45s | tee "$DIR/promote-eu.txt"
WRITABLE_AT=$(date +%s.%N)
scripts/stack.sh role eu-db primary >/dev/null
ro=$(sql eu "SELECT @@read_only")
[[ $ro == 0 ]] || fail "EU is not writable after promote"
took=$(python3 -c "print(round($WRITABLE_AT - $KILL_AT, 1))")
echo "EU writable ${took}s after the kill"
python3 -c "import sys; sys.exit(0 if $WRITABLE_AT - $KILL_AT <= 60 else 1)" || fail "EU became writable ${took}s after the kill (limit 60s)"

step "4. workload on EU for ${EU_SECONDS}s"
workload eu "$EU_SECONDS" 9 "$DIR/eu.jsonl" >"$DIR/eu-workload.out" 2>&1 || fail "EU workload failed: $(tail -3 "$DIR/eu-workload.out")"
echo "EU workload committed $(wc -l <"$DIR/eu.jsonl") transactions"
EU_POS=$(sql eu "SELECT @@gtid_binlog_pos")

step "5. SF's MariaDB returns as a replica"
# Its consumer waits: the orphans are rewound before SF applies EU's writes.
scripts/pipeline.sh stop sf-consumer >/dev/null
scripts/stack.sh role sf-db replica >/dev/null
scripts/stack.sh up >/dev/null

step "6. orphans at SF"
set +e
consumer_at sf orphans --json >"$DIR/orphans.json"
rc=$?
set -e
[[ $rc -le 1 ]] || fail "orphans failed: $(cat "$DIR/orphans.json")"
consumer_at sf orphans || true
python3 - "$DIR/orphans.json" "$DIR/sf.jsonl" <<'PY' || fail "the orphans do not match the workload's log"
import json, sys
report = json.load(open(sys.argv[1]))
applied = {int(g.split('-')[0]): int(g.split('-')[2]) for g in report["applied_position"].split(',') if g}
logged = [json.loads(l)["gtid"] for l in open(sys.argv[2]) if l.strip()]
logged = [g for g in logged if g]
def seq(g): return int(g.split('-')[2])
def dom(g): return int(g.split('-')[0])
expected = {g for g in logged if seq(g) > applied.get(dom(g), -1)}
listed = {o["gtid"] for o in report["orphans"]}
missing = expected - listed
extra = listed - expected
# A transaction can commit on SF and lose its acknowledgement in the kill: it is an orphan
# the workload never logged. At most one such, and it must come after every logged one.
last_logged = max((seq(g) for g in logged), default=-1)
if not listed:
    print("no orphans: SF committed nothing after EU's position, so the rewind would test nothing")
    sys.exit(1)
if missing or len(extra) > 1 or any(seq(g) <= last_logged for g in extra):
    print(f"orphans listed {sorted(listed, key=seq)}, the workload log implies {sorted(expected, key=seq)}")
    sys.exit(1)
print(f"orphans: {len(listed)} transaction(s), exactly the SF commits after EU's position {report['applied_position']}"
      + (f" (plus {sorted(extra)}: committed, acknowledgement lost in the kill)" if extra else ""))
PY

step "7. rewind the orphans at SF"
consumer_at sf orphans --rewind --sql-file "$DIR/orphans.sql" --json >"$DIR/rewind.json" || fail "orphans --rewind failed: $(cat "$DIR/rewind.json")"
python3 - "$DIR/rewind.json" "$DIR/orphans.json" "$DIR/orphans.sql" <<'PY' || fail "the rewind does not match the orphans"
import json, sys
r = json.load(open(sys.argv[1]))
listed = [o["gtid"] for o in json.load(open(sys.argv[2]))["orphans"]]
rewound = [o["gtid"] for o in r["orphans"]["orphans"]]
sql = open(sys.argv[3]).read()
if rewound != listed or r["rewind"]["transactions"] != len(listed):
    print(f"rewound {rewound}, listed {listed}")
    sys.exit(1)
missing = [g for g in listed if f"-- orphan {g} " not in sql]
if missing:
    print(f"{sys.argv[3]} lacks orphans {missing}")
    sys.exit(1)
w = r["rewind"]
print(f"rewind: {len(listed)} orphan(s), {w['rows_rewound']} row change(s) undone, {w['rows_kept']} kept; SQL in {sys.argv[3]}")
PY
[[ $(sql sf "SELECT @@read_only") == 1 ]] || fail "SF is not read-only after the rewind"

step "8. SF applies EU's writes (failback)"
scripts/pipeline.sh start >/dev/null
wait_applied sf "$CONTINUUM_EU_TOPIC" "$EU_POS" 2 240
echo "SF applied EU's writes up to $EU_POS"

step "9. switchover back to SF"
consumer_at sf promote --orphans discard --drain-timeout 120s | tee "$DIR/promote-sf.txt"
scripts/stack.sh role sf-db primary >/dev/null
scripts/stack.sh role eu-db replica >/dev/null
[[ $(sql sf "SELECT @@read_only") == 0 ]] || fail "SF is not writable after the switchover"
[[ $(sql eu "SELECT @@read_only") == 1 ]] || fail "EU is not read-only after the switchover"
SF_POS=$(sql sf "SELECT @@gtid_binlog_pos")
wait_applied eu "$CONTINUUM_SF_TOPIC" "$SF_POS" 1 240

step "10. verify SF against EU"
set +e
consumer_at eu verify --databases "${PREFIX}_0,${PREFIX}_1" --json >"$DIR/verify.json"
set -e
python3 - "$DIR/verify.json" <<'PY' || fail "SF and EU differ after the rewind"
import json, sys
v = json.load(open(sys.argv[1]))
if not v["identical"]:
    bad = {t["table"]: sum(len(d["changed"]) + len(d["missing"]) + len(d["extra"]) for d in t["differences"])
           for t in v["tables"] if t["differences"]}
    print(f"differences: {bad}, one-sided tables {v['source_only'] + v['replica_only']}")
    sys.exit(1)
print(f"verify: identical ({len(v['tables'])} tables)")
PY

step "drill passed"
printf '\ntimeline (since the drill started; SF was killed at %s after the start):\n' \
  "$(python3 -c "print(f'{$KILL_AT - $T0:.1f}s')")"
printf '  %s\n' "${TIMELINE[@]}"
