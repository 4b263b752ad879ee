#!/usr/bin/env bash
# `terraform plan` of both environments with the real AWS provider (from the mirror), the
# data sources and the secrets' first random values answered by moto server: what the mock
# suites cannot run (the provider's own plan-time checks of every resource, the ephemeral
# aws_secretsmanager_random_password). Staging is planned as the second apply
# (enable_rotation, db_admin_access and start_services on: every resource), production as the first, at
# once. Nothing is applied.
# Run by scripts/deploy/tf_check.sh after the suites; needs moto_server and boto3
# (scripts/install.sh runtime installs them) and skips with a notice without them.
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "tf_moto_plan: FAIL: $*" >&2; exit 1; }
# shellcheck source=scripts/deploy/tf_moto.sh
source scripts/deploy/tf_moto.sh

if ! command -v moto_server >/dev/null || ! python3 -c 'import boto3' 2>/dev/null; then
  echo "terraform plan (real provider, moto): skipped, no moto_server/boto3 (scripts/install.sh runtime installs them)"
  exit 0
fi

WORK=.dev/tf-check/moto
rm -rf "$WORK"
mkdir -p "$WORK/target/lambda/rotation"
cp -a terraform "$WORK/"
cp .dev/tf-check/rotation.zip "$WORK/target/lambda/rotation/bootstrap.zip"

moto_start "$WORK" "dbgw lint"

pids=() names=()
plan() { # env, name, extra args...
  local env=$1 name=$2 dir="$WORK/terraform/environments/$1"
  shift 2
  "$TERRAFORM" -chdir="$dir" plan -input=false -no-color -lock=false "$@" >"$WORK/plan-$name.out" 2>&1 &
  pids+=($!) names+=("$name")
}
for env in staging production; do
  moto_environment "$WORK/terraform/environments/$env" "$WORK/init-$env.out"
done
plan staging staging-second-apply -var enable_rotation=true -var db_admin_access=true -var start_services=true
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
