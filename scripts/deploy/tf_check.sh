#!/usr/bin/env bash
# `terraform init` (from the local provider mirror, no network), `terraform validate` of the
# bootstrap root and of every environment, then the `terraform test` suites: mock_provider
# plans (and mock applies, in memory) of staging and production that assert what the design
# promises (terraform/environments/_shared/tests/, docs/operations.md "What lint-deploy checks"),
# and the modules' own suites (terraform/modules/*/tests).
# Then scripts/deploy/tf_moto_plan.sh: plans with the real provider against moto server.
# Run by scripts/deploy/lint.sh. Works on a copy in .dev/tf-check, so the working tree gets
# no .terraform folders or lock files.
#
#   TF_PLUGIN_DIR   the provider mirror (default /opt/tf-plugins): registry.terraform.io/hashicorp/aws/<version>/<os_arch>/
set -euo pipefail
cd "$(dirname "$0")/../.."
TERRAFORM=${TERRAFORM:-$(command -v terraform || true)}
TF_PLUGIN_DIR=${TF_PLUGIN_DIR:-/opt/tf-plugins}
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1
fail() { echo "tf_check: FAIL: $*" >&2; exit 1; }

[ -n "$TERRAFORM" ] || fail "no terraform on PATH (Terraform >= 1.11 is needed for validate and test)"
"$TERRAFORM" version -json | python3 -c 'import json,sys; v=json.load(sys.stdin)["terraform_version"]; sys.exit(tuple(map(int, v.split(".")[:2])) < (1, 11))' ||
  fail "$TERRAFORM is older than 1.11 (write-only arguments, ephemeral resources and mock providers need 1.11)"
if ! compgen -G "$TF_PLUGIN_DIR/registry.terraform.io/hashicorp/aws/*/*_*" >/dev/null; then
  fail "no AWS provider in the Terraform provider mirror $TF_PLUGIN_DIR (expected registry.terraform.io/hashicorp/aws/<version>/<os>_<arch>/).
  Make one where the registry is reachable:  terraform -chdir=terraform/environments/staging providers mirror $TF_PLUGIN_DIR
  (or point TF_PLUGIN_DIR at an existing mirror); docs/tools.md, 'Checks'."
fi

WORK=.dev/tf-check
rm -rf "$WORK"
mkdir -p "$WORK"
cp -a terraform "$WORK/"
# The suites read the images' Dockerfiles (every task volume must be a VOLUME of its image)
# and the shipper's, metrics sidecar's and certificate fetcher's scripts (their containers' variables).
# docs/operations.md holds the audit custody SCP, which they parse.
for f in proxy/Dockerfile rates-api/Dockerfile approvals/Dockerfile db/Dockerfile deploy/audit-shipper/Dockerfile deploy/audit-shipper/ship.sh deploy/audit-shipper/metrics.sh deploy/proxy-cert/fetch.sh docs/operations.md; do
  mkdir -p "$WORK/$(dirname "$f")" && cp "$f" "$WORK/$f"
done
# The suites apply in memory and then destroy, which the audit key's prevent_destroy refuses:
# the copy gets an override file (the suites check the real file keeps prevent_destroy).
cat >"$WORK/terraform/modules/audit-bucket/tf_check_override.tf" <<'EOF'
resource "aws_kms_key" "audit" {
  lifecycle {
    prevent_destroy = false
  }
}
EOF
# A dummy rotation package for the plans (the real one comes from `make lambda`).
python3 - "$WORK/rotation.zip" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("bootstrap", "not a binary: tf_check.sh's stand-in")
    z.writestr("rds-ca/global-bundle.pem", "stand-in")
EOF

init() {
  "$TERRAFORM" -chdir="$1" init -backend=false -plugin-dir="$TF_PLUGIN_DIR" -input=false -no-color >"$1/init.log" 2>&1 || {
    cat "$1/init.log"; fail "terraform init of ${1#"$WORK"/} from $TF_PLUGIN_DIR"; }
}

for root in bootstrap environments/staging environments/production; do
  init "$WORK/terraform/$root"
  "$TERRAFORM" -chdir="$WORK/terraform/$root" validate -no-color >"$WORK/validate.out" 2>&1 || {
    cat "$WORK/validate.out"; fail "terraform validate of terraform/$root"; }
  echo "terraform validate: terraform/$root OK"
done

# The suites: every environment runs the shared tests (tests/design.tftest.hcl links
# _shared/tests) and its own; both environments at once (each takes ~15 s of one core).
for env in staging production; do
  [ -f "terraform/environments/$env/tests/design.tftest.hcl" ] && [ -d "terraform/environments/$env/tests/mocks" ] ||
    fail "terraform/environments/$env/tests must link ../../_shared/tests/design.tftest.hcl and ../../_shared/tests/mocks"
done
pids=()
for env in staging production; do
  "$TERRAFORM" -chdir="$WORK/terraform/environments/$env" test -no-color -var-file=terraform.tfvars.example \
    -var "rotation_zip_path=$PWD/$WORK/rotation.zip" >"$WORK/test-$env.out" 2>&1 &
  pids+=($!)
done
status=0
for i in 0 1; do
  env=$([ $i = 0 ] && echo staging || echo production)
  if wait "${pids[$i]}"; then
    echo "terraform test: environments/$env: $(tail -1 "$WORK/test-$env.out")"
  else
    cat "$WORK/test-$env.out"; echo "tf_check: FAIL: terraform test of terraform/environments/$env" >&2; status=1
  fi
done
[ $status = 0 ] || exit 1
# Modules with suites of their own (a variable's validation, refused with expect_failures).
for tests in "$WORK"/terraform/modules/*/tests; do
  [ -d "$tests" ] || continue
  module=${tests%/tests}
  init "$module"
  "$TERRAFORM" -chdir="$module" test -no-color >"$module/test.out" 2>&1 || {
    cat "$module/test.out"; fail "terraform test of ${module#"$WORK"/}"; }
  echo "terraform test: ${module#"$WORK"/terraform/}: $(tail -1 "$module/test.out")"
done
# The same environments planned with the real provider (data sources from moto server).
scripts/deploy/tf_moto_plan.sh
