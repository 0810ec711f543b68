//! Group commit on real local clusters: single-statement inserts running at once on the leader
//! share rounds; inserts that collide on a key still fail as they would alone; batched inserts
//! mixed with updates and deletes (which take the group alone) leave every node with the same
//! rows; a batched transaction that goes on to write something else takes the group alone; and
//! `pg_paxos.batch_writes = off` gives every transaction a round of its own.

use std::time::Duration;

use pg_paxos_tests::{
    bounded, count, execute_retrying, sqlstate, wait_until, Cluster, LinkProxy, Rule,
};
use tokio_postgres::Client;

const TABLE: &str = "CREATE TABLE items (id int PRIMARY KEY, v text)";

/// A 3-node group where node 1 reaches nodes 2 and 3 only through proxies that delay every
/// packet: node 1's rounds take at least that long, so writes arriving meanwhile queue up.
struct SlowCluster {
    cluster: Cluster,
    _proxies: Vec<LinkProxy>,
}

async fn slow_cluster(name: &str, delay: Duration) -> SlowCluster {
    let cluster = Cluster::with_schema(name, 3, TABLE).await;
    cluster.create_group("g", &cluster.conninfo(1)).await;
    cluster.replicate("g", "items").await;
    let c1 = cluster.client(1).await;
    let mut proxies = Vec::new();
    for n in [2, 3] {
        let proxy = LinkProxy::start(cluster.port(n));
        cluster.join_known_as("g", n, 1, &proxy.conninfo()).await;
        proxy.set("node1", Rule::Delay(delay));
        proxies.push(proxy);
    }
    // Node 1 writes first, so it leads.
    c1.execute("INSERT INTO items VALUES (0, 'first')", &[])
        .await
        .unwrap();
    let leads: bool = c1
        .query_one("SELECT leads FROM paxos.leadership('g')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(leads, "node 1 wrote, so it leads");
    SlowCluster {
        cluster,
        _proxies: proxies,
    }
}

/// The most writes one logged batch of group `g` carries, as node `c` recorded it.
async fn largest_batch(c: &Client) -> i64 {
    count(
        c,
        "SELECT coalesce(max((length(value_body) - length(replace(value_body, 'INSERT INTO', '')))
                             / length('INSERT INTO')), 0)::bigint
         FROM paxos.log WHERE group_id = 'g' AND value_kind = 'batch'",
    )
    .await
}

