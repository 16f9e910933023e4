#!/bin/bash
# Shows or changes this MariaDB's role (primary or replica), inside its container:
#
#   docker compose -f docker/compose.yml exec eu-db bash /usr/local/bin/continuum-role
#   docker compose -f docker/compose.yml exec eu-db bash /usr/local/bin/continuum-role primary
#
# The role is written to the data volume, where start.sh reads it at every start, and, when the
# server runs, applied at once (SET GLOBAL read_only) through root's local socket. To change the
# role of a server that is down before it starts again (the old primary after a failover), run
# it in a one-off container of the service, which shares the volume and starts no server:
#
#   docker compose -f docker/compose.yml run --rm --no-deps sf-db bash /usr/local/bin/continuum-role replica
#
# `continuum-consumer promote` changes read_only at run time only; the failover drill
# (docs/deployment.md) records each new role with this script.
set -euo pipefail

role_file=/var/lib/mysql/.continuum-role
sql() { MYSQL_PWD=$(</run/secrets/db-root-password) mariadb --protocol=socket -uroot -N -B -e "$1" 2>/dev/null; }
read_only() { sql 'SELECT IF(@@read_only, "ON", "OFF")' || echo "unknown (the server is not running)"; }

case ${1:-} in
  '')
    echo "role: $(cat "$role_file" 2>/dev/null || echo unknown)  read_only: $(read_only)"
    ;;
  primary | replica)
    echo "$1" >"$role_file"
    if sql "SET GLOBAL read_only = $([[ $1 == replica ]] && echo ON || echo OFF)"; then
      echo "this server is now the $1 (read_only=$(read_only))"
    else
      echo "recorded: this server is the $1; it is not running, and starts with read_only=$([[ $1 == replica ]] && echo ON || echo OFF)"
    fi
    ;;
  *)
    echo "usage: continuum-role [primary|replica]" >&2
    exit 2
    ;;
esac
