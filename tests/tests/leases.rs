//! Leader leases (`pg_paxos.lease_duration`, off by default) on real local clusters: a leader with
//! a lease serves strong reads with no round trip, even cut off from every other member; once its
//! lease ran out, another node takes over and writes, and the old leader never reads stale rows;
//! a restarted acceptor grants nothing for one lease; a slot promised higher keeps a grant back
//! only while the leader has not learned its round; a membership change retires the lease; a
//! strong read on the leader, with or without a lease, does not wait for its rounds in flight.

use std::time::{Duration, Instant};

use pg_paxos_tests::{
    bounded, count, execute_retrying, message, sqlstate, wait_until, Cluster, LinkProxy, Rule,
};
use tokio_postgres::Client;

const TABLE: &str = "CREATE TABLE items (id int PRIMARY KEY, v text)";
const LEASE_MS: u64 = 3000;

/// Sets `pg_paxos.lease_duration` on every node of `cluster` (a reload: no restart).
async fn set_lease(cluster: &Cluster, millis: u64) {
    for n in cluster.nodes() {
        let c = cluster.client(n).await;
        c.batch_execute(&format!(
            "ALTER SYSTEM SET pg_paxos.lease_duration = {millis}"
        ))
        .await
        .unwrap();
        c.batch_execute("SELECT pg_reload_conf()").await.unwrap();
        wait_until(
            "the new lease duration in force",
            Duration::from_secs(10),
            || {
                let c = &c;
                async move {
                    let setting: String = c
                        .query_one(
                            "SELECT setting FROM pg_settings WHERE name = 'pg_paxos.lease_duration'",
                            &[],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    setting == millis.to_string()
                }
            },
        )
        .await;
    }
}

/// How long node `c`'s lease on group `g` still runs, in ms (None: it holds none).
async fn lease_left(c: &Client) -> Option<f64> {
    c.query_one("SELECT lease_remaining_ms FROM paxos.leadership('g')", &[])
        .await
        .expect("paxos.leadership")
        .get(0)
}

/// Strong-reads on `c` until its lease runs for more than `at_least` ms.
async fn wait_for_lease(c: &Client, at_least: f64) {
    wait_until("a leader lease", Duration::from_secs(30), || async move {
        c.query("SELECT * FROM items", &[]).await.unwrap();
        lease_left(c).await.is_some_and(|left| left > at_least)
    })
    .await;
}

/// A 3-node group with `items` replicated and leases on, where node 1 wrote first and holds a
/// lease; returns the cluster and a session on node 1.
async fn leased_by_node_1(name: &str) -> (Cluster, Client) {
    let cluster = Cluster::with_replicated_table(name, 3, "g", "items", TABLE).await;
    set_lease(&cluster, LEASE_MS).await;
    let c1 = cluster.client(1).await;
    c1.execute("INSERT INTO items VALUES (1, 'x')", &[])
        .await
        .unwrap();
    wait_for_lease(&c1, 0.0).await;
    (cluster, c1)
}

/// Waits until node `c`, restarted, promises and grants again.
async fn quiet_time_over(c: &Client) {
    wait_until(
        "the quiet time to end",
        Duration::from_secs(LEASE_MS / 1000 + 10),
        || async move {
            let quiet: f64 = c
                .query_one("SELECT quiet_ms FROM paxos.lease_grant('g')", &[])
                .await
                .unwrap()
                .get(0);
            quiet == 0.0
        },
    )
    .await;
}

/// Node `c`'s leader ballot as text, its number and proposer, and the first round of its range.
async fn leader_ballot(c: &Client) -> (String, i64, String, i64) {
    let row = c
        .query_one("SELECT ballot, from_round FROM paxos.leadership('g')", &[])
        .await
        .unwrap();
    let ballot: String = row.get(0);
    let (number, proposer) = ballot.split_once('/').expect("number/proposer");
    let (number, proposer) = (number.parse().unwrap(), proposer.to_string());
    (ballot, number, proposer, row.get(1))
}

/// A 3-node group whose members reach each other only through proxies, so that node 1 can be cut
/// off from the others both ways; node 1 writes first and leads.
struct CutCluster {
    cluster: Cluster,
    proxies: Vec<LinkProxy>,
}

async fn cut_cluster(name: &str) -> CutCluster {
    let cluster = Cluster::with_schema(name, 3, TABLE).await;
    let proxy1 = LinkProxy::start(cluster.port(1));
    cluster.create_group("g", &proxy1.conninfo()).await;
    let mut proxies = vec![proxy1];
    for n in 2..=3 {
        let proxy = LinkProxy::start(cluster.port(n));
        cluster.join_known_as("g", n, 1, &proxy.conninfo()).await;
        proxies.push(proxy);
    }
    cluster.replicate("g", "items").await;
    let c1 = cluster.client(1).await;
    c1.execute("INSERT INTO items VALUES (1, 'before the cut')", &[])
        .await
        .unwrap();
    CutCluster { cluster, proxies }
}

impl CutCluster {
    fn cut_node_1(&self) {
        for caller in ["node2", "node3"] {
            self.proxies[0].set(caller, Rule::Blackhole);
        }
        for proxy in &self.proxies[1..] {
            proxy.set("node1", Rule::Blackhole);
        }
    }

    fn heal(&self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_reads_alone_under_its_lease_and_never_after_it() {
    bounded(async {
        let cut = cut_cluster("lease_cut").await;
        let cluster = &cut.cluster;
        let c1 = cluster.client(1).await;
        c1.batch_execute("SET pg_paxos.round_timeout = 1500")
            .await
            .unwrap();

        // Off by default: strong reads use the read index and no lease is held.
        c1.query("SELECT * FROM items", &[]).await.unwrap();
        assert_eq!(lease_left(&c1).await, None, "leases are off by default");

        lease_well_ahead(cluster, &c1).await;

        // Cut off from both followers, node 1 still reads, at once, with no round trip.
        cut.cut_node_1();
        let started = Instant::now();
        let rows = c1
            .query("SELECT v FROM items WHERE id = 1", &[])
            .await
            .expect("a read under the lease needs no other member");
        assert_eq!(rows.len(), 1);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "a lease read took {:?}",
            started.elapsed()
        );

        // Node 2 writes: refused while the grants run, then it takes over. (Node 1 does not hear
        // of it: were the grants not kept, it would go on reading under its lease.)
        let c2 = cluster.client(2).await;
        let write_started = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(60),
            execute_retrying(&c2, "INSERT INTO items VALUES (2, 'after the cut')", &[]),
        )
        .await
        .expect("node 2 writes once the lease ran out")
        .unwrap_or_else(|e| panic!("node 2 writes: {e:?}"));
        eprintln!("node 2 wrote after {:?}", write_started.elapsed());

        // Node 1, still cut off and with its lease over, must not answer from its stale state.
        match c1.query("SELECT v FROM items WHERE id = 2", &[]).await {
            Ok(rows) => assert_eq!(rows.len(), 1, "a strong read on node 1 missed a write"),
            Err(e) => assert_eq!(sqlstate(&e), "08006", "{}", message(&e)),
        }
        assert_eq!(lease_left(&c1).await, None, "the lease is over");

        cut.heal();
        wait_until(
            "node 1 reads node 2's write",
            Duration::from_secs(30),
            || {
                let c1 = &c1;
                async move {
                    c1.query("SELECT v FROM items WHERE id = 2", &[])
                        .await
                        .is_ok_and(|rows| rows.len() == 1)
                }
            },
        )
        .await;
        cluster.assert_same_rows("items").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_acceptor_grants_nothing_for_one_lease() {
    bounded(async {
        let (cluster, c1) = leased_by_node_1("lease_restart").await;
        let (ballot, number, proposer, from) = leader_ballot(&c1).await;

        cluster.run(&["restart", "2"]);
        let c2 = cluster.client(2).await;
        let restarted = Instant::now();
        let request = "SELECT granted FROM paxos.request_lease('g', $1, $2, $3, $4)";
        let lease_ms = LEASE_MS as i64;
        let granted: bool = c2
            .query_one(request, &[&number, &proposer, &from, &lease_ms])
            .await
            .unwrap()
            .get(0);
        let quiet: f64 = c2
            .query_one("SELECT quiet_ms FROM paxos.lease_grant('g')", &[])
            .await
            .unwrap()
            .get(0);
        assert!(
            !granted,
            "granted {:?} after a restart",
            restarted.elapsed()
        );
        assert!(quiet > 0.0 && quiet <= LEASE_MS as f64, "quiet {quiet} ms");
        // A phase 1 is refused meanwhile too, even one that would win otherwise.
        let status: String = c2
            .query_one(
                "SELECT status FROM paxos.request_prepare('g', 1000000, 1000000, 'someone')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(status, "refused");

        quiet_time_over(&c2).await;
        let granted: bool = c2
            .query_one(request, &[&number, &proposer, &from, &lease_ms])
            .await
            .unwrap()
            .get(0);
        assert!(
            granted,
            "node 2 holds node 1's range promise and is quiet no more"
        );
        let held: Option<String> = c2
            .query_one("SELECT holder FROM paxos.lease_grant('g')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(held.as_deref(), Some(ballot.as_str()));
        // Asking for more than this node's own setting would outlast its quiet time: refused.
        let longer = lease_ms * 2;
        let granted: bool = c2
            .query_one(request, &[&number, &proposer, &from, &longer])
            .await
            .unwrap()
            .get(0);
        assert!(!granted, "a lease longer than the node's own setting");
    })
    .await;
}

/// An acceptor keeps a lease back while a slot of the leader's range promised a higher ballot:
/// that proposer could still get a value chosen there. Not once the leader says it learned the
/// round (a chosen value cannot change): otherwise a leader whose rounds other members took with
/// both phases would get no lease until those members learned them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_promise_in_a_round_the_leader_learned_does_not_keep_the_lease_back() {
    bounded(async {
        let (cluster, c1) = leased_by_node_1("lease_slots").await;
        let (_, number, proposer, from) = leader_ballot(&c1).await;

        // Node 2 forgets node 1's grant in a restart and, once quiet no more, promises a slot of
        // node 1's range to a higher ballot.
        cluster.run(&["restart", "2"]);
        let c2 = cluster.client(2).await;
        quiet_time_over(&c2).await;
        let slot = from + 1000;
        let status: String = c2
            .query_one(
                "SELECT status FROM paxos.request_prepare('g', $1, $2, 'someone')",
                &[&slot, &(number + 1)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(status, "granted");

        let request = "SELECT granted FROM paxos.request_lease('g', $1, $2, $3, $4, $5)";
        let lease_ms = LEASE_MS as i64;
        let grant = |learned_through: Option<i64>| {
            let (c2, proposer) = (&c2, proposer.to_string());
            async move {
                c2.query_one(
                    request,
                    &[&number, &proposer, &from, &lease_ms, &learned_through],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
            }
        };
        assert!(!grant(None).await, "a higher promise in the range");
        assert!(
            !grant(Some(slot - 1)).await,
            "the leader has not learned that round"
        );
        assert!(grant(Some(slot)).await, "the leader learned that round");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_retires_the_lease() {
    bounded(async {
        let cluster = Cluster::with_schema("lease_members", 4, TABLE).await;
        cluster.create_group("g", &cluster.conninfo(1)).await;
        cluster.join("g", 2, 1).await;
        cluster.join("g", 3, 1).await;
        cluster.replicate("g", "items").await;
        let c1 = cluster.client(1).await;
        set_lease(&cluster, LEASE_MS).await;
        c1.execute("INSERT INTO items VALUES (1, 'x')", &[])
            .await
            .unwrap();
        wait_for_lease(&c1, LEASE_MS as f64 * 0.5).await;
        let before = lease_left(&c1).await;
        assert!(before.is_some());

        cluster.join("g", 4, 1).await;
        assert_eq!(
            lease_left(&c1).await,
            None,
            "a lease granted by the old membership is no longer used"
        );
        // The next strong read asks the new membership, and a new lease follows.
        wait_for_lease(&c1, 0.0).await;
        let c4 = cluster.client(4).await;
        assert_eq!(count(&c4, "SELECT count(*) FROM items").await, 1);
        cluster.assert_same_rows("items").await;
    })
    .await;
}

/// Holds back every vote of node `n` (its acceptor's inserts wait for this lock) until the
/// returned session commits. Reads of the acceptor's state go on.
async fn hold_votes(cluster: &Cluster, n: usize) -> Client {
    let c = cluster.client(n).await;
    c.batch_execute("BEGIN; LOCK TABLE paxos.acceptor_slots IN SHARE MODE")
        .await
        .unwrap();
    c
}

/// A 3-node group with `items` replicated, leases off, where node 1 wrote row 1 (`x`) and so
/// leads; returns the cluster and a session on node 1.
async fn led_by_node_1(name: &str) -> (Cluster, Client) {
    let cluster = Cluster::with_replicated_table(name, 3, "g", "items", TABLE).await;
    let c1 = cluster.client(1).await;
    c1.execute("INSERT INTO items VALUES (1, 'x')", &[])
        .await
        .unwrap();
    (cluster, c1)
}

/// Turns leases on and waits until node 1 (session `c1`) holds one with more than half of it left.
async fn lease_well_ahead(cluster: &Cluster, c1: &Client) {
    set_lease(cluster, LEASE_MS).await;
    wait_for_lease(c1, LEASE_MS as f64 * 0.6).await;
}

/// Starts an insert of row `id` on node 1 while nodes 2 and 3 hold their votes back, so that its
/// round stays in flight, and checks that a strong read on node 1 answers at once, without it;
/// then lets the votes through and checks that the insert went through.
async fn read_beside_a_round_in_flight(cluster: &Cluster, c1: &Client, id: i32) {
    let before = count(c1, "SELECT count(*) FROM items").await;
    let next_round = "SELECT next_round FROM paxos.leadership('g')";
    let handed_out = count(c1, next_round).await;
    let holders = [hold_votes(cluster, 2).await, hold_votes(cluster, 3).await];
    let writer = cluster.client(1).await;
    let insert = tokio::spawn(async move {
        writer
            .execute("INSERT INTO items VALUES ($1, 'in flight')", &[&id])
            .await
    });
    wait_until(
        "the insert's round handed out",
        Duration::from_secs(10),
        || async { count(c1, next_round).await > handed_out },
    )
    .await;
    let started = Instant::now();
    assert_eq!(count(c1, "SELECT count(*) FROM items").await, before);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the read waited {took:?} for a round whose writer had no answer yet"
    );
    assert!(!insert.is_finished(), "the insert waits for a vote");
    for holder in &holders {
        holder.batch_execute("COMMIT").await.unwrap();
    }
    insert
        .await
        .unwrap()
        .expect("the insert goes through once the votes are let through");
    assert_eq!(count(c1, "SELECT count(*) FROM items").await, before + 1);
}

/// A strong read on the leader does not wait for the leader's own rounds in flight: their
/// writers have had no answer, so the read may come before them. With the read index the majority
/// confirms that nobody promised above the leader's ballot; under a lease there is no round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strong_read_on_the_leader_does_not_wait_for_its_rounds_in_flight() {
    bounded(async {
        let (cluster, c1) = led_by_node_1("lease_in_flight").await;
        read_beside_a_round_in_flight(&cluster, &c1, 2).await;

        lease_well_ahead(&cluster, &c1).await;
        read_beside_a_round_in_flight(&cluster, &c1, 3).await;
        cluster.assert_same_rows("items").await;
    })
    .await;
}

/// The value of row 1 as a strong read on `c` sees it.
async fn value_of_row_1(c: &Client) -> String {
    c.query_one("SELECT v FROM items WHERE id = 1", &[])
        .await
        .expect("strong read of row 1")
        .get(0)
}

/// Updates row 1 to `value` on node 1 and keeps the update from recording its chosen round there
/// (`paxos.log` held in share mode), after its learn messages went to the other members; once node
/// 2 read the new value, a strong read on node 1 must see it too, however long it waits.
async fn read_after_another_node_read_a_round_in_flight(
    cluster: &Cluster,
    c1: &Client,
    value: &str,
) {
    let holder = cluster.client(1).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE paxos.log IN SHARE MODE")
        .await
        .unwrap();
    let writer = cluster.client(1).await;
    let new_value = value.to_string();
    let update = tokio::spawn(async move {
        writer
            .execute("UPDATE items SET v = $1 WHERE id = 1", &[&new_value])
            .await
    });
    let c2 = cluster.client(2).await;
    wait_until(
        "node 2 reads the update, learned from node 1",
        Duration::from_secs(20),
        || async { value_of_row_1(&c2).await == value },
    )
    .await;
    assert!(
        !update.is_finished(),
        "the update cannot record its round yet"
    );
    let reader = cluster.client(1).await;
    let mut read = tokio::spawn(async move { value_of_row_1(&reader).await });
    // A read that skipped the round answers at once; one that waits for it answers once the
    // update records it. Either way it must see what node 2 saw before it began.
    let early = tokio::time::timeout(Duration::from_secs(2), &mut read).await;
    holder.batch_execute("COMMIT").await.unwrap();
    let seen = match early {
        Ok(seen) => seen.unwrap(),
        Err(_) => read.await.unwrap(),
    };
    assert_eq!(
        seen, value,
        "a strong read on the leader missed a write another node had read before it began"
    );
    update
        .await
        .unwrap()
        .expect("the update commits once its round can be recorded");
    assert_eq!(value_of_row_1(c1).await, value);
}

/// A round of the leader is chosen, and its learn messages are out, before the leader records it
/// in its own log. Another node may read that round's value meanwhile: a strong read on the
/// leader that begins later must not skip the round as if it were still in flight (by read index
/// or under a lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strong_read_on_the_leader_sees_its_round_that_another_node_read() {
    bounded(async {
        let (cluster, c1) = led_by_node_1("lease_read_learned").await;
        read_after_another_node_read_a_round_in_flight(&cluster, &c1, "read index").await;

        lease_well_ahead(&cluster, &c1).await;
        read_after_another_node_read_a_round_in_flight(&cluster, &c1, "lease").await;
        cluster.assert_same_rows("items").await;
    })
    .await;
}
