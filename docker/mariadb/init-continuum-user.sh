# Creates the least-privilege `continuum` user. Its GRANT statements are the one list of
# Continuum's grants: the local stack reads them from here for its own user (scripts/stack.sh,
# continuum_grants_sql). README.md "Grants" says which binary needs which.
#
# Mounted into /docker-entrypoint-initdb.d/. The MariaDB image's entrypoint *sources* it (it is
# not executable) once, on the first start with an empty data directory, while its temporary
# server runs without networking; docker_process_sql, docker_sql_escape_string_literal and
# mysql_error are the entrypoint's functions. The password comes from the compose secret
# mounted at /run/secrets/db-password (CONTINUUM_DB_PASSWORD_FILE names another file), never
# from this file or compose.yml.
#
# The user is 'continuum'@'%': this MariaDB is reachable only on its site's network
# (docker/compose.yml), where the site's producer and consumer connect from their own containers.

continuum_password_file=${CONTINUUM_DB_PASSWORD_FILE:-/run/secrets/db-password}
if [ ! -r "$continuum_password_file" ] || [ ! -s "$continuum_password_file" ]; then
  mysql_error "$continuum_password_file is missing, empty or unreadable by the mysql user (uid $(id -u)): run docker/make-secrets.sh (docs/deployment.md, Secrets)"
fi
continuum_password=$(docker_sql_escape_string_literal "$(<"$continuum_password_file")")

# Logins are each server's own business: keep them out of the binlog, and so out of the
# changelog and the GTID sequence, as the local stack does.
docker_process_sql --binary-mode <<EOSQL
SET SESSION sql_log_bin=0;
CREATE USER IF NOT EXISTS 'continuum'@'%' IDENTIFIED BY '${continuum_password}';
ALTER USER 'continuum'@'%' IDENTIFIED BY '${continuum_password}';
GRANT REPLICATION SLAVE, BINLOG MONITOR, REPLICATION MASTER ADMIN, BINLOG ADMIN ON *.* TO 'continuum'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES, CREATE VIEW, SHOW VIEW, CREATE TEMPORARY TABLES,
      READ_ONLY ADMIN ON *.* TO 'continuum'@'%';
EOSQL
unset continuum_password continuum_password_file
mysql_note "created user 'continuum'@'%' with Continuum's grants"
