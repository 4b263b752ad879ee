#!/usr/bin/env bash
# Installs what `make test` needs, skipping what is already there: Debian packages (PostgreSQL
# server and tools, pgbouncer, socat, wrk), the Python and Node client drivers used by the
# proxy tests, moto server (the Secrets Manager emulator of the rotation tests), the
# development identity provider's packages, headless Chromium and its
# WebDriver (the approvals app's browser test), cargo-fuzz, and the deployment's lint tools
# (scripts/deploy/tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

packages=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql-15)
command -v psql >/dev/null || packages+=(postgresql-client-15)
command -v socat >/dev/null || packages+=(socat)
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || packages+=(pgbouncer)
command -v wrk >/dev/null || packages+=(wrk)
command -v curl >/dev/null || packages+=(curl)
command -v mount >/dev/null || packages+=(mount)
command -v node >/dev/null || packages+=(nodejs npm)
command -v chromium >/dev/null || packages+=(chromium)
command -v chromedriver >/dev/null || packages+=(chromium-driver)
command -v pip3 >/dev/null || command -v pip >/dev/null || packages+=(python3-pip)
if [ ${#packages[@]} -gt 0 ]; then
  echo "apt-get install ${packages[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
# The Debian packages start a cluster and a pgbouncer of their own; the tests never use them.
as_root systemctl disable --now postgresql pgbouncer >/dev/null 2>&1 || true

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "Node.js 20 or later is needed (found $(node --version))" >&2
  exit 1
fi

python3 -c 'import psycopg' 2>/dev/null ||
  python3 -m pip install -q --root-user-action=ignore -r proxy/tests/clients/requirements.txt
command -v moto_server >/dev/null ||
  python3 -m pip install -q --root-user-action=ignore 'moto[server]==5.2.1'
[ -d idp/node_modules ] || npm ci --prefix idp --no-audit --no-fund --silent
[ -d proxy/tests/clients/node_modules ] || npm ci --prefix proxy/tests/clients --no-audit --no-fund --silent
command -v cargo-fuzz >/dev/null || cargo install -q --locked cargo-fuzz
# The deployment's static checks (terraform, checkov, python-hcl2, hadolint, compose, graphviz).
# shellcheck source=scripts/deploy/tools.sh
source scripts/deploy/tools.sh
install_deploy_tools
echo "test dependencies are in place"
