#!/usr/bin/env bash
# The local two-site stack: two MariaDB servers, two Apache Kafka brokers (KRaft) and two
# Apicurio schema registries (Confluent-compatible API), as native processes on loopback.
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
set -Eeuo pipefail
# A command that fails under `set -e` ends the script; say which one, so no failure is silent
# (`stack.sh kill` once exited 1 with no output; that was `alive`, see there).
trap 'log "error: line $LINENO: \`$BASH_COMMAND\` exited $? (${FUNCNAME[*]:-main})"' ERR

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
CONTINUUM_DB_USER=${CONTINUUM_DB_USER:-continuum}
# Where the pinned Kafka and Apicurio are installed, and the Python that talks to Kafka (a venv
# with confluent-kafka): the Makefile passes what `make tools` installed.

PARTS=(sf-db eu-db sf-broker eu-broker sf-registry eu-registry)

need() {
  command -v "$1" >/dev/null || die "$1 is not on PATH; run 'make tools' (the Makefile installs it)"
}
log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# pidfile, wait_gone (they use log, above, and alive, below).
# shellcheck source=scripts/procs.sh
source "$ROOT/scripts/procs.sh"

# Whether process $1 still runs: it exists and some thread of it is not a zombie (a zombie has
# exited; only its parent, possibly not us, can reap it). Every thread counts, not only the main
# one: after SIGKILL the main thread can turn zombie while others are still exiting, and those hold
# the process's files, its listening socket included, until the last of them is gone.
alive() {
  local states
  # Read in a subshell: bash's own `$(<file)` on the stat file of a thread that is exiting ended
  # this whole script with status 1 and no message, no ERR trap (reproduced: a loop of 300
  # kill -9s of a 40-thread process died silently in each of three tries; with this, none did).
  # `cat` failing here only ends the subshell.
  states=$(cat /proc/"$1"/task/*/stat 2>/dev/null | sed 's/.*) //' | cut -d' ' -f1) || true
  [[ $states == *[!Z[:space:]]* ]]
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
    *-broker) [[ $exe == */java ]] && is_main "$pid" kafka.Kafka ;;
    *-registry) [[ $exe == */java ]] && is_main "$pid" quarkus-run.jar ;;
  esac || return 0
  echo "$pid"
}

# Whether the JVM $1 runs $2 (its main class or jar is one of its arguments).
is_main() {
  local arg
  while IFS= read -r -d '' arg; do
    [[ $arg == "$2" || $arg == */"$2" ]] && return 0
  done <"/proc/$1/cmdline" 2>/dev/null
  return 1
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
}

db_ping() { db_root "$1" -e 'SELECT 1' >/dev/null 2>&1; }

# The GRANT statements of Continuum's user, for the account $1 (e.g. 'continuum'@'127.0.0.1'),
# as docker/mariadb/init-continuum-user.sh gives them to 'continuum'@'%': that file holds the
# one list of them, so the stack's user and the Docker images' have the same grants.
continuum_grants_sql() {
  local account=$1 grants
  grants=$(awk '/^GRANT /{on=1} on{print} /;$/{on=0}' "$ROOT/docker/mariadb/init-continuum-user.sh")
  [[ $grants == GRANT*";" ]] || die "no GRANT statements in docker/mariadb/init-continuum-user.sh"
  echo "${grants//"'continuum'@'%'"/$account}"
}

# The `continuum` user. Both binaries run at both sites (producer and `consumer run`), so one user
# holds the union of their grants; README.md lists which binary needs which.
db_provision() {
  local part=$1 pw grants
  pw=$(stack_secret db-password)
  grants=$(continuum_grants_sql "'$CONTINUUM_DB_USER'@'127.0.0.1'")
  # Logins are each server's own business: keep them out of the binlog (and out of the GTID
  # sequence a replica or a test follows).
  db_root "$part" <<EOF
SET SESSION sql_log_bin=0;
CREATE USER IF NOT EXISTS '$CONTINUUM_DB_USER'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER '$CONTINUUM_DB_USER'@'127.0.0.1' IDENTIFIED BY '$pw';
$grants
$(db_tls_require_sql)
-- root may only log in from this machine; the stack is local only.
DELETE FROM mysql.global_priv WHERE User='root' AND Host NOT IN ('localhost', '127.0.0.1', '::1');
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
EOF
}

