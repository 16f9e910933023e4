#!/usr/bin/env bash
# The local two-site stack: two MariaDB servers, two Kafka-compatible brokers (tansu) and two
# Confluent-compatible schema registries (rivven-schema), as native processes on loopback.
#
#   scripts/stack.sh up                 start whatever is stopped, wait for health, write .stack/env
#   scripts/stack.sh down               stop everything `up` started (by PID file)
#   scripts/stack.sh clean              down, then delete .stack/
#   scripts/stack.sh status             one line per part
#   scripts/stack.sh start  PART        start one part (sf-db, eu-db, sf-broker, ...)
#   scripts/stack.sh stop   PART        stop one part gracefully
#   scripts/stack.sh kill   PART        kill -9 one part (chaos tests)
#   scripts/stack.sh role   DB ROLE     make sf-db or eu-db the primary or the replica (read_only)
#
# Every address is overridable by environment variable; see `defaults` below. Processes are only
# ever stopped by the PID recorded in .stack/pids/, never by name.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${STACK_DIR:-$ROOT/.stack}

SF_DB_HOST=${SF_DB_HOST:-127.0.0.1}
SF_DB_PORT=${SF_DB_PORT:-3307}
EU_DB_HOST=${EU_DB_HOST:-127.0.0.1}
EU_DB_PORT=${EU_DB_PORT:-3308}
SF_BROKER_PORT=${SF_BROKER_PORT:-19092}
EU_BROKER_PORT=${EU_BROKER_PORT:-29092}
SF_REGISTRY_PORT=${SF_REGISTRY_PORT:-18081}
EU_REGISTRY_PORT=${EU_REGISTRY_PORT:-28081}
# Storage engine of the local brokers. sqlite is durable (survives kill -9). memory is faster but,
# in tansu 0.6.0, wrong as soon as a batch holds several records (high watermark, fetch from an
# offset inside a batch, time lookups); see README.md before choosing it.
BROKER_STORAGE=${BROKER_STORAGE:-sqlite}
CONTINUUM_DB_USER=${CONTINUUM_DB_USER:-continuum}
# The broker and registry binaries: the Makefile passes its pinned builds; otherwise PATH.
TANSU_BIN=${TANSU_BIN:-$(command -v tansu || true)}
RIVVEN_SCHEMA_BIN=${RIVVEN_SCHEMA_BIN:-$(command -v rivven-schema || true)}

PARTS=(sf-db eu-db sf-broker eu-broker sf-registry eu-registry)

need() {
  command -v "$1" >/dev/null || die "$1 is not on PATH; run 'make tools' (the Makefile installs it)"
}
log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

pidfile() { echo "$STACK_DIR/pids/$1.pid"; }

# Whether process $1 still runs: it exists and some thread of it is not a zombie (a zombie has
# exited; only its parent, possibly not us, can reap it). Every thread counts, not only the main
# one: after SIGKILL the main thread can turn zombie while others are still exiting, and those hold
# the process's files, its listening socket included, until the last of them is gone.
alive() {
  local stat s
  for stat in /proc/"$1"/task/*/stat; do
    { s=$(<"$stat"); } 2>/dev/null || continue
    s=${s##*) } # the name in parentheses may itself hold spaces
    [[ ${s%% *} != Z ]] && return 0
  done
  return 1
}

# The PID of a running part, or nothing. A stale PID file (process gone, or the PID reused by some
# other program) counts as not running.
running_pid() {
  local f pid exe
  f=$(pidfile "$1")
  [[ -s $f ]] || return 0
  pid=$(<"$f")
  [[ -d /proc/$pid ]] || return 0
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  case "$1" in
    *-db) [[ $exe == */mariadbd ]] ;;
    *-broker) [[ $exe == */tansu* ]] ;;
    *-registry) [[ $exe == */rivven-schema* ]] ;;
  esac || return 0
  echo "$pid"
}

site_of() { echo "${1%%-*}"; }
upper() { tr '[:lower:]' '[:upper:]' <<<"$1"; }

