#!/bin/bash
# continuum-healthcheck: the image's HEALTHCHECK. Asks GET /health of the Continuum process that
# serves in this container, using only bash (/dev/tcp) and coreutils (timeout): no curl.
#
# Which address: CONTINUUM_HEALTH_ADDR (host:port) if set; otherwise the producer's and the
# consumer's metrics addresses, from CONTINUUM_PRODUCER_METRICS_LISTEN and
# CONTINUUM_CONSUMER_METRICS_LISTEN when set, else their ports 9101 and 9102 on 127.0.0.1.
# A wildcard listen address (0.0.0.0, [::]) is asked on loopback. If your config file moves
# metrics_listen to another port, set CONTINUUM_HEALTH_ADDR.
#
# Healthy (exit 0): an address answers 200. Unhealthy (exit 1): an address answers anything
# else (503: a component has failed), or none answers. /health answers 200 while the process is
# starting, too: "healthy" means serving and nothing failed, not "caught up" (see /metrics).
set -u

probe() {
  local addr=$1 host port status
  port=${addr##*:}
  host=${addr%:*}
  host=${host#[}
  host=${host%]}
  case $host in '' | 0.0.0.0) host=127.0.0.1 ;; :: ) host=::1 ;; esac
  # The child bash owns the connection; timeout bounds connect, request and reply together.
  # shellcheck disable=SC2016 # $1 and $2 are the child's arguments, expanded by the child
  status=$(timeout 2 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "GET /health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" "$1" >&3
    IFS= read -r line <&3 || exit 1
    printf "%s" "$line"
  ' probe "$host" "$port" 2>/dev/null) || return 2   # nothing listens there (or no reply)
  case $status in
    "HTTP/1."?" 200 "*) echo "healthy: $host:$port ${status%$'\r'}"; return 0 ;;
    *) echo "unhealthy: $host:$port ${status%$'\r'}"; return 1 ;;
  esac
}

if [[ -n ${CONTINUUM_HEALTH_ADDR:-} ]]; then
  addrs=("$CONTINUUM_HEALTH_ADDR")
else
  addrs=("${CONTINUUM_PRODUCER_METRICS_LISTEN:-127.0.0.1:9101}" "${CONTINUUM_CONSUMER_METRICS_LISTEN:-127.0.0.1:9102}")
fi

for a in "${addrs[@]}"; do
  probe "$a"
  case $? in
    0) exit 0 ;;
    1) exit 1 ;;
  esac
done
echo "unhealthy: nothing answers /health on ${addrs[*]}"
exit 1
