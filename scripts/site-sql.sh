# shellcheck shell=bash
# Sourced by the demo and the drill (after `.stack/env`): `site_sql SITE ARGS...` runs the
# mariadb client as the stack's admin at SITE (sf or eu), printing bare tab-separated rows;
# ARGS are the client's, e.g. -e "SELECT 1".
site_sql() {
  local site=$1
  shift
  local S
  S=$(tr '[:lower:]' '[:upper:]' <<<"$site")
  local h=${S}_DB_HOST p=${S}_DB_PORT u=${S}_DB_ADMIN_USER pw=${S}_DB_ADMIN_PASSWORD
  mariadb --no-defaults --default-character-set=utf8mb4 -h"${!h}" -P"${!p}" -u"${!u}" ${!pw:+-p"${!pw}"} -N -B "$@"
}
