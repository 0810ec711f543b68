//! Plain SQL on replicated tables: writes intercepted and logged, strong reads catching up,
//! transactions proposed at COMMIT. Real 3-node clusters.

use pg_paxos_tests::{bounded, sqlstate, Cluster, LinkProxy, Rule};
use tokio_postgres::{Client, Error, SimpleQueryMessage};

/// Runs SQL over the simple protocol, as psql does, and returns the rows of its last result.
async fn psql(c: &Client, sql: &str) -> Result<Vec<Vec<String>>, Error> {
    let mut rows = Vec::new();
    for message in c.simple_query(sql).await? {
        match message {
            SimpleQueryMessage::RowDescription(_) => rows.clear(),
            SimpleQueryMessage::Row(row) => rows.push(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => {}
        }
    }
    Ok(rows)
}

fn rows(pairs: &[(i32, i32)]) -> Vec<Vec<String>> {
    pairs
        .iter()
        .map(|(x, y)| vec![x.to_string(), y.to_string()])
        .collect()
}

/// The original README's walk-through, its SQL unchanged, node 3 joining after rows exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_readme_walkthrough_runs_unchanged() {
    bounded(async {
        let cluster = Cluster::new("walkthrough", 3);
        let nodes = [
            cluster.client(1).await,
            cluster.client(2).await,
            cluster.client(3).await,
        ];
        for c in &nodes {
            psql(c, "CREATE TABLE coordinates (\n    x int,\n    y int\n);")
                .await
                .unwrap();
        }
        psql(
            &nodes[0],
            &format!(
                "SELECT paxos_create_group('mokka', '{}');",
                cluster.conninfo(1)
            ),
        )
        .await
        .unwrap();
        psql(
            &nodes[0],
            "SELECT paxos_replicate_table('mokka', 'coordinates');",
        )
        .await
        .unwrap();
        psql(
            &nodes[1],
            &format!(
                "SELECT paxos_join_group('mokka', '{}', '{}');",
                cluster.conninfo(1),
                cluster.conninfo(2)
            ),
        )
        .await
        .unwrap();
        psql(&nodes[0], "INSERT INTO coordinates VALUES (1,1);")
            .await
            .unwrap();
        psql(&nodes[0], "INSERT INTO coordinates VALUES (2,2);")
            .await
            .unwrap();
        // Node 3 joins after rows exist: it gets them.
        psql(
            &nodes[2],
            &format!(
                "SELECT paxos_join_group('mokka', '{}', '{}');",
                cluster.conninfo(2),
                cluster.conninfo(3)
            ),
        )
        .await
        .unwrap();
        assert_eq!(
            psql(&nodes[0], "SELECT * FROM coordinates ;")
                .await
                .unwrap(),
            rows(&[(1, 1), (2, 2)])
        );
        let nodes = [
            cluster.client(1).await,
            cluster.client(2).await,
            cluster.client(3).await,
        ];
        assert_eq!(
            psql(&nodes[1], "SELECT * FROM coordinates ;")
                .await
                .unwrap(),
            rows(&[(1, 1), (2, 2)])
        );
        psql(&nodes[1], "UPDATE coordinates SET x = x * 10;")
            .await
            .unwrap();
        assert_eq!(
            psql(&nodes[2], "SELECT * FROM coordinates ORDER BY x;")
                .await
                .unwrap(),
            rows(&[(10, 1), (20, 2)])
        );
        psql(&nodes[0], "SET pg_paxos.consistency_model TO 'optimistic';")
            .await
            .unwrap();
        psql(&nodes[0], "INSERT INTO coordinates VALUES (3,3);")
            .await
            .unwrap();
        assert_eq!(
            psql(&nodes[0], "SELECT * FROM coordinates WHERE x = 3;")
                .await
                .unwrap(),
            rows(&[(3, 3)]),
            "an optimistic read on the writing node sees its own write"
        );
        psql(&nodes[0], "SET pg_paxos.consistency_model TO 'strong';")
            .await
            .unwrap();
        let sums: Vec<String> = {
            let mut out = Vec::new();
            for c in &nodes {
                let r = psql(
                    c,
                    "SELECT md5(string_agg(x || ',' || y, ';' ORDER BY x)) FROM coordinates",
                )
                .await
                .unwrap();
                out.push(r[0][0].clone());
            }
            out
        };
        assert!(sums.iter().all(|s| *s == sums[0]), "{sums:?}");
    })
    .await;
}

async fn replicated_cluster(name: &str) -> Cluster {
    let ddl = "CREATE TABLE kv (k int PRIMARY KEY, v text)";
    Cluster::with_replicated_table(name, 3, "g", "kv", ddl).await
}

