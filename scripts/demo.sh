#!/usr/bin/env bash
# make demo: with the stack and the pipeline running (make up, make run), write a short sample
# workload to SF, wait until EU has applied it, and show the result: each table side by side
# (rows at SF and EU, checksums), verify's verdict, and the lag.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${STACK_DIR:-$ROOT/.stack}
BIN=${BIN_DIR:-$ROOT/target/debug}
DEMO_PREFIX=${DEMO_PREFIX:-demo}
DEMO_SECONDS=${DEMO_SECONDS:-30}
cd "$ROOT"
# shellcheck disable=SC1091
source "$STACK_DIR/env"

say() { printf '\n== %s\n' "$*"; }
# shellcheck source=scripts/site-sql.sh
source "$ROOT/scripts/site-sql.sh"
sql() { site_sql "$@"; }
consumer_at() {
  local site=$1
  shift
  (eval "$(scripts/pipeline.sh env "$site")" && "$BIN/continuum-consumer" "$@")
}

# The workload starts once SF's producer streams the binlog: a workload that started during the
# producer's first snapshot would make it retry the snapshot (its tables change under it).
say "waiting for SF's producer to stream (its /health on 127.0.0.1:9101)"
deadline=$((SECONDS + 120))
until curl -fsS --max-time 5 http://127.0.0.1:9101/health 2>/dev/null | grep -q '"detail":"streaming'; do
  if ((SECONDS >= deadline)); then
    tail -n 20 "$STACK_DIR/logs/sf-producer.log" >&2
    echo "SF's producer is not streaming after 120s; see .stack/logs/sf-producer.log" >&2
    exit 1
  fi
  sleep 0.5
done

say "writing a sample workload to SF for ${DEMO_SECONDS}s (databases ${DEMO_PREFIX}_0, ${DEMO_PREFIX}_1)"
"$BIN/workload" --prefix "$DEMO_PREFIX" --databases 2 --duration "${DEMO_SECONDS}s" --rate 40 \
  --large-every 150 --large-rows 2000 --ddl on --seed 7

target=$(sql sf -e "SELECT @@gtid_binlog_pos")
say "waiting for EU to apply everything up to SF's position $target"
started=$SECONDS
while :; do
  applied=$(sql eu -e "SELECT gtid_position FROM continuum.checkpoint WHERE source_topic = 'sf.cdc'" 2>/dev/null || true)
  if [[ -n $applied ]] && python3 - "$applied" "$target" <<'PY'
import sys
def pos(s):
    return {int(g.split('-')[0]): int(g.split('-')[2]) for g in s.split(',') if g}
a, t = pos(sys.argv[1]), pos(sys.argv[2])
sys.exit(0 if all(a.get(d, -1) >= n for d, n in t.items() if d == 1) else 1)
PY
  then
    break
  fi
  if ((SECONDS - started > 180)); then
    echo "EU did not catch up within 180s (applied: ${applied:-nothing}); see .stack/logs/eu-consumer.log" >&2
    exit 1
  fi
  sleep 1
done
echo "EU caught up in $((SECONDS - started))s (applied: $applied)"

say "tables, side by side"
printf '%-40s %10s %10s  %s\n' "table" "SF rows" "EU rows" "checksum"
mapfile -t tables < <(sql sf -e "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES
  WHERE TABLE_SCHEMA LIKE '${DEMO_PREFIX}\\_%' AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1")
for t in "${tables[@]}"; do
  db=${t%%.*}
  tb=${t#*.}
  q="SELECT COUNT(*) FROM \`$db\`.\`$tb\`"
  sf_rows=$(sql sf -e "$q")
  eu_rows=$(sql eu -e "$q" 2>/dev/null || echo "missing")
  sf_sum=$(sql sf -e "CHECKSUM TABLE \`$db\`.\`$tb\`" | cut -f2)
  eu_sum=$(sql eu -e "CHECKSUM TABLE \`$db\`.\`$tb\`" 2>/dev/null | cut -f2 || true)
  match=$([[ -n $eu_sum && $sf_sum == "$eu_sum" ]] && echo "match" || echo "DIFFERENT")
  printf '%-40s %10s %10s  %s\n' "$t" "$sf_rows" "$eu_rows" "$match"
done

say "continuum-consumer verify (at EU)"
set +e
consumer_at eu verify --databases "${DEMO_PREFIX}_0,${DEMO_PREFIX}_1"
verdict=$?
set -e

say "lag (continuum-consumer status at EU)"
consumer_at eu status

say "done"
echo "The stack and the pipeline keep running. Stop the pipeline with 'make stop', the stack with 'make down'."
exit $verdict