port_of() {
  local s
  s=$(upper "$(site_of "$1")")
  case "$1" in
    *-db) eval echo "\$${s}_DB_PORT" ;;
    *-broker) eval echo "\$${s}_BROKER_PORT" ;;
    *-registry) eval echo "\$${s}_REGISTRY_PORT" ;;
  esac
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Run a command in its own session, detached from make, and record its PID. `setsid` without -f
# execs in place (a background job of a non-interactive shell is not a group leader), so $! is the
# server's own PID.
spawn() {
  local part=$1 dir=$2
  shift 2
  mkdir -p "$STACK_DIR/pids" "$STACK_DIR/logs"
  (cd "$dir" && exec setsid "$@" >>"$STACK_DIR/logs/$part.log" 2>&1 </dev/null) &
  echo $! >"$(pidfile "$part")"
  # Not this shell's job any more: no "Killed" notice when it is stopped from here.
  disown $!
}

wait_until() {
  local what=$1 secs=$2 part=$3
  shift 3
  local deadline=$((SECONDS + secs))
  until "$@"; do
    if [[ -z $(running_pid "$part") ]]; then
      tail -n 30 "$STACK_DIR/logs/$part.log" >&2 || true
      die "$part exited while waiting for $what; its log is $STACK_DIR/logs/$part.log"
    fi
    ((SECONDS < deadline)) || die "$part: $what not ready after ${secs}s; see $STACK_DIR/logs/$part.log"
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------------
# TLS: a throwaway CA and certificates for the local stack, under .stack/tls/. Both MariaDB
# servers serve TLS with them, and the `continuum` users must use it (REQUIRE SSL) unless
# STACK_DB_REQUIRE_TLS=0. Clients trust ca.pem (STACK_TLS_CA in .stack/env) and verify the host
# name: the server certificate names 127.0.0.1 and localhost, nothing else. client.pem/.key is a
# client certificate from the same CA, for links that ask for one.

TLS_DIR=$STACK_DIR/tls
STACK_DB_REQUIRE_TLS=${STACK_DB_REQUIRE_TLS:-1}
[[ $STACK_DB_REQUIRE_TLS == [01] ]] || die "STACK_DB_REQUIRE_TLS must be 1 or 0, not '$STACK_DB_REQUIRE_TLS'"

# The stack's certificates are complete and the server and client ones chain to its CA.
tls_ok() {
  local f
  for f in ca.pem ca.key server.pem server.key client.pem client.key; do [[ -s $TLS_DIR/$f ]] || return 1; done
  openssl verify -CAfile "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem" "$TLS_DIR/client.pem" >/dev/null 2>&1
}

# One certificate signed by the CA in the current directory: tls_cert NAME CN EXTENSIONS...
tls_cert() {
  local name=$1 cn=$2
  shift 2
  printf '%s\n' "$@" >"$name.ext" &&
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn" &&
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
      -extfile "$name.ext" -out "$name.pem" &&
    rm -f "$name.csr" "$name.ext"
}

# The CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, in the
# current directory.
tls_generate() {
  umask 077
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.pem \
    -subj "/CN=Continuum local stack CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" || return 1
  tls_cert server localhost basicConstraints=CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
    extendedKeyUsage=serverAuth subjectAltName=IP:127.0.0.1,DNS:localhost || return 1
  tls_cert client continuum basicConstraints=CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
    extendedKeyUsage=clientAuth || return 1
  rm -f ca.srl && chmod 644 ca.pem server.pem client.pem
}

# Creates the CA and certificates once; later calls change nothing. Written to a temporary
# directory and moved into place, so a crash never leaves half a set.
tls_ensure() {
  tls_ok && return 0
  need openssl
  local tmp
  mkdir -p "$STACK_DIR"
  tmp=$(mktemp -d "$STACK_DIR/tls.XXXXXX")
  (cd "$tmp" && tls_generate) >"$STACK_DIR/tls.log" 2>&1 ||
    { rm -rf "$tmp"; die "creating the stack's TLS certificates failed; see $STACK_DIR/tls.log"; }
  rm -rf "$TLS_DIR"
  mv "$tmp" "$TLS_DIR"
  chmod 755 "$TLS_DIR"
  tls_ok || die "the certificates in $TLS_DIR do not verify; see $STACK_DIR/tls.log"
  log "created a throwaway CA and certificates in $TLS_DIR (for 127.0.0.1 and localhost)"
}

# The [mariadbd] lines that make a server serve TLS.
db_tls_config() {
  cat <<EOF
ssl_ca=$TLS_DIR/ca.pem
ssl_cert=$TLS_DIR/server.pem
ssl_key=$TLS_DIR/server.key
EOF
}

# The statement that makes the `continuum` user require TLS (or, with STACK_DB_REQUIRE_TLS=0, not).
db_tls_require_sql() {
  case $STACK_DB_REQUIRE_TLS in
    1) echo "ALTER USER '$CONTINUUM_DB_USER'@'127.0.0.1' REQUIRE SSL;" ;;
    *) echo "ALTER USER '$CONTINUUM_DB_USER'@'127.0.0.1' REQUIRE NONE;" ;;
  esac
}

