//! Multi-Paxos leadership on real local clusters: a node that writes becomes the group's leader and
//! then proposes with phase 2 only; a leader that was paused while another node took over is
//! refused when it wakes up, gives its leadership up and never makes the nodes diverge; so is a
//! leader cut off from the campaign that replaced it. Nodes other than the first leader write with
//! `pg_paxos.forward_writes` off: a write taking the leadership over is the subject here, which
//! forwarding spares inserts (see forwarding.rs).

use std::time::Duration;

use pg_paxos_tests::{bounded, execute_retrying, sqlstate, wait_until, Cluster, LinkProxy, Rule};
use tokio_postgres::Client;

const TABLE: &str = "CREATE TABLE items (id int PRIMARY KEY, v text)";

/// Whether `c`'s node leads group `g`, and its ballot.
async fn leadership(c: &Client) -> (bool, Option<String>) {
    let row = c
        .query_one("SELECT leads, ballot FROM paxos.leadership('g')", &[])
        .await
        .expect("paxos.leadership");
    (row.get(0), row.get(1))
}

async fn insert(c: &Client, id: i32, v: &str) -> Result<u64, tokio_postgres::Error> {
    c.execute("INSERT INTO items VALUES ($1, $2)", &[&id, &v])
        .await
}

/// A connection to node `n` whose inserts take the leadership over instead of going to the leader.
async fn writing_alone(cluster: &Cluster, n: usize) -> Client {
    let c = cluster.client(n).await;
    c.batch_execute("SET pg_paxos.forward_writes = off")
        .await
        .unwrap();
    c
}

