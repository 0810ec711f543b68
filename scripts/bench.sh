#!/usr/bin/env bash
# Benchmarks on a local 3-node cluster (fsync on), each beside the same statements on a plain table
# of one node of the same machine in the same run, as ratios:
#   1. the replicated log: paxos_append at 1, 4 and 8 clients;
#   2. replicated tables: single-row INSERT at 1, 4, 8 and 16 clients (and at 16 with group commit
#      off); single-row SELECT under the strong (1 and 8 clients) and the optimistic consistency
#      model, and strong with leader leases on (pg_paxos.lease_duration = 2s; off by default); strong SELECT on the
#      leader while 8 clients insert there ("busy"; plain: beside 8 clients inserting into the plain
#      table), with and without a lease;
#   3. inserts from every member at once (4 clients on each node), sent to the leader
#      (pg_paxos.forward_writes, the default) and not (each node's write takes the leadership over).
#
#   scripts/bench.sh [SECONDS_PER_RUN]      (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ ${BENCH_SKIP_SETUP:-} == 1 ]] || bash scripts/setup.sh >/dev/null

SECONDS_PER_RUN=${1:-10}
CLIENT_COUNTS=${BENCH_CLIENTS:-1 4 8}
export PG_PAXOS_CLUSTER_DIR=${PG_PAXOS_CLUSTER_DIR:-/tmp/pg_paxos_bench}
export PG_PAXOS_BASE_PORT=${PG_PAXOS_BASE_PORT:-5460}
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
work=$(mktemp -d)
trap 'scripts/cluster teardown; rm -rf "$work"' EXIT

scripts/cluster teardown
scripts/cluster create 3 >/dev/null
sql() { local n=$1; shift; scripts/cluster psql "$n" -q -v ON_ERROR_STOP=1 "$@" >/dev/null; }
sql 1 -c "SELECT paxos_create_group('bench', '$(scripts/cluster conninfo 1)')"
sql 2 -c "SELECT paxos_join_group('bench', '$(scripts/cluster conninfo 1)', '$(scripts/cluster conninfo 2)')"
sql 3 -c "SELECT paxos_join_group('bench', '$(scripts/cluster conninfo 1)', '$(scripts/cluster conninfo 3)')"
sql 1 -c "CREATE TABLE bench_plain (id bigserial PRIMARY KEY, v text)"
for n in 1 2 3; do sql "$n" -c "CREATE TABLE bench_rep (id bigint PRIMARY KEY, v text)"; done
sql 1 -c "CREATE TABLE bench_local (id bigint PRIMARY KEY, v text)"
sql 1 -c "SELECT paxos_replicate_table('bench', 'bench_rep')"
sql 1 -c "INSERT INTO bench_rep VALUES (0, 'read me')" -c "INSERT INTO bench_local VALUES (0, 'read me')"

cat > "$work/plain.sql" <<'SQL'
INSERT INTO bench_plain (v) VALUES ('value ' || :client_id);
SQL
cat > "$work/append.sql" <<'SQL'
SELECT paxos_append('bench', 'bench', 'value ' || :client_id);
SQL
for t in rep local; do
  printf '\\set id random(1, 1000000000000000000)\nINSERT INTO bench_%s VALUES (:id, '"'"'v'"'"');\n' "$t" > "$work/insert_$t.sql"
  printf 'SELECT v FROM bench_%s WHERE id = 0;\n' "$t" > "$work/select_$t.sql"
done

# run NAME SCRIPT CLIENTS [PGOPTIONS] -> prints "tps p50_ms p99_ms errors retried"
run() {
  local name=$1 script=$2 clients=$3 options=${4:-} prefix="$work/$1-$3"
  local out
  out=$(cd "$work" && env -u RUST_BACKTRACE PGOPTIONS="$options" "$PGBENCH" -n -h 127.0.0.1 -p $((PG_PAXOS_BASE_PORT + 1)) -U postgres \
    -c "$clients" -j "$clients" -T "$SECONDS_PER_RUN" --max-tries=1000 -f "$script" -l --log-prefix="$prefix" postgres 2>&1) \
    || { echo "$out" >&2; return 1; }
  local tps failed
  tps=$(echo "$out" | awk -F'= ' '/^tps/ {split($2, a, " "); print a[1]; exit}')
  failed=$(echo "$out" | awk '/number of failed transactions/ {print $5; exit}')
  cat "$prefix".* | awk '{print $3}' | sort -n > "$prefix.lat"
  local n p50 p99
  n=$(wc -l < "$prefix.lat")
  p50=$(awk -v n="$n" 'NR == int(n * 0.50) + 1 {printf "%.2f", $1 / 1000; exit}' "$prefix.lat")
  p99=$(awk -v n="$n" 'NR == int(n * 0.99) + 1 {printf "%.2f", $1 / 1000; exit}' "$prefix.lat")
  local retried
  retried=$(echo "$out" | awk '/number of transactions retried/ {print $5; exit}')
  echo "${tps%.*} $p50 $p99 ${failed:-0} ${retried:-0}"
}