# The stack's password NAME (db-password, kafka-password): made once, random, readable only by
# this user, under $STACK_DIR/secrets.
stack_secret() {
  local f=$STACK_DIR/secrets/$1
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
# Broker: Apache Kafka, one KRaft node per site (broker and controller in one JVM), from the jars
# `make tools` put under $KAFKA_HOME/libs (tools/kafka/pom.xml). Four listeners per site, each
# on loopback:
#
#   <SITE>_BROKER_PORT      PLAINTEXT   what the stack's pipeline and most tests use
#   <SITE>_BROKER_PORT + 1  CONTROLLER  the KRaft controller (never given to clients)
#   <SITE>_BROKER_PORT + 2  SSL         TLS, with a client certificate required (mutual TLS)
#   <SITE>_BROKER_PORT + 3  SASL_SSL    TLS, then SCRAM-SHA-512 (user continuum, password in
#                                       .stack/secrets/kafka-password)
#
# The server certificate is the stack's (for 127.0.0.1 and localhost, signed by .stack/tls/ca.pem),
# so clients verify the name. The node is formatted once (`kafka.tools.StorageTool format`, with
# the SCRAM credential); its data lives in .stack/<site>-broker/data. A record is in the page
# cache before it is acknowledged, so a kill -9 of the broker keeps every acknowledged record;
# only a crash of the machine itself could lose the unflushed tail (Kafka relies on replication
# for that, and the local stack has one node per site).

KAFKA_HOME=${KAFKA_HOME:-}
APICURIO_HOME=${APICURIO_HOME:-}
STACK_PYTHON=${STACK_PYTHON:-}
BROKER_HEAP=${BROKER_HEAP:-512m}
REGISTRY_HEAP=${REGISTRY_HEAP:-384m}
KAFKA_SASL_USER=${KAFKA_SASL_USER:-continuum}

# The newest JDK under /usr/lib/jvm whose major version is at least $1 (Apicurio needs 21).
java_at_least() {
  local want=$1 best="" best_v=0 j v
  for j in /usr/lib/jvm/*/bin/java; do
    [[ -x $j && ! -L ${j%/bin/java} ]] || continue
    v=$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | head -n 1)
    v=${v%%.*}
    [[ $v =~ ^[0-9]+$ ]] || continue
    if ((v >= want && v > best_v)); then best=$j best_v=$v; fi
  done
  echo "$best"
}

broker_classpath() {
  [[ -n $KAFKA_HOME && -d $KAFKA_HOME/libs ]] ||
    die "Apache Kafka not found (KAFKA_HOME='$KAFKA_HOME'); run 'make tools', which installs the pinned version"
  local cp
  cp=$(printf '%s:' "$KAFKA_HOME"/libs/*.jar)
  echo "${cp%:}"
}

# The server key and certificate in one file, as Kafka's PEM keystore wants them.
broker_keystore() {
  local f=$TLS_DIR/kafka-server.pem
  if [[ ! -s $f || $TLS_DIR/server.pem -nt $f ]]; then
    (umask 077 && cat "$TLS_DIR/server.key" "$TLS_DIR/server.pem" >"$f")
  fi
  echo "$f"
}

broker_config() {
  local part=$1 port dir
  port=$(port_of "$part")
  dir=$STACK_DIR/$part
  cat <<EOF
# Written by scripts/stack.sh at every start; edits are lost.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$((port + 1))
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1)),SSL://127.0.0.1:$((port + 2)),SASL_SSL://127.0.0.1:$((port + 3))
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SSL://127.0.0.1:$((port + 2)),SASL_SSL://127.0.0.1:$((port + 3))
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
# One node: every internal topic at replication factor 1 (Kafka's defaults, 3 with min.isr 2,
# make transactions and group offsets fail), and few partitions, so that the first group or
# transaction does not wait for 50 partitions to be created.
default.replication.factor=1
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Topics are created on purpose, with their settings (Continuum sets max.message.bytes on the
# changelog topics it creates), never as a side effect of a client's metadata request.
auto.create.topics.enable=false
# message.max.bytes stays at Kafka's default (about 1 MiB), as on a real cluster: a topic
# created by Continuum raises it for itself with max.message.bytes.
#
# TLS: the stack's server certificate. Clients of the SSL listener must show a certificate from
# the stack's CA; the SASL_SSL listener asks for SCRAM-SHA-512 instead.
ssl.keystore.type=PEM
ssl.keystore.location=$(broker_keystore)
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.ssl.client.auth=none
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
}

broker_log_config() {
  cat <<'EOF'
# Written by scripts/stack.sh. The broker logs to its stdout, which the stack appends to
# .stack/logs/<part>.log.
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
# Every client the broker starts would print its whole configuration.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
EOF
}

start_broker() {
  local part=$1 dir cp java
  dir=$STACK_DIR/$part
  mkdir -p "$dir" "$STACK_DIR/logs"
  tls_ensure
  cp=$(broker_classpath)
  java=${BROKER_JAVA:-$(command -v java || true)}
  [[ -n $java && -x $java ]] || die "no java on PATH for the broker (set BROKER_JAVA); Kafka needs Java 17 or newer"
  broker_config "$part" >"$dir/server.properties"
  broker_log_config >"$dir/log4j2.properties"
  if [[ ! -f $dir/data/meta.properties ]]; then
    log "$part: formatting a new KRaft node in $dir/data"
    [[ -s $dir/cluster-id ]] ||
      "$java" -cp "$cp" kafka.tools.StorageTool random-uuid 2>>"$STACK_DIR/logs/$part.format.log" | tail -n 1 >"$dir/cluster-id"
    [[ -s $dir/cluster-id ]] || die "$part: could not make a cluster id; see $STACK_DIR/logs/$part.format.log"
    "$java" -cp "$cp" -Dlog4j2.configurationFile="$dir/log4j2.properties" kafka.tools.StorageTool format \
      -t "$(<"$dir/cluster-id")" -c "$dir/server.properties" --ignore-formatted \
      --add-scram "SCRAM-SHA-512=[name=$KAFKA_SASL_USER,password=$(stack_secret kafka-password)]" \
      >>"$STACK_DIR/logs/$part.format.log" 2>&1 ||
      die "$part: formatting failed; see $STACK_DIR/logs/$part.format.log"
  fi
  spawn "$part" "$dir" "$java" -Xms"$BROKER_HEAP" -Xmx"$BROKER_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$cp" kafka.Kafka "$dir/server.properties"
}

# scripts/kafka.py on the stack's Python (a venv with confluent-kafka that `make tools` makes).
kafka_py() {
  [[ -n $STACK_PYTHON && -x $STACK_PYTHON ]] ||
    die "the stack's Python (STACK_PYTHON='$STACK_PYTHON') is missing; run 'make tools'"
  "$STACK_PYTHON" "$ROOT/scripts/kafka.py" "$@"
}

# Healthy means the broker answers a Kafka Metadata request on its plaintext listener, not
# merely that the port accepts.
broker_ok() { kafka_py metadata "127.0.0.1:$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# Registry: Apicurio Registry 3 (its Quarkus distribution, from `make tools`), one per site,
# serving the Confluent Schema Registry API at http://127.0.0.1:<port>/apis/ccompat/v7. It keeps
# everything in a journal topic (kafkasql-journal) on its own site's broker and replays it at
# start, so schema ids survive a restart and a kill -9 with nothing to dump or restore. A
# registry needs its broker: the stack starts the broker first.

registry_url() { echo "http://127.0.0.1:$(port_of "$1")/apis/ccompat/v7"; }

start_registry() {
  local part=$1 port dir broker java
  port=$(port_of "$part")
  dir=$STACK_DIR/$part
  broker=$(site_of "$part")-broker
  mkdir -p "$dir" "$STACK_DIR/logs"
  [[ -n $APICURIO_HOME && -f $APICURIO_HOME/quarkus-run.jar ]] ||
    die "Apicurio Registry not found (APICURIO_HOME='$APICURIO_HOME'); run 'make tools', which installs the pinned version"
  java=${REGISTRY_JAVA:-$(java_at_least 21)}
  [[ -n $java && -x $java ]] || die "$part: Apicurio Registry 3 needs Java 21 or newer, and none was found under /usr/lib/jvm (set REGISTRY_JAVA)"
  [[ -n $(running_pid "$broker") ]] || die "$part: start $broker first; the registry keeps its schemas there"
  # The management interface (health, metrics) takes the port after the API's, on loopback.
  # GET /subjects lists at most apicurio.ccompat.max-subjects (1000 by default), where
  # Confluent's registry lists all; the suites' subjects pass 1000 on a long-lived stack.
  spawn "$part" "$dir" env \
    APICURIO_STORAGE_KIND=kafkasql \
    APICURIO_KAFKASQL_BOOTSTRAP_SERVERS="127.0.0.1:$(port_of "$broker")" \
    QUARKUS_HTTP_HOST=127.0.0.1 QUARKUS_HTTP_PORT="$port" \
    QUARKUS_MANAGEMENT_HOST=127.0.0.1 QUARKUS_MANAGEMENT_PORT="$((port + 1))" \
    QUARKUS_HTTP_ACCESS_LOG_ENABLED=false \
    APICURIO_CCOMPAT_MAX_SUBJECTS=1000000 \
    "$java" -Xms128m -Xmx"$REGISTRY_HEAP" -Djava.awt.headless=true \
    -jar "$APICURIO_HOME/quarkus-run.jar"
}

# Ready means the management interface's readiness check passes, which it does only once the
# journal is replayed: before that the API already answers, but as an empty registry (every old
# id 404, and /subjects an empty list), which is how a restart seemed to lose schemas. Each
# request is bounded: one that never got an answer (seen once, while the broker under the
# registry was being restarted) held `up` past its own deadline, until the chaos test failed.
registry_ok() {
  curl -fsS --max-time 10 "http://127.0.0.1:$(($1 + 1))/health/ready" >/dev/null 2>&1 &&
    curl -fsS --max-time 10 "http://127.0.0.1:$1/apis/ccompat/v7/subjects" >/dev/null 2>&1
}

stop_plain() {
  local part=$1 secs=${2:-30} pid
  pid=$(running_pid "$part")
  [[ -n $pid ]] || return 0
  kill -TERM "$pid"
  wait_gone "$part" "$pid" "$secs"
}

# ---------------------------------------------------------------------------------------------

# Starts a stopped part without waiting for it (a part already running is left alone). A
# MariaDB server is waited for here: it is quick, and provisioning needs it.
launch_part() {
  local part=$1 port
  port=$(port_of "$part")
  [[ -z $(running_pid "$part") ]] || return 0
  port_free "$part" || exit 1
  log "starting $part on 127.0.0.1:$port"
  case $part in
    *-db) start_db "$part" ;;
    *-broker) start_broker "$part" ;;
    *-registry) start_registry "$part" ;;
  esac
}

# Waits until a part answers; then finishes what needs it running.
await_part() {
  local part=$1 secs
  case $part in
    *-db) secs=120 ;;
    *-broker) secs=120 ;;
    *-registry) secs=180 ;;
  esac
  wait_until "health" "$secs" "$part" healthy "$part"
  # Users, grants and credentials on every `up`, running or not: a stack started by an older
  # version of this script gets what this one grants (each step is idempotent).
  if [[ $part == *-db ]]; then
    db_provision "$part"
  fi
  if [[ $part == *-broker ]]; then
    kafka_py scram "127.0.0.1:$(port_of "$part")" "$KAFKA_SASL_USER" "$STACK_DIR/secrets/kafka-password" \
      >>"$STACK_DIR/logs/$part.log" 2>&1 ||
      die "$part: could not set the SCRAM-SHA-512 credential of user $KAFKA_SASL_USER; see $STACK_DIR/logs/$part.log"
  fi
}

start_part() {
  launch_part "$1"
  await_part "$1"
}

# Every port a part listens on: a broker has four (plaintext, controller, TLS, SASL_SSL), a
# registry two (its API and its management interface).
ports_of() {
  local p
  p=$(port_of "$1")
  case $1 in
    *-db) echo "$p" ;;
    *-broker) echo "$p $((p + 1)) $((p + 2)) $((p + 3))" ;;
    *-registry) echo "$p $((p + 1))" ;;
  esac
}

# Whether a stopped part's ports are free; if not, says who holds one and what to do.
port_free() {
  local part=$1 port holder deadline
  for port in $(ports_of "$part"); do
    # A listener that has just died can take a moment to let go of its port; give it a few
    # seconds before blaming someone else.
    deadline=$((SECONDS + 5))
    while port_open "$port"; do
      ((SECONDS < deadline)) || break
      sleep 0.2
    done
    port_open "$port" || continue
    holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(.*)' | head -n 1 || true)
    log "error: $part: port $port is in use by a process this stack did not start${holder:+ ($holder)}; stop it, or move this part with $(upper "$(site_of "$part")")_$(kind_var "$part")_PORT=... (it uses ports $(ports_of "$part" | tr ' ' ','))"
    return 1
  done
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
    *-broker) stop_plain "$1" 120 ;;
    *) stop_plain "$1" 30 ;;
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
  pw=$(stack_secret db-password)
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
# The brokers' TLS (client certificate required) and SASL_SSL (SCRAM-SHA-512) listeners.
export SF_BROKERS_TLS='127.0.0.1:$((SF_BROKER_PORT + 2))' EU_BROKERS_TLS='127.0.0.1:$((EU_BROKER_PORT + 2))'
export SF_BROKERS_SASL='127.0.0.1:$((SF_BROKER_PORT + 3))' EU_BROKERS_SASL='127.0.0.1:$((EU_BROKER_PORT + 3))'
export STACK_KAFKA_SASL_MECHANISM='SCRAM-SHA-512' STACK_KAFKA_SASL_USER='$KAFKA_SASL_USER'
export STACK_KAFKA_SASL_PASSWORD='$(stack_secret kafka-password)' STACK_KAFKA_SASL_PASSWORD_FILE='$STACK_DIR/secrets/kafka-password'
# The URLs a Confluent Schema Registry client takes (Apicurio's Confluent-compatible API).
export SF_REGISTRY='$(registry_url sf-registry)' EU_REGISTRY='$(registry_url eu-registry)'
# What scripts/stack.sh needs to start or stop one part with these same settings.
export SF_BROKER_PORT='$SF_BROKER_PORT' EU_BROKER_PORT='$EU_BROKER_PORT'
export SF_REGISTRY_PORT='$SF_REGISTRY_PORT' EU_REGISTRY_PORT='$EU_REGISTRY_PORT'
export CONTINUUM_DB_USER='$CONTINUUM_DB_USER'
export KAFKA_HOME='$KAFKA_HOME' APICURIO_HOME='$APICURIO_HOME' STACK_PYTHON='$STACK_PYTHON'
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
    # Both databases, then both brokers together, then both registries together: a registry
    # needs its broker, and each JVM takes a while to start.
    for part in sf-db eu-db; do start_part "$part"; done
    for kind in broker registry; do
      for site in sf eu; do launch_part "$site-$kind"; done
      for site in sf eu; do await_part "$site-$kind"; done
    done
    for part in sf-db eu-db; do db_tls_check "$part"; done
    write_env
    status
    ;;
  down)
    # `make run`'s pipeline first, while the servers it talks to are still up (it stops
    # gracefully then). A pipeline left running would go on writing into whatever stack comes up
    # next, and after `clean` its PID files would be gone: nothing would show it any more.
    if [[ -f $STACK_DIR/env ]]; then
      STACK_DIR=$STACK_DIR "$ROOT/scripts/pipeline.sh" stop || die "could not stop the pipeline; the stack is left running"
    fi
    for part in sf-registry eu-registry sf-broker eu-broker sf-db eu-db; do stop_part "$part"; done
    ;;
  clean)
    "$0" down
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
