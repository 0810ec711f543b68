#!/usr/bin/env bash
# The fault suite: workloads on local groups while nodes crash, pause, lose links or disk space and
# members join and leave; every operation is recorded and the history checked (see the README).
#
#   scripts/faults.sh                                 bounded form (CI): seed 1 on 3 members,
#                                                     seed 2 on 5 members, and seed 3 on 3 members
#                                                     with 1 s leader leases, 60 s of faults each
#   scripts/faults.sh --full                          5 minutes each, new seeds (the last one with
#                                                     forwarded inserts off)
#   scripts/faults.sh --seed N --members M --seconds S [--lease-ms L] [--forward-writes off]
#                     [--compact off]                 one run, e.g. to replay a failure; every run
#                                                     also compacts the log unless --compact off
set -euo pipefail
cd "$(dirname "$0")/.."
[[ ${PG_PAXOS_SKIP_SETUP:-} == 1 ]] || bash scripts/setup.sh
export RUST_BACKTRACE=0
cargo build -q -p pg-paxos-tests --bin faults
faults=target/debug/faults

if [[ ${1:-} == --full ]]; then
  seed=$(date +%s)
  "$faults" --seed "$seed" --members 3 --seconds 300
  "$faults" --seed $((seed + 1)) --members 5 --seconds 300
  "$faults" --seed $((seed + 2)) --members 3 --seconds 300 --lease-ms 1000
  "$faults" --seed $((seed + 3)) --members 5 --seconds 300 --forward-writes off
elif [[ $# -gt 0 ]]; then
  "$faults" "$@"
else
  "$faults" --seed 1 --members 3 --seconds 60
  "$faults" --seed 2 --members 5 --seconds 60
  "$faults" --seed 3 --members 3 --seconds 60 --lease-ms 1000
fi
