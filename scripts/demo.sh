#!/usr/bin/env bash
# The main job: a local 3-node pg_paxos cluster on this machine, walked through step by step.
# Installs what is missing first. Leaves the cluster running (teardown command printed at the end);
# `scripts/demo.sh --teardown` removes it again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export PG_PAXOS_CLUSTER_DIR=${PG_PAXOS_CLUSTER_DIR:-/tmp/pg_paxos_demo}
export PG_PAXOS_BASE_PORT=${PG_PAXOS_BASE_PORT:-5440}
cluster() { scripts/cluster "$@"; }
sql() { local node=$1; shift; cluster psql "$node" -q -v ON_ERROR_STOP=1 "$@"; }
step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }
show() { printf '\033[2mnode%s> %s\033[0m\n' "$1" "$2"; sql "$1" -c "$2"; }

step "1. Start three PostgreSQL 15 nodes with pg_paxos preloaded"
cluster teardown
cluster create 3
N1=$(cluster conninfo 1); N2=$(cluster conninfo 2); N3=$(cluster conninfo 3)

step "2. Form the group 'demo': create it on node 1, join nodes 2 and 3"
show 1 "SELECT paxos_create_group('demo', '$N1')"
show 2 "SELECT paxos_join_group('demo', '$N1', '$N2') AS joined_in_round"
show 3 "SELECT paxos_join_group('demo', '$N2', '$N3') AS joined_in_round"
show 1 "SELECT member, node_id, reachable, highest_accepted_round FROM paxos_status('demo')"

step "3. Append values from different nodes: each lands in its own round of one log"
echo "(each membership change closed the following $((32 - 1)) rounds, so the first values land after them)"
append() { sql "$1" -At -c "SELECT paxos_append('node$1/demo', 'demo', '$2')"; }
R1=$(append 1 'primary = node1'); echo "node1 appended 'primary = node1' in round $R1"
R2=$(append 2 'config v2');       echo "node2 appended 'config v2' in round $R2"
R3=$(append 3 'config v3');       echo "node3 appended 'config v3' in round $R3"

step "4. Read those rounds back on every node with paxos(): all nodes agree"
for n in 1 2 3; do
  show "$n" "SELECT r AS round, (paxos('reader', 'demo', r)).accepted_value FROM unnest(ARRAY[$R1, $R2, $R3]::bigint[]) AS r"
done

step "5. Stop node 3: two of three is a majority, appends go on"
cluster stop 3
cluster status
show 1 "SELECT paxos_append('node1/2', 'demo', 'written while node3 is down') AS round"
show 2 "SELECT paxos_append('node2/2', 'demo', 'also while node3 is down') AS round"

step "6. Stop node 2 as well: no majority, a clear error instead of a hang"
cluster stop 2
sql 1 -c "SET pg_paxos.connect_timeout = 1000" -c "SELECT paxos_append('node1/3', 'demo', 'cannot be chosen')" 2>&1 | sed 's/^/    /' || true
cluster start 2

step "7. Restart node 3: it catches up by applying the log up to the group's highest round"
cluster start 3
show 3 "SELECT paxos_apply_log('node3/2', 'demo', paxos_max_group_round('demo')) AS applied_round"
for n in 1 2 3; do
  show "$n" "SELECT count(*) AS rounds_learned, max(round) AS highest, md5(string_agg(round || value_kind || coalesce(value_body, ''), ',' ORDER BY round)) AS log_checksum FROM paxos.log WHERE group_id = 'demo'"
  show "$n" "SELECT round, value_body FROM paxos.log WHERE group_id = 'demo' AND value_kind = 'value' ORDER BY round"
done
show 1 "SELECT member, node_id, reachable, highest_accepted_round, applied_round FROM paxos_status('demo')"

step "8. A replicated table, as in the original README: plain SQL on any node"
for n in 1 2 3; do sql "$n" -c "CREATE TABLE coordinates (x int, y int)"; done
show 1 "SELECT paxos_replicate_table('demo', 'coordinates')"
show 1 "INSERT INTO coordinates VALUES (1,1)"
show 1 "INSERT INTO coordinates VALUES (2,2)"
show 2 "SELECT * FROM coordinates ORDER BY x"
show 2 "UPDATE coordinates SET x = x * 10"
show 3 "SELECT * FROM coordinates ORDER BY x"

