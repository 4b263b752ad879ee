#!/usr/bin/env bash
# Rolls the proxy service now, as the ACM renewal event does on its own
# (terraform/modules/stack/proxy_cert.tf): starts the proxy-roll state machine, whose
# ecs:UpdateService (forceNewDeployment) makes new tasks export the current certificate
# from ACM at start (deploy/proxy-cert/fetch.sh). Nothing to copy by hand any more: use
# this only to pick up a re-issued certificate at once, and wait for the deployment.
# Usage: proxy-cert.sh STATE_MACHINE_ARN   (terraform output -raw proxy_cert_roll_state_machine)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 STATE_MACHINE_ARN" >&2; exit 2; }
execution=$(aws stepfunctions start-execution --state-machine-arn "$1" --query executionArn --output text)
for _ in $(seq 30); do
  status=$(aws stepfunctions describe-execution --execution-arn "$execution" --query status --output text)
  [ "$status" = RUNNING ] || break
  sleep 5
done
echo "proxy roll $execution: $status"
[ "$status" = SUCCEEDED ]
