//! Log compaction on real local clusters: `paxos_compact_log()` drops, on every member, the values
//! and votes of the rounds every member applied (membership changes stay);
//! those rounds are refused afterwards, by `paxos()` and by every acceptor; writes, strong reads
//! and joins go on as before; and a member that does not answer stops the compaction before
//! anything is dropped.

use pg_paxos_tests::{bounded, count, message, sqlstate, Cluster};
use tokio_postgres::Client;

const TABLE: &str = "CREATE TABLE items (id int PRIMARY KEY, v text)";

/// A group `g` of nodes 1 to 3 replicating `items`; node 4 (if any) has the table but no group.
async fn three_members(name: &str, size: usize) -> Cluster {
    let cluster = Cluster::with_schema(name, size, TABLE).await;
    cluster.create_group("g", &cluster.conninfo(1)).await;
    cluster.join("g", 2, 1).await;
    cluster.join("g", 3, 1).await;
    cluster.replicate("g", "items").await;
    cluster
}

/// Inserts `ids` on node `c` one transaction each (batched on the leader), appends a log value,
/// then runs one transaction that updates and deletes (a round of its own, after the value's);
/// returns the value's round.
async fn write_some(c: &Client, ids: std::ops::Range<i32>, label: &str) -> i64 {
    for id in ids.clone() {
        c.execute("INSERT INTO items VALUES ($1, $2)", &[&id, &label])
            .await
            .unwrap();
    }
    let appended = c
        .query_one("SELECT paxos_append('test', 'g', $1)", &[&label])
        .await
        .unwrap()
        .get(0);
    c.batch_execute(&format!(
        "BEGIN; UPDATE items SET v = v || '+' WHERE id = {}; DELETE FROM items WHERE id = {}; COMMIT;",
        ids.start,
        ids.end - 1
    ))
    .await
    .unwrap();
    appended
}

/// What node `c` still keeps of rounds 1 through `through` of `g`: log values other than
/// membership changes, and acceptor slots.
async fn kept_through(c: &Client, through: i64) -> (i64, i64) {
    let values = format!(
        "SELECT count(*) FROM paxos.log WHERE group_id = 'g' AND round BETWEEN 1 AND {through}
         AND value_kind NOT IN ('add_host', 'remove_host')"
    );
    let slots = format!(
        "SELECT count(*) FROM paxos.acceptor_slots WHERE group_id = 'g' AND round <= {through}"
    );
    (count(c, &values).await, count(c, &slots).await)
}

/// The round through which node `c` compacted group `g`.
async fn compacted_through(c: &Client) -> i64 {
    count(
        c,
        "SELECT compacted_through FROM paxos.groups WHERE group_id = 'g'",
    )
    .await
}

