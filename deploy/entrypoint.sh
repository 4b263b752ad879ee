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
exec "$@"
