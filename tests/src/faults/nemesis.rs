//! Fault injection on a running group: crashes, pauses, partitions (a minority, no majority
//! anywhere, one-way), slow links, a full disk, members joining and leaving, and a node losing its
//! data. Every fault is healed before the next one.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::links::{LinkProxy, Rule};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL a node's postmaster and every child, restart it after the hold.
    Crash,
    /// SIGSTOP a node for longer than the round timeout, then SIGCONT: a stale proposer wakes.
    Pause,
    /// One node cut off from the others, both ways.
    IsolateMinority,
    /// Every node cut off from every other: no majority anywhere.
    NoMajority,
    /// The others cannot reach one node, which still reaches them.
    OneWay,
    /// Every link delayed.
    SlowLinks,
    /// One node's data directory full.
    DiskFull,
    /// The spare node joins, or leaves if it is a member.
    Membership,
    /// The spare loses everything pg_paxos kept (its extension is dropped and created again): a
    /// member then refuses every vote until it is replaced (removed through node 1, then joined
    /// again as a new voter) at the heal, as the operator replaces a wiped volume.
    WipeSpare,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::Pause => "pause",
            Fault::IsolateMinority => "isolate-minority",
            Fault::NoMajority => "no-majority",
            Fault::OneWay => "one-way",
            Fault::SlowLinks => "slow-links",
            Fault::DiskFull => "disk-full",
            Fault::Membership => "membership",
            Fault::WipeSpare => "wipe-spare",
        }
    }
}

/// The group under test: `members` nodes (1..=members) plus, for membership changes, a spare node
/// (members + 1), each reached by the others through its proxy.
pub struct Group<'a> {
    pub cluster: &'a Cluster,
    pub proxies: &'a [LinkProxy],
    pub members: usize,
    pub spare_joined: bool,
    /// The spare lost its data while a member: it is replaced at the heal.
    pub spare_wiped: bool,
    /// How often a wiped spare was replaced.
    pub spares_replaced: usize,
}

fn node_id(node: usize) -> String {
    format!("node{node}")
}

impl Group<'_> {
    fn all_nodes(&self) -> Vec<usize> {
        (1..=self.proxies.len()).collect()
    }

    /// Cuts the link from `from` to `to` (`to`'s proxy refuses `from`).
    fn cut(&self, from: usize, to: usize, rule: Rule) {
        self.proxies[to - 1].set(&node_id(from), rule);
    }

    /// Injects `fault` on `node` (a member; the disk-full node is the last member).
    pub async fn inject(&mut self, fault: Fault, node: usize) -> String {
        match fault {
            Fault::Crash => {
                self.cluster.kill(node);
                format!("killed node {node}")
            }
            Fault::Pause => {
                self.cluster.run(&["pause", &node.to_string()]);
                format!("paused node {node}")
            }
            Fault::IsolateMinority => {
                for other in self.all_nodes().into_iter().filter(|o| *o != node) {
                    self.cut(node, other, Rule::Blackhole);
                    self.cut(other, node, Rule::Blackhole);
                }
                format!("isolated node {node}")
            }
            Fault::NoMajority => {
                for a in self.all_nodes() {
                    for b in self.all_nodes().into_iter().filter(|b| *b != a) {
                        self.cut(a, b, Rule::Drop);
                    }
                }
                "cut every link".into()
            }
            Fault::OneWay => {
                for other in self.all_nodes().into_iter().filter(|o| *o != node) {
                    self.cut(other, node, Rule::Blackhole);
                }
                format!("nobody reaches node {node}")
            }
            Fault::SlowLinks => {
                for a in self.all_nodes() {
                    for b in self.all_nodes().into_iter().filter(|b| *b != a) {
                        self.cut(a, b, Rule::Delay(Duration::from_millis(30)));
                    }
                }
                "delayed every link by 30 ms".into()
            }
            Fault::DiskFull => {
                self.cluster.run(&["fill-disk", &self.members.to_string()]);
                format!("filled node {}'s disk", self.members)
            }
            Fault::Membership => {
                let spare = self.members + 1;
                let c = self.cluster.client(spare).await;
                let result = if self.spare_joined {
                    c.execute("SELECT paxos_leave_group('g')", &[]).await
                } else {
                    c.execute(
                        "SELECT paxos_join_group('g', $1, $2)",
                        &[
                            &self.proxies[0].conninfo(),
                            &self.proxies[spare - 1].conninfo(),
                        ],
                    )
                    .await
                };
                match result {
                    Ok(_) => {
                        self.spare_joined = !self.spare_joined;
                        format!(
                            "node {spare} {}",
                            if self.spare_joined { "joined" } else { "left" }
                        )
                    }
                    Err(e) => format!(
                        "node {spare} join/leave failed: {}",
                        crate::errors::message(&e)
                    ),
                }
            }
            Fault::WipeSpare => {
                let spare = self.members + 1;
                let c = self.cluster.client(spare).await;
                match c
                    .batch_execute("DROP EXTENSION pg_paxos CASCADE; CREATE EXTENSION pg_paxos")
                    .await
                {
                    Ok(()) => {
                        self.spare_wiped = self.spare_joined;
                        format!(
                            "wiped node {spare}'s pg_paxos data ({})",
                            if self.spare_joined {
                                "a member"
                            } else {
                                "no member"
                            }
                        )
                    }
                    Err(e) => format!("wiping node {spare} failed: {}", crate::errors::message(&e)),
                }
            }
        }
    }

    /// Replaces a spare that lost its data while a member: its old membership is removed through
    /// node 1, then it joins as the copy it is now. Retried until `deadline`; the error of the
    /// last attempt if it never succeeded.
    pub async fn replace_wiped_spare(
        &mut self,
        deadline: std::time::Instant,
    ) -> Result<(), String> {
        if !self.spare_wiped {
            return Ok(());
        }
        let spare = self.members + 1;
        let spare_conninfo = self.proxies[spare - 1].conninfo();
        loop {
            let attempt = async {
                let first = self.cluster.client(1).await;
                let still_member: bool = first
                    .query_one(
                        "SELECT paxos.admitted_token('g', $1) IS NOT NULL",
                        &[&spare_conninfo],
                    )
                    .await?
                    .get(0);
                if still_member {
                    first
                        .execute("SELECT paxos_remove_host('g', $1)", &[&spare_conninfo])
                        .await?;
                }
                self.cluster
                    .client(spare)
                    .await
                    .execute(
                        "SELECT paxos_join_group('g', $1, $2)",
                        &[&self.proxies[0].conninfo(), &spare_conninfo],
                    )
                    .await
            };
            match attempt.await {
                Ok(_) => {
                    self.spare_wiped = false;
                    self.spares_replaced += 1;
                    return Ok(());
                }
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(crate::errors::message(&e))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Undoes every fault: links pass, nodes resumed and running, disk space freed.
    pub fn heal(&self) {
        for p in self.proxies {
            p.heal();
        }
        for node in self.all_nodes() {
            let n = node.to_string();
            self.cluster.run(&["resume", &n]);
            if node == self.members {
                self.cluster.run(&["free-disk", &n]);
            }
            self.cluster.start(node);
        }
    }
}