# A server started before the stack had TLS serves none until restarted; say so.
db_tls_check() {
  local have
  have=$(db_root "$1" -N -e 'SELECT @@have_ssl' 2>/dev/null || true)
  [[ $have == YES ]] || log "warning: $1 serves no TLS (have_ssl=${have:-?}): it was started without the stack's certificates; restart it: scripts/stack.sh stop $1 && scripts/stack.sh start $1"
}

# ---------------------------------------------------------------------------------------------
# MariaDB

db_socket() { echo "$STACK_DIR/$1/mariadbd.sock"; }

db_root() {
  local part=$1
  shift
  mariadb --no-defaults --protocol=socket -S "$(db_socket "$part")" -uroot "$@"
}

db_config() {
  local part=$1 site port id
  site=$(site_of "$part")
  port=$(port_of "$part")
  if [[ $site == sf ]]; then id=1; else id=2; fi
  cat <<EOF
[mariadbd]
datadir=$STACK_DIR/$part/data
socket=$(db_socket "$part")
pid-file=$STACK_DIR/$part/mariadbd.pid
port=$port
bind-address=127.0.0.1
skip-name-resolve
user=$(id -un)
server_id=$id
gtid_domain_id=$id
log_bin=$site-bin
log_slave_updates=ON
binlog_format=ROW
binlog_row_image=FULL
binlog_row_metadata=FULL
gtid_strict_mode=ON
sync_binlog=${DB_SYNC_BINLOG:-1}
innodb_flush_log_at_trx_commit=${DB_FLUSH_LOG_AT_TRX_COMMIT:-1}
character_set_server=utf8mb4
collation_server=utf8mb4_general_ci
max_allowed_packet=256M
innodb_buffer_pool_size=256M
innodb_log_file_size=256M
max_connections=300
EOF
}

# A server's role decides read_only: the primary takes writes, the replica refuses them from
# everyone but holders of READ_ONLY ADMIN (Continuum's apply). SF starts as the primary. The
# role lives in .stack/<part>/role so a restart keeps it; `stack.sh role` changes it (the
# failover drill does, after continuum-consumer promote).
db_role() {
  local f=$STACK_DIR/$1/role
  if [[ ! -s $f ]]; then
    mkdir -p "$STACK_DIR/$1"
    if [[ $1 == sf-db ]]; then echo primary >"$f"; else echo replica >"$f"; fi
  fi
  cat "$f"
}

set_role() {
  local part=$1 role=$2
  [[ $role == primary || $role == replica ]] || die "role must be primary or replica, not '$role'"
  mkdir -p "$STACK_DIR/$part"
  echo "$role" >"$STACK_DIR/$part/role"
  if [[ -n $(running_pid "$part") ]]; then
    db_root "$part" -e "SET GLOBAL read_only = $([[ $role == replica ]] && echo ON || echo OFF)"
  fi
  log "$part is now the $role"
}

