//! The fault suite: real workloads on a local group while faults are injected on a seeded
//! schedule, every operation recorded, then the history and the nodes' final state checked.
//! `scripts/faults.sh` runs it; see the README.

pub mod checks;
pub mod compactor;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxos_core::rng::SplitMix64;

use crate::cluster::Cluster;
use crate::links::LinkProxy;
use history::{History, Operation, Outcome};
use nemesis::{Fault, Group};

/// One run's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub seed: u64,
    pub members: usize,
    /// How long faults are injected while the workload runs.
    pub duration: Duration,
    /// Clients per member node (half insert, half use registers).
    pub clients_per_node: usize,
    /// Where the history, node logs and summary of a failed run are kept.
    pub out: PathBuf,
    /// `pg_paxos.lease_duration` on every node (zero: leases off, the default).
    pub lease: Duration,
    /// `pg_paxos.forward_writes` on every node (on, the default).
    pub forward_writes: bool,
    /// `pg_paxos.batches_in_flight` on every node (the suite runs 2, the default is 1).
    pub batches_in_flight: u64,
    /// Compact the log on a random member every few seconds (see `compactor`).
    pub compact: bool,
}

/// Writes must resume within this long after a heal.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(30);

/// What a run found.
pub struct Summary {
    pub text: String,
    pub anomalies: Vec<String>,
}

fn faults_for(members: usize) -> Vec<Fault> {
    let mut faults = vec![
        Fault::Crash,
        Fault::Pause,
        Fault::IsolateMinority,
        Fault::NoMajority,
        Fault::OneWay,
        Fault::SlowLinks,
        Fault::DiskFull,
        Fault::Membership,
        Fault::WipeSpare,
    ];
    if members < 3 {
        faults.retain(|f| *f != Fault::IsolateMinority);
    }
    faults
}

