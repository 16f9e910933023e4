#!/bin/bash
# Writes the secrets docker/compose.yml mounts, if they are missing: a random password per file,
# in docker/secrets/ (git ignores its contents). Existing files are kept, so running it again
# changes nothing. docs/deployment.md, "Secrets", explains the modes.
#
#   sf-db-root-password  eu-db-root-password   MariaDB root (root@localhost only)
#   sf-db-password       eu-db-password        the `continuum` user of each site's MariaDB
#
# Compose mounts secret files into the containers as they are on the host (bind mounts: the
# `mode` and `uid` of a compose secret are not applied without Swarm), and the containers read
# them as non-root users (mysql, uid 999; continuum, uid 10001). So each file is readable by
# everyone (0644), and the directory is closed to everyone but its owner (0700): other users of
# this machine cannot reach the files, the containers can.
set -euo pipefail

dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets
mkdir -p "$dir"
chmod 700 "$dir"
for name in sf-db-root-password sf-db-password eu-db-root-password eu-db-password; do
  f=$dir/$name
  if [[ -s $f ]]; then
    echo "kept    $f"
  else
    # 24 random bytes, base64 without the characters that need quoting somewhere.
    (umask 022 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$f")
    echo "created $f"
  fi
  chmod 644 "$f"
done