start_db() {
  local part=$1 dir
  dir=$STACK_DIR/$part
  mkdir -p "$dir" "$STACK_DIR/logs"
  db_config "$part" >"$dir/my.cnf"
  tls_ensure
  db_tls_config >>"$dir/my.cnf"
  [[ $(db_role "$part") == replica ]] && echo "read_only=ON" >>"$dir/my.cnf"
  need mariadbd
  need mariadb-install-db
  if [[ ! -d $dir/data/mysql ]]; then
    log "$part: initialising data directory"
    rm -rf "$dir/data"
    mariadb-install-db --defaults-file="$dir/my.cnf" --auth-root-authentication-method=normal \
      --skip-test-db >"$STACK_DIR/logs/$part.install.log" 2>&1 ||
      die "$part: mariadb-install-db failed; see $STACK_DIR/logs/$part.install.log"
  fi
  spawn "$part" "$dir" "$(command -v mariadbd)" --defaults-file="$dir/my.cnf"
  wait_until "connections" 120 "$part" db_ping "$part"
  db_provision "$part"
}

db_ping() { db_root "$1" -e 'SELECT 1' >/dev/null 2>&1; }

# The `continuum` user. Both binaries run at both sites (producer and `consumer run`), so one user
# holds the union of their grants; README.md lists which binary needs which.
db_provision() {
  local part=$1 pw
  pw=$(db_password)
  # Logins are each server's own business: keep them out of the binlog (and out of the GTID
  # sequence a replica or a test follows).
  db_root "$part" <<EOF
SET SESSION sql_log_bin=0;
CREATE USER IF NOT EXISTS '$CONTINUUM_DB_USER'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER '$CONTINUUM_DB_USER'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT REPLICATION SLAVE, BINLOG MONITOR, REPLICATION MASTER ADMIN ON *.* TO '$CONTINUUM_DB_USER'@'127.0.0.1';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES, CREATE VIEW, SHOW VIEW,
      READ_ONLY ADMIN ON *.* TO '$CONTINUUM_DB_USER'@'127.0.0.1';
$(db_tls_require_sql)
-- root may only log in from this machine; the stack is local only.
DELETE FROM mysql.global_priv WHERE User='root' AND Host NOT IN ('localhost', '127.0.0.1', '::1');
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
EOF
}

db_password() {
  local f=$STACK_DIR/secrets/db-password
  if [[ ! -s $f ]]; then
    mkdir -p "$STACK_DIR/secrets"
    chmod 700 "$STACK_DIR/secrets"
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$f")
  fi
  cat "$f"
}

stop_db() {
  local part=$1 pid
  pid=$(running_pid "$part")
  [[ -n $pid ]] || return 0
  kill -TERM "$pid"
  wait_gone "$part" "$pid" 120
}

# ---------------------------------------------------------------------------------------------
# Broker and registry

STATE=$ROOT/scripts/registry-state.py

start_broker() {
  local part=$1 port dir
  port=$(port_of "$part")
  dir=$STACK_DIR/$part
  mkdir -p "$dir"
  local storage
  case $BROKER_STORAGE in
    # tansu resolves sqlite://NAME against its working directory: .stack/<part>/<part>.db
    sqlite) storage="sqlite://$part.db" ;;
    memory)
      storage="memory://tansu/"
      log "warning: $part: memory storage keeps nothing across a restart, and tansu 0.6.0 answers watermarks, fetches inside a batch and time lookups wrongly with it (README.md, caveats)"
      ;;
    *) die "BROKER_STORAGE must be sqlite or memory, not '$BROKER_STORAGE'" ;;
  esac
  [[ -x $TANSU_BIN ]] || die "tansu not found (TANSU_BIN='$TANSU_BIN'); run 'make tools', which installs the pinned version"
  echo "$BROKER_STORAGE" >"$dir/storage"
  # tansu also reads settings from the environment (SCHEMA_REGISTRY would make it validate
  # records against its own schema store): start it with only what is given here.
  spawn "$part" "$dir" env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT -u CLUSTER_ID \
    -u LISTENER_URL -u ADVERTISED_LISTENER_URL -u STORAGE_ENGINE NO_COLOR=1 \
    "$TANSU_BIN" broker \
    --kafka-cluster-id "continuum-$(site_of "$part")" \
    --kafka-listener-url "tcp://127.0.0.1:$port" \
    --kafka-advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage"
  wait_until "Kafka metadata on port $port" 60 "$part" broker_ok "$port"
  if [[ $BROKER_STORAGE == sqlite ]]; then
    index_headers "$dir/$part.db" || die "$part: could not index the header table of $dir/$part.db"
  fi
}