/// Runs the suite once; the cluster is removed afterwards.
pub async fn run(settings: &Settings) -> Summary {
    let mut rng = SplitMix64::new(settings.seed);
    let nodes = settings.members + 1; // the last one is the spare for membership changes
    let cluster = Cluster::new(&format!("faults_{}", settings.seed), nodes);
    let proxies: Vec<LinkProxy> = cluster
        .nodes()
        .map(|n| LinkProxy::start(cluster.port(n)))
        .collect();
    // The last member keeps its data on a small disk it can run out of.
    cluster.run(&["small-disk", &settings.members.to_string(), "512M"]);
    for n in cluster.nodes() {
        let c = cluster.client(n).await;
        c.batch_execute(workload::SCHEMA).await.expect("schema");
        let lease = format!(
            "ALTER SYSTEM SET pg_paxos.lease_duration = {}",
            settings.lease.as_millis()
        );
        let forward = format!(
            "ALTER SYSTEM SET pg_paxos.forward_writes = {}",
            settings.forward_writes
        );
        let pipeline = format!(
            "ALTER SYSTEM SET pg_paxos.batches_in_flight = {}",
            settings.batches_in_flight
        );
        for setting in [
            "ALTER SYSTEM SET pg_paxos.round_timeout = '4s'",
            "ALTER SYSTEM SET pg_paxos.connect_timeout = '1s'",
            "ALTER SYSTEM SET pg_paxos.member_retry_interval = '1s'",
            &lease,
            &forward,
            &pipeline,
            "SELECT pg_reload_conf()",
        ] {
            c.batch_execute(setting).await.expect("settings");
        }
    }
    let first = cluster.client(1).await;
    first
        .execute(
            "SELECT paxos_create_group('g', $1)",
            &[&proxies[0].conninfo()],
        )
        .await
        .expect("create group");
    first
        .batch_execute(
            "SELECT paxos_replicate_table('g', 'uniq');
             SELECT paxos_replicate_table('g', 'reg');",
        )
        .await
        .expect("replicate");
    for k in 0..workload::REGISTERS {
        first
            .execute("INSERT INTO reg VALUES ($1, 0)", &[&k])
            .await
            .expect("registers");
    }
    for n in 2..=settings.members {
        cluster
            .client(n)
            .await
            .execute(
                "SELECT paxos_join_group('g', $1, $2)",
                &[&proxies[0].conninfo(), &proxies[n - 1].conninfo()],
            )
            .await
            .expect("join");
    }

    let history = History::default();
    let values = Arc::new(AtomicI64::new(1));
    let until = Instant::now() + settings.duration;
    let mut clients = Vec::new();
    for node in 1..=settings.members {
        for i in 0..settings.clients_per_node {
            let spec = workload::ClientSpec {
                id: clients.len(),
                node,
                port: cluster.port(node),
                registers: i % 2 == 1,
                seed: rng.next_u64(),
            };
            clients.push(tokio::spawn(workload::run(
                spec,
                history.clone(),
                values.clone(),
                until,
            )));
        }
    }

    // Its own random stream: each seed's fault schedule stays what it was without it.
    let compactor = settings.compact.then(|| {
        tokio::spawn(compactor::run(
            (1..=settings.members).map(|n| cluster.port(n)).collect(),
            settings.seed ^ 0xc0_4ac7,
            until,
        ))
    });

    // The schedule: a fault, held, healed; the time until writes resume is measured.
    let mut group = Group {
        cluster: &cluster,
        proxies: &proxies,
        members: settings.members,
        spare_joined: false,
        spare_wiped: false,
        spares_replaced: 0,
    };
    let kinds = faults_for(settings.members);
    let mut injected: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut recoveries: Vec<(String, Duration)> = Vec::new();
    let mut log = String::new();
    let mut anomalies = Vec::new();
    while Instant::now() + Duration::from_secs(8) < until {
        let fault = kinds[rng.below(kinds.len() as u64) as usize];
        let node = 1 + rng.below(settings.members as u64) as usize;
        // A pause outlasts the round timeout (4 s), so the paused node wakes up stale.
        let hold = match fault {
            Fault::Pause => Duration::from_millis(5_000 + rng.below(3_000)),
            _ => Duration::from_millis(2_000 + rng.below(4_000)),
        };
        let what = group.inject(fault, node).await;
        *injected.entry(fault.name()).or_default() += 1;
        let _ = writeln!(
            log,
            "{:>7.1}s {what} for {:.1}s",
            history.now() as f64 / 1e6,
            hold.as_secs_f64()
        );
        tokio::time::sleep(hold).await;
        group.heal();
        if let Err(e) = group
            .replace_wiped_spare(Instant::now() + RECOVERY_BOUND)
            .await
        {
            anomalies.push(format!(
                "the wiped spare could not be replaced within {} s: {e}",
                RECOVERY_BOUND.as_secs()
            ));
        }
        match writes_resume(&cluster, settings.members).await {
            Some(took) => recoveries.push((what, took)),
            None => anomalies.push(format!(
                "writes did not resume within {} s after healing: {what}",
                RECOVERY_BOUND.as_secs()
            )),
        }
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1_500))).await;
    }
    for c in clients {
        let _ = c.await;
    }
    let compactions = match compactor {
        Some(task) => Some(task.await.unwrap_or_default()),
        None => None,
    };
    group.heal();

    // Convergence: every node applies through the same round and holds the same rows and log.
    let state = converge(&cluster, nodes, &proxies[nodes - 1].conninfo()).await;
    anomalies.extend(state.anomalies.iter().cloned());
    let lease_reads = lease_reads(&cluster, nodes).await;
    let (pipelined, void) = pipelined_batches(&cluster).await;
    if !settings.lease.is_zero() && lease_reads == 0 {
        anomalies.push("leases were on, but no strong read went under one".into());
    }
    let records = history.records();
    anomalies.extend(checks::check_inserts(&records, &state.inserted));
    anomalies.extend(checks::check_registers(&records));

    let count = |f: &dyn Fn(&history::Record) -> bool| records.iter().filter(|r| f(r)).count();
    let acknowledged_writes =
        count(&|r| r.outcome == Outcome::Ok && !matches!(r.operation, Operation::Read { .. }));
    let mut text = String::new();
    let _ = writeln!(
        text,
        "seed {} | {} members + 1 spare | {} s of faults | {} clients | leases {} | forwarding {} | batches in flight {}",
        settings.seed,
        settings.members,
        settings.duration.as_secs(),
        settings.members * settings.clients_per_node,
        if settings.lease.is_zero() {
            "off".to_string()
        } else {
            format!("{} ms", settings.lease.as_millis())
        },
        if settings.forward_writes { "on" } else { "off" },
        settings.batches_in_flight
    );
    if settings.compact {
        let _ = writeln!(text, "log compaction during the run: on");
    }
    let _ = writeln!(
        text,
        "operations {} (ok {}, failed {}, unknown {}); acknowledged writes {}; rows present {}",
        records.len(),
        count(&|r| r.outcome == Outcome::Ok),
        count(&|r| r.outcome == Outcome::Fail),
        count(&|r| r.outcome == Outcome::Unknown),
        acknowledged_writes,
        state.inserted.len()
    );
    let _ = writeln!(
        text,
        "failed by SQLSTATE: {}",
        failures_by_sqlstate(&records)
    );
    let faults: Vec<String> = injected.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(text, "faults: {}", faults.join(", "));
    if !recoveries.is_empty() {
        let mut secs: Vec<f64> = recoveries.iter().map(|(_, d)| d.as_secs_f64()).collect();
        secs.sort_by(f64::total_cmp);
        let _ = writeln!(
            text,
            "writes resumed after each heal in: median {:.2} s, max {:.2} s (bound {} s)",
            secs[secs.len() / 2],
            secs[secs.len() - 1],
            RECOVERY_BOUND.as_secs()
        );
    }
    if injected.contains_key(Fault::WipeSpare.name()) {
        let _ = writeln!(
            text,
            "the spare lost its data while a member and was replaced: {} times",
            group.spares_replaced
        );
    }
    let _ = writeln!(text, "final round {} on every node", state.round);
    if let Some(compactions) = &compactions {
        let _ = writeln!(text, "{}", compactions.summary());
    }
    let _ = writeln!(
        text,
        "batches proposed behind one in flight (in node 1's log, after any compaction): {pipelined}, of them void: {void}"
    );
    if !settings.lease.is_zero() {
        let _ = writeln!(text, "strong reads under a leader lease: {lease_reads}");
    }
    let _ = writeln!(text, "anomalies: {}", anomalies.len());
    for a in anomalies.iter().take(20) {
        let _ = writeln!(text, "  {a}");
    }
    if !anomalies.is_empty() {
        keep_evidence(settings, &cluster, &records, &log, &text);
    }
    Summary { text, anomalies }
}

