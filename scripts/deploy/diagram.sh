#!/usr/bin/env bash
# `make diagram`: renders docs/secure-access.png from docs/diagram/secure_access.py with
# the `diagrams` package (.dev/tools/hcl2 virtualenv) and Debian's graphviz. The node ids
# are fixed, so the same source gives the same bytes; CHECK=1 renders to a temporary file
# and fails if it differs from the committed image.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/deploy/tools.sh
source scripts/deploy/tools.sh
command -v dot >/dev/null && "$HCL2_PY" -c 'import diagrams' 2>/dev/null || install_deploy_tools
if [ "${CHECK:-0}" = 1 ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && "$OLDPWD/$HCL2_PY" "$OLDPWD/docs/diagram/secure_access.py" "$tmp/secure-access")
  cmp -s "$tmp/secure-access.png" docs/secure-access.png ||
    { echo "docs/secure-access.png is not what its source renders: run make diagram" >&2; exit 1; }
  echo "diagram: docs/secure-access.png matches its source byte for byte"
else
  "$HCL2_PY" docs/diagram/secure_access.py docs/secure-access
  echo "wrote docs/secure-access.png"
fi