printf '\npg_paxos benchmark: 3 local nodes, fsync on, %s s per run, %s cores\n' "$SECONDS_PER_RUN" "$(nproc)"
printf '\n1. The replicated log\n'
printf '%-8s | %-28s | %-28s | %s\n' "clients" "plain INSERT (1 node)" "paxos_append (3 nodes)" "append/plain"
printf '%-8s | %-28s | %-28s | %s\n' "" "tps   p50 ms  p99 ms" "tps   p50 ms  p99 ms  errors" "tps     p50"
for c in $CLIENT_COUNTS; do
  read -r ptps pp50 pp99 _ _ < <(run plain "$work/plain.sql" "$c")
  read -r atps ap50 ap99 aerr _ < <(run append "$work/append.sql" "$c")
  ratio_tps=$(awk -v a="$atps" -v p="$ptps" 'BEGIN {printf "%.3f", a / p}')
  ratio_p50=$(awk -v a="$ap50" -v p="$pp50" 'BEGIN {printf "%.1fx", a / p}')
  printf '%-8s | %-6s %-7s %-13s | %-6s %-7s %-7s %-6s | %s  %s\n' \
    "$c" "$ptps" "$pp50" "$pp99" "$atps" "$ap50" "$ap99" "$aerr" "$ratio_tps" "$ratio_p50"
done

printf '\n2. Replicated tables (single-row statements; retried = COMMITs that got 40001 and ran again)\n'
printf '%-22s | %-22s | %-34s | %s\n' "workload" "plain table (1 node)" "replicated table (3 nodes)" "replicated/plain"
printf '%-22s | %-22s | %-34s | %s\n' "" "tps   p50 ms  p99 ms" "tps   p50 ms  p99 ms  failed retried" "tps     p50"
row() {
  local label=$1 plain=$2 rep=$3 clients=$4 options=${5:-}
  read -r ptps pp50 pp99 _ _ < <(run "p-$label" "$work/$plain" "$clients" "$options")
  read -r rtps rp50 rp99 rerr rretry < <(run "r-$label" "$work/$rep" "$clients" "$options")
  printf '%-22s | %-6s %-7s %-7s | %-6s %-7s %-7s %-6s %-7s | %s  %s\n' "$label" "$ptps" "$pp50" "$pp99" \
    "$rtps" "$rp50" "$rp99" "$rerr" "$rretry" \
    "$(awk -v a="$rtps" -v p="$ptps" 'BEGIN {printf "%.3f", a / p}')" \
    "$(awk -v a="$rp50" -v p="$pp50" 'BEGIN {printf "%.1fx", a / p}')"
}
# beside NAME READ_SCRIPT WRITE_SCRIPT [PGOPTIONS] -> like run, for one reading client while 8
# clients run WRITE_SCRIPT on the same node
beside() {
  local name=$1 read_script=$2 write_script=$3 options=${4:-}
  (cd "$work" && env -u RUST_BACKTRACE PGOPTIONS="$options" "$PGBENCH" -n -h 127.0.0.1 -p $((PG_PAXOS_BASE_PORT + 1)) \
    -U postgres -c 8 -j 8 -T $((SECONDS_PER_RUN + 2)) --max-tries=1000 -f "$write_script" postgres \
    > "$work/$name-writers.out" 2>&1) &
  local writers=$!
  sleep 1
  run "$name" "$read_script" 1 "$options"
  wait "$writers"
}
row_busy() {
  local label=$1
  read -r ptps pp50 pp99 _ _ < <(beside "pb-$label" "$work/select_local.sql" "$work/insert_local.sql")
  read -r rtps rp50 rp99 rerr rretry < <(beside "rb-$label" "$work/select_rep.sql" "$work/insert_rep.sql")
  printf '%-22s | %-6s %-7s %-7s | %-6s %-7s %-7s %-6s %-7s | %s  %s\n' "$label" "$ptps" "$pp50" "$pp99" \
    "$rtps" "$rp50" "$rp99" "$rerr" "$rretry" \
    "$(awk -v a="$rtps" -v p="$ptps" 'BEGIN {printf "%.3f", a / p}')" \
    "$(awk -v a="$rp50" -v p="$pp50" 'BEGIN {printf "%.1fx", a / p}')"
}
for c in ${TABLE_CLIENTS:-1 4 8 16}; do
  row "INSERT, $c clients" insert_local.sql insert_rep.sql "$c"
