#!/usr/bin/env bash
# `terraform apply` of staging against moto server, then `terraform destroy` (`make
# apply-emulator`; not part of lint-deploy: it takes several minutes). The real AWS
# provider from the mirror, every service endpoint pointed at moto: the first apply of the
# runbook (enable_rotation off, the secrets' first values written), as far as moto goes.
# Writes $TF_APPLY_DIR/report.md (default /tmp/dbgw-tf-apply): what was created, and every resource that was not, with
# the error that stopped it (or the failed resource it waited for). An apply against an
# emulator tests the emulator as much as the code: a resource moto refuses is a moto
# limit until a real account says otherwise (docs/operations.md lists the last result).
# Exit status: 0 when the plan worked and the apply created something; what moto refused
# (to create or to destroy) is in the report.
set -euo pipefail
cd "$(dirname "$0")/../.."
TERRAFORM=${TERRAFORM:-$(command -v terraform)}
TF_PLUGIN_DIR=${TF_PLUGIN_DIR:-/opt/tf-plugins}
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 AWS_EC2_METADATA_DISABLED=true
fail() { echo "tf_moto_apply: FAIL: $*" >&2; exit 1; }
command -v moto_server >/dev/null && python3 -c 'import boto3' 2>/dev/null ||
  fail "needs moto_server and boto3 (scripts/install.sh runtime installs them)"

# Outside .dev, which the local stack's scripts may empty while this runs (minutes).
WORK=${TF_APPLY_DIR:-${TMPDIR:-/tmp}/dbgw-tf-apply}
rm -rf "$WORK"
mkdir -p "$WORK/target/lambda/rotation"
cp -a terraform "$WORK/"
python3 - "$WORK/target/lambda/rotation/bootstrap.zip" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("bootstrap", "not a binary: tf_moto_apply.sh's stand-in")
    z.writestr("rds-ca/global-bundle.pem", "stand-in")
EOF
# The audit key refuses destruction (prevent_destroy); the copy may be destroyed.
cat >"$WORK/terraform/modules/audit-bucket/emulator_override.tf" <<'EOF'
resource "aws_kms_key" "audit" {
  lifecycle {
    prevent_destroy = false
  }
}
EOF

# Staging protects its database and load balancers from deletion, which would (rightly)
# stop the destroy: off in the copy.
cat >"$WORK/terraform/environments/staging/emulator_override.tf" <<'EOF'
module "dbgw" {
  db_deletion_protection = false
  lb_deletion_protection = false
}
EOF

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# AWS's managed policies (AmazonECSTaskExecutionRolePolicy, ...) exist in moto only on request.
MOTO_IAM_LOAD_MANAGED_POLICIES=true moto_server -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
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
                                       "Subject": {"CommonName": "dbgw emulator"}},
    CertificateAuthorityType="ROOT")["CertificateAuthorityArn"])
EOF
) || { cat "$WORK/moto.log"; fail "moto server did not answer on port $PORT"; }

dir="$WORK/terraform/environments/staging"
endpoints=""
for svc in acm acmpca appautoscaling cloudtrail cloudwatch ec2 ecs elbv2 events firehose iam kms lambda logs rds route53 s3 secretsmanager servicediscovery sfn sns sts; do
  endpoints+="    $svc = \"http://127.0.0.1:$PORT\""$'\n'
done
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
  s3_use_path_style           = true
  # moto answers what it has not implemented with HTTP 500, which the SDK would retry 25
  # times with backoff for every such call.
  max_retries = 2
  endpoints {
$endpoints  }
}
EOF
}
{ echo 'terraform {
  backend "local" {}
}'; provider ""; provider 'alias = "generator"'; } >"$dir/moto_override.tf"
sed "s#^private_ca_arn *=.*#private_ca_arn = \"$CA_ARN\"#" "$dir/terraform.tfvars.example" >"$dir/terraform.tfvars"
"$TERRAFORM" -chdir="$dir" init -plugin-dir="$TF_PLUGIN_DIR" -input=false -no-color >"$WORK/init.out" 2>&1 || {
  cat "$WORK/init.out"; fail "terraform init"; }

start=$(date +%s)
"$TERRAFORM" -chdir="$dir" plan -input=false -no-color -lock=false -out=plan.bin >"$WORK/plan.out" 2>&1 || {
  cat "$WORK/plan.out"; fail "terraform plan"; }
"$TERRAFORM" -chdir="$dir" show -json plan.bin >"$WORK/plan.json"
apply_rc=0
"$TERRAFORM" -chdir="$dir" apply -input=false -no-color -lock=false -auto-approve plan.bin >"$WORK/apply.out" 2>&1 || apply_rc=$?
applied=$(date +%s)
"$TERRAFORM" -chdir="$dir" state list >"$WORK/state.txt" 2>/dev/null || true
destroy_rc=0
# Without a refresh: moto cannot read some of what it created (ListTagsForResource of
# Application Auto Scaling, for one), and a refresh would stop the destroy there.
"$TERRAFORM" -chdir="$dir" destroy -refresh=false -input=false -no-color -lock=false -auto-approve >"$WORK/destroy.out" 2>&1 || destroy_rc=$?
"$TERRAFORM" -chdir="$dir" state list >"$WORK/state-after-destroy.txt" 2>/dev/null || true
done_at=$(date +%s)

python3 scripts/deploy/tf_apply_report.py "$WORK" "$apply_rc" "$destroy_rc" $((applied - start)) $((done_at - applied)) >"$WORK/report.md"
cat "$WORK/report.md"
# The emulator's refusals are the result, not a failure of this script: it fails only when
# the plan does (above) or nothing could be created.
[ -s "$WORK/state.txt" ] || fail "the apply created nothing (see $WORK/apply.out)"