# tansu 0.6.0's sqlite schema has no index on header(topition, offset_id), and every fetched
# record looks its headers up by those columns: each fetch scans the whole header table, so
# reads slow down with every record ever written (20k records took minutes to read back once
# the table held 480k headers). The index makes the lookup a seek. tansu creates its tables
# with IF NOT EXISTS and leaves the index alone. tests/tests/stack.rs checks it is in place.
index_headers() {
  python3 - "$1" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=60)
c.execute("CREATE INDEX IF NOT EXISTS continuum_header_topition_offset ON header (topition, offset_id)")
c.commit()
PY
}

# Healthy means it answers a Kafka Metadata request, not merely that the port accepts.
broker_ok() { python3 "$STATE" broker-topics "127.0.0.1:$1" >/dev/null 2>&1; }

# The registry (rivven-schema) keeps schemas in memory only and numbers ids from 1 after a
# restart, while the broker keeps records that carry the old ids. So a graceful stop dumps the
# registry to .stack/<part>/schemas.json and the next start replays it, checking that every id
# comes back the same. A registry that lost its schemas (killed, no dump) next to a broker that
# holds topics refuses to start: those records could decode with the wrong schema.
start_registry() {
  local part=$1 port dir dump broker topics
  port=$(port_of "$part")
  dir=$STACK_DIR/$part
  dump=$dir/schemas.json
  broker=$(site_of "$part")-broker
  mkdir -p "$dir"
  [[ -x $RIVVEN_SCHEMA_BIN ]] || die "rivven-schema not found (RIVVEN_SCHEMA_BIN='$RIVVEN_SCHEMA_BIN'); run 'make tools', which installs the pinned version"
  need python3
  if [[ ! -f $dump ]]; then
    [[ -n $(running_pid "$broker") ]] ||
      die "$part: start $broker first; with no schema dump the registry must check that the broker holds no data"
    topics=$(python3 "$STATE" broker-topics "127.0.0.1:$(port_of "$broker")") ||
      die "$part: could not list the topics of $broker"
    if [[ -n $topics ]]; then
      local n
      n=$(wc -l <<<"$topics")
      die "$part: refusing to start an empty registry. It was not stopped with 'scripts/stack.sh stop $part' or 'make down' (killed?), so there is no schema dump ($dump), and $broker holds $n topic(s) ($(head -n 3 <<<"$topics" | paste -sd, -)$( ((n > 3)) && echo ', ...')) whose records name schema ids this registry no longer has. A fresh registry would hand those ids to new schemas, and old records would decode with the wrong schema. 'make clean' deletes the whole stack (.stack/) and starts over."
    fi
  fi
  spawn "$part" "$dir" env NO_COLOR=1 "$RIVVEN_SCHEMA_BIN" serve --host 127.0.0.1 --port "$port"
  wait_until "its REST API on $port" 60 "$part" registry_ok "$port"
  if [[ -f $dump ]]; then
    if ! python3 "$STATE" restore "http://127.0.0.1:$port" "$dump" >>"$STACK_DIR/logs/$part.log" 2>&1; then
      # Never leave a half-restored registry serving, and never dump it over the good dump.
      local pid
      pid=$(running_pid "$part")
      [[ -z $pid ]] || kill -KILL "$pid"
      rm -f "$(pidfile "$part")"
      tail -n 25 "$STACK_DIR/logs/$part.log" >&2 || true
      die "$part: restoring $dump failed (see above and $STACK_DIR/logs/$part.log); the registry is stopped and the dump kept. 'make clean' starts over."
    fi
    tail -n 1 "$STACK_DIR/logs/$part.log" | sed "s/^/[stack] $part: /" >&2
    # From now on the live registry is the truth; a later kill -9 must not find this dump and
    # replay a state older than the records written meanwhile.
    mv "$dump" "$dir/schemas.restored.json"
  fi
}

