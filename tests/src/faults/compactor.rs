//! Log compaction while faults come and go: every few seconds `paxos_compact_log()` on a random
//! member. It fails whenever a member is down or cut off (every member must answer), and
//! otherwise drops rounds the workload's reads and writes, joins of the spare and leaders'
//! campaigns must then do without; the run's final checks hold all the same.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use paxos_core::rng::SplitMix64 as Rng;

use super::workload::connect;

/// What the compactor did in one run.
#[derive(Default)]
pub struct Compactions {
    pub ok: usize,
    /// The highest round the log was compacted through.
    pub through: i64,
    /// Failed calls by SQLSTATE (or "timeout", "no connection").
    pub failed: BTreeMap<String, usize>,
}

impl Compactions {
    pub fn summary(&self) -> String {
        let failed: Vec<String> = self
            .failed
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        format!(
            "log compactions: {} done (through round {} at most), {} failed ({})",
            self.ok,
            self.through,
            self.failed.values().sum::<usize>(),
            if failed.is_empty() {
                "none".to_string()
            } else {
                failed.join(", ")
            }
        )
    }
}

/// Compacts through a random member of `ports` (one per member node) every 3 to 6 s until `until`.
pub async fn run(ports: Vec<u16>, seed: u64, until: Instant) -> Compactions {
    let mut rng = Rng::new(seed);
    let mut done = Compactions::default();
    loop {
        let pause = Duration::from_millis(3_000 + rng.below(3_000));
        if Instant::now() + pause >= until {
            return done;
        }
        tokio::time::sleep(pause).await;
        let port = ports[rng.below(ports.len() as u64) as usize];
        let outcome = match connect(port).await {
            None => Err("no connection".to_string()),
            Some(c) => {
                let call = c.query_one("SELECT paxos_compact_log('g')", &[]);
                match tokio::time::timeout(Duration::from_secs(20), call).await {
                    Err(_) => Err("timeout".to_string()),
                    Ok(Ok(row)) => Ok(row.get::<_, i64>(0)),
                    Ok(Err(e)) => Err(e
                        .code()
                        .map(|c| c.code().to_string())
                        .unwrap_or_else(|| "connection".to_string())),
                }
            }
        };
        match outcome {
            Ok(through) => {
                done.ok += 1;
                done.through = done.through.max(through);
            }
            Err(code) => *done.failed.entry(code).or_default() += 1,
        }
    }
}
