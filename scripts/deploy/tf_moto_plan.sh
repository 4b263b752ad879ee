#!/usr/bin/env bash
# `terraform plan` of both environments with the real AWS provider (from the mirror), the
# data sources and the secrets' first random values answered by moto server: what the mock
# suites cannot run (the provider's own plan-time checks of every resource, the ephemeral
# aws_secretsmanager_random_password). Staging is planned as the second apply
# (enable_rotation and db_admin_access on: every resource), production as the first, at
# once. Nothing is applied.
# Run by scripts/deploy/tf_check.sh after the suites; needs moto_server and boto3
# (scripts/install.sh runtime installs them) and skips with a notice without them.
set -euo pipefail
cd "$(dirname "$0")/../.."
TERRAFORM=${TERRAFORM:-$(command -v terraform)}
TF_PLUGIN_DIR=${TF_PLUGIN_DIR:-/opt/tf-plugins}
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 AWS_EC2_METADATA_DISABLED=true
fail() { echo "tf_moto_plan: FAIL: $*" >&2; exit 1; }

if ! command -v moto_server >/dev/null || ! python3 -c 'import boto3' 2>/dev/null; then
  echo "terraform plan (real provider, moto): skipped, no moto_server/boto3 (scripts/install.sh runtime installs them)"
  exit 0
fi

WORK=.dev/tf-check/moto
rm -rf "$WORK"
mkdir -p "$WORK/target/lambda/rotation"
cp -a terraform "$WORK/"
cp .dev/tf-check/rotation.zip "$WORK/target/lambda/rotation/bootstrap.zip"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
MOTO=$!
trap 'kill "$MOTO" 2>/dev/null; wait "$MOTO" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/moto-api/" 2>/dev/null && break
  sleep 0.2
done
CA_ARN=$(AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=eu-west-1 python3 - "$PORT" <<'EOF'
import sys, boto3
c = boto3.client("acm-pca", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}")
print(c.create_certificate_authority(
    CertificateAuthorityConfiguration={"KeyAlgorithm": "RSA_2048", "SigningAlgorithm": "SHA256WITHRSA",
                                       "Subject": {"CommonName": "dbgw lint"}},
    CertificateAuthorityType="ROOT")["CertificateAuthorityArn"])
EOF
) || { cat "$WORK/moto.log"; fail "moto server did not answer on port $PORT"; }

provider() { # alias-line
  cat <<EOF
provider "aws" {
  $1
  region                      = "eu-west-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  endpoints {
    sts            = "http://127.0.0.1:$PORT"
    acmpca         = "http://127.0.0.1:$PORT"
    secretsmanager = "http://127.0.0.1:$PORT"
  }
}
EOF
}

pids=() names=()
plan() { # env, name, extra args...
  local env=$1 name=$2 dir="$WORK/terraform/environments/$1"
  shift 2
  "$TERRAFORM" -chdir="$dir" plan -input=false -no-color -lock=false "$@" >"$WORK/plan-$name.out" 2>&1 &
  pids+=($!) names+=("$name")
}
for env in staging production; do
  dir="$WORK/terraform/environments/$env"
  { echo 'terraform {
  backend "local" {}
}'; provider ""; provider 'alias = "generator"'; } >"$dir/moto_override.tf"
  sed "s#^private_ca_arn *=.*#private_ca_arn = \"$CA_ARN\"#" "$dir/terraform.tfvars.example" >"$dir/terraform.tfvars"
  "$TERRAFORM" -chdir="$dir" init -plugin-dir="$TF_PLUGIN_DIR" -input=false -no-color >"$WORK/init-$env.out" 2>&1 || {
    cat "$WORK/init-$env.out"; fail "terraform init of environments/$env (local backend)"; }
done
plan staging staging-second-apply -var enable_rotation=true -var db_admin_access=true
plan production production-first-apply
status=0
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then
    echo "terraform plan (real provider, moto): ${names[$i]}: $(grep -E '^Plan:' "$WORK/plan-${names[$i]}.out")"
  else
    cat "$WORK/plan-${names[$i]}.out"; echo "tf_moto_plan: FAIL: terraform plan ${names[$i]}" >&2; status=1
  fi
done
exit $status