registry_ok() { curl -fsS "http://127.0.0.1:$1/subjects" >/dev/null 2>&1; }

stop_registry() {
  local part=$1 pid dir
  pid=$(running_pid "$part")
  [[ -n $pid ]] || return 0
  dir=$STACK_DIR/$part
  mkdir -p "$dir"
  if [[ -n ${NO_DUMP:-} ]]; then # `clean`: everything is about to be deleted anyway
    kill -TERM "$pid"
    wait_gone "$part" "$pid" 30
    return 0
  fi
  if ! python3 "$STATE" dump "http://127.0.0.1:$(port_of "$part")" "$dir/schemas.json" 2>&1 |
    sed "s/^/[stack] $part: /" >&2; then
    die "$part: could not dump its schemas, so it is left running (stopping it would lose them); see the message above"
  fi
  kill -TERM "$pid"
  wait_gone "$part" "$pid" 30
}

stop_plain() {
  local part=$1 pid
  pid=$(running_pid "$part")
  [[ -n $pid ]] || return 0
  kill -TERM "$pid"
  wait_gone "$part" "$pid" 30
}

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

# ---------------------------------------------------------------------------------------------

start_part() {
  local part=$1 port pid
  port=$(port_of "$part")
  pid=$(running_pid "$part")
  if [[ -n $pid ]]; then
    # Already ours and running: only make sure it is healthy.
    wait_until "health" 60 "$part" healthy "$part"
    return 0
  fi
  port_free "$part" || exit 1
  log "starting $part on 127.0.0.1:$port"
  case $part in
    *-db) start_db "$part" ;;
    *-broker) start_broker "$part" ;;
    *-registry) start_registry "$part" ;;
  esac
}

# Whether a stopped part's port is free; if not, says who holds it and what to do.
port_free() {
  local part=$1 port holder
  port=$(port_of "$part")
  # A listener that has just died can take a moment to let go of its port; give it a few seconds
  # before blaming someone else.
  local deadline=$((SECONDS + 5))
  while port_open "$port"; do
    ((SECONDS < deadline)) || break
    sleep 0.2
  done
  port_open "$port" || return 0
  holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(.*)' | head -n 1 || true)
  log "error: $part: port $port is in use by a process this stack did not start${holder:+ ($holder)}; stop it, or move this part with $(upper "$(site_of "$part")")_$(kind_var "$part")_PORT=..."
  return 1
}

healthy() {
  case $1 in
    *-db) db_ping "$1" ;;
    *-broker) broker_ok "$(port_of "$1")" ;;
    *-registry) registry_ok "$(port_of "$1")" ;;
  esac
}

kind_var() {
  case $1 in *-db) echo DB ;; *-broker) echo BROKER ;; *-registry) echo REGISTRY ;; esac
}

stop_part() {
  case $1 in
    *-db) stop_db "$1" ;;
    *-registry) stop_registry "$1" ;;
    *) stop_plain "$1" ;;
  esac
}

kill_part() {
  local pid
  pid=$(running_pid "$1")
  [[ -n $pid ]] || die "$1 is not running"
  kill -KILL "$pid"
  while alive "$pid"; do sleep 0.1; done
  rm -f "$(pidfile "$1")"
}

