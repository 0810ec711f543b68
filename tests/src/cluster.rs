//! A local cluster owned by one test. Every node runs as the OS user `postgres` on 127.0.0.1; the
//! cluster is torn down when the value is dropped, also when the test panics.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};

use tokio_postgres::{Client, NoTls};

static NEXT_PORT_BLOCK: AtomicU16 = AtomicU16::new(0);

/// Ports a test process may use: below Linux's ephemeral range (32768 and up), where outgoing
/// connections would otherwise take a node's port between a stop and a restart.
const FIRST_PORT: u16 = 10_000;
const PORT_BLOCK: u16 = 10;
const BLOCKS_PER_PROCESS: u16 = 30;
const PROCESS_SLOTS: u16 = 70;

/// A block of ports distinct per test and per test process (so tests run in parallel), skipping
/// blocks where something already listens.
fn free_port_block(size: usize) -> u16 {
    assert!(
        size < PORT_BLOCK as usize,
        "at most {} nodes",
        PORT_BLOCK - 1
    );
    let process_base = FIRST_PORT
        + (std::process::id() % PROCESS_SLOTS as u32) as u16 * BLOCKS_PER_PROCESS * PORT_BLOCK;
    loop {
        let block = NEXT_PORT_BLOCK.fetch_add(1, Ordering::SeqCst);
        assert!(
            block < BLOCKS_PER_PROCESS,
            "no free port block left for this test process"
        );
        let base = process_base + block * PORT_BLOCK;
        let all_free = (1..=size as u16)
            .all(|node| std::net::TcpListener::bind(("127.0.0.1", base + node)).is_ok());
        if all_free {
            return base;
        }
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub struct Cluster {
    pub name: String,
    dir: PathBuf,
    base_port: u16,
    pub size: usize,
}

impl Cluster {
    /// Creates and starts `size` nodes (extension created, no group yet).
    pub fn new(name: &str, size: usize) -> Cluster {
        let base_port = free_port_block(size);
        let dir = std::env::temp_dir().join(format!("pg_paxos_test_{}_{name}", std::process::id()));
        let cluster = Cluster {
            name: name.to_string(),
            dir,
            base_port,
            size,
        };
        cluster.run(&["teardown"]);
        cluster.run(&["create", &size.to_string()]);
        cluster
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(repo_root().join("scripts/cluster"));
        cmd.args(args)
            .env("PG_PAXOS_CLUSTER_DIR", &self.dir)
            .env("PG_PAXOS_BASE_PORT", self.base_port.to_string());
        cmd
    }

    /// Runs a cluster command and panics with its output if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/cluster: {e}"));
        assert!(
            out.status.success(),
            "cluster {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn port(&self, node: usize) -> u16 {
        self.base_port + node as u16
    }

    /// The connection string node `node` is known by in its groups (as `scripts/cluster` prints it).
    pub fn conninfo(&self, node: usize) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=postgres user=postgres",
            self.port(node)
        )
    }

    pub fn nodes(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.size
    }

    pub async fn client(&self, node: usize) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.conninfo(node), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to node {node}: {e}"));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    pub fn stop(&self, node: usize) {
        self.run(&["stop", &node.to_string()]);
    }

    pub fn start(&self, node: usize) {
        self.run(&["start", &node.to_string()]);
    }

    /// Freezes node `node` (SIGSTOP): its connections stay open and answer nothing.
    pub fn pause(&self, node: usize) {
        self.run(&["pause", &node.to_string()]);
    }

    pub fn resume(&self, node: usize) {
        self.run(&["resume", &node.to_string()]);
    }

    pub fn kill(&self, node: usize) {
        self.run(&["kill", &node.to_string()]);
    }

    /// The server log of a node.
    pub fn server_log(&self, node: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("node{node}/postgresql.log")))
            .unwrap_or_default()
    }

    /// Creates group `group` on node 1 and joins every other node to it, one after another.
    pub async fn form_group(&self, group: &str) {
        self.create_group(group, &self.conninfo(1)).await;
        for node in 2..=self.size {
            self.join(group, node, node - 1).await;
        }
    }

    /// Creates `group` on node 1, which the members reach at `node1_conninfo` (its own address,
    /// or a `LinkProxy` in front of it).
    pub async fn create_group(&self, group: &str, node1_conninfo: &str) {
        self.client(1)
            .await
            .execute(
                "SELECT paxos_create_group($1, $2)",
                &[&group, &node1_conninfo],
            )
            .await
            .unwrap_or_else(|e| panic!("create group {group}: {e:?}"));
    }

    /// Replicates `table` in `group`, from node 1.
    pub async fn replicate(&self, group: &str, table: &str) {
        self.client(1)
            .await
            .execute(
                "SELECT paxos_replicate_table($1, $2::text::regclass)",
                &[&group, &table],
            )
            .await
            .unwrap_or_else(|e| panic!("replicate {table}: {e:?}"));
    }

    /// Has `node` join `group` through member `via`.
    pub async fn join(&self, group: &str, node: usize, via: usize) {
        self.join_known_as(group, node, via, &self.conninfo(node))
            .await;
    }

    /// Has `node` join `group` through member `via`, the other members reaching it at
    /// `own_conninfo` (e.g. through a `LinkProxy`).
    pub async fn join_known_as(&self, group: &str, node: usize, via: usize, own_conninfo: &str) {
        self.client(node)
            .await
            .execute(
                "SELECT paxos_join_group($1, $2, $3)",
                &[&group, &self.conninfo(via), &own_conninfo],
            )
            .await
            .unwrap_or_else(|e| panic!("node {node} joins: {e:?}"));
    }
}

