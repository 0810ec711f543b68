//! Inserts on members that do not lead, sent to the leader (`pg_paxos.forward_writes`), on real
//! local clusters: they commit without moving the leadership and show on the member that sent
//! them at once; one that ran on a state behind the leader's takes effect in log order; a key
//! the leader has fails them with the leader's error; BEGIN ... COMMIT of inserts only is offered
//! to the leader at COMMIT, while transactions that write more (an update, a function's writes)
//! or read the table first write alone as before; a leader that is gone fails one insert with
//! `08007`, and the next one takes the leadership over; a leader in trouble of its own (a full
//! disk) fails one insert with its error, and the member then writes alone for a while; a chosen
//! insert its member cannot apply the log for yet still succeeds.

use std::time::Duration;

use pg_paxos_tests::{bounded, count, execute_retrying, message, sqlstate, wait_until, Cluster};
use tokio_postgres::Client;

const TABLE: &str = "CREATE TABLE items (id int PRIMARY KEY, v text)";

/// A 3-node group with `items` replicated and forwarding on (the default), where node 1 wrote
/// first and leads; returns its ballot.
async fn led_by_node_1(name: &str) -> (Cluster, String) {
    let cluster = Cluster::with_replicated_table(name, 3, "g", "items", TABLE).await;
    for n in cluster.nodes() {
        let on: String = cluster
            .client(n)
            .await
            .query_one("SHOW pg_paxos.forward_writes", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(on, "on", "forwarding is on by default (node {n})");
    }
    let c1 = cluster.client(1).await;
    c1.execute("INSERT INTO items VALUES (0, 'first')", &[])
        .await
        .unwrap();
    let ballot = leader_ballot(&c1).await.expect("node 1 wrote, so it leads");
    (cluster, ballot)
}

/// The ballot node `c` leads with, if it leads.
async fn leader_ballot(c: &Client) -> Option<String> {
    c.query_one("SELECT ballot FROM paxos.leadership('g')", &[])
        .await
        .unwrap()
        .get(0)
}

/// Asserts that every node has `rows` rows in `items` (strong reads) and the same ones.
async fn every_node_has(cluster: &Cluster, rows: i64) {
    for n in cluster.nodes() {
        let c = cluster.client(n).await;
        assert_eq!(
            count(&c, "SELECT count(*) FROM items").await,
            rows,
            "node {n}"
        );
    }
    cluster.assert_same_rows("items").await;
}

/// Rows of `items` on node `c` as it has them now (no log applied first).
async fn local_count(c: &Client, filter: &str) -> i64 {
    c.batch_execute("SET pg_paxos.consistency_model = optimistic")
        .await
        .unwrap();
    let n = count(c, &format!("SELECT count(*) FROM items WHERE {filter}")).await;
    c.batch_execute("RESET pg_paxos.consistency_model")
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_on_other_members_commit_through_the_leader() {
    bounded(async {
        let (cluster, ballot) = led_by_node_1("fwd_basic").await;
        let (c2, c3) = (cluster.client(2).await, cluster.client(3).await);

        // One at a time from node 2: each shows on node 2 as soon as it returns.
        for id in 1..=10 {
            c2.execute("INSERT INTO items VALUES ($1, 'two')", &[&id])
                .await
                .unwrap_or_else(|e| panic!("insert {id} on node 2: {e:?}"));
            assert_eq!(local_count(&c2, &format!("id = {id}")).await, 1);
        }
        // Node 2 committed its rows with the marks of their batches, without applying the log.
        assert!(count(&c2, "SELECT count(*) FROM paxos.batched_writes").await >= 10);

        // Many at once from nodes 2 and 3, with extended-protocol parameters.
        let mut clients = Vec::new();
        for i in 0..8 {
            clients.push((i, cluster.client(2 + i % 2).await));
        }
        let runs = clients.iter().map(|(i, c)| async move {
            for k in 0..10 {
                let id = (100 + i * 10 + k) as i32;
                execute_retrying(c, "INSERT INTO items VALUES ($1, $2)", &[&id, &"many"])
                    .await
                    .unwrap_or_else(|e| panic!("insert {id}: {e:?}"));
            }
        });
        futures::future::join_all(runs).await;

        // Nobody took the leadership over: node 1 leads with the same ballot.
        assert_eq!(leader_ballot(&cluster.client(1).await).await, Some(ballot));
        assert_eq!(leader_ballot(&c2).await, None);
        assert_eq!(leader_ballot(&c3).await, None);
        // Every one of the 90 was forwarded, and counted on both sides.
        let sent = |c: Client| async move {
            count(&c, "SELECT forwarded_out FROM paxos.group_commit('g')").await
        };
        assert_eq!(
            sent(cluster.client(2).await).await + sent(cluster.client(3).await).await,
            90
        );
        assert_eq!(
            count(
                &cluster.client(1).await,
                "SELECT forwarded_in FROM paxos.group_commit('g')"
            )
            .await,
            90
        );
        // Several inserts of other members shared a batch of the leader.
        let batches = count(
            &cluster.client(1).await,
            "SELECT count(*) FROM paxos.log WHERE group_id = 'g' AND value_kind = 'batch'",
        )
        .await;
        assert!(batches < 91, "91 inserts took {batches} batches");

        every_node_has(&cluster, 91).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_leader_has_fails_the_insert_with_the_leaders_error() {
    bounded(async {
        let (cluster, ballot) = led_by_node_1("fwd_conflict").await;
        let (c1, c2) = (cluster.client(1).await, cluster.client(2).await);
        c1.execute("INSERT INTO items VALUES (5, 'leader')", &[])
            .await
            .unwrap();
        // Node 2 has not applied that round: only the leader can see the collision.
        assert_eq!(local_count(&c2, "id = 5").await, 0);
        let err = c2
            .execute("INSERT INTO items VALUES (5, 'member')", &[])
            .await
            .expect_err("key 5 exists on the leader");
        assert_eq!(sqlstate(&err), "23505", "{err:?}");
        let text = message(&err);
        assert!(
            text.contains("duplicate key") && text.contains("leader"),
            "{text}"
        );
        // Nothing of it anywhere; the leadership did not move.
        assert_eq!(local_count(&c2, "v = 'member'").await, 0);
        assert_eq!(leader_ballot(&c1).await, Some(ballot));
        // A NOT NULL violation fails on the member itself, before anything is sent.
        let err = c2
            .execute("INSERT INTO items VALUES (NULL, 'x')", &[])
            .await
            .expect_err("id is the primary key");
        assert_eq!(sqlstate(&err), "23502", "{err:?}");
        every_node_has(&cluster, 2).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_on_a_state_behind_an_update_takes_effect_in_log_order() {
    bounded(async {
        let (cluster, ballot) = led_by_node_1("fwd_behind").await;
        let (c1, c2) = (cluster.client(1).await, cluster.client(2).await);
        c2.execute("INSERT INTO items VALUES (1, 'old')", &[])
            .await
            .unwrap();
        // The leader updates every row; node 2 does not apply that round before its next insert,
        // whose rows it ran on a state without the update.
        c1.execute("UPDATE items SET v = 'updated'", &[])
            .await
            .unwrap();
        c2.execute("INSERT INTO items VALUES (2, 'new')", &[])
            .await
            .unwrap();
        // Node 2 applied the log through its insert instead of keeping rows written out of
        // order: the update shows, and does not touch the row inserted after it.
        assert_eq!(local_count(&c2, "v = 'updated'").await, 2);
        assert_eq!(local_count(&c2, "id = 2 AND v = 'new'").await, 1);
        assert_eq!(leader_ballot(&c1).await, Some(ballot.clone()));
        cluster.assert_same_rows("items").await;
        for n in cluster.nodes() {
            let c = cluster.client(n).await;
            assert_eq!(
                count(&c, "SELECT count(*) FROM items WHERE v = 'new'").await,
                1
            );
        }

        // The same in BEGIN ... COMMIT, which first applies the log (the leader's 5 inserts) in its
        // own transaction: only the rows it inserted itself are taken back, not those it applied.
        for id in 10..15 {
            c1.execute("INSERT INTO items VALUES ($1, 'leader')", &[&id])
                .await
                .unwrap();
        }
        c2.batch_execute("BEGIN; INSERT INTO items VALUES (20, 'block')")
            .await
            .unwrap();
        c1.execute("UPDATE items SET v = 'again' WHERE id < 20", &[])
            .await
            .unwrap();
        c2.batch_execute("COMMIT").await.unwrap();
        assert_eq!(local_count(&c2, "v = 'again'").await, 8);
        assert_eq!(local_count(&c2, "id = 20 AND v = 'block'").await, 1);
        assert_eq!(
            count(&c2, "SELECT forwarded_out FROM paxos.group_commit('g')").await,
            3
        );
        assert_eq!(leader_ballot(&c1).await, Some(ballot));
        cluster.assert_same_rows("items").await;
    })
    .await;
}

/// Waits until node `c`'s acceptor holds `ballot` as its range promise: a node that led before
/// then knows it no longer leads (until then its write would merely find that out).
async fn wait_for_promise(c: &Client, ballot: &str) {
    wait_until(
        "the newer leader's promise",
        Duration::from_secs(10),
        || async {
            let promised: Option<String> = c
                .query_one(
                    "SELECT max(promised_num || '/' || promised_by) FROM paxos.range_promises
                 WHERE group_id = 'g'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            promised.as_deref() == Some(ballot)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_transactions_of_inserts_are_forwarded_and_others_write_alone() {
    bounded(async {
        let (cluster, ballot) = led_by_node_1("fwd_alone").await;
        let (c1, c2, c3) = (
            cluster.client(1).await,
            cluster.client(2).await,
            cluster.client(3).await,
        );
        // BEGIN ... COMMIT with inserts only: node 2 writes alone (up to date first), then offers
        // the entry to the leader at COMMIT, which takes it.
        c2.batch_execute(
            "BEGIN; INSERT INTO items VALUES (1, 'block'); INSERT INTO items VALUES (2, 'block');
             COMMIT",
        )
        .await
        .unwrap();
        assert_eq!(local_count(&c2, "v = 'block'").await, 2);
        assert_eq!(
            count(&c2, "SELECT forwarded_out FROM paxos.group_commit('g')").await,
            1
        );
        assert_eq!(leader_ballot(&c1).await, Some(ballot.clone()));

        // With a savepoint rolled back: what is left of the transaction goes to the leader too.
        c3.batch_execute(
            "BEGIN; INSERT INTO items VALUES (3, 'kept'); SAVEPOINT s;
             INSERT INTO items VALUES (4, 'rolled back'); ROLLBACK TO s;
             INSERT INTO items VALUES (5, 'kept'); COMMIT",
        )
        .await
        .unwrap();
        assert_eq!(local_count(&c3, "v = 'kept'").await, 2);
        assert_eq!(local_count(&c3, "id = 4").await, 0);
        assert_eq!(leader_ballot(&c1).await, Some(ballot.clone()));

        // An insert and then an update: node 2 writes alone as well.
        c2.batch_execute(
            "BEGIN; INSERT INTO items VALUES (8, 'mixed');
             UPDATE items SET v = 'mixed, updated' WHERE id = 8; COMMIT",
        )
        .await
        .unwrap();
        let ballot2 = leader_ballot(&c2)
            .await
            .expect("node 2 wrote alone, so it leads");

        // A read of the table, then an insert (which may depend on what was read): node 3 writes
        // alone, so that its entry is chosen right after the state it read.
        c3.batch_execute(
            "BEGIN; SELECT count(*) FROM items; INSERT INTO items VALUES (9, 'after a read');
             COMMIT",
        )
        .await
        .unwrap();
        let ballot3 = leader_ballot(&c3)
            .await
            .expect("node 3 wrote alone, so it leads");
        assert_ne!(ballot3, ballot2);

        // An insert that a function runs, and that same function's update: node 2 writes them
        // alone too (an insert sent ahead to the leader could not be followed by an update).
        wait_for_promise(&c2, &ballot3).await;
        c2.batch_execute(
            "CREATE FUNCTION public.add_and_touch(i int) RETURNS void LANGUAGE sql AS $$
                 INSERT INTO public.items VALUES (i, 'function');
                 UPDATE public.items SET v = 'touched' WHERE id = i;
             $$",
        )
        .await
        .unwrap();
        c2.execute("SELECT public.add_and_touch(6)", &[])
            .await
            .unwrap();
        assert_eq!(local_count(&c2, "id = 6 AND v = 'touched'").await, 1);
        let ballot2 = leader_ballot(&c2)
            .await
            .expect("node 2 wrote alone, so it leads");

        // Off for a session: a single insert on node 1 writes alone.
        wait_for_promise(&c1, &ballot2).await;
        c1.batch_execute("SET pg_paxos.forward_writes = off")
            .await
            .unwrap();
        c1.execute("INSERT INTO items VALUES (7, 'off')", &[])
            .await
            .unwrap();
        assert!(leader_ballot(&c1).await.is_some(), "node 1 wrote alone");

        every_node_has(&cluster, 9).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_is_gone_fails_one_insert_and_the_next_one_takes_over() {
    bounded(async {
        let (cluster, _) = led_by_node_1("fwd_gone").await;
        let c2 = cluster.client(2).await;
        // Node 2 found its leader already.
        c2.execute("INSERT INTO items VALUES (1, 'before')", &[])
            .await
            .unwrap();
        cluster.stop(1);

        let started = std::time::Instant::now();
        let mut failures = Vec::new();
        let mut id = 2;
        loop {
            match c2
                .execute("INSERT INTO items VALUES ($1, 'after')", &[&id])
                .await
            {
                Ok(_) => break,
                Err(e) => failures.push((sqlstate(&e), message(&e))),
            }
            id += 1;
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no insert on node 2 went through after node 1 stopped: {failures:?}"
            );
        }
        // At most one insert failed, with "resolution unknown", naming the member without secrets.
        assert!(failures.len() <= 1, "{failures:?}");
        for (state, text) in &failures {
            assert_eq!(state, "08007", "{text}");
            assert!(
                text.contains("port=") && !text.contains("password"),
                "{text}"
            );
        }
        assert!(
            leader_ballot(&c2).await.is_some(),
            "node 2 took the leadership over"
        );

        // The failed insert never reached a leader: rows 0, 1 and the one that went through.
        cluster.start(1);
        every_node_has(&cluster, 3).await;
    })
    .await;
}

/// A leader that fails a forwarded insert for a reason of its own (here a trigger raising
/// `53100`, as a full disk does) fails that insert with its error; the member then writes alone
/// instead of sending every insert to a leader in trouble. The leader, once it applies the log,
/// meets the same trouble there: it fails the statement applying it but does not stop (no
/// divergence), and applies the entries once the trouble is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_in_trouble_fails_one_insert_and_the_member_writes_alone() {
    bounded(async {
        let (cluster, ballot) = led_by_node_1("fwd_trouble").await;
        let (c1, c2) = (cluster.client(1).await, cluster.client(2).await);
        c1.batch_execute(
            "SET pg_paxos.enabled = off;
             CREATE FUNCTION public.disk_full() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'no space left' USING ERRCODE = 'disk_full'; END $$;
             CREATE TRIGGER disk_full BEFORE INSERT ON items
               FOR EACH ROW EXECUTE FUNCTION public.disk_full();
             RESET pg_paxos.enabled",
        )
        .await
        .unwrap();
        let err = c2
            .execute("INSERT INTO items VALUES (1, 'member')", &[])
            .await
            .expect_err("the leader cannot insert");
        assert_eq!(sqlstate(&err), "53100", "{err:?}");
        assert!(message(&err).contains("leader"), "{}", message(&err));
        assert_eq!(leader_ballot(&c1).await, Some(ballot), "nothing moved yet");

        // The next insert of this backend is not sent there: it writes alone, taking the
        // leadership over.
        c2.execute("INSERT INTO items VALUES (2, 'member')", &[])
            .await
            .expect("node 2 writes alone");
        assert!(leader_ballot(&c2).await.is_some(), "node 2 leads now");

        // Node 1 cannot apply that insert while its trigger fails: its strong read fails with
        // the trigger's error, and no member is marked diverged.
        let err = c1
            .query("SELECT count(*) FROM items", &[])
            .await
            .expect_err("node 1 cannot apply the insert");
        assert_eq!(sqlstate(&err), "53100", "{err:?}");
        assert!(
            message(&err).contains("cannot apply round"),
            "{}",
            message(&err)
        );
        let diverged = count(
            &c2,
            "SELECT count(*) FROM paxos_status('g') WHERE diverged_round IS NOT NULL",
        )
        .await;
        assert_eq!(diverged, 0);

        c1.batch_execute(
            "SET pg_paxos.enabled = off; DROP TRIGGER disk_full ON items; RESET pg_paxos.enabled",
        )
        .await
        .unwrap();
        every_node_has(&cluster, 2).await;
    })
    .await;
}

/// A leader that leaves the group may keep its leadership in shared memory for a while. An insert
/// a member still sends there is answered "not leading" (`40001`, nothing written; it once failed
/// with `42704`, "group does not exist"), and the member's retry writes alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_left_the_group_sends_inserts_back() {
    bounded(async {
        let (cluster, _) = led_by_node_1("fwd_left").await;
        let (c1, c2) = (cluster.client(1).await, cluster.client(2).await);
        // Node 2's backend knows node 1 as the leader.
        c2.execute("INSERT INTO items VALUES (1, 'member')", &[])
            .await
            .unwrap();
        assert_eq!(
            count(&c1, "SELECT forwarded_in FROM paxos.group_commit('g')").await,
            1
        );
        c1.execute("SELECT paxos_leave_group('g')", &[])
            .await
            .unwrap();
        // The insert sent there is not taken: a definite failure, to retry.
        let err = c2
            .execute("INSERT INTO items VALUES (2, 'member')", &[])
            .await
            .expect_err("node 1 does not lead any more");
        assert_eq!(sqlstate(&err), "40001", "{err:?}");
        assert!(message(&err).contains("does not lead"), "{}", message(&err));
        // The retry writes alone.
        c2.execute("INSERT INTO items VALUES (2, 'member')", &[])
            .await
            .expect("node 2 writes alone");
        assert!(leader_ballot(&c2).await.is_some(), "node 2 leads now");
        let c3 = cluster.client(3).await;
        for c in [&c2, &c3] {
            assert_eq!(count(c, "SELECT count(*) FROM items").await, 3);
        }
    })
    .await;
}

/// A member's forwarded insert that must apply the log through its batch (it ran on a state
/// behind an update) and cannot, for a reason of the member's own (here a limit on temporary
/// files that the update's replay exceeds), still succeeds: its entry is chosen. The member
/// applies the log later, once it can, and every node ends with the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_insert_succeeds_when_its_member_cannot_apply_the_log_yet() {
    bounded(async {
        let (cluster, _) = led_by_node_1("fwd_cannot_apply").await;
        let (c1, c2) = (cluster.client(1).await, cluster.client(2).await);
        c2.execute("INSERT INTO items VALUES (1, 'old')", &[])
            .await
            .unwrap();
        // Its replay sorts 300,000 rows: more than 64 kB of temporary files.
        c1.execute(
            "UPDATE items SET v = (SELECT max(g)::text FROM (SELECT g FROM \
             generate_series(1, 300000) g ORDER BY g DESC OFFSET 1) s)",
            &[],
        )
        .await
        .unwrap();
        c2.batch_execute("SET work_mem = '64kB'; SET temp_file_limit = '64kB'")
            .await
            .unwrap();
        c2.execute("INSERT INTO items VALUES (2, 'new')", &[])
            .await
            .expect("the insert is chosen, so it succeeds");
        // Its rows come from the log, which node 2 cannot apply yet.
        assert_eq!(local_count(&c2, "id = 2").await, 0);
        assert_eq!(local_count(&c2, "v = '299999'").await, 0);
        c2.batch_execute("RESET work_mem; RESET temp_file_limit")
            .await
            .unwrap();
        every_node_has(&cluster, 3).await;
        assert_eq!(
            count(&c2, "SELECT count(*) FROM items WHERE id = 2 AND v = 'new'").await,
            1
        );
        assert_eq!(local_count(&c2, "v = '299999'").await, 2);
    })
    .await;
}