write_env() {
  local pw tmp
  pw=$(db_password)
  tmp=$(mktemp "$STACK_DIR/env.XXXXXX")
  cat >"$tmp" <<EOF
# Written by scripts/stack.sh; source it: . .stack/env
export STACK_DIR='$STACK_DIR'
export SF_DB_HOST='$SF_DB_HOST' SF_DB_PORT='$SF_DB_PORT'
export EU_DB_HOST='$EU_DB_HOST' EU_DB_PORT='$EU_DB_PORT'
export SF_DB_USER='$CONTINUUM_DB_USER' SF_DB_PASSWORD='$pw'
export EU_DB_USER='$CONTINUUM_DB_USER' EU_DB_PASSWORD='$pw'
export SF_DB_ADMIN_USER='root' SF_DB_ADMIN_PASSWORD=''
export EU_DB_ADMIN_USER='root' EU_DB_ADMIN_PASSWORD=''
export SF_DB_SOCKET='$(db_socket sf-db)' EU_DB_SOCKET='$(db_socket eu-db)'
export SF_BROKERS='127.0.0.1:$SF_BROKER_PORT' EU_BROKERS='127.0.0.1:$EU_BROKER_PORT'
export SF_REGISTRY='http://127.0.0.1:$SF_REGISTRY_PORT' EU_REGISTRY='http://127.0.0.1:$EU_REGISTRY_PORT'
export BROKER_STORAGE='$BROKER_STORAGE'
# What scripts/stack.sh needs to start or stop one part with these same settings.
export SF_BROKER_PORT='$SF_BROKER_PORT' EU_BROKER_PORT='$EU_BROKER_PORT'
export SF_REGISTRY_PORT='$SF_REGISTRY_PORT' EU_REGISTRY_PORT='$EU_REGISTRY_PORT'
export CONTINUUM_DB_USER='$CONTINUUM_DB_USER'
export TANSU_BIN='$TANSU_BIN' RIVVEN_SCHEMA_BIN='$RIVVEN_SCHEMA_BIN'
# TLS: the CA that signed every server certificate of the stack (MariaDB), a client
# certificate, and whether the continuum users must use TLS. See "TLS" in scripts/stack.sh.
export STACK_TLS_CA='$TLS_DIR/ca.pem' STACK_TLS_DIR='$TLS_DIR' STACK_DB_REQUIRE_TLS='$STACK_DB_REQUIRE_TLS'
# So that Continuum's binaries started from a shell (or a test) that sourced this file reach
# either MariaDB over TLS, verifying its name, as the continuum users require.
export CONTINUUM_DB_TLS_CA_FILE='$TLS_DIR/ca.pem' CONTINUUM_SF_DB_TLS_CA_FILE='$TLS_DIR/ca.pem' CONTINUUM_EU_DB_TLS_CA_FILE='$TLS_DIR/ca.pem'
EOF
  chmod 600 "$tmp"
  mv "$tmp" "$STACK_DIR/env"
}

status() {
  local part pid
  for part in "${PARTS[@]}"; do
    pid=$(running_pid "$part")
    if [[ -n $pid ]]; then
      printf '%-12s running  pid %-8s 127.0.0.1:%s\n' "$part" "$pid" "$(port_of "$part")"
    else
      printf '%-12s stopped\n' "$part"
    fi
  done
}

valid_part() {
  local p
  for p in "${PARTS[@]}"; do [[ $p == "$1" ]] && return 0; done
  die "unknown part '$1'; parts are: ${PARTS[*]}"
}

cmd=${1:-}
case $cmd in
  up)
    mkdir -p "$STACK_DIR"
    # Check every port first, so a clash stops `up` before it starts anything.
    clash=0
    for part in "${PARTS[@]}"; do
      [[ -n $(running_pid "$part") ]] || port_free "$part" || clash=1
    done
    ((clash == 0)) || die "nothing was started"
    for part in "${PARTS[@]}"; do start_part "$part"; done
    for part in sf-db eu-db; do db_tls_check "$part"; done
    write_env
    status
    ;;
  down)
    for part in sf-registry eu-registry sf-broker eu-broker sf-db eu-db; do stop_part "$part"; done
    ;;
  clean)
    NO_DUMP=1 "$0" down
    rm -rf "$STACK_DIR"
    ;;
  status) status ;;
  role)
    [[ $# -eq 3 ]] || die "usage: $0 role sf-db|eu-db primary|replica"
    valid_part "$2"
    [[ $2 == *-db ]] || die "only a database has a role"
    set_role "$2" "$3"
    ;;
  start | stop | kill)
    [[ $# -eq 2 ]] || die "usage: $0 $cmd PART"
    valid_part "$2"
    case $cmd in
      start) start_part "$2"; [[ -f $STACK_DIR/env ]] || write_env ;;
      stop) stop_part "$2" ;;
      kill) kill_part "$2" ;;
    esac
    ;;
  *) die "usage: $0 up|down|clean|status|start PART|stop PART|kill PART" ;;
esac