/// The bigint that `sql` returns on `client` (a count, a round).
pub async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// How many groups `client`'s node holds plus how many it records as an acceptor of: 0 for a node
/// that a refused join left as it was.
pub async fn groups_and_acceptor_records(client: &Client) -> i64 {
    count(
        client,
        "SELECT (SELECT count(*) FROM paxos.groups) + (SELECT count(*) FROM paxos.acceptor_groups)",
    )
    .await
}

impl Cluster {
    /// A fresh cluster of `size` nodes, each with table `table` created by `ddl`, all in group
    /// `group`, with the table replicated in it.
    pub async fn with_replicated_table(
        name: &str,
        size: usize,
        group: &str,
        table: &str,
        ddl: &str,
    ) -> Cluster {
        let cluster = Cluster::with_schema(name, size, ddl).await;
        cluster.form_group(group).await;
        cluster.replicate(group, table).await;
        cluster
    }

    /// A fresh cluster of `size` nodes, each with `ddl` run on it, and no group yet.
    pub async fn with_schema(name: &str, size: usize, ddl: &str) -> Cluster {
        let cluster = Cluster::new(name, size);
        for n in cluster.nodes() {
            cluster
                .client(n)
                .await
                .batch_execute(ddl)
                .await
                .unwrap_or_else(|e| panic!("{ddl} on node {n}: {e:?}"));
        }
        cluster
    }
}

impl Cluster {
    /// An md5 over `table`'s rows (as text, sorted) on every node, read under the default strong
    /// consistency, so each node first applies the group's log.
    pub async fn table_checksums(&self, table: &str) -> Vec<String> {
        let mut sums = Vec::new();
        for n in self.nodes() {
            let sql = format!(
                "SELECT md5(coalesce(string_agg(t::text, ';' ORDER BY t::text), '')) FROM {table} AS t"
            );
            let row = self
                .client(n)
                .await
                .query_one(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("checksum of {table} on node {n}: {e:?}"));
            sums.push(row.get(0));
        }
        sums
    }

    /// Asserts that `table` has the same rows on every node and returns its checksum.
    pub async fn assert_same_rows(&self, table: &str) -> String {
        let sums = self.table_checksums(table).await;
        assert!(
            sums.iter().all(|s| *s == sums[0]),
            "{table} differs between nodes: {sums:?}"
        );
        sums[0].clone()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Never panic here: this runs during unwinding too. PG_PAXOS_KEEP_CLUSTER=1 leaves the
        // nodes running for a look after a failure.
        if std::env::var_os("PG_PAXOS_KEEP_CLUSTER").is_none() {
            let _ = self.command(&["teardown"]).output();
        }
    }
}
