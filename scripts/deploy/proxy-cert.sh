#!/usr/bin/env bash
# Puts the proxy's TLS certificate into its secret: exports the ACM Private CA certificate
# (aws_acm_certificate.proxy; private certificates are exportable), decrypts its key, and
# stores {"cert", "key"} (PEM, the chain included) in the proxy-tls secret, which ECS injects
# into the proxy tasks. Run after the first apply and after each renewal (ACM renews private
# certificates before expiry; an EventBridge "ACM Certificate Available" rule can call this).
# Key material goes through files in a private temporary folder, never through arguments.
# Usage: proxy-cert.sh CERTIFICATE_ARN SECRET_ID
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 CERTIFICATE_ARN SECRET_ID" >&2; exit 2; }
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl rand -hex 32 | tr -d '\n' >"$tmp/pass"
aws acm export-certificate --certificate-arn "$1" --passphrase "fileb://$tmp/pass" --output json >"$tmp/export.json"
python3 - "$tmp" <<'PY'
import json, subprocess, sys
tmp = sys.argv[1]
export = json.load(open(f"{tmp}/export.json"))
open(f"{tmp}/key.enc", "w").write(export["PrivateKey"])
subprocess.run(["openssl", "pkey", "-in", f"{tmp}/key.enc", "-passin", f"file:{tmp}/pass", "-out", f"{tmp}/key.pem"], check=True)
secret = {"cert": export["Certificate"] + export.get("CertificateChain", ""), "key": open(f"{tmp}/key.pem").read()}
json.dump(secret, open(f"{tmp}/secret.json", "w"))
PY
aws secretsmanager put-secret-value --secret-id "$2" --secret-string "file://$tmp/secret.json" >/dev/null
echo "stored the certificate of $1 in $2; roll the proxy: aws ecs update-service --force-new-deployment"