done
# Two batches in flight (pg_paxos.batches_in_flight = 2) against one (the default).
row "INSERT, 2 clients" insert_local.sql insert_rep.sql 2
row "INSERT, 2, pipelined" insert_local.sql insert_rep.sql 2 "-c pg_paxos.batches_in_flight=2"
row "INSERT, 16, pipelined" insert_local.sql insert_rep.sql 16 "-c pg_paxos.batches_in_flight=2"
# The same without group commit: every transaction takes a round of its own, in turn.
row "INSERT, 16, unbatched" insert_local.sql insert_rep.sql 16 "-c pg_paxos.batch_writes=off"
row "SELECT strong, 1" select_local.sql select_rep.sql 1
row "SELECT strong, 8" select_local.sql select_rep.sql 8
row "SELECT optimistic, 1" select_local.sql select_rep.sql 1 "-c pg_paxos.consistency_model=optimistic"
row_busy "SELECT strong, busy"

# Leader leases: node 1 leads (it wrote above) and reads locally once a majority granted a lease.
for n in 1 2 3; do
  sql "$n" -c "ALTER SYSTEM SET pg_paxos.lease_duration = '2s'"
  sql "$n" -c "SELECT pg_reload_conf()"
done
for _ in $(seq 100); do
  left=$(scripts/cluster psql 1 -At -c "SELECT v FROM bench_rep WHERE id = 0" \
    -c "SELECT lease_remaining_ms FROM paxos.leadership('bench')" | tail -1)
  [[ -n $left ]] && break
  sleep 0.1
done
[[ -n $left ]] || { echo "bench: node 1 got no lease within 10 s" >&2; exit 1; }
row "SELECT strong, lease" select_local.sql select_rep.sql 1
row_busy "SELECT lease, busy"
reads=$(scripts/cluster psql 1 -At -c "SELECT lease_reads FROM paxos.leadership('bench')")
echo "strong reads under the lease on node 1: $reads"
rounds=$(scripts/cluster psql 2 -At -c "SELECT paxos_apply_log('bench', 'bench', paxos_max_group_round('bench'))")
echo "rounds in the log after the run: $rounds"

# Section 3 without leases, like section 2 (a write on another node would wait for a lease).
for n in 1 2 3; do
  sql "$n" -c "ALTER SYSTEM SET pg_paxos.lease_duration = 0"
  sql "$n" -c "SELECT pg_reload_conf()"
done
sleep 2.5

printf '\n3. Inserts from every member (4 clients on each of the 3 nodes; plain: 12 clients on one node)\n'
printf '%-22s | %-22s | %-34s | %s\n' "workload" "plain table (1 node)" "replicated table (3 nodes)" "replicated/plain"
# run_spread NAME SCRIPT [PGOPTIONS] -> like run, with 4 clients on every node at once
run_spread() {
  local name=$1 script=$2 options=${3:-} n
  for n in 1 2 3; do
    (cd "$work" && env -u RUST_BACKTRACE PGOPTIONS="$options" "$PGBENCH" -n -h 127.0.0.1 -p $((PG_PAXOS_BASE_PORT + n)) \
      -U postgres -c 4 -j 4 -T "$SECONDS_PER_RUN" --max-tries=1000 -f "$script" -l --log-prefix="$work/$name-n$n" \
      postgres > "$work/$name-n$n.out" 2>&1) &
  done
  wait
  local tps failed retried
  tps=$(cat "$work/$name"-n?.out | awk -F'= ' '/^tps/ {split($2, a, " "); s += a[1]} END {printf "%d", s}')
  failed=$(cat "$work/$name"-n?.out | awk '/number of failed transactions/ {s += $5} END {print s + 0}')
  retried=$(cat "$work/$name"-n?.out | awk '/number of transactions retried/ {s += $5} END {print s + 0}')
  cat "$work/$name"-n?.[0-9]* | awk '{print $3}' | sort -n > "$work/$name.lat"
  local count p50 p99
  count=$(wc -l < "$work/$name.lat")
  p50=$(awk -v n="$count" 'NR == int(n * 0.50) + 1 {printf "%.2f", $1 / 1000; exit}' "$work/$name.lat")
  p99=$(awk -v n="$count" 'NR == int(n * 0.99) + 1 {printf "%.2f", $1 / 1000; exit}' "$work/$name.lat")
  echo "$tps $p50 $p99 $failed $retried"
}
read -r ptps pp50 pp99 _ _ < <(run p-spread "$work/insert_local.sql" 12)
for mode in on off; do
  read -r rtps rp50 rp99 rerr rretry < <(run_spread "r-spread-$mode" "$work/insert_rep.sql" "-c pg_paxos.forward_writes=$mode")
  printf '%-22s | %-6s %-7s %-7s | %-6s %-7s %-7s %-6s %-7s | %s  %s\n' "INSERT, forward $mode" "$ptps" "$pp50" "$pp99" \
    "$rtps" "$rp50" "$rp99" "$rerr" "$rretry" \
    "$(awk -v a="$rtps" -v p="$ptps" 'BEGIN {printf "%.3f", a / p}')" \
    "$(awk -v a="$rp50" -v p="$pp50" 'BEGIN {printf "%.1fx", a / p}')"
done
