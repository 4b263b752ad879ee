#!/bin/sh
# Entrypoint of the dbgw service images. ECS can inject secrets only as environment
# variables, and the services read certificates from files: this writes the PEM values it
# is handed (TLS_CERT_PEM, TLS_KEY_PEM, CA_PEM) to /run/dbgw (a task-local volume, mode 600),
# removes them from the environment, and runs the service, so they never reach its
# environment, its arguments or its logs.
set -eu
umask 077
write_pem() { # variable, file name
  eval "value=\${$1:-}"
  if [ -n "$value" ]; then
    printf '%s\n' "$value" >"/run/dbgw/$2"
  fi
  unset "$1"
}
write_pem TLS_CERT_PEM tls.crt
write_pem TLS_KEY_PEM tls.key
write_pem CA_PEM ca.pem
value=
# In ECS, a proxy replica is named by its task id (its audit chain's name, and the prefix
# the audit shipper files it under) unless configured otherwise.
case "${1:-}" in *proxy) is_proxy=1 ;; *) is_proxy=0 ;; esac
if [ $is_proxy = 1 ] && [ -z "${PROXY_FLEET__REPLICA:-}" ] && [ -n "${ECS_CONTAINER_METADATA_URI_V4:-}" ] && command -v curl >/dev/null; then
  task=$(curl -fsS --max-time 2 "$ECS_CONTAINER_METADATA_URI_V4/task" | sed -n 's/.*"TaskARN":"[^"]*\/\([^"/]*\)".*/\1/p') || task=
  [ -z "$task" ] || export PROXY_FLEET__REPLICA="$task"
fi
exec "$@"
