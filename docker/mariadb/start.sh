#!/bin/bash
# The MariaDB containers' command (docker/compose.yml): starts the image's own entrypoint with
# read_only set from this server's role, as the local stack does (scripts/stack.sh, db_role).
#
#   primary   read_only=OFF: takes the applications' writes
#   replica   read_only=ON: refuses writes from everyone but holders of READ_ONLY ADMIN, which
#             is Continuum's apply; `continuum-consumer promote` refuses a site that is already
#             primary, and tells the two apart by read_only
#
# The role is kept in the data volume (/var/lib/mysql/.continuum-role), so a restart keeps it.
# A new volume takes CONTINUUM_DB_ROLE (compose: primary at SF, replica at EU). After a promotion
# or a switchover, record the new roles with role.sh (docs/deployment.md, the failover drill):
# promote changes read_only at run time only.
set -euo pipefail

role_file=/var/lib/mysql/.continuum-role
if [[ ! -s $role_file ]]; then
  case ${CONTINUUM_DB_ROLE:-} in
    primary | replica) ;;
    *) echo "start.sh: CONTINUUM_DB_ROLE must be primary or replica (got '${CONTINUUM_DB_ROLE:-}')" >&2; exit 1 ;;
  esac
  mkdir -p "${role_file%/*}"
  echo "$CONTINUUM_DB_ROLE" >"$role_file"
fi
role=$(<"$role_file")
case $role in
  primary) read_only=OFF ;;
  replica) read_only=ON ;;
  *) echo "start.sh: $role_file says '$role'; expected primary or replica" >&2; exit 1 ;;
esac
echo "start.sh: this server is the $role (read_only=$read_only)"
exec docker-entrypoint.sh mariadbd --read-only="$read_only" "$@"
