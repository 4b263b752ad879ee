#!/bin/sh
# The compose stack's PostgreSQL: on first start, `dbgw-db up` makes the cluster exactly as
# the local stack has it (TLS from its own CA, SCRAM, roles, the rates dump, the control
# plane) and puts the logins (and the approvals app's OpenID client secret) into the file
# secret store on the shared volume; it also issues
# the proxy's certificate from the same CA, and its client certificate for people's logins. Then PostgreSQL runs in the foreground.
set -eu
STATE=/var/lib/dbgw
PORT=${PGPORT:-5433}
# --no-pgaudit: the PostgreSQL images here have no pgaudit (the local stack's `make up` has it).
dbgw-db --secrets-dir "$STATE/secrets" up --dir "$STATE/pg" --port "$PORT" --no-pgaudit >/dev/null
# The approvals app's OpenID client secret: the development provider's published default
# (idp/server.js), kept in the secret store like a real one (as scripts/dev.sh does).
[ -f "$STATE/secrets/dbgw/approvals-oidc.json" ] ||
  (umask 077 && printf '{"client_secret":"dev-approvals-secret"}' >"$STATE/secrets/dbgw/approvals-oidc.json")
[ -f "$STATE/proxy/proxy.crt" ] || dbgw-db cert --ca-dir "$STATE/pg" --out "$STATE/proxy" --name proxy >/dev/null
# The proxy's client certificate: the cluster admits people's roles only with one from its
# client CA (pg_hba clientcert=verify-ca), so a person's password is useless elsewhere.
[ -f "$STATE/proxy/upstream-client.crt" ] ||
  dbgw-db cert --client --ca-dir "$STATE/pg" --out "$STATE/proxy" --name upstream-client >/dev/null
dbgw-db down --dir "$STATE/pg" >/dev/null
exec postgres -D "$STATE/pg/data" -p "$PORT"
