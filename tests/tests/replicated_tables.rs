//! Replicated tables on real local clusters: registration through the log, statements replayed in
//! order on every node, failing statements, replay as the issuing role with a pinned search_path,
//! a node that stops loudly when an entry fails there, and one that only fails the statement when
//! its own resources ran out.

use pg_paxos_tests::{
    bounded, count, groups_and_acceptor_records, message, sqlstate, wait_until, Cluster,
};
use std::time::Duration;
use tokio_postgres::{Client, Error};

/// A group over every node of a fresh cluster with `public.coordinates (x int, y int)` everywhere.
async fn cluster_with_table(name: &str) -> Cluster {
    let ddl = "CREATE TABLE coordinates (x int PRIMARY KEY, y int)";
    Cluster::with_replicated_table(name, 3, "mokka", "coordinates", ddl).await
}

async fn append_statement(c: &Client, sql: &str) -> Result<i64, Error> {
    Ok(
        c.query_one("SELECT paxos.append_statement('mokka', $1)", &[&sql])
            .await?
            .get(0),
    )
}

/// Applies the whole log on `node` and returns an md5 over its table's ordered rows.
async fn table_checksum(cluster: &Cluster, node: usize) -> String {
    let c = cluster.client(node).await;
    c.execute(
        "SELECT paxos_apply_log('checker', 'mokka', paxos_max_group_round('mokka'))",
        &[],
    )
    .await
    .unwrap();
    c.query_one(
        "SELECT md5(coalesce(string_agg(x || ',' || y, ';' ORDER BY x), '')) FROM coordinates",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn assert_tables_agree(cluster: &Cluster) -> String {
    let first = table_checksum(cluster, 1).await;
    for n in 2..=cluster.size {
        assert_eq!(
            table_checksum(cluster, n).await,
            first,
            "node {n} differs from node 1"
        );
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_replayed_in_order_on_every_node() {
    bounded(async {
        let cluster = cluster_with_table("tables_replay").await;
        for n in cluster.nodes() {
            let c = cluster.client(n).await;
            c.execute(
                "SELECT paxos_apply_log('r', 'mokka', paxos_max_group_round('mokka'))",
                &[],
            )
            .await
            .unwrap();
            let registered: i64 = c
                .query_one(
                    "SELECT count(*) FROM paxos.replicated_tables WHERE table_name = 'public.coordinates'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(registered, 1, "node {n} registered the table through the log");
        }
        let c1 = cluster.client(1).await;
        append_statement(&c1, "INSERT INTO public.coordinates VALUES (1, 1)").await.unwrap();
        append_statement(&c1, "INSERT INTO public.coordinates VALUES (2, 2)").await.unwrap();
        let c2 = cluster.client(2).await;
        append_statement(&c2, "UPDATE public.coordinates SET x = x * 10").await.unwrap();
        let c3 = cluster.client(3).await;
        append_statement(&c3, "DELETE FROM public.coordinates WHERE x = 20").await.unwrap();
        assert_tables_agree(&cluster).await;
        let rows: Vec<(i32, i32)> = c2
            .query("SELECT x, y FROM coordinates ORDER BY x", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(rows, vec![(10, 1)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statement_is_not_logged() {
    bounded(async {
        let cluster = cluster_with_table("tables_failing").await;
        let c1 = cluster.client(1).await;
        append_statement(&c1, "INSERT INTO public.coordinates VALUES (1, 1)")
            .await
            .unwrap();
        let before: i64 = c1
            .query_one(
                "SELECT max(round) FROM paxos.log WHERE group_id = 'mokka'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let err = append_statement(
            &cluster.client(2).await,
            "INSERT INTO public.coordinates VALUES (1, 2)",
        )
        .await
        .unwrap_err();
        assert_eq!(
            sqlstate(&err),
            "23505",
            "the statement's own error: {err:?}"
        );
        // Unqualified names never resolve through a caller's search_path, here or on replay.
        let err = append_statement(&c1, "INSERT INTO coordinates VALUES (3, 3)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42P01", "{err:?}");
        c1.execute(
            "SELECT paxos_apply_log('r', 'mokka', paxos_max_group_round('mokka'))",
            &[],
        )
        .await
        .unwrap();
        let statements: i64 = c1
            .query_one(
                "SELECT count(*) FROM paxos.log WHERE group_id = 'mokka' AND round > $1
                   AND value_kind = 'statement'",
                &[&before],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(statements, 0, "failed statements left nothing in the log");
        assert_tables_agree(&cluster).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_differs_between_members_is_refused() {
    bounded(async {
        let cluster = Cluster::new("tables_differ", 3);
        for n in cluster.nodes() {
            let ddl = match n {
                3 => "CREATE TABLE other (x int); CREATE TABLE wide (x int, y text)",
                _ => "CREATE TABLE other (x int); CREATE TABLE wide (x int, y int); CREATE TABLE missing (x int)",
            };
            cluster.client(n).await.batch_execute(ddl).await.unwrap();
        }
        cluster.form_group("mokka").await;
        let c1 = cluster.client(1).await;
        let err = c1
            .query("SELECT paxos_replicate_table('mokka', 'missing')", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42P01", "{err:?}");
        let text = err.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
        assert!(text.contains(&format!("port={}", cluster.port(3))), "{text}");
        let err = c1
            .query("SELECT paxos_replicate_table('mokka', 'wide')", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42804", "{err:?}");
        let registered: i64 = c1
            .query_one("SELECT count(*) FROM paxos.replicated_tables", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(registered, 0, "nothing was registered");
        c1.execute("SELECT paxos_replicate_table('mokka', 'other')", &[])
            .await
            .expect("a table that is the same everywhere");
    })
    .await;
}

/// A node joins only with the group's tables as they are on the members: it is checked before it
/// is added, so a refused join leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_groups_tables_is_refused_before_it_is_added() {
    bounded(async {
        let cluster = Cluster::new("join_tables", 2);
        let c1 = cluster.client(1).await;
        c1.batch_execute("CREATE TABLE kept (id int PRIMARY KEY, v text)")
            .await
            .unwrap();
        cluster.create_group("g", &cluster.conninfo(1)).await;
        c1.execute("SELECT paxos_replicate_table('g', 'kept')", &[])
            .await
            .unwrap();
        c1.execute("INSERT INTO kept VALUES (1, 'one')", &[])
            .await
            .unwrap();
        let c2 = cluster.client(2).await;
        let join = "SELECT paxos_join_group('g', $1, $2)";
        let args = [cluster.conninfo(1), cluster.conninfo(2)];
        let refused = |ddl: &'static str, code: &'static str| {
            let (c1, c2, args) = (&c1, &c2, &args);
            async move {
                c2.batch_execute(ddl).await.unwrap();
                let err = c2.query_one(join, &[&args[0], &args[1]]).await.unwrap_err();
                assert_eq!(sqlstate(&err), code, "{err:?}");
                assert!(message(&err).contains("this node, which joins"), "{err:?}");
                // Not added: the group still has one member, and node 2 holds nothing of it.
                let added: i64 = c1
                    .query_one(
                        "SELECT count(*) FROM paxos.log WHERE value_kind = 'add_host' AND value_body = $1",
                        &[&args[1]],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(added, 0, "{ddl}");
                assert_eq!(groups_and_acceptor_records(c2).await, 0, "{ddl}");
            }
        };
        refused("SELECT 1", "42P01").await;
        refused("CREATE TABLE kept (id int PRIMARY KEY, v int)", "42804").await;
        c2.batch_execute("DROP TABLE kept; CREATE TABLE kept (id int PRIMARY KEY, v text)")
            .await
            .unwrap();
        c2.query_one(join, &[&args[0], &args[1]])
            .await
            .expect("a join with the table as the members have it");
        let v: String = c2
            .query_one("SELECT v FROM kept WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, "one");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_runs_as_the_issuing_role_and_a_failing_node_stops_loudly() {
    bounded(async {
        let cluster = cluster_with_table("tables_diverge").await;
        for n in cluster.nodes() {
            let grant = if n == 3 { "" } else { "GRANT INSERT ON coordinates TO app;" };
            cluster
                .client(n)
                .await
                .batch_execute(&format!(
                    "CREATE ROLE app LOGIN; GRANT USAGE ON SCHEMA paxos TO app; {grant}"
                ))
                .await
                .unwrap();
        }
        let c1 = cluster.client(1).await;
        c1.batch_execute("SET ROLE app").await.unwrap();
        let round = append_statement(&c1, "INSERT INTO public.coordinates VALUES (5, 5)")
            .await
            .expect("app may insert on node 1");
        // Node 3 replays it as app, which may not insert there: it stops instead of skipping.
        let c3 = cluster.client(3).await;
        let applied: i64 = c3
            .query_one("SELECT paxos_apply_log('r', 'mokka', $1)", &[&round])
            .await
            .unwrap()
            .get(0);
        assert_eq!(applied, round - 1, "the failed round is not applied");
        let err = c3
            .query("SELECT paxos_apply_log('r', 'mokka', $1)", &[&round])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "XX001", "{err:?}");
        assert!(err.as_db_error().and_then(|d| d.hint()).is_some());
        // A stopped node refuses strong reads of the group; its local rows show nothing was gained.
        let err = c3
            .query("SELECT count(*) FROM coordinates", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "XX001", "{err:?}");
        c3.batch_execute("SET pg_paxos.consistency_model = optimistic")
            .await
            .unwrap();
        let rows: i64 = c3
            .query_one("SELECT count(*) FROM coordinates", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "no privilege was gained on node 3");
        c3.batch_execute("RESET pg_paxos.consistency_model")
            .await
            .unwrap();
        let status = cluster
            .client(2)
            .await
            .query_one(
                "SELECT diverged_round, diverged_error FROM paxos_status('mokka') WHERE member = $1",
                &[&cluster.conninfo(3)],
            )
            .await
            .unwrap();
        assert_eq!(status.get::<_, Option<i64>>(0), Some(round));
        assert!(status.get::<_, Option<String>>(1).unwrap_or_default().contains("permission denied"));
        assert!(cluster.server_log(3).contains("stopped applying paxos group"));

        // Repair: fix the cause, resume, apply.
        c3.batch_execute("GRANT INSERT ON coordinates TO app; SELECT paxos.resume_group('mokka')")
            .await
            .unwrap();
        assert_tables_agree(&cluster).await;
    })
    .await;
}

/// A failure of the node's own while it applies an entry (here a resource limit; in the fault
/// suite a full disk) fails the statement that was applying, not the node: no divergence is
/// recorded, and once the resource is back the same entry applies. Only the entry's own failures
/// (see the test above) stop the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_apply_an_entry_for_now_does_not_stop() {
    bounded(async {
        let cluster = cluster_with_table("tables_resources").await;
        let c1 = cluster.client(1).await;
        append_statement(&c1, "INSERT INTO public.coordinates VALUES (1, 0)")
            .await
            .unwrap();
        // Its replay sorts 300,000 rows: more than 64 kB of temporary files.
        let heavy = "UPDATE public.coordinates SET y = (SELECT max(g) FROM (SELECT g FROM \
                     generate_series(1, 300000) g ORDER BY g DESC OFFSET 1) s) WHERE x = 1";
        let round = append_statement(&c1, heavy).await.unwrap();

        let c2 = cluster.client(2).await;
        c2.batch_execute("SET work_mem = '64kB'; SET temp_file_limit = '64kB'")
            .await
            .unwrap();
        let err = c2
            .query("SELECT paxos_apply_log('r', 'mokka', $1)", &[&round])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "53400", "{err:?}");
        let db = err.as_db_error().unwrap();
        assert!(
            db.message()
                .contains(&format!("cannot apply round {round}")),
            "{db:?}"
        );
        assert!(db.hint().is_some());
        // A strong read fails the same way, and says why.
        let err = c2
            .query("SELECT count(*) FROM coordinates", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "53400", "{err:?}");
        let diverged = count(
            &c1,
            "SELECT count(*) FROM paxos_status('mokka') WHERE diverged_round IS NOT NULL",
        )
        .await;
        assert_eq!(diverged, 0, "no member is marked diverged");

        c2.batch_execute("RESET work_mem; RESET temp_file_limit")
            .await
            .unwrap();
        let applied: i64 = c2
            .query_one("SELECT paxos_apply_log('r', 'mokka', $1)", &[&round])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            applied, round,
            "the same entry applies once the limit is gone"
        );
        let y: i32 = c2
            .query_one("SELECT y FROM coordinates WHERE x = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(y, 299_999);
        assert_tables_agree(&cluster).await;
    })
    .await;
}

/// A joining node takes the seed's tables as of the round the seed reports. When another
/// transaction on the seed applied further and committed while the copy waited for the lock, the
/// copy holds the rows of those rounds too, and must report them as applied (it once reported the
/// round read before the wait, so the joined node applied those rounds a second time and stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_copy_reports_the_round_its_rows_are_at() {
    bounded(async {
        let cluster = cluster_with_table("tables_copy_round").await;
        let applied_on_2 = |c: Client| async move {
            let round: i64 = c
                .query_one(
                    "SELECT applied_round FROM paxos.groups WHERE group_id = 'mokka'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (c, round)
        };
        // Node 1 writes; node 2 has not applied it yet (it applies on reads).
        let (_, before) = applied_on_2(cluster.client(2).await).await;
        append_statement(
            &cluster.client(1).await,
            "INSERT INTO public.coordinates VALUES (1, 1)",
        )
        .await
        .unwrap();

        // A strong read on node 2 applies the insert and holds the applied round until COMMIT.
        let reader = cluster.client(2).await;
        reader.batch_execute("BEGIN").await.unwrap();
        assert_eq!(count(&reader, "SELECT count(*) FROM coordinates").await, 1);
        let (reader, applied) = applied_on_2(reader).await;
        assert!(
            applied > before,
            "the read applied the insert ({before} -> {applied})"
        );

        // Meanwhile a copy through the older round waits for that lock.
        let copier = cluster.client(2).await;
        let copy = tokio::spawn(async move {
            copier
                .query_one(
                    "SELECT applied_round, rows FROM paxos.request_tables_snapshot('mokka', $1)",
                    &[&before],
                )
                .await
        });
        let admin = cluster.client(2).await;
        wait_until(
            "the copy waiting for the lock",
            Duration::from_secs(10),
            || async {
                count(
                    &admin,
                    "SELECT count(*) FROM pg_stat_activity
                 WHERE query LIKE '%request_tables_snapshot%' AND wait_event_type = 'Lock'
                   AND pid <> pg_backend_pid()",
                )
                .await
                    == 1
            },
        )
        .await;
        reader.batch_execute("COMMIT").await.unwrap();

        let copy = copy.await.unwrap().unwrap();
        let rows: String = copy.get(1);
        assert!(
            rows.contains("\"x\":1"),
            "the copy holds the applied row: {rows}"
        );
        assert_eq!(
            copy.get::<_, i64>(0),
            applied,
            "the copy reports the round its rows are at"
        );
    })
    .await;
}

/// The table keeps taking writes and strong reads with two of five members down, the leader among
/// them, and the two catch up to the same rows when they return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_five_members_down_with_the_leader_the_table_goes_on() {
    bounded(async {
        let ddl = "CREATE TABLE coordinates (x int PRIMARY KEY, y int)";
        let cluster =
            Cluster::with_replicated_table("tables_minority5", 5, "mokka", "coordinates", ddl)
                .await;
        let c1 = cluster.client(1).await;
        for x in 1..=3 {
            c1.execute("INSERT INTO coordinates VALUES ($1, 0)", &[&x])
                .await
                .unwrap();
        }
        drop(c1);
        // Node 1 led every write so far.
        cluster.stop(1);
        cluster.stop(2);

        let c3 = cluster.client(3).await;
        let transaction = "BEGIN;
            INSERT INTO coordinates VALUES (4, 0);
            UPDATE coordinates SET y = x * 10 WHERE x >= 2;
            DELETE FROM coordinates WHERE x = 3;
            COMMIT";
        let mut attempt = 0;
        loop {
            attempt += 1;
            match c3.batch_execute(transaction).await {
                Ok(()) => break,
                // Taking the leadership over may lose one race; nothing was written then.
                Err(e) if sqlstate(&e) == "40001" && attempt < 5 => {
                    c3.batch_execute("ROLLBACK").await.unwrap();
                }
                Err(e) => panic!("the write failed with 3 of 5 members up: {e:?}"),
            }
        }
        let expected = vec![(1, 0), (2, 20), (4, 40)];
        let rows = |c: Client| async move {
            c.query("SELECT x, y FROM coordinates ORDER BY x", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<_, i32>(0), r.get::<_, i32>(1)))
                .collect::<Vec<_>>()
        };
        // A strong read on another member that is up sees the transaction.
        assert_eq!(rows(cluster.client(5).await).await, expected);

        cluster.start(1);
        cluster.start(2);
        for n in [1, 2] {
            assert_eq!(rows(cluster.client(n).await).await, expected, "node {n}");
        }
        assert_tables_agree(&cluster).await;
    })
    .await;
}
