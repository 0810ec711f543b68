//! The replicated log on real local clusters: appends, reads on every node, concurrency, minority
//! and majority failures, frozen members, membership changes, SIGKILL, bad input and privileges.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_paxos_tests::{
    bounded, groups_and_acceptor_records, message, sqlstate, wait_until, wait_until_running,
    Cluster, LinkProxy, Rule,
};
use tokio_postgres::{Client, Error};

async fn append(c: &Client, proposer: &str, group: &str, value: &str) -> Result<i64, Error> {
    let row = c
        .query_one(
            "SELECT paxos_append(current_proposer_id := $1, current_group_id := $2, proposed_value := $3)",
            &[&proposer, &group, &value],
        )
        .await?;
    Ok(row.get(0))
}

/// Drops and creates the extension again on `c`'s node: it loses its log, votes, promises and
/// token, as on a new volume.
async fn lose_its_data(c: &Client) {
    c.batch_execute("DROP EXTENSION pg_paxos CASCADE; CREATE EXTENSION pg_paxos")
        .await
        .unwrap();
}

/// The token of the copy of pg_paxos that `c`'s node is.
async fn node_identity(c: &Client) -> String {
    c.query_one("SELECT paxos.node_identity()", &[])
        .await
        .unwrap()
        .get(0)
}

/// The token that `member`'s admission to group `g` is bound to, as `c`'s node knows it.
async fn admitted_token(c: &Client, member: &str) -> Option<String> {
    c.query_one("SELECT paxos.admitted_token('g', $1)", &[&member])
        .await
        .unwrap()
        .get(0)
}

/// `node` (client `c`) cannot join `g` through node 1 as the member its connection string stands
/// for: it lost its data.
async fn join_is_refused_as_replaced(cluster: &Cluster, c: &Client, node: usize) {
    let err = c
        .query_one(
            "SELECT paxos_join_group('g', $1, $2)",
            &[&cluster.conninfo(1), &cluster.conninfo(node)],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "55000", "{err:?}");
    assert!(message(&err).contains("lost its data"), "{err:?}");
}

/// Brings `node` up to the group's highest round and returns its log of user values by round.
async fn caught_up_log(c: &Client, group: &str) -> BTreeMap<i64, String> {
    c.execute(
        "SELECT paxos_apply_log('checker', $1, paxos_max_group_round($1))",
        &[&group],
    )
    .await
    .expect("apply the log");
    c.query(
        "SELECT round, value_body FROM paxos.log WHERE group_id = $1 AND value_kind = 'value' ORDER BY round",
        &[&group],
    )
    .await
    .expect("read the log")
    .iter()
    .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
    .collect()
}

/// Every node's complete log (all entry kinds) up to `through`, which must be identical.
async fn assert_logs_agree(
    cluster: &Cluster,
    nodes: &[usize],
    group: &str,
) -> BTreeMap<i64, String> {
    let mut reference: Option<(usize, BTreeMap<i64, String>)> = None;
    let mut highest = 0i64;
    for &n in nodes {
        let c = cluster.client(n).await;
        let r: i64 = c
            .query_one("SELECT paxos_max_group_round($1)", &[&group])
            .await
            .expect("max round")
            .get(0);
        highest = highest.max(r);
    }
    for &n in nodes {
        let c = cluster.client(n).await;
        c.execute(
            "SELECT paxos_apply_log('checker', $1, $2)",
            &[&group, &highest],
        )
        .await
        .expect("apply to the highest round");
        let full: BTreeMap<i64, String> = c
            .query(
                "SELECT round, value_kind || ':' || coalesce(value_body, '') FROM paxos.log
                 WHERE group_id = $1 AND round <= $2 ORDER BY round",
                &[&group, &highest],
            )
            .await
            .expect("read log")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            full.len() as i64,
            highest + 1,
            "node {n} has gaps in its log"
        );
        match &reference {
            None => reference = Some((n, full)),
            Some((m, other)) => assert_eq!(&full, other, "logs of node {n} and node {m} differ"),
        }
    }
    reference.map(|(_, l)| l).unwrap_or_default()
}

