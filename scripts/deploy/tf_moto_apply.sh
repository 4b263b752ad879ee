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
fail() { echo "tf_moto_apply: FAIL: $*" >&2; exit 1; }
# shellcheck source=scripts/deploy/tf_moto.sh
source scripts/deploy/tf_moto.sh
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

# AWS's managed policies (AmazonECSTaskExecutionRolePolicy, ...) exist in moto only on request.
moto_start "$WORK" "dbgw emulator" MOTO_IAM_LOAD_MANAGED_POLICIES=true
dir="$WORK/terraform/environments/staging"
moto_environment "$dir" "$WORK/init.out"

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
