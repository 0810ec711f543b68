#!/usr/bin/env bash
# Runs every test: installs what is missing, builds and installs the extension into PostgreSQL 15,
# then fmt and clippy, the unit and simulation tests, the integration tests on local clusters, and
# the bounded fault suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RUST_BACKTRACE=0

# Test clusters tear themselves down, also when a test fails; this catches a test process that was
# itself killed: nothing is left running.
cleanup() {
  for data in "${TMPDIR:-/tmp}"/pg_paxos_test_*/node*/data; do
    [[ -f $data/postmaster.pid ]] && runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$data" -m immediate stop >/dev/null 2>&1
    mountpoint -q "$data" && umount "$data"
  done
  rm -rf "${TMPDIR:-/tmp}"/pg_paxos_test_*
}
trap cleanup EXIT
echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
echo "== unit and simulation tests (pure crates)"
cargo test -p paxos-core -p paxos-model -p pg-paxos-operator
echo "== integration tests on local PostgreSQL clusters"
cargo test -p pg-paxos-tests -- --test-threads="${PG_PAXOS_TEST_THREADS:-2}"
echo "== fault suite (bounded, seeded)"
PG_PAXOS_SKIP_SETUP=1 bash scripts/faults.sh