/// Inserts, retrying serialization failures (a write based on a round another node took).
async fn insert_retrying(c: &Client, id: i32, v: &str) {
    execute_retrying(c, "INSERT INTO items VALUES ($1, $2)", &[&id, &v])
        .await
        .unwrap_or_else(|e| panic!("insert {id}: {e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_votes_every_later_round_under_one_ballot() {
    bounded(async {
        let cluster = Cluster::with_replicated_table("leader_ballot", 3, "g", "items", TABLE).await;
        let c1 = cluster.client(1).await;
        for id in 0..10 {
            insert(&c1, id, "x").await.expect("insert through node 1");
        }
        let (leads, ballot) = leadership(&c1).await;
        assert!(leads, "node 1 wrote, so it leads");
        let ballot = ballot.expect("a leader has a ballot");
        let rounds: Vec<i64> = c1
            .query(
                "SELECT round FROM paxos.log WHERE group_id = 'g' AND value_kind IN ('statement', 'batch')
                 ORDER BY round DESC LIMIT 9",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(rounds.len(), 9);
        // A majority voted in each of those rounds under the leader's ballot, and no acceptor
        // promised anything else there: no round ran a phase 1 of its own. (A leader asks a
        // majority first, so the third member may have no vote at all.)
        let mut clients = Vec::new();
        for n in cluster.nodes() {
            clients.push(cluster.client(n).await);
        }
        wait_until(
            "a majority voting under the leader ballot in every round",
            Duration::from_secs(10),
            || {
                let (clients, rounds, ballot) = (&clients, rounds.clone(), ballot.clone());
                async move {
                    let mut voters = vec![0; rounds.len()];
                    for c in clients {
                        let slots = c
                            .query(
                                "SELECT round, promised_num || '/' || promised_by,
                                        accepted_num || '/' || accepted_by
                                 FROM paxos.acceptor_slots
                                 WHERE group_id = 'g' AND round = ANY($1)",
                                &[&rounds],
                            )
                            .await
                            .unwrap();
                        for slot in slots {
                            let (round, promised, accepted): (i64, Option<String>, Option<String>) =
                                (slot.get(0), slot.get(1), slot.get(2));
                            assert_eq!(promised.as_deref(), Some(ballot.as_str()), "round {round}");
                            assert_eq!(accepted.as_deref(), Some(ballot.as_str()), "round {round}");
                            let i = rounds.iter().position(|r| *r == round).unwrap();
                            voters[i] += 1;
                        }
                    }
                    voters.iter().all(|&v| v >= 2)
                }
            },
        )
        .await;
        cluster.assert_same_rows("items").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_refused_after_another_node_took_over() {
    bounded(async {
        let cluster = Cluster::with_replicated_table("leader_stale", 3, "g", "items", TABLE).await;
        let c1 = cluster.client(1).await;
        insert(&c1, 1, "from node 1").await.expect("node 1 writes");
        let (leads, old_ballot) = leadership(&c1).await;
        assert!(leads);

        // Node 1 freezes; node 2 writes, and so campaigns and leads with a higher ballot. (Node 2
        // led once, while it admitted node 3: its first write may meet that stale leadership.)
        cluster.run(&["pause", "1"]);
        let c2 = writing_alone(&cluster, 2).await;
        let written = tokio::time::timeout(Duration::from_secs(20), async {
            insert_retrying(&c2, 2, "from node 2").await;
            insert_retrying(&c2, 4, "from node 2").await;
        })
        .await;
        cluster.run(&["resume", "1"]);
        written.expect("node 2 writes while node 1 is paused");
        let (leads2, new_ballot) = leadership(&c2).await;
        assert!(leads2, "node 2 took over");
        assert_ne!(new_ballot, old_ballot);

        // Node 1 wakes up. Unless its acceptor already handled node 2's campaign (queued while it
        // was paused), it still believes it leads; then its next write is refused under its old
        // ballot and either fails as a serialization failure (the round it was based on is taken)
        // or is chosen with both phases. Either way the node gives the old ballot up.
        match insert(&c1, 3, "from node 1 again").await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(sqlstate(&e), "40001", "{e:?}");
                insert(&c1, 3, "from node 1 again")
                    .await
                    .expect("the retry runs on the current state");
            }
        }
        assert_ne!(
            leadership(&c1).await.1,
            old_ballot,
            "the refused ballot was given up"
        );
        cluster.assert_same_rows("items").await;
        let count: i64 = c1
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_next_campaign_is_refused_and_nothing_diverges() {
    bounded(async {
        let cluster = Cluster::with_schema("leader_cut_off", 3, TABLE).await;
        // The other members reach node 3 through this proxy only.
        let link = LinkProxy::start(cluster.port(3));
        cluster.create_group("g", &cluster.conninfo(1)).await;
        cluster.replicate("g", "items").await;
        let (c1, c3) = (
            writing_alone(&cluster, 1).await,
            writing_alone(&cluster, 3).await,
        );
        cluster.join("g", 2, 1).await;
        cluster.join_known_as("g", 3, 1, &link.conninfo()).await;

        // Node 3 writes and leads.
        insert_retrying(&c3, 1, "from node 3").await;
        assert!(leadership(&c3).await.0);
        // Node 3 stops hearing the others; node 1 writes, campaigns and leads.
        for caller in ["node1", "node2"] {
            link.set(caller, Rule::Blackhole);
        }
        insert_retrying(&c1, 2, "from node 1").await;
        assert!(leadership(&c1).await.0);
        link.heal();

        // Node 3 never saw that campaign nor that write: it still leads as far as it knows, runs
        // its write on its old state, and its accept is refused. The transaction fails as a
        // serialization failure; the retry catches up first.
        assert!(
            leadership(&c3).await.0,
            "node 3 cannot know it was replaced"
        );
        let refused = insert(&c3, 3, "from node 3 again").await.unwrap_err();
        assert_eq!(sqlstate(&refused), "40001", "{refused:?}");
        assert!(
            !leadership(&c3).await.0,
            "the refused leadership was given up"
        );
        insert_retrying(&c3, 3, "from node 3 again").await;
        assert!(leadership(&c3).await.0, "node 3 campaigned again");
        cluster.assert_same_rows("items").await;
        let ids: Vec<i32> = c1
            .query("SELECT id FROM items ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
    })
    .await;
}