/// How many definitely failed operations got each SQLSTATE ("40001 120, 23505 3"), most first.
fn failures_by_sqlstate(records: &[history::Record]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| r.outcome == Outcome::Fail) {
        let code = r
            .error
            .as_deref()
            .and_then(|e| e.split_whitespace().next())
            .unwrap_or("none");
        *counts.entry(code).or_default() += 1;
    }
    let mut counts: Vec<(&str, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    if counts.is_empty() {
        return "none".to_string();
    }
    counts
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The time until a write succeeds through some member, after a heal.
async fn writes_resume(cluster: &Cluster, members: usize) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < RECOVERY_BOUND {
        for node in 1..=members {
            let attempt = async {
                let c = cluster.client(node).await;
                c.execute("SELECT paxos_append('probe', 'g', 'probe')", &[])
                    .await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), attempt).await {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Batches in the (converged) log that name the batch before them, and those of them that are void
/// because that round holds something else.
async fn pipelined_batches(cluster: &Cluster) -> (i64, i64) {
    let sql = "SELECT count(*) FILTER (WHERE named), count(*) FILTER (WHERE named AND NOT holds)
               FROM (SELECT l.value_body ~ '^[0-9]+:a' AS named,
                            coalesce(starts_with(l.value_body,
                                length('a' || p.value_origin) || ':a' || p.value_origin), false)
                              AS holds
                     FROM paxos.log l LEFT JOIN paxos.log p
                       ON p.group_id = l.group_id AND p.round = l.round - 1
                     WHERE l.group_id = 'g' AND l.value_kind = 'batch') AS batches";
    match cluster.client(1).await.query_one(sql, &[]).await {
        Ok(row) => (row.get(0), row.get(1)),
        Err(_) => (0, 0),
    }
}

/// Strong reads served under a leader lease, summed over the nodes.
async fn lease_reads(cluster: &Cluster, nodes: usize) -> i64 {
    let mut total = 0;
    for n in 1..=nodes {
        if let Ok(row) = cluster
            .client(n)
            .await
            .query_one("SELECT lease_reads FROM paxos.leadership('g')", &[])
            .await
        {
            total += row.get::<_, i64>(0);
        }
    }
    total
}

/// Whether node 1's view of the group, once it applied its log, has the spare as a member.
async fn spare_is_member(first: &tokio_postgres::Client, spare_conninfo: &str) -> bool {
    first
        .query_one(
            "SELECT count(*) FROM paxos_status('g') WHERE member = $1",
            &[&spare_conninfo],
        )
        .await
        .map(|r| r.get::<_, i64>(0) == 1)
        .unwrap_or(true)
}

struct FinalState {
    round: i64,
    inserted: BTreeSet<String>,
    anomalies: Vec<String>,
}

/// Brings every node to the group's highest round and compares what they hold. The spare (node
/// `nodes`, known to the group as `spare_conninfo`) may hold the group without being a member: its
/// leave timed out and a later leader finished the removal. It must then be able to leave.
async fn converge(cluster: &Cluster, nodes: usize, spare_conninfo: &str) -> FinalState {
    let mut anomalies = Vec::new();
    let first = cluster.client(1).await;
    let round: i64 = first
        .query_one("SELECT paxos_max_group_round('g')", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1);
    let mut sums = Vec::new();
    let mut applied_rounds = Vec::new();
    let mut logs: Vec<BTreeMap<i64, String>> = Vec::new();
    for node in 1..=nodes {
        let c = cluster.client(node).await;
        let member: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM paxos.groups WHERE group_id = 'g')",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(false);
        if !member {
            continue;
        }
        if node == nodes && !spare_is_member(&first, spare_conninfo).await {
            match c.query_one("SELECT paxos_leave_group('g')", &[]).await {
                Ok(_) => println!("node {node} was removed without learning it; it left"),
                Err(e) => anomalies.push(format!(
                    "node {node} was removed without learning it and cannot leave: {}",
                    crate::errors::message(&e)
                )),
            }
            continue;
        }
        if let Err(e) = c
            .query_one("SELECT paxos_apply_log('check', 'g', $1)", &[&round])
            .await
        {
            anomalies.push(format!(
                "node {node} cannot apply through round {round}: {}",
                crate::errors::message(&e)
            ));
            continue;
        }
        let (applied, compacted): (i64, i64) = c
            .query_one(
                "SELECT applied_round, compacted_through FROM paxos.groups WHERE group_id = 'g'",
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap_or((-1, -1));
        applied_rounds.push((node, applied));
        if compacted > applied {
            anomalies.push(format!(
                "node {node} compacted through round {compacted} but applied only through {applied}"
            ));
        }
        let sum: String = c
            .query_one(
                "SELECT md5(coalesce(string_agg(id || ':' || node, ',' ORDER BY id), '')) || '/' ||
                        (SELECT md5(string_agg(k || ':' || v, ',' ORDER BY k)) FROM reg)
                 FROM uniq",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or_default();
        sums.push((node, sum));
        let log = c
            .query(
                "SELECT round, value_origin || '/' || value_kind || '/' || md5(coalesce(value_body, ''))
                 FROM paxos.log WHERE group_id = 'g'",
                &[],
            )
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default();
        logs.push(log);
    }
    if let Some((_, reference)) = applied_rounds.first() {
        for (node, applied) in &applied_rounds {
            if applied != reference || *applied < round {
                anomalies.push(format!(
                    "node {node} applied through round {applied}; round {round} was the target and node 1 applied through {reference}"
                ));
            }
        }
    }
    if let Some((_, reference)) = sums.first() {
        for (node, sum) in &sums {
            if sum != reference {
                anomalies.push(format!("node {node}'s tables differ from node 1's"));
            }
        }
    }
    let mut chosen: BTreeMap<i64, &String> = BTreeMap::new();
    for log in &logs {
        for (round, value) in log {
            if let Some(other) = chosen.insert(*round, value) {
                if other != value {
                    anomalies.push(format!("round {round} has two values: {other} and {value}"));
                }
            }
        }
    }
    let inserted = first
        .query("SELECT id FROM uniq", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    FinalState {
        round,
        inserted,
        anomalies,
    }
}

/// Keeps the history, the schedule, the node logs and the summary of a failed run.
fn keep_evidence(
    settings: &Settings,
    cluster: &Cluster,
    records: &[history::Record],
    schedule: &str,
    summary: &str,
) {
    let dir = settings.out.join(format!("seed-{}", settings.seed));
    let _ = std::fs::create_dir_all(&dir);
    let history: String = records
        .iter()
        .map(|r| {
            format!(
                "{}\t{}\t{}\t{}\t{:?}\t{:?}\t{}\n",
                r.invoked,
                r.answered,
                r.client,
                r.node,
                r.outcome,
                r.operation,
                r.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    let _ = std::fs::write(dir.join("history.tsv"), history);
    let _ = std::fs::write(dir.join("schedule.txt"), schedule);
    let _ = std::fs::write(dir.join("summary.txt"), summary);
    for node in cluster.nodes() {
        let _ = std::fs::write(
            dir.join(format!("node{node}.log")),
            cluster.server_log(node),
        );
    }
}