/// An append on one node is read with the same value for its round on every node.
async fn read_everywhere(name: &str, size: usize) {
    let cluster = Cluster::new(name, size);
    cluster.form_group("mokka").await;
    for writer in [1, size] {
        let value = format!("primary = node-{writer}");
        let round = append(&cluster.client(writer).await, "node-a/1", "mokka", &value)
            .await
            .unwrap();
        for n in cluster.nodes() {
            let c = cluster.client(n).await;
            let row = c
                .query_one(
                    "SELECT accepted_value, value_changed FROM paxos(current_proposer_id := 'reader',
                       current_group_id := 'mokka', current_round_num := $1)",
                    &[&round],
                )
                .await
                .unwrap();
            assert_eq!(
                row.get::<_, Option<String>>(0),
                Some(value.clone()),
                "node {n}"
            );
            assert!(!row.get::<_, bool>(1));
            let max: i64 = c
                .query_one("SELECT paxos_max_group_round('mokka')", &[])
                .await
                .unwrap()
                .get(0);
            assert!(max >= round, "node {n}: max round {max} < {round}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_on_one_node_is_read_on_every_node_of_three() {
    bounded(read_everywhere("read_everywhere3", 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_on_one_node_is_read_on_every_node_of_five() {
    bounded(read_everywhere("read_everywhere5", 5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_again_is_idempotent_and_never_adds_a_member_twice() {
    bounded(async {
        let cluster = Cluster::new("rejoin", 3);
        cluster.form_group("g").await;
        let c3 = cluster.client(3).await;
        let first: i64 = c3
            .query_one(
                "SELECT paxos_join_group('g', $1, $2)",
                &[&cluster.conninfo(1), &cluster.conninfo(3)],
            )
            .await
            .expect("a repeated join succeeds")
            .get(0);
        // Asking another member to admit it again finds the existing membership.
        let admitted: i64 = cluster
            .client(2)
            .await
            .query_one(
                "SELECT paxos.admit_member('g', $1)",
                &[&cluster.conninfo(3)],
            )
            .await
            .unwrap()
            .get(0);
        let adds: i64 = cluster
            .client(1)
            .await
            .query_one(
                "SELECT count(*) FROM paxos.log WHERE group_id = 'g' AND value_kind = 'add_host'
                   AND value_body = $1",
                &[&cluster.conninfo(3)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(adds, 1, "node 3 was added once");
        assert!(admitted > 0 && first >= 0);
        let err = cluster
            .client(1)
            .await
            .query("SELECT paxos_add_host('g', $1)", &[&cluster.conninfo(2)])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42710", "{err:?}");
        let members: i64 = c3
            .query_one("SELECT count(*) FROM paxos_status('g')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(members, 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_cannot_rejoin_as_the_member_it_was() {
    bounded(async {
        let cluster = Cluster::new("replaced", 3);
        cluster.form_group("g").await;
        let c1 = cluster.client(1).await;
        c1.execute("SELECT paxos_append('before', 'g', 'v1')", &[])
            .await
            .unwrap();

        // Node 3 loses everything pg_paxos kept: its log, its votes and promises, its token.
        let c3 = cluster.client(3).await;
        lose_its_data(&c3).await;
        let join = "SELECT paxos_join_group('g', $1, $2)";
        let args = [cluster.conninfo(1), cluster.conninfo(3)];
        let err = c3.query_one(join, &[&args[0], &args[1]]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "55000", "{err:?}");
        assert!(message(&err).contains("lost its data"), "{err:?}");
        // Nothing half-done: node 3 holds no group, the others still count three members, once.
        let held: i64 = c3
            .query_one("SELECT count(*) FROM paxos.groups", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(held, 0);
        let adds = "SELECT count(*) FROM paxos.log WHERE group_id = 'g' \
                    AND value_kind = 'add_host' AND value_body = $1";
        let added: i64 = c1.query_one(adds, &[&args[1]]).await.unwrap().get(0);
        assert_eq!(added, 1);

        // As the hint says: remove the old member, then join again, as a new voter.
        c1.execute("SELECT paxos_remove_host('g', $1)", &[&args[1]])
            .await
            .unwrap();
        c3.query_one(join, &[&args[0], &args[1]])
            .await
            .expect("a join after the removal");
        let members: i64 = c1
            .query_one(
                "SELECT count(*) FROM paxos_status('g') WHERE reachable",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(members, 3);
        c3.execute("SELECT paxos_append('after', 'g', 'v2')", &[])
            .await
            .unwrap();

        // The same node joining again (a retried join) is still let through.
        let err = cluster
            .client(2)
            .await
            .query_one(
                "SELECT paxos.admit_member('g', $1, (SELECT token FROM paxos.node))",
                &[&args[1]],
            )
            .await
            .unwrap_err();
        assert_eq!(
            sqlstate(&err),
            "55000",
            "node 2's token is not node 3's: {err:?}"
        );
        let own: String = c3
            .query_one("SELECT token FROM paxos.node", &[])
            .await
            .unwrap()
            .get(0);
        let retried: i64 = cluster
            .client(2)
            .await
            .query_one("SELECT paxos.admit_member('g', $1, $2)", &[&args[1], &own])
            .await
            .unwrap()
            .get(0);
        assert!(retried > 0);
    })
    .await;
}

/// `paxos_add_host` records the copy of pg_paxos that answers at the address, so a node added that
/// way that later loses its data is refused when it joins again, as a node that joined by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_added_by_another_member_is_recorded_as_the_copy_that_answered() {
    bounded(async {
        let cluster = Cluster::new("added_copy", 3);
        cluster.create_group("g", &cluster.conninfo(1)).await;
        cluster.join("g", 2, 1).await;
        let c1 = cluster.client(1).await;
        let c3 = cluster.client(3).await;
        // An address where nobody answers is added without a token, as before.
        let nobody = format!(
            "host=127.0.0.1 port={} dbname=postgres",
            cluster.port(3) + 100
        );
        c1.execute("SELECT paxos_add_host('g', $1)", &[&nobody])
            .await
            .unwrap();
        assert_eq!(admitted_token(&c1, &nobody).await, None);
        c1.execute("SELECT paxos_remove_host('g', $1)", &[&nobody])
            .await
            .unwrap();

        c1.execute("SELECT paxos_add_host('g', $1)", &[&cluster.conninfo(3)])
            .await
            .unwrap();
        let admitted = admitted_token(&c1, &cluster.conninfo(3)).await;
        let token = node_identity(&c3).await;
        assert_eq!(admitted.as_deref(), Some(token.as_str()));
        // Node 3 joins as the copy that was added, and votes.
        cluster.join("g", 3, 1).await;
        cluster.stop(2);
        append(&c1, "p1", "g", "with node 3").await.unwrap();
        cluster.start(2);

        // Wiped, it cannot join again as that member.
        lose_its_data(&c3).await;
        join_is_refused_as_replaced(&cluster, &c3, 3).await;
    })
    .await;
}

/// An address added while nothing answered there records no copy of pg_paxos: the first node to
/// join as it claims the membership, so that node, once it lost its data, cannot join again as
/// that voter either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_added_while_nothing_answered_is_bound_to_the_first_copy_that_joins() {
    bounded(async {
        let cluster = Cluster::new("claimed_copy", 3);
        cluster.create_group("g", &cluster.conninfo(1)).await;
        cluster.join("g", 2, 1).await;
        let c1 = cluster.client(1).await;
        // Node 3 is down when it is added, so this backend skips it as down from then on (see
        // `a_member_skipped_as_down_is_asked_after_all_when_another_fails`).
        c1.batch_execute("SET pg_paxos.member_retry_interval = '1h'")
            .await
            .unwrap();
        let additions = "SELECT count(*) FROM paxos.log
                         WHERE group_id = 'g' AND value_kind = 'add_host' AND value_body = $1";
        cluster.stop(3);
        c1.execute("SELECT paxos_add_host('g', $1)", &[&cluster.conninfo(3)])
            .await
            .unwrap();
        let admitted = admitted_token(&c1, &cluster.conninfo(3)).await;
        assert_eq!(admitted, None);

        cluster.start(3);
        let c3 = cluster.client(3).await;
        let token = node_identity(&c3).await;
        cluster.join("g", 3, 1).await;
        let admitted = admitted_token(&c1, &cluster.conninfo(3)).await;
        assert_eq!(admitted.as_deref(), Some(token.as_str()));
        // One addition and one claim; joining again claims nothing more.
        cluster.join("g", 3, 1).await;
        let count: i64 = c1
            .query_one(additions, &[&cluster.conninfo(3)])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 2);
        // It votes: with node 2 stopped, nodes 1 and 3 are the majority.
        cluster.stop(2);
        append(&c1, "p1", "g", "with node 3").await.unwrap();
        cluster.start(2);

        // Wiped, it is refused as the copy that claimed the membership, and is left without the
        // group and without the right to vote.
        lose_its_data(&c3).await;
        join_is_refused_as_replaced(&cluster, &c3, 3).await;
        assert_eq!(groups_and_acceptor_records(&c3).await, 0);
        let count: i64 = c1
            .query_one(additions, &[&cluster.conninfo(3)])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 2);
    })
    .await;
}

/// A member that failed a moment ago is skipped while the others can be a majority; when one of
/// those fails too, the skipped member must be asked after all, not counted as failed: here nodes
/// 1 and 3 are up, and the round needs node 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_skipped_as_down_is_asked_after_all_when_another_fails() {
    bounded(async {
        let cluster = Cluster::new("skipped_asked", 3);
        cluster.form_group("g").await;
        let c1 = cluster.client(1).await;
        c1.batch_execute("SET pg_paxos.member_retry_interval = '1h'")
            .await
            .unwrap();
        append(&c1, "p1", "g", "all up").await.unwrap();
        // paxos_status asks every member: node 3 fails, and this backend skips it from now on.
        cluster.stop(3);
        let reachable: Vec<bool> = c1
            .query(
                "SELECT reachable FROM paxos_status('g') ORDER BY member",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            reachable.iter().filter(|r| !**r).count(),
            1,
            "{reachable:?}"
        );
        append(&c1, "p1", "g", "node 3 down").await.unwrap();
        cluster.start(3);
        cluster.stop(2);
        let round = append(&c1, "p1", "g", "node 2 down").await.unwrap();
        let c3 = cluster.client(3).await;
        let value: Option<String> = c3
            .query_one("SELECT accepted_value FROM paxos('p3', 'g', $1)", &[&round])
            .await
            .unwrap()
            .get(0);
        assert_eq!(value.as_deref(), Some("node 2 down"));
    })
    .await;
}

/// A read index asks only as many members as it needs, the fastest first; when the one it asked
/// freezes (its connection open, answering nothing), the read asks another after a short hedge
/// instead of waiting out its timeout, and later reads ask the other first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_first_member_freezes_asks_another() {
    bounded(async {
        let cluster = Cluster::new("read_hedge", 3);
        // Node 3 answers node 1 a few milliseconds late, so node 1's reads ask node 2 first.
        let slow = LinkProxy::start(cluster.port(3));
        slow.set("node1", Rule::Delay(Duration::from_millis(5)));
        cluster.create_group("g", &cluster.conninfo(1)).await;
        cluster.join("g", 2, 1).await;
        cluster.join_known_as("g", 3, 1, &slow.conninfo()).await;
        let c1 = cluster.client(1).await;
        c1.batch_execute("SET pg_paxos.round_timeout = '20s'")
            .await
            .unwrap();
        let max_round = "SELECT paxos_max_group_round('g')";
        for i in 0..5 {
            append(&c1, "p1", "g", &format!("v{i}")).await.unwrap();
            let _: i64 = c1.query_one(max_round, &[]).await.unwrap().get(0);
        }
        let round = append(&c1, "p1", "g", "last").await.unwrap();

        cluster.pause(2);
        for i in 0..10 {
            let started = Instant::now();
            let seen: i64 = c1.query_one(max_round, &[]).await.unwrap().get(0);
            assert!(seen >= round, "read {i} saw round {seen}, before {round}");
            // Without the hedge, a read that asked node 2 would wait out its 20 s.
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "read {i} took {:?}",
                started.elapsed()
            );
        }
        cluster.resume(2);
    })
    .await;
}

/// The votes that chose a value are gone with a wiped node, so it must not vote again: otherwise
/// it and a member that missed the round form a majority that never saw the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_votes_no_more() {
    bounded(async {
        let cluster = Cluster::new("wiped_voter", 3);
        cluster.form_group("g").await;
        let c1 = cluster.client(1).await;
        append(&c1, "p1", "g", "first").await.unwrap();
        // Node 2 misses the round: only nodes 1 and 3 vote for 'chosen'.
        cluster.stop(2);
        let round = append(&c1, "p1", "g", "chosen").await.unwrap();
        drop(c1);
        let c3 = cluster.client(3).await;
        lose_its_data(&c3).await;

        // Every request that would count node 3's votes or promises is refused, with the reason.
        let requests = [
            format!("SELECT * FROM paxos.request_prepare('g', {round}, 99, 'x')"),
            format!("SELECT * FROM paxos.request_accept('g', {round}, 99, 'x', 'o', 'value', 'v')"),
            format!("SELECT * FROM paxos.request_prepare_range('g', {round}, 99, 'x')"),
            format!("SELECT paxos.request_learn('g', {round}, 'o', 'value', 'v')"),
            "SELECT paxos.request_highest_round('g', true)".to_string(),
            "SELECT * FROM paxos.request_read_index('g', 0)".to_string(),
            "SELECT * FROM paxos.request_lease('g', 99, 'x', 1, 1000)".to_string(),
        ];
        for sql in &requests {
            let err = c3.query(sql.as_str(), &[]).await.unwrap_err();
            assert_eq!(sqlstate(&err), "55000", "{sql}: {err:?}");
            assert!(message(&err).contains("no acceptor of paxos group"), "{sql}: {err:?}");
        }
        let kept: i64 = c3
            .query_one(
                "SELECT (SELECT count(*) FROM paxos.acceptor_slots) + (SELECT count(*) FROM paxos.log)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(kept, 0, "a refused request left state behind");

        // With node 1 down, node 2 and the wiped node 3 must not decide the round again.
        cluster.stop(1);
        cluster.start(2);
        let c2 = cluster.client(2).await;
        c2.batch_execute("SET pg_paxos.round_timeout = 3000").await.unwrap();
        let started = Instant::now();
        let err = c2
            .query_one("SELECT accepted_value FROM paxos('p2', 'g', $1, 'other')", &[&round])
            .await
            .expect_err("two of three members, one of them wiped, are no majority");
        assert!(
            ["08006", "40001"].contains(&sqlstate(&err).as_str()),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());

        // Once node 1 is back, the round still holds the value that was chosen.
        cluster.start(1);
        let value: String = c2
            .query_one("SELECT accepted_value FROM paxos('p2', 'g', $1, 'other')", &[&round])
            .await
            .unwrap()
            .get(0);
        assert_eq!(value, "chosen");

        // Nodes 1 and 2 write on, skipping node 3 instead of asking it (and being refused) on
        // every round.
        let c1 = cluster.client(1).await;
        c1.batch_execute(
            "SET pg_paxos.member_retry_interval = 60000; SET pg_paxos.round_timeout = 3000",
        )
        .await
        .unwrap();
        let refusals = || {
            cluster
                .server_log(3)
                .matches("is no acceptor of paxos group")
                .count()
        };
        // Reads of the highest round (as strong reads ask) in a backend that has not written.
        let reader = cluster.client(1).await;
        reader
            .batch_execute("SET pg_paxos.member_retry_interval = 60000")
            .await
            .unwrap();
        let before = refusals();
        for _ in 0..20 {
            reader
                .query_one("SELECT paxos_max_group_round('g')", &[])
                .await
                .unwrap();
        }
        // Skipped once a refusal was read: a call that has its majority before node 3's refusal
        // arrives drops it unread, so a few may reach node 3 (asked on every call, it is 20).
        let refused = refusals() - before;
        assert!(refused <= 10, "node 3 refused {refused} of 20 reads");
        let before = refusals();
        for i in 0..20 {
            append(&c1, "p1", "g", &format!("w{i}")).await.unwrap();
        }
        let refused = refusals() - before;
        assert!(
            refused <= 10,
            "node 3 refused {refused} requests of 20 appends (asked on every round, it is 40)"
        );
        // paxos_status shows node 3 as not answering for the group, and why.
        let row = c1
            .query_one(
                "SELECT reachable, error FROM paxos_status('g') WHERE member = $1",
                &[&cluster.conninfo(3)],
            )
            .await
            .unwrap();
        let (reachable, error): (bool, Option<String>) = (row.get(0), row.get(1));
        assert!(!reachable);
        assert!(
            error.as_deref().unwrap_or_default().contains("no acceptor"),
            "{error:?}"
        );
        // Node 1 and the wiped node 3 are no majority either.
        cluster.stop(2);
        let started = Instant::now();
        let err = append(&c1, "p1", "g", "lost")
            .await
            .expect_err("node 1 and a wiped node 3 are no majority");
        assert!(
            ["08006", "40001"].contains(&sqlstate(&err).as_str()),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_readme_log_examples_run_unchanged() {
    bounded(async {
        let cluster = Cluster::new("readme_log", 3);
        cluster.form_group("ha_postgres").await;
        let c = cluster.client(1).await;
        let statements = [
            "SELECT * FROM paxos_apply_and_append(
                current_proposer_id := 'node-a/1251',
                current_group_id := 'ha_postgres',
                proposed_value := 'INSERT INTO coordinates VALUES (3,3)')",
            "SELECT * FROM paxos_apply_log(
                current_proposer_id := 'node-a/1252',
                current_group_id := 'ha_postgres',
                max_round_num := 3)",
            "SELECT * FROM paxos_max_group_round(
                current_group_id := 'ha_postgres')",
            "SELECT * FROM paxos_append(
                current_proposer_id := 'node-a/1253',
                current_group_id := 'ha_postgres',
                proposed_value := 'primary = node-a')",
        ];
        for sql in statements {
            c.query(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
        let latest = c
            .query_one(
                "SELECT * FROM paxos(
                    current_proposer_id := 'node-a/1254',
                    current_group_id := 'ha_postgres',
                    current_round_num := paxos_max_group_round('ha_postgres'))",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            latest.get::<_, Option<String>>("accepted_value").as_deref(),
            Some("primary = node-a")
        );
        assert!(!latest.get::<_, bool>("value_changed"));
    })
    .await;
}

/// Clients on every node append unique values at once; each lands exactly once, at the round its
/// append returned, and every node has the same log.
async fn concurrent_appends(name: &str, size: usize, clients_per_node: usize, appends_each: usize) {
    let cluster = Cluster::new(name, size);
    cluster.form_group("g").await;
    let mut tasks = Vec::new();
    for node in cluster.nodes() {
        for k in 0..clients_per_node {
            let c = cluster.client(node).await;
            tasks.push(tokio::spawn(async move {
                let mut placed = Vec::new();
                for i in 0..appends_each {
                    let value = format!("n{node}-c{k}-{i}");
                    let round = append(&c, &format!("n{node}/{k}"), "g", &value)
                        .await
                        .unwrap_or_else(|e| panic!("append {value}: {e:?}"));
                    placed.push((round, value));
                }
                placed
            }));
        }
    }
    let mut acknowledged = BTreeMap::new();
    for t in tasks {
        for (round, value) in t.await.unwrap() {
            assert!(
                acknowledged.insert(round, value.clone()).is_none(),
                "two appends got round {round}"
            );
        }
    }
    let nodes: Vec<usize> = cluster.nodes().collect();
    assert_logs_agree(&cluster, &nodes, "g").await;
    let log = caught_up_log(&cluster.client(1).await, "g").await;
    assert_eq!(
        log, acknowledged,
        "the log holds exactly the acknowledged values at their rounds"
    );
    assert_eq!(log.len(), size * clients_per_node * appends_each);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_on_three_nodes_land_once_in_one_order() {
    bounded(concurrent_appends("concurrent3", 3, 3, 15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_on_five_nodes_land_once_in_one_order() {
    bounded(concurrent_appends("concurrent5", 5, 2, 10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_five_down_appends_succeed_and_restarted_nodes_catch_up() {
    bounded(async {
        let cluster = Cluster::new("minority5", 5);
        cluster.form_group("g").await;
        cluster.stop(4);
        cluster.stop(5);
        let mut acknowledged = BTreeMap::new();
        for node in 1..=3 {
            let c = cluster.client(node).await;
            for i in 0..3 {
                let value = format!("while-down-{node}-{i}");
                let round = append(&c, "p", "g", &value)
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"));
                acknowledged.insert(round, value);
            }
        }
        cluster.start(4);
        cluster.start(5);
        for node in [4, 5] {
            let log = caught_up_log(&cluster.client(node).await, "g").await;
            assert_eq!(log, acknowledged, "node {node} caught up");
        }
        assert_logs_agree(&cluster, &[1, 2, 3, 4, 5], "g").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_down_appends_succeed() {
    bounded(async {
        let cluster = Cluster::new("minority3", 3);
        cluster.form_group("g").await;
        cluster.stop(2);
        let c1 = cluster.client(1).await;
        let c3 = cluster.client(3).await;
        let a = append(&c1, "p", "g", "a").await.unwrap();
        let b = append(&c3, "p", "g", "b").await.unwrap();
        assert!(b > a);
        cluster.start(2);
        let log = caught_up_log(&cluster.client(2).await, "g").await;
        assert_eq!(log.values().cloned().collect::<Vec<_>>(), vec!["a", "b"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_down_fails_fast_with_a_clear_error() {
    bounded(async {
        let cluster = Cluster::new("majority_down", 3);
        cluster.form_group("g").await;
        cluster.stop(2);
        cluster.stop(3);
        let c1 = cluster.client(1).await;
        c1.batch_execute("SET pg_paxos.connect_timeout = 500; SET pg_paxos.round_timeout = 3000")
            .await
            .unwrap();
        let started = Instant::now();
        let err = append(&c1, "p", "g", "lost").await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(sqlstate(&err), "08006", "{err:?}");
        assert!(
            message(&err).contains("1 of 3 members reachable, 2 needed"),
            "{}",
            message(&err)
        );
        let err = c1
            .query_one("SELECT paxos_max_group_round('g')", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "08006");
        // The failed append left no value behind once the group is whole again.
        cluster.start(2);
        cluster.start(3);
        let log = caught_up_log(&cluster.client(2).await, "g").await;
        assert!(!log.values().any(|v| v == "lost"), "{log:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_member_never_holds_up_a_round() {
    bounded(async {
        let cluster = Cluster::new("frozen_member", 3);
        cluster.form_group("g").await;
        let frozen = LinkProxy::frozen();
        let c1 = cluster.client(1).await;
        c1.execute("SELECT paxos_add_host('g', $1)", &[&frozen.conninfo()])
            .await
            .unwrap();
        // Four members, majority three: the three real nodes suffice, the frozen one never answers.
        c1.batch_execute("SET pg_paxos.connect_timeout = 20000")
            .await
            .unwrap();
        for node in cluster.nodes() {
            let c = cluster.client(node).await;
            c.batch_execute("SET pg_paxos.connect_timeout = 20000")
                .await
                .unwrap();
            let started = Instant::now();
            append(&c, "p", "g", &format!("v{node}")).await.unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "node {node}: append waited {:?} on the frozen member",
                started.elapsed()
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_and_cancel_stop_a_waiting_call() {
    bounded(async {
        let cluster = Cluster::new("interrupts", 3);
        cluster.form_group("g").await;
        let frozen = [LinkProxy::frozen(), LinkProxy::frozen()];
        let c1 = cluster.client(1).await;
        for b in &frozen {
            c1.execute("SELECT paxos_add_host('g', $1)", &[&b.conninfo()]).await.unwrap();
        }
        // Five members, three real; with one real node stopped a round needs a frozen member.
        cluster.stop(3);
        c1.batch_execute(
            "SET pg_paxos.connect_timeout = 60000; SET pg_paxos.round_timeout = 60000; SET statement_timeout = 1000",
        )
        .await
        .unwrap();
        let started = Instant::now();
        let err = append(&c1, "p", "g", "never").await.unwrap_err();
        assert_eq!(sqlstate(&err), "57014", "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());

        // pg_cancel_backend from another session.
        c1.batch_execute("SET statement_timeout = 0").await.unwrap();
        let pid: i32 = c1.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        let c2 = cluster.client(1).await;
        let started = Instant::now();
        let waiting = tokio::spawn(async move { append(&c1, "p", "g", "never").await });
        wait_until_running(&c2, pid, "paxos_append").await;
        wait_until("the cancel to be delivered", Duration::from_secs(10), || {
            let c2 = &c2;
            async move {
                c2.query_one("SELECT pg_cancel_backend($1)", &[&pid]).await.unwrap().get::<_, bool>(0)
            }
        })
        .await;
        let err = waiting.await.unwrap().unwrap_err();
        assert_eq!(sqlstate(&err), "57014", "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    })
    .await;
}

/// The parent and the state (`R`, `S`, `Z`, ...) of a process, from `/proc`; `None` once it is gone.
fn process_parent_and_state(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name in parentheses may hold spaces: the fields that follow start after its last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((fields.next()?.parse().ok()?, state))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_on_members_ends_when_its_postmaster_dies() {
    bounded(async {
        let cluster = Cluster::new("postmaster_death", 3);
        cluster.form_group("g").await;
        let frozen = [LinkProxy::frozen(), LinkProxy::frozen()];
        let c1 = cluster.client(1).await;
        for b in &frozen {
            c1.execute("SELECT paxos_add_host('g', $1)", &[&b.conninfo()])
                .await
                .unwrap();
        }
        // As above: a round needs a frozen member, so the call waits for a minute.
        cluster.stop(3);
        c1.batch_execute(
            "SET pg_paxos.connect_timeout = 60000; SET pg_paxos.round_timeout = 60000",
        )
        .await
        .unwrap();
        let pid: i32 = c1
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let (postmaster, _) = process_parent_and_state(pid).expect("the backend runs");
        let observer = cluster.client(1).await;
        let waiting = tokio::spawn(async move { append(&c1, "p", "g", "never").await });
        wait_until_running(&observer, pid, "paxos_append").await;
        drop(observer);
        assert!(!waiting.is_finished(), "the call did not wait");

        // Only the postmaster dies, as in a crash of it alone; its backends must notice.
        let killed = std::process::Command::new("kill")
            .args(["-9", &postmaster.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        wait_until("the waiting backend to exit", Duration::from_secs(3), || async move {
            !matches!(process_parent_and_state(pid), Some((_, state)) if state != 'Z')
        })
        .await;
        waiting.await.unwrap().expect_err("the call cannot succeed");
        // A backend still attached to the node's shared memory would keep it from starting.
        cluster.start(1);
        let c1 = cluster.client(1).await;
        let one: i32 = c1.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_member_is_reported_once_then_skipped() {
    bounded(async {
        let cluster = Cluster::new("down_backoff", 3);
        cluster.form_group("g").await;
        cluster.stop(3);
        let c1 = cluster.client(1).await;
        c1.batch_execute("SET pg_paxos.member_retry_interval = 60000")
            .await
            .unwrap();
        for i in 0..20 {
            append(&c1, "p", "g", &format!("v{i}")).await.unwrap();
        }
        let warnings = cluster
            .server_log(1)
            .matches(&format!(
                "port={} dbname=postgres user=postgres is unreachable",
                cluster.port(3)
            ))
            .count();
        assert_eq!(
            warnings, 1,
            "one warning for the down member, not one per call"
        );
    })
    .await;
}

/// What a background writer does when an append fails.
#[derive(Clone, Copy)]
enum OnFailure {
    /// The test expects no failure.
    Panic,
    /// Its node may be killed: stop at a lost connection, go on after an error.
    Tolerate,
}

/// Appends `label-0`, `label-1`, ... until `stop` is set; returns the acknowledged (round, value).
fn spawn_writer(
    client: Client,
    label: String,
    stop: Arc<AtomicBool>,
    on_failure: OnFailure,
) -> tokio::task::JoinHandle<Vec<(i64, String)>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let value = format!("{label}-{i}");
            i += 1;
            match (append(&client, "w", "g", &value).await, on_failure) {
                (Ok(round), _) => acked.push((round, value)),
                (Err(e), OnFailure::Panic) => panic!("append {value}: {e:?}"),
                (Err(e), OnFailure::Tolerate) if e.is_closed() || e.as_db_error().is_none() => {
                    break
                }
                (Err(_), OnFailure::Tolerate) => {}
            }
        }
        acked
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_while_appends_run() {
    bounded(async {
        let cluster = Cluster::new("membership", 5);
        // Group of nodes 1..3 first; 4 and 5 join later, 2 leaves.
        let c1 = cluster.client(1).await;
        c1.execute(
            "SELECT paxos_create_group('g', $1)",
            &[&cluster.conninfo(1)],
        )
        .await
        .unwrap();
        for node in [2, 3] {
            cluster.join("g", node, 1).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for node in [1, 3] {
            let c = cluster.client(node).await;
            writers.push(spawn_writer(
                c,
                format!("w{node}"),
                stop.clone(),
                OnFailure::Panic,
            ));
        }
        let join = |node: usize, via: usize| {
            let cluster = &cluster;
            async move {
                cluster
                    .client(node)
                    .await
                    .execute(
                        "SELECT paxos_join_group('g', $1, $2)",
                        &[&cluster.conninfo(via), &cluster.conninfo(node)],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("node {node} joins: {e:?}"));
            }
        };
        join(4, 2).await;
        join(5, 4).await;
        cluster
            .client(2)
            .await
            .execute("SELECT paxos_leave_group('g')", &[])
            .await
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        let mut acknowledged = BTreeMap::new();
        for w in writers {
            acknowledged.extend(w.await.unwrap());
        }
        assert!(!acknowledged.is_empty());
        let log = assert_logs_agree(&cluster, &[1, 3, 4, 5], "g").await;
        for (round, value) in &acknowledged {
            assert_eq!(
                log.get(round),
                Some(&format!("value:{value}")),
                "round {round}"
            );
        }
        let members: Vec<String> = c1
            .query("SELECT member FROM paxos_status('g') ORDER BY member", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let expected: BTreeSet<String> =
            [1, 3, 4, 5].iter().map(|&n| cluster.conninfo(n)).collect();
        assert_eq!(members.into_iter().collect::<BTreeSet<_>>(), expected);
        let left = cluster.client(2).await;
        let err = append(&left, "p", "g", "x").await.unwrap_err();
        assert_eq!(
            sqlstate(&err),
            "42704",
            "the node that left has no group any more"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_appends_then_every_log_agrees() {
    bounded(async {
        let cluster = Cluster::new("sigkill", 3);
        cluster.form_group("g").await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for node in [1, 2] {
            for k in 0..2 {
                let c = cluster.client(node).await;
                let label = format!("n{node}-{k}");
                writers.push(spawn_writer(c, label, stop.clone(), OnFailure::Tolerate));
            }
        }
        let c1 = cluster.client(1).await;
        let highest = || {
            let c1 = &c1;
            async move {
                c1.query_one("SELECT max(round) FROM paxos.log WHERE group_id = 'g'", &[])
                    .await
                    .map(|r| r.get::<_, Option<i64>>(0).unwrap_or(0))
                    .unwrap_or(0)
            }
        };
        // Forming the group used rounds already: count progress from here.
        let start = highest().await;
        let progressed = |more: i64| {
            let highest = &highest;
            async move { highest().await >= start + more }
        };
        wait_until("appends to start", Duration::from_secs(30), || {
            progressed(10)
        })
        .await;
        cluster.kill(3);
        wait_until(
            "appends to go on without node 3",
            Duration::from_secs(30),
            || progressed(25),
        )
        .await;
        cluster.start(3);
        cluster.kill(2);
        wait_until(
            "appends to go on without node 2",
            Duration::from_secs(30),
            || progressed(40),
        )
        .await;
        cluster.start(2);
        stop.store(true, Ordering::Relaxed);
        let mut acknowledged = BTreeMap::new();
        for w in writers {
            acknowledged.extend(w.await.unwrap());
        }
        let log = assert_logs_agree(&cluster, &[1, 2, 3], "g").await;
        for (round, value) in &acknowledged {
            assert_eq!(
                log.get(round),
                Some(&format!("value:{value}")),
                "acknowledged round {round}"
            );
        }
        let values: Vec<&String> = log.values().filter(|v| v.starts_with("value:")).collect();
        let unique: BTreeSet<&&String> = values.iter().collect();
        assert_eq!(values.len(), unique.len(), "no value was chosen twice");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_an_abandoned_round_closes_it_with_a_noop() {
    bounded(async {
        let cluster = Cluster::new("noop", 3);
        cluster.form_group("g").await;
        let c = cluster.client(2).await;
        // Membership changes closed rounds with no-ops already; go past them.
        let top: i64 = c
            .query_one("SELECT paxos_max_group_round('g')", &[])
            .await
            .unwrap()
            .get(0);
        let round = top + 5;
        let row = c
            .query_one("SELECT * FROM paxos('r', 'g', $1)", &[&round])
            .await
            .unwrap();
        assert_eq!(row.get::<_, Option<String>>(0), None);
        assert!(!row.get::<_, bool>(1));
        let row = cluster
            .client(3)
            .await
            .query_one("SELECT * FROM paxos('r', 'g', $1, 'late')", &[&round])
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, Option<String>>(0),
            None,
            "a closed round keeps its no-op"
        );
        assert!(
            row.get::<_, bool>(1),
            "value_changed tells the proposer it lost"
        );
        assert_eq!(append(&c, "p", "g", "next").await.unwrap(), round + 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_clear_errors_and_creates_nothing() {
    bounded(async {
        let cluster = Cluster::new("bad_input", 2);
        let c = cluster.client(1).await;
        let me = cluster.conninfo(1);
        let expect =
            |sql: &'static str, args: Vec<String>, code: &'static str, text: &'static str| {
                let c = &c;
                async move {
                    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
                        .iter()
                        .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
                        .collect();
                    let err = c.query(sql, &params).await.expect_err(sql);
                    assert_eq!(sqlstate(&err), code, "{sql} {args:?}: {err:?}");
                    assert!(
                        message(&err).contains(text),
                        "{sql}: {:?} lacks {text:?}",
                        message(&err)
                    );
                    let hint = err.as_db_error().and_then(|d| d.hint().map(str::to_string));
                    assert!(hint.is_some() || code == "57014", "{sql}: no hint");
                }
            };
        let cases: Vec<(&str, Vec<String>, &str, &str)> = vec![
            (
                "SELECT paxos_append('p', $1, 'v')",
                vec!["nope".into()],
                "42704",
                "does not exist",
            ),
            (
                "SELECT paxos_create_group($1, $2)",
                vec!["x".repeat(64), me.clone()],
                "42622",
                "64 bytes",
            ),
            (
                "SELECT paxos_create_group($1, $2)",
                vec!["".into(), me.clone()],
                "42602",
                "empty",
            ),
            (
                "SELECT paxos_create_group($1, $2)",
                vec!["a\nb".into(), me.clone()],
                "42602",
                "control",
            ),
            (
                "SELECT paxos_create_group('g', $1)",
                vec!["host=127.0.0.1 bogus=1".into()],
                "22023",
                "connection string",
            ),
            (
                "SELECT paxos_create_group('g', $1)",
                vec!["".into()],
                "22023",
                "empty",
            ),
            (
                "SELECT paxos_create_group('g', $1)",
                vec!["port=5".into()],
                "22023",
                "no host",
            ),
            (
                "SELECT paxos_create_group('g', $1)",
                vec![cluster.conninfo(2)],
                "22023",
                "another server",
            ),
        ];
        for (sql, args, code, text) in cases {
            expect(sql, args, code, text).await;
        }
        // A password never shows up in an error.
        let secret = format!("{} password=hunter2", LinkProxy::frozen().conninfo());
        let err = c
            .query("SELECT paxos_join_group('g', $1, $2)", &[&secret, &me])
            .await
            .unwrap_err();
        assert!(!message(&err).contains("hunter2"), "{}", message(&err));
        let count: i64 = c
            .query_one("SELECT count(*) FROM paxos.groups", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 0, "failed calls created nothing");

        // Hostile but valid names are just names.
        let hostile = "a'b\"; DROP TABLE paxos.log; -- grüße";
        c.execute("SELECT paxos_create_group($1, $2)", &[&hostile, &me])
            .await
            .unwrap();
        let round = append(&c, "p'; --", hostile, "v'); DELETE FROM paxos.log; --")
            .await
            .unwrap();
        assert_eq!(round, 1);
        let rows: i64 = c
            .query_one("SELECT count(*) FROM paxos.log", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 2, "founder and the value, nothing dropped or deleted");
        expect(
            "SELECT paxos_create_group($1, $2)",
            vec![hostile.into(), me.clone()],
            "42710",
            "already exists",
        )
        .await;
        expect(
            "SELECT * FROM paxos('p', $1, 0, 'v')",
            vec![hostile.into()],
            "22023",
            "at least 1",
        )
        .await;
        expect(
            "SELECT paxos_join_group($1, $2, $3)",
            vec![
                "j".into(),
                "host=127.0.0.1 port=1".into(),
                cluster.conninfo(1),
            ],
            "08000",
            "failed",
        )
        .await;
        let count: i64 = c
            .query_one(
                "SELECT count(*) FROM paxos.groups WHERE group_id = 'j'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 0, "a failed join leaves no group behind");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_superusers_manage_groups_and_read_internal_state() {
    bounded(async {
        let cluster = Cluster::new("privileges", 1);
        let c = cluster.client(1).await;
        c.batch_execute("CREATE ROLE app LOGIN; SET ROLE app")
            .await
            .unwrap();
        let err = c
            .query(
                "SELECT paxos_create_group('g', $1)",
                &[&cluster.conninfo(1)],
            )
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err:?}");
        let err = c.query("SELECT * FROM paxos.log", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err:?}");
        let err = c
            .query("SELECT * FROM paxos.request_prepare('g', 1, 1, 'x')", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err:?}");
    })
    .await;
}
