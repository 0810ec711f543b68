//! Non-deterministic expressions in writes to replicated tables: made constant where they run, so
//! every node stores the same values, or refused. Savepoints and nested writes. Real 3-node
//! clusters.

use pg_paxos_tests::{bounded, count, sqlstate, Cluster};

const TABLES: &str = "
    CREATE TABLE events (
        id serial PRIMARY KEY,
        token uuid DEFAULT gen_random_uuid(),
        created timestamptz DEFAULT now(),
        seen timestamptz,
        score float8,
        label text
    );
    CREATE TABLE tickets (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text);";

async fn cluster(name: &str) -> Cluster {
    let cluster = Cluster::with_replicated_table(name, 3, "g", "events", TABLES).await;
    cluster
        .client(1)
        .await
        .execute("SELECT paxos_replicate_table('g', 'tickets')", &[])
        .await
        .expect("replicate tickets");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_random_uuids_serial_and_identity_are_the_same_on_every_node() {
    bounded(async {
        let cluster = cluster("same_values").await;
        let c1 = cluster.client(1).await;
        c1.batch_execute(
            "INSERT INTO events (score, seen, label) VALUES (random(), clock_timestamp(), 'one');
             INSERT INTO events (label, score) VALUES ('two', random()), ('three', random() * 10);
             INSERT INTO events (token, label, seen) VALUES (gen_random_uuid(), 'four', current_timestamp);
             UPDATE events SET seen = now() - interval '1 day' WHERE label = 'two';
             WITH added AS (INSERT INTO events (label) VALUES ('five') RETURNING id)
               SELECT count(*) FROM added;
             INSERT INTO tickets (label) VALUES ('a'), ('b');
             INSERT INTO tickets (label) SELECT 'c' || i::text FROM generate_series(1, 3) i;
             INSERT INTO tickets (label) VALUES (DEFAULT), ('d');",
        )
        .await
        .unwrap();
        // The extended protocol: a parameter beside a volatile call.
        c1.execute(
            "INSERT INTO events (label, score) VALUES ($1, random() * $2)",
            &[&"six", &2.0f64],
        )
        .await
        .unwrap();
        // Other nodes write next: their sequences went where node 1's did.
        for n in [2, 3] {
            let c = cluster.client(n).await;
            c.execute(
                "INSERT INTO events (label, score) VALUES ($1, random())",
                &[&format!("from node {n}")],
            )
            .await
            .unwrap();
            c.execute(
                "INSERT INTO tickets (label) VALUES ($1)",
                &[&format!("from node {n}")],
            )
            .await
            .unwrap();
        }
        cluster.assert_same_rows("events").await;
        cluster.assert_same_rows("tickets").await;
        assert_eq!(count(&c1, "SELECT count(*) FROM events").await, 8);
        assert_eq!(
            count(&c1, "SELECT count(DISTINCT token) FROM events").await,
            8
        );
        assert_eq!(
            count(&c1, "SELECT count(DISTINCT score) FROM events WHERE score IS NOT NULL").await,
            6,
            "every random() call drew its own value"
        );
        assert_eq!(count(&c1, "SELECT max(id)::int8 FROM tickets").await, 9);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_made_deterministic_is_refused_and_logs_nothing() {
    bounded(async {
        let cluster = cluster("refused").await;
        let c1 = cluster.client(1).await;
        c1.batch_execute("INSERT INTO events (label) VALUES ('a'), ('b')")
            .await
            .unwrap();
        let before = cluster.assert_same_rows("events").await;
        for sql in [
            // One call for several rows, each wanting its own value.
            "UPDATE events SET score = random()",
            // A default with a value per row, in INSERT ... SELECT.
            "INSERT INTO events (label) SELECT 'x' FROM generate_series(1, 2)",
            // Several numbers drawn while reading a table: rows may come in another order
            // elsewhere.
            "INSERT INTO tickets (label) SELECT label FROM events",
        ] {
            let err = c1.execute(sql, &[]).await.unwrap_err();
            assert_eq!(sqlstate(&err), "0A000", "{sql}: {err:?}");
            assert!(
                err.as_db_error().and_then(|d| d.hint()).is_some(),
                "{sql}: no hint"
            );
        }
        assert_eq!(cluster.assert_same_rows("events").await, before);
        assert_eq!(count(&c1, "SELECT count(*) FROM tickets").await, 0);
        // Once per statement is fine, even when it reads tables.
        c1.execute(
            "INSERT INTO tickets (label) SELECT min(label) FROM events",
            &[],
        )
        .await
        .unwrap();
        cluster.assert_same_rows("tickets").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_savepoints_and_caught_errors_log_nothing_and_nested_writes_replay_once() {
    bounded(async {
        let cluster = cluster("savepoints").await;
        for n in cluster.nodes() {
            cluster
                .client(n)
                .await
                .batch_execute(
                    "CREATE FUNCTION public.add_twice(l text) RETURNS void LANGUAGE plpgsql AS $$
                     BEGIN
                       INSERT INTO public.tickets (label) VALUES (l);
                       BEGIN
                         INSERT INTO public.tickets (id, label) OVERRIDING SYSTEM VALUE VALUES (1, l);
                       EXCEPTION WHEN unique_violation THEN NULL;
                       END;
                     END $$;
                     CREATE FUNCTION public.note(l text) RETURNS text LANGUAGE plpgsql AS $$
                     BEGIN
                       INSERT INTO public.tickets (label) VALUES ('noted ' || l);
                       RETURN l;
                     END $$;",
                )
                .await
                .unwrap();
        }
        let c1 = cluster.client(1).await;
        c1.batch_execute(
            "BEGIN;
             INSERT INTO events (label) VALUES ('kept');
             SAVEPOINT s;
             INSERT INTO events (label) VALUES ('rolled back');
             ROLLBACK TO SAVEPOINT s;
             INSERT INTO events (label) VALUES ('after');
             COMMIT;
             SELECT public.add_twice('first');
             SELECT public.add_twice('second');",
        )
        .await
        .unwrap();
        // A write that runs another write: replaying the outer one runs the inner one again, so
        // only the outer one is logged.
        c1.batch_execute(
            "SET pg_paxos.allow_mutable_functions = on;
             INSERT INTO events (label) VALUES (public.note('outer'));",
        )
        .await
        .unwrap();
        cluster.assert_same_rows("events").await;
        cluster.assert_same_rows("tickets").await;
        let c3 = cluster.client(3).await;
        let labels: Vec<String> = c3
            .query("SELECT label FROM events ORDER BY label", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(labels, ["after", "kept", "outer"]);
        assert_eq!(
            count(&c3, "SELECT count(*) FROM tickets WHERE label = 'noted outer'").await,
            1
        );
        assert_eq!(count(&c3, "SELECT count(*) FROM tickets").await, 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_gets_identity_rows_and_draws_after_them() {
    bounded(async {
        let cluster = Cluster::with_schema("join_identity", 3, TABLES).await;
        cluster.create_group("g", &cluster.conninfo(1)).await;
        cluster.replicate("g", "tickets").await;
        let c1 = cluster.client(1).await;
        c1.execute(
            "INSERT INTO tickets (label) VALUES ('a'), ('b'), ('c')",
            &[],
        )
        .await
        .unwrap();
        for n in [2, 3] {
            cluster.join("g", n, 1).await;
        }
        let c3 = cluster.client(3).await;
        c3.execute("INSERT INTO tickets (label) VALUES ('d')", &[])
            .await
            .unwrap();
        cluster.assert_same_rows("tickets").await;
        assert_eq!(count(&c3, "SELECT max(id)::int8 FROM tickets").await, 4);
    })
    .await;
}
