#!/bin/sh
# The proxy's TLS certificate, fetched from ACM at every task start: the `proxy-cert`
# container of the proxy task (audit-shipper image: AWS CLI, openssl, jq) runs this once and
# exits; the proxy starts only after it succeeded (dependsOn SUCCESS). It exports the ACM
# Private CA certificate ACM_CERTIFICATE_ARN (private certificates are exportable; the
# task role may export this one only), decrypts its key, and writes tls.crt (the chain
# included) and tls.key (mode 600) into CERT_DIR, the task-local volume the proxy reads
# them from. ACM renews the certificate before it expires; the renewal's "ACM Certificate
# Available" event rolls the proxy service (terraform/modules/stack/proxy_cert.tf), and the
# new tasks fetch the renewed certificate here. Key material only in files, never in
# arguments or the environment.
set -eu
: "${ACM_CERTIFICATE_ARN:?}"
CERT_DIR=${CERT_DIR:-/run/dbgw}
umask 077
pass="$CERT_DIR/.export-pass"
export_json="$CERT_DIR/.export.json"
key_enc="$CERT_DIR/.key.enc"
trap 'rm -f "$pass" "$export_json" "$key_enc" "$CERT_DIR/tls.key.new" "$CERT_DIR/tls.crt.new"' EXIT
log() { printf '{"level":"%s","msg":"%s"}\n' "$1" "$2" >&2; }

openssl rand -hex 32 | tr -d '\n' >"$pass"
tries=0
# ACM_ENDPOINT_URL: an emulator's endpoint (make test-containers); unset in AWS.
endpoint=""
[ -z "${ACM_ENDPOINT_URL:-}" ] || endpoint="--endpoint-url=$ACM_ENDPOINT_URL"
# shellcheck disable=SC2086
until aws acm export-certificate $endpoint --certificate-arn "$ACM_CERTIFICATE_ARN" --passphrase "fileb://$pass" --output json >"$export_json"; do
  tries=$((tries + 1))
  [ $tries -lt 5 ] || { log error "acm export-certificate failed 5 times"; exit 1; }
  sleep $((tries * 2))
done
jq -r '.PrivateKey' "$export_json" >"$key_enc"
openssl pkey -in "$key_enc" -passin "file:$pass" -out "$CERT_DIR/tls.key.new"
{ jq -r '.Certificate' "$export_json"; jq -r '.CertificateChain // empty' "$export_json"; } >"$CERT_DIR/tls.crt.new"
# The key must belong to the certificate.
[ "$(openssl x509 -in "$CERT_DIR/tls.crt.new" -noout -pubkey)" = "$(openssl pkey -in "$CERT_DIR/tls.key.new" -pubout)" ] ||
  { log error "exported key does not match the certificate"; exit 1; }
mv "$CERT_DIR/tls.key.new" "$CERT_DIR/tls.key"
mv "$CERT_DIR/tls.crt.new" "$CERT_DIR/tls.crt"
log info "wrote the certificate of $ACM_CERTIFICATE_ARN (not after $(openssl x509 -in "$CERT_DIR/tls.crt" -noout -enddate | cut -d= -f2)) to $CERT_DIR"
