//! Prometheus metrics in the text exposition format: reconciles and failures per resource kind,
//! and per group its highest round and each member's applied round.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A group's highest round and each member's applied round, by pod.
type GroupRounds = (i64, Vec<(String, i64)>);

#[derive(Default)]
pub struct Metrics {
    reconciles: [AtomicU64; 2],
    failures: [AtomicU64; 2],
    /// By (namespace, group).
    rounds: Mutex<BTreeMap<(String, String), GroupRounds>>,
}

/// The resource kind a count is about.
#[derive(Clone, Copy)]
pub enum Kind {
    PaxosGroup = 0,
    ReplicatedTable = 1,
}

const KIND_NAMES: [&str; 2] = ["PaxosGroup", "ReplicatedTable"];

impl Metrics {
    pub fn reconciled(&self, kind: Kind) {
        self.reconciles[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self, kind: Kind) {
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rounds(&self, namespace: &str, group: &str, max: i64, applied: Vec<(String, i64)>) {
        if let Ok(mut rounds) = self.rounds.lock() {
            rounds.insert((namespace.into(), group.into()), (max, applied));
        }
    }

    pub fn forget(&self, namespace: &str, group: &str) {
        if let Ok(mut rounds) = self.rounds.lock() {
            rounds.remove(&(namespace.to_string(), group.to_string()));
        }
    }

    /// The metrics as Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        for (name, help, counters) in [
            (
                "pg_paxos_operator_reconciles_total",
                "Reconciles run.",
                &self.reconciles,
            ),
            (
                "pg_paxos_operator_reconcile_failures_total",
                "Reconciles that failed.",
                &self.failures,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (kind, counter) in KIND_NAMES.iter().zip(counters) {
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{kind}\"}} {}",
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP pg_paxos_group_max_round Highest round accepted in the group.\n# TYPE pg_paxos_group_max_round gauge\n\
             # HELP pg_paxos_member_applied_round Highest round a member applied.\n# TYPE pg_paxos_member_applied_round gauge"
        );
        if let Ok(rounds) = self.rounds.lock() {
            for ((namespace, group), (max, applied)) in rounds.iter() {
                let (ns, g) = (label(namespace), label(group));
                let _ = writeln!(
                    out,
                    "pg_paxos_group_max_round{{namespace=\"{ns}\",group=\"{g}\"}} {max}"
                );
                for (pod, round) in applied {
                    let _ = writeln!(
                        out,
                        "pg_paxos_member_applied_round{{namespace=\"{ns}\",group=\"{g}\",pod=\"{}\"}} {round}",
                        label(pod)
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_rounds() {
        let m = Metrics::default();
        m.reconciled(Kind::PaxosGroup);
        m.reconciled(Kind::PaxosGroup);
        m.failed(Kind::ReplicatedTable);
        m.rounds("prod", "sh\"op", 42, vec![("shop-0".into(), 41)]);
        let text = m.render();
        assert!(text.contains("pg_paxos_operator_reconciles_total{kind=\"PaxosGroup\"} 2\n"));
        assert!(text
            .contains("pg_paxos_operator_reconcile_failures_total{kind=\"ReplicatedTable\"} 1\n"));
        assert!(
            text.contains("pg_paxos_group_max_round{namespace=\"prod\",group=\"sh\\\"op\"} 42\n")
        );
        assert!(text.contains("pod=\"shop-0\"} 41\n"));
    }
}