/// The value `paxos()` reads for `round` of `g` on node `c`.
async fn value_of(c: &Client, round: i64) -> String {
    c.query_one(
        "SELECT accepted_value FROM paxos('reader', 'g', $1)",
        &[&round],
    )
    .await
    .unwrap_or_else(|e| panic!("round {round}: {e:?}"))
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_drops_what_every_member_applied_and_refuses_those_rounds() {
    bounded(async {
        let cluster = three_members("compact", 3).await;
        let c1 = cluster.client(1).await;
        let appended = write_some(&c1, 1..6, "old").await;
        let before = kept_through(&c1, appended).await;
        assert!(before.0 > 0 && before.1 > 0, "{before:?}");
        let status_points = "SELECT coalesce(compacted_through_round, -1) \
                             FROM paxos_status('g') ORDER BY member";
        let points = |rows: Vec<tokio_postgres::Row>| -> Vec<i64> {
            rows.iter().map(|r| r.get(0)).collect()
        };
        assert_eq!(
            points(c1.query(status_points, &[]).await.unwrap()),
            vec![-1; 3],
            "never compacted: NULL for every member"
        );

        let through = count(&c1, "SELECT paxos_compact_log('g')").await;
        assert!(through >= appended, "through {through}, appended in {appended}");
        // Every member reports its compaction point in the status.
        assert_eq!(
            points(c1.query(status_points, &[]).await.unwrap()),
            vec![through; 3]
        );
        for n in cluster.nodes() {
            let c = cluster.client(n).await;
            assert_eq!(kept_through(&c, through).await, (0, 0), "node {n}");
            assert_eq!(compacted_through(&c).await, through, "node {n}");
            // Neither read nor overwritten: the value is gone, and no new one may be chosen.
            for sql in [
                "SELECT accepted_value FROM paxos('reader', 'g', $1)",
                "SELECT accepted_value FROM paxos('writer', 'g', $1, 'new')",
            ] {
                let e = c.query_one(sql, &[&appended]).await.unwrap_err();
                assert_eq!(sqlstate(&e), "22023", "node {n}: {e:?}");
                assert!(message(&e).contains("was compacted"), "node {n}: {e:?}");
            }
            // A proposer elsewhere (say, a node restored from an old backup) is refused too.
            let e = c
                .query_one(
                    "SELECT status FROM paxos.request_accept('g', $1, 1000000, 'old-node', 'x', 'value', 'new')",
                    &[&appended],
                )
                .await
                .unwrap_err();
            assert_eq!(sqlstate(&e), "22023", "node {n}: {e:?}");
        }

        // Everything goes on: writes, strong reads on every node, the log's own API.
        let later = write_some(&c1, 10..15, "new").await;
        let value = value_of(&c1, later).await;
        assert_eq!(value, "new");
        for n in cluster.nodes() {
            let c = cluster.client(n).await;
            assert_eq!(count(&c, "SELECT count(*) FROM items").await, 8, "node {n}");
        }
        cluster.assert_same_rows("items").await;

        // Again: nothing new is applied everywhere below the old point, then the point moves on.
        let again = count(&c1, "SELECT paxos_compact_log('g')").await;
        assert!(again >= later, "again {again}, later {later}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_after_compaction_copies_the_tables_and_goes_on_from_there() {
    bounded(async {
        let cluster = three_members("compact_join", 4).await;
        let c1 = cluster.client(1).await;
        write_some(&c1, 1..6, "old").await;
        let through = count(&c1, "SELECT paxos_compact_log('g')").await;
        assert!(through > 0);

        cluster.join("g", 4, 2).await;
        let c4 = cluster.client(4).await;
        assert_eq!(count(&c4, "SELECT count(*) FROM items").await, 4);
        // The copied log lacks the compacted rounds: the new node refuses them as well.
        assert_eq!(compacted_through(&c4).await, through);
        let later = write_some(&c4, 20..25, "from node 4").await;
        let value = value_of(&c1, later).await;
        assert_eq!(value, "from node 4");
        cluster.assert_same_rows("items").await;
        let members = count(
            &c4,
            "SELECT count(*) FROM paxos_status('g') WHERE reachable",
        )
        .await;
        assert_eq!(members, 4, "membership survives compaction");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_needs_every_member_and_drops_nothing_without_one() {
    bounded(async {
        let cluster = three_members("compact_down", 3).await;
        let c1 = cluster.client(1).await;
        let appended = write_some(&c1, 1..4, "kept").await;
        cluster.stop(3);
        let e = c1
            .query_one("SELECT paxos_compact_log('g')", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "08006", "{e:?}");
        let text = message(&e);
        assert!(
            text.contains(&format!("port={}", cluster.port(3))),
            "{text}"
        );
        assert!(!text.contains("password"), "{text}");
        for n in [1, 2] {
            let c = cluster.client(n).await;
            assert_eq!(compacted_through(&c).await, 0, "node {n}");
            let value = value_of(&c, appended).await;
            assert_eq!(value, "kept", "node {n}");
        }
        // A non-superuser may not compact.
        c1.batch_execute("CREATE ROLE plain LOGIN; SET ROLE plain")
            .await
            .unwrap();
        let e = c1
            .query_one("SELECT paxos_compact_log('g')", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{e:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactions_started_at_once_on_two_members_both_finish() {
    bounded(async {
        let cluster = three_members("compact_twice", 3).await;
        let c1 = cluster.client(1).await;
        let appended = write_some(&c1, 1..6, "old").await;
        let c2 = cluster.client(2).await;
        // Each one's members apply and compact while the other runs: a node that read its applied
        // round before a compaction must not take the rounds it dropped for unknown ones (it
        // would try to learn them, and every acceptor refuses them).
        let (a, b) = tokio::join!(
            c1.query_one("SELECT paxos_compact_log('g')", &[]),
            c2.query_one("SELECT paxos_compact_log('g')", &[]),
        );
        for (node, outcome) in [(1, a), (2, b)] {
            let through: i64 = outcome
                .unwrap_or_else(|e| panic!("node {node}: {e:?}"))
                .get(0);
            assert!(through >= appended, "node {node}: through {through}");
        }
        cluster.assert_same_rows("items").await;
    })
    .await;
}

/// Whether node `c` still has group `g`.
async fn has_group(c: &Client) -> bool {
    count(c, "SELECT count(*) FROM paxos.groups WHERE group_id = 'g'").await == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removed_without_learning_it_leaves_cleanly_even_after_compaction() {
    bounded(async {
        let cluster = three_members("compact_removed", 4).await;
        cluster.join("g", 4, 1).await;
        let c1 = cluster.client(1).await;
        let c4 = cluster.client(4).await;
        write_some(&c1, 1..6, "before").await;
        let remove = format!("SELECT paxos_remove_host('g', '{}')", cluster.conninfo(4));

        // Removed by another member: its log says it is no member, so removing itself again fails,
        // yet the members recorded the removal, so it drops the group here.
        let removed = count(&c1, &remove).await;
        assert_eq!(count(&c4, "SELECT paxos_leave_group('g')").await, removed);
        assert!(!has_group(&c4).await);
        cluster.join("g", 4, 2).await;
        cluster.assert_same_rows("items").await;

        // Removed again, and the members then compacted the rounds it lacks: it cannot follow the
        // log any more, and leaving still works.
        let removed = count(&c1, &remove).await;
        write_some(&c1, 10..16, "after").await;
        let through = count(&c1, "SELECT paxos_compact_log('g')").await;
        assert!(through > removed, "compacted through {through}");
        let e = c4
            .query_one("SELECT paxos_apply_log('reader', 'g', $1)", &[&through])
            .await
            .unwrap_err();
        assert!(message(&e).contains("was compacted"), "{e:?}");
        assert_eq!(count(&c4, "SELECT paxos_leave_group('g')").await, removed);
        assert!(!has_group(&c4).await);

        // A member that leaves normally is unaffected, and a member never removed cannot drop the
        // group by mistake: its leave is a removal through the log.
        assert!(has_group(&c1).await);
        cluster.join("g", 4, 3).await;
        assert_eq!(compacted_through(&c4).await, through);
        write_some(&c4, 30..35, "rejoined").await;
        cluster.assert_same_rows("items").await;
        let left = count(&c4, "SELECT paxos_leave_group('g')").await;
        assert!(left > through);
        assert!(!has_group(&c4).await);
    })
    .await;
}