async fn kv(c: &Client) -> Vec<(i32, String)> {
    c.query("SELECT k, v FROM kv ORDER BY k", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_prepared_statements_and_returning() {
    bounded(async {
        let cluster = replicated_cluster("params").await;
        let c1 = cluster.client(1).await;
        let insert = c1
            .prepare("INSERT INTO kv VALUES ($1, $2) RETURNING k * 2")
            .await
            .unwrap();
        for (k, v) in [(1, "it's"), (2, "$1 -- ; DROP TABLE kv")] {
            let doubled: i32 = c1.query_one(&insert, &[&k, &v]).await.unwrap().get(0);
            assert_eq!(doubled, k * 2);
        }
        let updated = c1
            .execute("UPDATE kv SET v = v || $1 WHERE k = $2", &[&"!", &1i32])
            .await
            .unwrap();
        assert_eq!(updated, 1, "the client gets the normal row count");
        let expected = vec![
            (1, "it's!".to_string()),
            (2, "$1 -- ; DROP TABLE kv".to_string()),
        ];
        for n in cluster.nodes() {
            assert_eq!(kv(&cluster.client(n).await).await, expected, "node {n}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_and_conflict() {
    bounded(async {
        let cluster = replicated_cluster("transactions").await;
        let mut c1 = cluster.client(1).await;
        let tx = c1.transaction().await.unwrap();
        tx.execute("INSERT INTO kv VALUES (1, 'a')", &[])
            .await
            .unwrap();
        tx.execute("INSERT INTO kv VALUES (2, 'b')", &[])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let before: i64 = c1
            .query_one(
                "SELECT count(*) FROM paxos.log WHERE value_kind = 'statement'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(before, 1, "one transaction, one log entry");
        let tx = c1.transaction().await.unwrap();
        tx.execute("INSERT INTO kv VALUES (3, 'rolled back')", &[])
            .await
            .unwrap();
        tx.rollback().await.unwrap();

        // A client that disappears mid-transaction logs nothing either.
        let dying = cluster.client(2).await;
        dying
            .batch_execute("BEGIN; INSERT INTO kv VALUES (4, 'never')")
            .await
            .unwrap();
        drop(dying);

        // Two transactions based on the same round: the second to commit gets 40001. (With
        // forwarding on, the leader would take both inserts: see forwarding.rs.)
        let mut c2 = cluster.client(2).await;
        let mut c3 = cluster.client(3).await;
        for c in [&c2, &c3] {
            c.batch_execute("SET pg_paxos.forward_writes = off")
                .await
                .unwrap();
        }
        let t2 = c2.transaction().await.unwrap();
        t2.execute("INSERT INTO kv VALUES (5, 'first')", &[])
            .await
            .unwrap();
        let t3 = c3.transaction().await.unwrap();
        t3.execute("INSERT INTO kv VALUES (6, 'second')", &[])
            .await
            .unwrap();
        t2.commit().await.unwrap();
        let err = t3.commit().await.unwrap_err();
        assert_eq!(sqlstate(&err), "40001", "{err:?}");
        // The retry succeeds.
        let t3 = c3.transaction().await.unwrap();
        t3.execute("INSERT INTO kv VALUES (6, 'second')", &[])
            .await
            .unwrap();
        t3.commit().await.unwrap();

        let expected: Vec<(i32, String)> = vec![
            (1, "a".into()),
            (2, "b".into()),
            (5, "first".into()),
            (6, "second".into()),
        ];
        for n in cluster.nodes() {
            assert_eq!(kv(&cluster.client(n).await).await, expected, "node {n}");
        }
    })
    .await;
}

/// Write skew between a SERIALIZABLE transaction that writes `write` on `node` and one that
/// wrote a table of that node only: PostgreSQL fails the first at COMMIT, and its entry must not
/// reach the log (no node may replay a write its client was told failed).
async fn serializable_write_skew(cluster: &Cluster, node: usize, write: &str) {
    let statements = "SELECT count(*) FROM paxos.log WHERE value_kind = 'statement'";
    let logged_before = pg_paxos_tests::count(&cluster.client(1).await, statements).await;
    // A reads kv and writes notes; B reads notes and writes kv. Once A commits, B is the pivot
    // of a dangerous structure.
    let a = cluster.client(node).await;
    let b = cluster.client(node).await;
    // The node applies every round first: a read that applies rounds holds the applied round.
    a.batch_execute("SELECT * FROM kv").await.unwrap();
    a.batch_execute(
        "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT * FROM kv; INSERT INTO notes VALUES (1)",
    )
    .await
    .unwrap();
    b.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT * FROM notes; {write}"
    ))
    .await
    .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    let err = b.batch_execute("COMMIT").await.unwrap_err();
    assert_eq!(sqlstate(&err), "40001", "{err:?}");
    assert_eq!(
        pg_paxos_tests::count(&cluster.client(1).await, statements).await,
        logged_before,
        "the failed transaction left no entry in the log"
    );
}

/// A SERIALIZABLE transaction that PostgreSQL fails at COMMIT is not logged, whether it writes
/// alone (an update) or sends its insert to the leader (node 2). The reads of the extension's
/// own tables before proposing meet the doomed transaction and fail it first; PostgreSQL's own
/// check comes only after the pre-commit callbacks, when the entry would be chosen already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serializable_write_that_fails_at_commit_is_not_logged() {
    bounded(async {
        let cluster = replicated_cluster("serializable").await;
        for n in cluster.nodes() {
            cluster
                .client(n)
                .await
                .batch_execute("CREATE TABLE notes (n int)")
                .await
                .unwrap();
        }
        let c1 = cluster.client(1).await;
        c1.batch_execute("INSERT INTO kv VALUES (1, 'a')")
            .await
            .unwrap();
        serializable_write_skew(&cluster, 1, "UPDATE kv SET v = 'b' WHERE k = 1").await;
        serializable_write_skew(&cluster, 2, "INSERT INTO kv VALUES (2, 'x')").await;
        for n in cluster.nodes() {
            let c = cluster.client(n).await;
            c.execute(
                "SELECT paxos_apply_log('check', 'g', paxos_max_group_round('g'))",
                &[],
            )
            .await
            .unwrap();
            assert_eq!(kv(&c).await, vec![(1, "a".to_string())], "node {n}");
        }

        // The retry, alone, commits under SERIALIZABLE and lands everywhere.
        c1.batch_execute(
            "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT * FROM notes; UPDATE kv SET v = 'b' WHERE k = 1; COMMIT",
        )
        .await
        .unwrap();
        for n in cluster.nodes() {
            assert_eq!(
                kv(&cluster.client(n).await).await,
                vec![(1, "b".to_string())],
                "node {n}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_defined_volatile_functions_are_refused_unless_allowed() {
    bounded(async {
        let cluster = replicated_cluster("volatile").await;
        for n in cluster.nodes() {
            // Marked volatile, though its result is fixed: only the escape hatch lets it through.
            cluster
                .client(n)
                .await
                .batch_execute(
                    "CREATE FUNCTION public.label() RETURNS text LANGUAGE sql VOLATILE AS $$ SELECT 'fixed' $$",
                )
                .await
                .unwrap();
        }
        let c1 = cluster.client(1).await;
        let err = c1
            .execute("INSERT INTO kv VALUES (1, public.label())", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "22023", "{err:?}");
        assert!(err.as_db_error().and_then(|d| d.hint()).is_some());
        assert!(kv(&c1).await.is_empty(), "a refused write left a row");
        c1.batch_execute("SET pg_paxos.allow_mutable_functions = on")
            .await
            .unwrap();
        c1.execute("INSERT INTO kv VALUES (1, public.label())", &[])
            .await
            .unwrap();
        for n in cluster.nodes() {
            assert_eq!(kv(&cluster.client(n).await).await, vec![(1, "fixed".to_string())]);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_is_replicated_and_one_node_schema_changes_are_refused() {
    bounded(async {
        let cluster = replicated_cluster("utility").await;
        let c1 = cluster.client(1).await;
        c1.execute("INSERT INTO kv VALUES (1, 'a')", &[])
            .await
            .unwrap();
        c1.batch_execute("TRUNCATE kv").await.unwrap();
        c1.execute("INSERT INTO kv VALUES (2, 'b')", &[])
            .await
            .unwrap();
        for n in cluster.nodes() {
            assert_eq!(
                kv(&cluster.client(n).await).await,
                vec![(2, "b".to_string())],
                "node {n}"
            );
        }
        for sql in [
            "ALTER TABLE kv ADD COLUMN z int",
            "DROP TABLE kv",
            "TRUNCATE kv CASCADE",
        ] {
            let err = c1.batch_execute(sql).await.unwrap_err();
            assert_eq!(sqlstate(&err), "0A000", "{sql}: {err:?}");
            assert!(err.as_db_error().and_then(|d| d.hint()).is_some(), "{sql}");
        }
        let err = c1
            .copy_in::<_, bytes_stub::Bytes>("COPY kv FROM STDIN")
            .await
            .err()
            .expect("COPY FROM is refused");
        assert_eq!(sqlstate(&err), "0A000", "{err:?}");
        // A superuser can switch interception off for maintenance (on a fresh connection: the
        // client library leaves one whose COPY was refused in an unusable state).
        let c1 = cluster.client(1).await;
        c1.batch_execute("SET pg_paxos.enabled = off; ALTER TABLE kv ADD COLUMN z int")
            .await
            .unwrap();
    })
    .await;
}

/// `copy_in` needs a buffer type; nothing is ever sent through it here.
mod bytes_stub {
    pub type Bytes = std::io::Cursor<Vec<u8>>;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strong_read_once_a_cut_link_is_back_sees_every_acknowledged_write() {
    bounded(async {
        let cluster = Cluster::new("cut_link", 3);
        // The other members reach node 3 through this proxy only.
        let link = LinkProxy::start(cluster.port(3));
        for n in cluster.nodes() {
            cluster
                .client(n)
                .await
                .batch_execute("CREATE TABLE kv (k int PRIMARY KEY, v text)")
                .await
                .unwrap();
        }
        let (c1, c2, c3) = (
            cluster.client(1).await,
            cluster.client(2).await,
            cluster.client(3).await,
        );
        c1.execute(
            "SELECT paxos_create_group('g', $1)",
            &[&cluster.conninfo(1)],
        )
        .await
        .unwrap();
        c1.execute("SELECT paxos_replicate_table('g', 'kv')", &[])
            .await
            .unwrap();
        for (c, me) in [(&c2, cluster.conninfo(2)), (&c3, link.conninfo())] {
            c.execute(
                "SELECT paxos_join_group('g', $1, $2)",
                &[&cluster.conninfo(1), &me],
            )
            .await
            .unwrap();
        }
        c1.execute("INSERT INTO kv VALUES (1, 'before')", &[])
            .await
            .unwrap();
        assert_eq!(kv(&c3).await.len(), 1);
        for caller in ["node1", "node2"] {
            link.set(caller, Rule::Blackhole);
        }
        for k in 2..=5 {
            c1.execute("INSERT INTO kv VALUES ($1, 'while cut')", &[&k])
                .await
                .unwrap();
        }
        // Node 3 missed those writes: its local copy does not have them.
        c3.batch_execute("SET pg_paxos.consistency_model = optimistic")
            .await
            .unwrap();
        assert_eq!(
            kv(&c3).await.len(),
            1,
            "node 3 saw writes through a cut link"
        );
        link.heal();
        c3.batch_execute("SET pg_paxos.consistency_model = strong")
            .await
            .unwrap();
        assert_eq!(kv(&c3).await, kv(&c1).await);
        assert_eq!(kv(&c3).await.len(), 5);
    })
    .await;
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_search_path_tricks_never_run_anything_unintended() {
    bounded(async {
        let schema = quoted("Sch\"ema; DROP TABLE paxos.log; --");
        let table = format!("{schema}.{}", quoted("Ta'ble $1 ;--"));
        let ddl = format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {table} (\"Key\" int PRIMARY KEY, \"va'lue\" text);
             CREATE FUNCTION public.upper(text) RETURNS text LANGUAGE sql IMMUTABLE
               AS $$ SELECT 'hijacked' $$;"
        );
        let group = "g'; DROP TABLE paxos.log; --";
        let cluster = Cluster::new("hostile_names", 3);
        for n in cluster.nodes() {
            cluster.client(n).await.batch_execute(&ddl).await.unwrap();
        }
        cluster.form_group(group).await;
        let c1 = cluster.client(1).await;
        c1.execute("SELECT paxos_replicate_table($1, $2::text::regclass)", &[&group, &table])
            .await
            .unwrap();
        // pg_catalog comes first by default: the built-in upper() runs, here and everywhere.
        c1.execute(&format!("INSERT INTO {table} VALUES (1, upper('a'))"), &[])
            .await
            .unwrap();
        // Asked for explicitly, public.upper() runs, here and everywhere.
        c1.batch_execute(&format!(
            "SET search_path = public, pg_catalog; INSERT INTO {table} VALUES (2, upper('b')); RESET search_path"
        ))
        .await
        .unwrap();
        let evil = "x'); DELETE FROM paxos.log; --";
        c1.execute(&format!("INSERT INTO {table} VALUES (3, $1)"), &[&evil])
            .await
            .unwrap();
        let c2 = cluster.client(2).await;
        c2.execute(
            &format!("UPDATE {table} SET \"va'lue\" = \"va'lue\" || $1 WHERE \"Key\" = 1"),
            &[&" $1 ';"],
        )
        .await
        .unwrap();
        let expected = vec![
            (1, "A $1 ';".to_string()),
            (2, "hijacked".to_string()),
            (3, evil.to_string()),
        ];
        for n in cluster.nodes() {
            let c = cluster.client(n).await;
            let rows: Vec<(i32, String)> = c
                .query(&format!("SELECT * FROM {table} ORDER BY 1"), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            assert_eq!(rows, expected, "node {n}");
            let logged: i64 = c
                .query_one("SELECT count(*) FROM paxos.log", &[])
                .await
                .unwrap()
                .get(0);
            assert!(logged >= 5, "node {n} lost its log: {logged}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_write_lands_the_same_on_every_node() {
    bounded(async {
        let cluster = replicated_cluster("write_kinds").await;
        for n in cluster.nodes() {
            cluster
                .client(n)
                .await
                .batch_execute(
                    "CREATE FUNCTION public.fill(n int) RETURNS int LANGUAGE plpgsql AS $$
                     BEGIN
                       FOR i IN 1..n LOOP
                         INSERT INTO public.kv VALUES (100 + i, 'loop ' || i::text);
                       END LOOP;
                       EXECUTE format('UPDATE public.kv SET v = v || %L WHERE k = $1', '!') USING 101;
                       RETURN n;
                     END $$;",
                )
                .await
                .unwrap();
        }
        let c1 = cluster.client(1).await;
        let c2 = cluster.client(2).await;
        let steps: [(&Client, &str); 9] = [
            (&c1, "INSERT INTO kv VALUES (1, 'a'), (2, 'b'), (3, 'c') RETURNING k"),
            (&c2, "INSERT INTO kv SELECT k + 10, v || ' copy' FROM kv WHERE k < 3"),
            (&c1, "INSERT INTO kv VALUES (1, 'ignored') ON CONFLICT (k) DO NOTHING"),
            (&c2, "INSERT INTO kv VALUES (2, 'merged') ON CONFLICT (k) DO UPDATE SET v = kv.v || '+' || excluded.v"),
            (&c1, "WITH gone AS (DELETE FROM kv WHERE k = 3 RETURNING k, v) INSERT INTO kv SELECT k + 20, v || ' moved' FROM gone"),
            (&c2, "WITH up AS (UPDATE kv SET v = upper(v) WHERE k > 10 RETURNING k) SELECT count(*) FROM up"),
            (&c1, "SELECT public.fill(3)"),
            (&c2, "DELETE FROM kv WHERE k = 102 RETURNING v"),
            (&c1, "UPDATE kv SET v = v || ' (' || k::text || ')' WHERE k IN (SELECT k FROM kv WHERE k < 3)"),
        ];
        for (c, sql) in steps {
            psql(c, sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            cluster.assert_same_rows("kv").await;
        }
        let expected: Vec<(i32, String)> = [
            (1, "a (1)"),
            (2, "b+merged (2)"),
            (11, "A COPY"),
            (12, "B COPY"),
            (23, "C MOVED"),
            (101, "loop 1!"),
            (103, "loop 3"),
        ]
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect();
        assert_eq!(kv(&cluster.client(3).await).await, expected);
    })
    .await;
}

/// A session keeps its map of replicated tables across transactions; a table replicated later
/// (from another node, registered here by another backend) is intercepted in that session at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_see_tables_replicated_after_they_started() {
    bounded(async {
        let cluster = Cluster::new("late_tables", 3);
        for n in cluster.nodes() {
            cluster
                .client(n)
                .await
                .batch_execute("CREATE TABLE late (id int PRIMARY KEY)")
                .await
                .unwrap();
        }
        cluster.form_group("g").await;
        let c2 = cluster.client(2).await;
        // Node 2's session writes the table while it is local only.
        c2.execute("INSERT INTO late VALUES (1)", &[])
            .await
            .unwrap();
        cluster
            .client(1)
            .await
            .execute("SELECT paxos_replicate_table('g', 'late')", &[])
            .await
            .unwrap();
        // Node 2 registered the table when it applied that round (in another backend): the same
        // session's next write goes through the log.
        c2.execute("INSERT INTO late VALUES (2)", &[])
            .await
            .unwrap();
        let on_node_1 = psql(&cluster.client(1).await, "SELECT id FROM late ORDER BY id")
            .await
            .unwrap();
        assert_eq!(on_node_1, vec![vec!["2".to_string()]]);
    })
    .await;
}
