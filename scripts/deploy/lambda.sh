#!/usr/bin/env bash
# `make lambda`: packages the rotation function for Terraform as
# target/lambda/rotation/bootstrap.zip (the `rotation` crate's `bootstrap` binary, arm64,
# built with cargo-lambda, which cross-links with zig; both come from PyPI into .dev/tools),
# with the RDS CA bundle at rds-ca/global-bundle.pem (scripts/deploy/lambda_zip.py; needs
# `make rds-ca` first).
# The crate is issue 10's work: until it is in the workspace this says so and stops (exit 0),
# and `terraform plan` will report the missing zip.
set -euo pipefail
cd "$(dirname "$0")/../.."
ZIP=target/lambda/rotation/bootstrap.zip
has_crate=$(cargo metadata --no-deps --format-version 1 --locked 2>/dev/null |
  python3 -c 'import json,sys; print(any(p["name"] == "rotation" for p in json.load(sys.stdin)["packages"]))')
if [ "$has_crate" != True ]; then
  echo "make lambda: the \`rotation\` crate (issue 10) is not in this workspace yet: nothing to package."
  echo "make lambda: Terraform expects $ZIP (modules/rotation, variable zip_path)."
  exit 0
fi
VENV=.dev/tools/cargo-lambda
if [ ! -x "$VENV/bin/cargo-lambda" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q cargo-lambda==1.9.2 ziglang
fi
if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu || {
    echo "make lambda: the Rust standard library for aarch64-unknown-linux-gnu is missing and cannot be fetched here;" >&2
    echo "make lambda: build the package where rustup can download it (CI with internet, a developer laptop)." >&2
    exit 1
  }
fi
CA_BUNDLE=deploy/rds-ca/global-bundle.pem
if [ ! -s "$CA_BUNDLE" ]; then
  echo "make lambda: $CA_BUNDLE is missing: run \`make rds-ca\` first (the function verifies RDS with it)." >&2
  exit 1
fi
PATH="$PWD/$VENV/bin:$PATH" cargo lambda build --release --arm64 --locked -p rotation --bin bootstrap
# cargo-lambda leaves the binary in target/lambda/<binary>/bootstrap. The package Terraform
# reads (under the crate's name) holds it and the RDS CA bundle, which the function reads
# at /var/task/rds-ca/global-bundle.pem (ROTATION_DATABASE__CA_FILE); checked after packing.
mkdir -p "$(dirname "$ZIP")"
python3 scripts/deploy/lambda_zip.py package target/lambda/bootstrap/bootstrap "$CA_BUNDLE" "$ZIP"
ls -l "$ZIP"
