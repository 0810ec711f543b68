#!/usr/bin/env bash
# Runs every test: installs what is missing, builds and installs the extension into PostgreSQL 15,
# then the unit and simulation tests, the integration tests on local clusters, fmt and clippy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RUST_BACKTRACE=0
echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
echo "== unit and simulation tests (pure crates)"
cargo test -p paxos-core -p paxos-model -p pg-paxos-operator
echo "== integration tests on local PostgreSQL clusters"
cargo test -p pg-paxos-tests -- --test-threads="${PG_PAXOS_TEST_THREADS:-2}"