/// Runs `sql` with `id` on `clients` connections at once; returns each outcome.
async fn at_once(
    cluster: &Cluster,
    clients: usize,
    sql: &'static str,
    id: impl Fn(usize) -> i32,
) -> Vec<Result<u64, tokio_postgres::Error>> {
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(cluster.client(1).await);
    }
    let runs = connections.iter().enumerate().map(|(i, c)| {
        let id = id(i);
        async move { c.execute(sql, &[&id, &format!("v{i}")]).await }
    });
    futures::future::join_all(runs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_running_at_once_share_rounds_and_every_node_gets_them() {
    bounded(async {
        let slow = slow_cluster("batch_share", Duration::from_millis(150)).await;
        let cluster = &slow.cluster;
        let outcomes = at_once(cluster, 12, "INSERT INTO items VALUES ($1, $2)", |i| {
            i as i32 + 1
        })
        .await;
        for (i, outcome) in outcomes.iter().enumerate() {
            assert_eq!(
                *outcome
                    .as_ref()
                    .unwrap_or_else(|e| panic!("insert {i}: {e:?}")),
                1
            );
        }
        let c1 = cluster.client(1).await;
        // Twelve inserts arrived within one slow round: all but the first had to wait for it,
        // and then went together.
        let largest = largest_batch(&c1).await;
        assert!(
            largest >= 2,
            "no round carried two writes (largest {largest})"
        );
        let rounds = count(
            &c1,
            "SELECT count(*) FROM paxos.log WHERE group_id = 'g' AND value_kind = 'batch'",
        )
        .await;
        assert!(rounds < 13, "13 writes took {rounds} rounds");
        assert_eq!(
            count(&c1, "SELECT pipelined_batches FROM paxos.group_commit('g')").await,
            0,
            "one batch in flight at a time by default"
        );
        let chain = c1
            .query_one(
                "SELECT chain_open, tip_round - from_round, proposing, queued
                 FROM paxos.group_commit('g')",
                &[],
            )
            .await
            .unwrap();
        let (open, span, proposing, queued): (bool, i64, bool, i32) =
            (chain.get(0), chain.get(1), chain.get(2), chain.get(3));
        assert!(open, "the chain is still open");
        assert!(span >= 2, "the chain holds the batches ({span} rounds)");
        assert_eq!((proposing, queued), (false, 0), "nothing left in flight");
        cluster.assert_same_rows("items").await;
        let rows = count(&c1, "SELECT count(*) FROM items").await;
        assert_eq!(rows, 13);
        // A strong read on node 1 saw every batched write without applying the batches: each
        // took effect there already (rows and mark committed), so the read took no lock.
        let marks = count(&c1, "SELECT count(*) FROM paxos.batched_writes").await;
        assert_eq!(marks, 13, "the reads left the batches to the next writer");
        // The next write that runs alone applies them, skipping what took effect already.
        c1.execute("UPDATE items SET v = v WHERE id = 0", &[])
            .await
            .unwrap();
        let marks = count(&c1, "SELECT count(*) FROM paxos.batched_writes").await;
        assert_eq!(marks, 0, "applied batches leave no marks behind");
        assert_eq!(count(&c1, "SELECT count(*) FROM items").await, 13);
        cluster.assert_same_rows("items").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_inserts_of_one_key_fail_as_they_would_alone() {
    bounded(async {
        let slow = slow_cluster("batch_same_key", Duration::from_millis(100)).await;
        let cluster = &slow.cluster;
        let outcomes = at_once(cluster, 8, "INSERT INTO items VALUES ($1, $2)", |_| 7).await;
        let won = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(won, 1, "{outcomes:?}");
        for e in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            assert_eq!(sqlstate(e), "23505", "{e:?}");
        }
        cluster.assert_same_rows("items").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_inserts_mixed_with_updates_and_deletes_leave_the_same_rows() {
    bounded(async {
        let cluster = Cluster::with_replicated_table("batch_mixed", 3, "g", "items", TABLE).await;
        let c1 = cluster.client(1).await;
        c1.execute("INSERT INTO items VALUES (0, 'first')", &[])
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut tasks = Vec::new();
        for worker in 0..6 {
            let client = cluster.client(1).await;
            tasks.push(tokio::spawn(async move {
                let mut done = 0;
                let mut n = 0;
                while tokio::time::Instant::now() < deadline {
                    n += 1;
                    let id = worker * 100_000 + n;
                    let result = match worker {
                        // Updates and deletes read rows: they take the group alone.
                        0 => {
                            client
                                .execute(
                                    "UPDATE items SET v = v || 'u' WHERE id % 7 = $1 % 7",
                                    &[&id],
                                )
                                .await
                        }
                        1 => {
                            client
                                .execute("DELETE FROM items WHERE id % 11 = $1 % 11", &[&id])
                                .await
                        }
                        _ => {
                            client
                                .execute("INSERT INTO items VALUES ($1, 'new')", &[&id])
                                .await
                        }
                    };
                    match result {
                        Ok(_) => done += 1,
                        Err(e) if sqlstate(&e) == "40001" => {}
                        Err(e) => panic!("worker {worker}: {e:?}"),
                    }
                }
                done
            }));
        }
        let mut done = 0;
        for task in tasks {
            done += task.await.unwrap();
        }
        assert!(done > 50, "only {done} writes went through");
        let batches = count(
            &c1,
            "SELECT count(*) FROM paxos.log WHERE group_id = 'g' AND value_kind = 'batch'",
        )
        .await;
        assert!(batches > 0, "no insert was batched");
        cluster.assert_same_rows("items").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_transaction_that_writes_more_takes_the_group_alone() {
    bounded(async {
        let cluster = Cluster::with_replicated_table("batch_upgrade", 3, "g", "items", TABLE).await;
        let c1 = cluster.client(1).await;
        c1.batch_execute(
            "INSERT INTO items VALUES (0, 'first');
             CREATE FUNCTION public.insert_then_update(i int) RETURNS void LANGUAGE plpgsql AS $$
             BEGIN
               INSERT INTO public.items VALUES (i, 'inserted');
               UPDATE public.items SET v = 'updated' WHERE id = i;
             END $$;",
        )
        .await
        .unwrap();
        c1.execute("SELECT public.insert_then_update(5)", &[])
            .await
            .unwrap();
        let last: (String, String) = c1
            .query_one(
                "SELECT value_kind, value_body FROM paxos.log WHERE group_id = 'g'
                 ORDER BY round DESC LIMIT 1",
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!(last.0, "statement", "one entry of its own: {last:?}");
        assert!(
            last.1.contains("INSERT INTO") && last.1.contains("UPDATE"),
            "{last:?}"
        );
        cluster.assert_same_rows("items").await;
        for n in cluster.nodes() {
            let v: String = cluster
                .client(n)
                .await
                .query_one("SELECT v FROM items WHERE id = 5", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(v, "updated", "node {n}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_batching_off_every_insert_takes_a_round_of_its_own() {
    bounded(async {
        let slow = slow_cluster("batch_off", Duration::from_millis(50)).await;
        let cluster = &slow.cluster;
        let mut connections = Vec::new();
        for _ in 0..4 {
            let c = cluster.client(1).await;
            c.batch_execute("SET pg_paxos.batch_writes = off")
                .await
                .unwrap();
            connections.push(c);
        }
        let runs = connections.iter().enumerate().map(|(i, c)| async move {
            let id = i as i32 + 1;
            execute_retrying(c, "INSERT INTO items VALUES ($1, 'x')", &[&id])
                .await
                .unwrap_or_else(|e| panic!("insert {i}: {e:?}"));
        });
        futures::future::join_all(runs).await;
        let c1 = cluster.client(1).await;
        let (statements, batched): (i64, i64) = c1
            .query_one(
                "SELECT count(*) FILTER (WHERE value_kind = 'statement'),
                        count(*) FILTER (WHERE value_kind = 'batch' AND value_body LIKE '%x''%')
                 FROM paxos.log WHERE group_id = 'g'",
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!((statements, batched), (4, 0));
        wait_until(
            "every node has the five rows",
            Duration::from_secs(10),
            || async {
                cluster
                    .table_checksums("items")
                    .await
                    .windows(2)
                    .all(|w| w[0] == w[1])
            },
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_ended_while_their_round_is_in_flight_leave_nothing_stuck() {
    bounded(async {
        let slow = slow_cluster("batch_terminated", Duration::from_millis(300)).await;
        let cluster = &slow.cluster;
        let mut running = Vec::new();
        for i in 0..6 {
            let c = cluster.client(1).await;
            running.push(tokio::spawn(async move {
                c.execute("INSERT INTO items VALUES ($1, 'ended')", &[&(100 + i)])
                    .await
            }));
        }
        let admin = cluster.client(1).await;
        wait_until(
            "six inserts waiting for their rounds",
            Duration::from_secs(10),
            || async {
                let active = count(
                    &admin,
                    "SELECT count(*) FROM pg_stat_activity
                         WHERE query LIKE 'INSERT INTO items%' AND state = 'active'",
                )
                .await;
                active == 6
            },
        )
        .await;
        // The backends end (FATAL) while one of them proposes and the others wait for it.
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE query LIKE 'INSERT INTO items%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        for task in running {
            // Ended or, for one that got through just before, done: either is fine here.
            let _ = task.await.unwrap();
        }
        // Nothing is left in flight: later inserts go through at once (after a serialization
        // failure or two while the node applies what the ended ones left).
        for id in 200..204 {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
            let insert =
                execute_retrying(&admin, "INSERT INTO items VALUES ($1, 'after')", &params);
            tokio::time::timeout(Duration::from_secs(10), insert)
                .await
                .unwrap_or_else(|_| panic!("insert {id} hung: a queue was left stuck"))
                .unwrap_or_else(|e| panic!("insert {id}: {e:?}"));
        }
        let outcomes = at_once(cluster, 6, "INSERT INTO items VALUES ($1, $2)", |i| {
            300 + i as i32
        })
        .await;
        for (i, outcome) in outcomes.iter().enumerate() {
            if let Err(e) = outcome {
                assert_eq!(sqlstate(e), "40001", "insert {i}: {e:?}");
            }
        }
        cluster.assert_same_rows("items").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_drawing_several_numbers_from_a_sequence_do_not_share_rounds() {
    bounded(async {
        let ddl = "CREATE TABLE serials (id serial PRIMARY KEY, v text)";
        let cluster = Cluster::with_replicated_table("batch_serial", 3, "g", "serials", ddl).await;
        cluster
            .client(1)
            .await
            .execute("INSERT INTO serials (v) VALUES ('first')", &[])
            .await
            .unwrap();
        // Single-row inserts draw once and share rounds; three-row inserts draw three numbers,
        // which must be consecutive to be logged, so they write alone (in turns).
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(cluster.client(1).await);
        }
        let runs = clients.iter().enumerate().map(|(i, c)| async move {
            for _ in 0..10 {
                let sql = if i % 2 == 0 {
                    "INSERT INTO serials (v) VALUES ('one')"
                } else {
                    "INSERT INTO serials (v) VALUES ('a'), ('b'), ('c')"
                };
                execute_retrying(c, sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("client {i}: {e:?}"));
            }
        });
        futures::future::join_all(runs).await;
        cluster.assert_same_rows("serials").await;
        let c1 = cluster.client(1).await;
        let (rows, distinct): (i64, i64) = c1
            .query_one("SELECT count(*), count(DISTINCT id) FROM serials", &[])
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!((rows, distinct), (1 + 40 + 120, 161));
        let batched_multi_row = count(
            &c1,
            "SELECT count(*) FROM paxos.log WHERE group_id = 'g' AND value_kind = 'batch'
                   AND value_body LIKE '%''b''%'",
        )
        .await;
        assert_eq!(batched_multi_row, 0, "a three-row insert went into a batch");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_too_long_for_the_shared_queue_are_proposed_by_their_own_transaction() {
    bounded(async {
        let slow = slow_cluster("batch_long", Duration::from_millis(100)).await;
        let cluster = &slow.cluster;
        let mut clients = Vec::new();
        for _ in 0..6 {
            clients.push(cluster.client(1).await);
        }
        // Entries of about 3 kB do not fit a place in shared memory (1.5 kB): each stays with its
        // transaction, which proposes it (with whatever short entries are queued) when no other
        // batch is in flight.
        let runs = clients.iter().enumerate().map(|(i, c)| async move {
            let long = format!("{i}").repeat(3000);
            let short = "s".to_string();
            let id = 10 + i as i32;
            let v = if i % 2 == 0 { long } else { short };
            tokio::time::timeout(
                Duration::from_secs(20),
                execute_retrying(c, "INSERT INTO items VALUES ($1, $2)", &[&id, &v]),
            )
            .await
            .unwrap_or_else(|_| panic!("insert {i} was never proposed"))
            .unwrap_or_else(|e| panic!("insert {i}: {e:?}"));
        });
        futures::future::join_all(runs).await;
        cluster.assert_same_rows("items").await;
        let long_rows = count(
            &cluster.client(2).await,
            "SELECT count(*) FROM items WHERE length(v) = 3000",
        )
        .await;
        assert_eq!(long_rows, 3);
    })
    .await;
}

/// A batch goes while the one before it is still in flight, in the round right after it and
/// naming it: both land, in order, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_batch_goes_while_the_first_is_in_flight() {
    bounded(async {
        let slow = slow_cluster("batch_pipeline", Duration::from_millis(300)).await;
        let cluster = &slow.cluster;
        let c1 = cluster.client(1).await;
        for sql in [
            "ALTER SYSTEM SET pg_paxos.batches_in_flight = 2",
            "SELECT pg_reload_conf()",
        ] {
            c1.batch_execute(sql).await.unwrap();
        }
        wait_until(
            "two batches allowed in flight",
            Duration::from_secs(10),
            || async {
                let shown: String = cluster
                    .client(1)
                    .await
                    .query_one("SHOW pg_paxos.batches_in_flight", &[])
                    .await
                    .unwrap()
                    .get(0);
                shown == "2"
            },
        )
        .await;
        let first = cluster.client(1).await;
        let first = tokio::spawn(async move {
            first
                .execute("INSERT INTO items VALUES (1, 'first batch')", &[])
                .await
        });
        wait_until("the first batch in flight", Duration::from_secs(10), || {
            let c1 = &c1;
            async move {
                c1.query_one("SELECT proposing FROM paxos.group_commit('g')", &[])
                    .await
                    .unwrap()
                    .get::<_, bool>(0)
            }
        })
        .await;
        let outcomes = at_once(cluster, 4, "INSERT INTO items VALUES ($1, $2)", |i| {
            i as i32 + 2
        })
        .await;
        for (i, outcome) in outcomes.iter().enumerate() {
            assert!(outcome.is_ok(), "insert {i}: {outcome:?}");
        }
        first.await.unwrap().unwrap();
        let pipelined = count(&c1, "SELECT pipelined_batches FROM paxos.group_commit('g')").await;
        assert!(pipelined >= 1, "no batch went while another was in flight");
        assert_eq!(
            count(&c1, "SELECT void_batches FROM paxos.group_commit('g')").await,
            0
        );
        // The pipelined batch names the batch in the round before it.
        let named = count(
            &c1,
            "SELECT count(*) FROM paxos.log l JOIN paxos.log p
                 ON p.group_id = l.group_id AND p.round = l.round - 1
              WHERE l.group_id = 'g' AND l.value_kind = 'batch' AND p.value_kind = 'batch'
                AND starts_with(l.value_body,
                                length('a' || p.value_origin) || ':a' || p.value_origin)",
        )
        .await;
        assert!(named >= 1, "no batch names the one before it");
        cluster.assert_same_rows("items").await;
        assert_eq!(count(&c1, "SELECT count(*) FROM items").await, 6);
    })
    .await;
}

/// A batch that names a value the round before it does not hold is void on every node: it was
/// proposed behind a batch that lost its round, so its writes never take effect anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_behind_a_lost_round_is_void_everywhere() {
    use paxos_model::entries::{Batch, LoggedStatement};
    bounded(async {
        let cluster = Cluster::with_replicated_table("batch_void", 3, "g", "items", TABLE).await;
        let c1 = cluster.client(1).await;
        c1.execute("INSERT INTO items VALUES (0, 'first')", &[])
            .await
            .unwrap();
        cluster.assert_same_rows("items").await;
        let highest = count(&c1, "SELECT paxos_max_group_round('g')").await;

        // A proposer of its own puts three batches in the next rounds, on every acceptor.
        let batch = |id: i32, after: Option<&str>| {
            Batch {
                statements: vec![LoggedStatement::sql(
                    "postgres".into(),
                    format!("INSERT INTO public.items VALUES ({id}, 'batch')"),
                )],
                after: after.map(str::to_string),
            }
            .encode()
        };
        let rounds = [
            ("batch@tester/1", batch(10, None)),
            ("batch@tester/2", batch(11, Some("batch@tester/1"))),
            ("batch@tester/3", batch(12, Some("batch@somebody-else/9"))),
        ];
        for n in cluster.nodes() {
            let c = cluster.client(n).await;
            for (offset, (origin, body)) in rounds.iter().enumerate() {
                let round = highest + 1 + offset as i64;
                let promised: String = c
                    .query_one(
                        "SELECT status FROM paxos.request_prepare('g', $1, 1000000, 'tester')",
                        &[&round],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(promised, "granted", "node {n}, round {round}");
                let accepted: String = c
                    .query_one(
                        "SELECT status FROM paxos.request_accept('g', $1, 1000000, 'tester', $2, 'batch', $3)",
                        &[&round, origin, body],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(accepted, "accepted", "node {n}, round {round}");
            }
        }
        // Strong reads learn and apply the three rounds on every node.
        for n in cluster.nodes() {
            let c = cluster.client(n).await;
            let ids: Vec<i32> = c
                .query("SELECT id FROM items ORDER BY id", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(ids, vec![0, 10, 11], "node {n}");
            let diverged = count(
                &c,
                "SELECT count(*) FROM paxos.groups WHERE diverged_round IS NOT NULL",
            )
            .await;
            assert_eq!(diverged, 0, "node {n} applies on");
        }
        cluster.assert_same_rows("items").await;
    })
    .await;
}

/// Batched inserts draw their numbers concurrently, so the log may hold a lower number after a
/// higher one. Replaying them must not move a sequence back: the node would later hand out a
/// number a row has, once it writes itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_batches_never_move_a_sequence_back() {
    bounded(async {
        let ddl = "CREATE TABLE serials (id bigserial PRIMARY KEY, v text)";
        let cluster =
            Cluster::with_replicated_table("batch_seq_back", 3, "g", "serials", ddl).await;
        let c1 = cluster.client(1).await;
        c1.execute("INSERT INTO serials (v) VALUES ('first')", &[])
            .await
            .unwrap();
        // A draws 2, then sleeps (its value is evaluated after its key); B draws 3 and commits
        // meanwhile; then A commits: both single-statement inserts, so 3 is logged before 2.
        let a = cluster.client(1).await;
        let a = tokio::spawn(async move {
            a.execute(
                "INSERT INTO serials (v) VALUES ('a' || pg_sleep(1)::text)",
                &[],
            )
            .await
        });
        wait_until("A sleeping after its draw", Duration::from_secs(10), || {
            let c1 = &c1;
            async move {
                count(
                    c1,
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE wait_event = 'PgSleep' AND query LIKE 'INSERT INTO serials%'",
                )
                .await
                    == 1
            }
        })
        .await;
        c1.execute("INSERT INTO serials (v) VALUES ('b')", &[])
            .await
            .unwrap();
        a.await.unwrap().unwrap();
        let ids: Vec<i64> = c1
            .query("SELECT id FROM serials ORDER BY v", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, vec![2, 3, 1], "A drew 2, B drew 3");
        let round_of = |v: &'static str| {
            let c1 = &c1;
            async move {
                count(
                    c1,
                    &format!(
                        "SELECT max(round) FROM paxos.log
                         WHERE group_id = 'g' AND value_body LIKE '%''{v}''%'"
                    ),
                )
                .await
            }
        };
        assert!(
            round_of("b").await < round_of("a").await,
            "3 is logged before 2"
        );

        // Node 2 applies the log, then writes itself (taking the leadership over).
        let c2 = cluster.client(2).await;
        assert_eq!(count(&c2, "SELECT count(*) FROM serials").await, 3);
        c2.batch_execute("SET pg_paxos.forward_writes = off")
            .await
            .unwrap();
        let id: i64 = c2
            .query_one(
                "INSERT INTO serials (v) VALUES ('node 2') RETURNING id",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("node 2 drew a number a row has: {e:?}"))
            .get(0);
        assert_eq!(id, 4, "node 2 draws after every replayed number");
        cluster.assert_same_rows("serials").await;
    })
    .await;
}

/// A leader's batched inserts leave their rounds learned but not applied (their rows and marks are
/// committed, and reads see them without applying). After a restart the node no longer leads, and
/// its next write must still apply those rounds first: it once proposed in the first of them
/// again and again, failing every write with `40001`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_applies_its_batches_before_writing_again() {
    bounded(async {
        let cluster = Cluster::with_replicated_table("batch_restart", 3, "g", "items", TABLE).await;
        let c1 = cluster.client(1).await;
        for id in 1..=3 {
            c1.execute("INSERT INTO items VALUES ($1, 'batched')", &[&id])
                .await
                .unwrap();
        }
        let pending = count(
            &c1,
            "SELECT max(round) - (SELECT applied_round FROM paxos.groups WHERE group_id = 'g')
             FROM paxos.log WHERE group_id = 'g'",
        )
        .await;
        assert!(
            pending >= 3,
            "the batches are left to the next writer ({pending})"
        );
        cluster.run(&["restart", "1"]);
        let c1 = cluster.client(1).await;
        c1.execute("INSERT INTO items VALUES (4, 'after the restart')", &[])
            .await
            .unwrap_or_else(|e| panic!("the first write after the restart: {e:?}"));
        assert_eq!(count(&c1, "SELECT count(*) FROM items").await, 4);
        cluster.assert_same_rows("items").await;
    })
    .await;
}

/// Whether node `c`'s commit chain for group `g` is open, and its last batch's round.
async fn chain(c: &Client) -> (bool, Option<i64>) {
    let row = c
        .query_one(
            "SELECT chain_open, tip_round FROM paxos.group_commit('g')",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_the_leader_appends_past_the_chain_breaks_it_and_later_inserts_apply_it_first() {
    bounded(async {
        let cluster = Cluster::with_replicated_table("batch_break", 3, "g", "items", TABLE).await;
        let c1 = cluster.client(1).await;
        for id in 1..=3 {
            c1.execute("INSERT INTO items VALUES ($1, 'batched')", &[&id])
                .await
                .unwrap();
        }
        let (open, tip) = chain(&c1).await;
        assert!(open, "single inserts on the leader run in its commit chain");
        // A value of the log's own API takes the round after the chain's tip: the chain's next
        // batch could no longer be chosen there, so writers must not join it unread.
        let appended: i64 = c1
            .query_one("SELECT paxos_append('test', 'g', 'not a batch')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(Some(appended), tip.map(|t| t + 1));
        let (open, _) = chain(&c1).await;
        assert!(!open, "a round learned past the tip breaks the chain");
        for id in 4..=6 {
            c1.execute("INSERT INTO items VALUES ($1, 'after')", &[&id])
                .await
                .unwrap();
        }
        let (open, tip) = chain(&c1).await;
        assert!(open, "a new chain starts from the applied state");
        assert!(tip > Some(appended), "tip {tip:?}, appended {appended}");
        for n in cluster.nodes() {
            let c = cluster.client(n).await;
            // A strong read: every node applies the log first.
            assert_eq!(count(&c, "SELECT count(*) FROM items").await, 6, "node {n}");
        }
        cluster.assert_same_rows("items").await;
    })
    .await;
}

/// Rounds of group `g` that node `c` learned but has not applied.
async fn unapplied(c: &Client) -> i64 {
    count(
        c,
        "SELECT max(round) - (SELECT applied_round FROM paxos.groups WHERE group_id = 'g')
         FROM paxos.log WHERE group_id = 'g'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_commit_chain_is_settled_as_it_runs_and_members_apply_it_in_stretches() {
    bounded(async {
        let cluster = Cluster::with_replicated_table("batch_stretch", 3, "g", "items", TABLE).await;
        let c1 = cluster.client(1).await;
        for sql in [
            "ALTER SYSTEM SET pg_paxos.batches_in_flight = 2",
            "SELECT pg_reload_conf()",
        ] {
            c1.batch_execute(sql).await.unwrap();
        }
        // 8 clients, 40 inserts each, plus an update and a delete now and then (rounds alone),
        // pipelined batches among them; then 300 inserts one after the other: one commit chain
        // of node 1 longer than it may run unsettled.
        let mut writers = Vec::new();
        for w in 0..8 {
            let c = cluster.client(1).await;
            writers.push(tokio::spawn(async move {
                for i in 0..40 {
                    let id = w * 1000 + i;
                    c.execute("INSERT INTO items VALUES ($1, 'new')", &[&id])
                        .await
                        .unwrap();
                    if i % 20 == 19 {
                        c.execute("UPDATE items SET v = 'updated' WHERE id = $1", &[&(id - 1)])
                            .await
                            .unwrap();
                        c.execute("DELETE FROM items WHERE id = $1", &[&(id - 2)])
                            .await
                            .unwrap();
                    }
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        for id in 10_000..10_300 {
            c1.execute("INSERT INTO items VALUES ($1, 'alone')", &[&id])
                .await
                .unwrap();
        }
        // Node 1 settled its chain's rounds as it went (every 256 rounds), without a read: its
        // applied round and its marks of batched writes stay close behind.
        let behind = unapplied(&c1).await;
        assert!(behind <= 256 + 2, "node 1 has {behind} rounds to apply");
        let marks = count(&c1, "SELECT count(*) FROM paxos.batched_writes").await;
        assert!(marks <= behind + 16, "{marks} marks for {behind} rounds");
        // Node 2 applies every round for one read, a stretch of the log at a time.
        let c2 = cluster.client(2).await;
        let behind = unapplied(&c2).await;
        assert!(behind > 300, "node 2 has {behind} rounds to apply");
        assert_eq!(count(&c2, "SELECT count(*) FROM items").await, 8 * 40 - 8 * 2 + 300);
        assert_eq!(unapplied(&c2).await, 0);
        // Node 1's chain is gone after a restart: its next write applies the rest first.
        cluster.run(&["restart", "1"]);
        let c1 = cluster.client(1).await;
        c1.execute("INSERT INTO items VALUES (-1, 'after the restart')", &[])
            .await
            .unwrap();
        assert!(unapplied(&c1).await < 3);
        assert_eq!(
            count(&c1, "SELECT count(*) FROM paxos.batched_writes WHERE round <= (SELECT applied_round FROM paxos.groups)").await,
            0
        );
        assert_eq!(count(&c1, "SELECT count(*) FROM items WHERE v = 'updated'").await, 8 * 2);
        cluster.assert_same_rows("items").await;
    })
    .await;
}

/// How many writes node `c` has queued or in flight in its commit chain for group `g`.
async fn queued(c: &Client) -> i64 {
    count(c, "SELECT queued::bigint FROM paxos.group_commit('g')").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_applies_whole_or_not_at_all_where_one_of_its_writes_fails() {
    bounded(async {
        let slow = slow_cluster("batch_whole", Duration::from_millis(300)).await;
        let cluster = &slow.cluster;
        // On node 2 only, a write of 'poison' fails (as a constraint of that node's would).
        let c2 = cluster.client(2).await;
        c2.batch_execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.v = 'poison' THEN
                 RAISE EXCEPTION 'poison refused here' USING ERRCODE = 'check_violation';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_poison BEFORE INSERT ON items
               FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
        )
        .await
        .unwrap();
        // Node 2 inserts (into a table without the trigger, so that the insert goes to the
        // leader) on the state it has now, and commits later: by then the leader's chain moved
        // on, so the leader takes the insert but node 2 discards its rows and applies the log
        // instead; a failure there does not fail its commit (the write was chosen).
        for n in cluster.nodes() {
            let c = cluster.client(n).await;
            c.batch_execute("CREATE TABLE extra (id int PRIMARY KEY)")
                .await
                .unwrap();
        }
        cluster.replicate("g", "extra").await;
        c2.batch_execute("BEGIN; INSERT INTO extra VALUES (100)")
            .await
            .unwrap();
        // On the leader: one insert in flight, two more queue behind it, 'fine' first, and go
        // together as the next batch; then an update, which ends the chain, and an insert, which
        // starts the next one.
        let c1 = cluster.client(1).await;
        let mut writes = Vec::new();
        for (id, v, queued_before) in [(1, "in flight", 0), (2, "fine", 1), (3, "poison", 2)] {
            wait_until(
                "the writes before to queue",
                Duration::from_secs(10),
                || {
                    let c1 = &c1;
                    async move { queued(c1).await == queued_before }
                },
            )
            .await;
            let c = cluster.client(1).await;
            writes.push(tokio::spawn(async move {
                c.execute("INSERT INTO items VALUES ($1, $2)", &[&id, &v])
                    .await
            }));
        }
        for w in writes {
            w.await.unwrap().unwrap();
        }
        let round = count(
            &c1,
            "SELECT round FROM paxos.log WHERE group_id = 'g' AND value_kind = 'batch'
                AND strpos(value_body, 'poison') > strpos(value_body, 'fine')
                AND strpos(value_body, 'fine') > 0",
        )
        .await;
        for sql in [
            "UPDATE items SET v = 'updated' WHERE id = 0",
            "INSERT INTO items VALUES (4, 'next chain')",
        ] {
            c1.execute(sql, &[]).await.unwrap();
        }
        c2.batch_execute("COMMIT").await.unwrap();
        // Applying that batch on node 2, 'poison' failed after 'fine' ran: the node stopped
        // before the batch and kept none of it.
        c2.batch_execute("SET pg_paxos.consistency_model = optimistic")
            .await
            .unwrap();
        let (applied, diverged): (i64, Option<i64>) = {
            let row = c2
                .query_one(
                    "SELECT applied_round, diverged_round FROM paxos.groups WHERE group_id = 'g'",
                    &[],
                )
                .await
                .unwrap();
            (row.get(0), row.get(1))
        };
        assert_eq!((applied, diverged), (round - 1, Some(round)));
        assert_eq!(
            count(&c2, "SELECT count(*) FROM items WHERE id = 2").await,
            0,
            "the batch's first write stayed behind"
        );
        // Repaired, it applies the whole batch once, and the rest.
        c2.batch_execute(
            "RESET pg_paxos.consistency_model; DROP TRIGGER refuse_poison ON items;
             SELECT paxos.resume_group('g')",
        )
        .await
        .unwrap();
        assert_eq!(count(&c2, "SELECT count(*) FROM items").await, 5);
        assert_eq!(count(&c2, "SELECT count(*) FROM extra").await, 1);
        cluster.assert_same_rows("items").await;
        cluster.assert_same_rows("extra").await;
    })
    .await;
}