step "9. Leadership: node 2 wrote last, so it campaigned once; its later writes need phase 2 only"
show 2 "SELECT leads, ballot FROM paxos.leadership('demo')"
show 2 "INSERT INTO coordinates VALUES (4,4)"
echo "(both of node 2's writes were voted under the ballot of its one campaign: no phase 1 per round)"
show 2 "SELECT round, promised_num, promised_by, accepted_num, accepted_by FROM paxos.acceptor_slots WHERE group_id = 'demo' ORDER BY round DESC LIMIT 2"

step "10. Stop node 3, write on node 1, restart node 3: its first read catches up"
cluster stop 3
show 1 "INSERT INTO coordinates VALUES (3,3)"
cluster start 3
for n in 1 2 3; do
  show "$n" "SELECT count(*) AS rows, md5(string_agg(x || ',' || y, ';' ORDER BY x)) AS checksum FROM coordinates"
done

step "11. Defaults, clocks and randomness: fixed where the write runs, the same on every node"
for n in 1 2 3; do
  sql "$n" -c "CREATE TABLE orders (id serial PRIMARY KEY, token uuid DEFAULT gen_random_uuid(), placed timestamptz DEFAULT now(), lucky float8, item text)"
done
show 1 "SELECT paxos_replicate_table('demo', 'orders')"
show 1 "INSERT INTO orders (item, lucky) VALUES ('tea', random()), ('cake', random())"
show 2 "INSERT INTO orders (item, lucky) VALUES ('coffee', random())"
for n in 1 2 3; do
  show "$n" "SELECT count(*) AS rows, md5(string_agg(orders::text, ';' ORDER BY id)) AS checksum FROM orders"
done
show 3 "SELECT id, token, placed, round(lucky::numeric, 4) AS lucky, item FROM orders ORDER BY id"

step "12. Group commit: 8 clients insert on node 2 (the leader) for 2 s; their inserts share rounds"
for n in 1 2 3; do sql "$n" -c "CREATE TABLE readings (id bigint PRIMARY KEY, value float8)"; done
show 2 "SELECT paxos_replicate_table('demo', 'readings')"
printf '\\set id random(1, 1000000000000000000)\nINSERT INTO readings VALUES (:id, 0.5);\n' > "$PG_PAXOS_CLUSTER_DIR/readings.sql"
env -u RUST_BACKTRACE runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench -n -h 127.0.0.1 \
  -p $((PG_PAXOS_BASE_PORT + 2)) -c 8 -j 2 -T 2 -f "$PG_PAXOS_CLUSTER_DIR/readings.sql" postgres 2>&1 \
  | grep -E "^(tps|number of failed)"
show 2 "SELECT count(*) AS batches, round(avg((length(value_body) - length(replace(value_body, 'INSERT INTO', ''))) / 11.0), 1) AS inserts_per_round FROM paxos.log WHERE group_id = 'demo' AND value_kind = 'batch'"
for n in 1 2 3; do
  show "$n" "SELECT count(*) AS rows, md5(string_agg(id::text, ';' ORDER BY id)) AS checksum FROM readings"
done

step "13. Leader leases (off by default): node 2 serves strong reads alone while a majority grants it one"
for n in 1 2 3; do
  sql "$n" -c "ALTER SYSTEM SET pg_paxos.lease_duration = '2s'"
  sql "$n" -c "SELECT pg_reload_conf()" >/dev/null
done
# The first strong read asks the members for a lease; once granted, reads need no round trip.
for _ in $(seq 50); do
  left=$(sql 2 -At -c "SELECT count(*) FROM readings" -c "SELECT lease_remaining_ms FROM paxos.leadership('demo')" | tail -1)
  [[ -n $left ]] && break
  sleep 0.1
