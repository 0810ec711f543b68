#!/usr/bin/env bash
# Installs everything pg_paxos needs to build, test and run on Debian bookworm as root, idempotently:
# Debian packages, cargo-pgrx 0.18.0 (pinned to the pgrx version in Cargo.toml), its PG15 config,
# and finally builds and installs the extension into the local PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")/.."

PGRX_VERSION=0.18.0
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
packages=(postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang pkg-config)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "installing cargo-pgrx $PGRX_VERSION (a few minutes, once)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi

PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
if ! grep -qs 'pg15' "$PGRX_HOME/config.toml"; then
  log "configuring cargo-pgrx for PostgreSQL 15"
  cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

if [[ "${1:-}" != "--no-install" ]]; then
  log "building and installing the pg_paxos extension into PostgreSQL 15"
  (cd extension/pg_paxos && cargo pgrx install --pg-config "$PG_CONFIG" >/dev/null)
fi
log "done"