done
show 2 "SELECT leads, lease_remaining_ms FROM paxos.leadership('demo')"
printf 'SELECT count(*) FROM readings WHERE id < 1000000;\n' > "$PG_PAXOS_CLUSTER_DIR/strong_read.sql"
env -u RUST_BACKTRACE runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench -n -h 127.0.0.1 \
  -p $((PG_PAXOS_BASE_PORT + 2)) -c 1 -T 1 -f "$PG_PAXOS_CLUSTER_DIR/strong_read.sql" postgres 2>&1 \
  | grep -E "^(tps|latency average)"
show 2 "SELECT lease_reads AS strong_reads_under_the_lease FROM paxos.leadership('demo')"
show 1 "SELECT holder, round(remaining_ms::numeric) AS remaining_ms FROM paxos.lease_grant('demo')"

step "14. Inserts on other members go to the leader: 4 clients on node 1 and 4 on node 3 for 2 s"
show 2 "SELECT leads, ballot FROM paxos.leadership('demo')"
for n in 1 3; do
  env -u RUST_BACKTRACE runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench -n -h 127.0.0.1 \
    -p $((PG_PAXOS_BASE_PORT + n)) -c 4 -j 2 -T 2 -f "$PG_PAXOS_CLUSTER_DIR/readings.sql" postgres \
    > "$PG_PAXOS_CLUSTER_DIR/forwarded-$n.out" 2>&1 &
done
wait
for n in 1 3; do grep -E "^(tps|number of failed)" "$PG_PAXOS_CLUSTER_DIR/forwarded-$n.out" | sed "s/^/node $n: /"; done
echo "(node 2 still leads with the same ballot: nobody took the leadership over)"
show 2 "SELECT leads, ballot FROM paxos.leadership('demo')"
for n in 1 2 3; do
  show "$n" "SELECT forwarded_in, forwarded_out FROM paxos.group_commit('demo')"
done
for n in 1 2 3; do
  show "$n" "SELECT count(*) AS rows, md5(string_agg(id::text, ';' ORDER BY id)) AS checksum FROM readings"
done

step "15. Node 3 loses its data (here: its extension is dropped): it votes no more and comes back as a new voter"
show 3 "DROP EXTENSION pg_paxos CASCADE"
show 3 "CREATE EXTENSION pg_paxos"
echo "(leaders' requests to node 3 are refused now: its old votes are gone, so they must not count)"
sql 3 -c "SELECT * FROM paxos.request_accept('demo', 1000000, 1, 'anyone', 'o', 'value', 'v')" 2>&1 | sed 's/^/    /' || true
show 1 "SELECT paxos_append('node1/4', 'demo', 'written while node3 refuses') AS round"
echo "(it cannot join again as the member it was: the group admitted another copy of pg_paxos there)"
sql 3 -c "SELECT paxos_join_group('demo', '$N1', '$N3')" 2>&1 | sed 's/^/    /' || true
show 1 "SELECT paxos.admitted_token('demo', '$N3') AS admitted_at_node3_address"
show 3 "SELECT paxos.node_identity() AS node3_now"
echo "(so: remove the old member, then join as a new one; the operator does both by itself)"
show 1 "SELECT paxos_remove_host('demo', '$N3') AS removed_in_round"
show 3 "SELECT paxos_join_group('demo', '$N1', '$N3') AS joined_in_round"
for n in 1 3; do
  show "$n" "SELECT count(*) AS rows, md5(string_agg(id::text, ';' ORDER BY id)) AS checksum FROM readings"
done

step "Done"
if [[ ${1:-} == --teardown ]]; then
  cluster teardown
  echo "The demo cluster was removed."
else
  echo "The cluster keeps running. Try: PG_PAXOS_CLUSTER_DIR=$PG_PAXOS_CLUSTER_DIR PG_PAXOS_BASE_PORT=$PG_PAXOS_BASE_PORT scripts/cluster psql 1"
  echo "Remove it with:   PG_PAXOS_CLUSTER_DIR=$PG_PAXOS_CLUSTER_DIR PG_PAXOS_BASE_PORT=$PG_PAXOS_BASE_PORT scripts/cluster teardown"
fi
