//! What a history and the nodes' final state must satisfy.

use std::collections::{BTreeMap, BTreeSet};

use super::history::{Operation, Outcome, Record};
use super::linearizability::{check, Action, Op, Verdict};
use super::workload::REGISTERS;

/// Unique inserts: every acknowledged row is present, every present row was attempted, and no
/// row whose insert definitely failed is present.
pub fn check_inserts(records: &[Record], present: &BTreeSet<String>) -> Vec<String> {
    let mut anomalies = Vec::new();
    let mut attempted = BTreeSet::new();
    for r in records {
        if let Operation::Insert { id } = &r.operation {
            match r.outcome {
                Outcome::Ok => {
                    attempted.insert(id.clone());
                    if !present.contains(id) {
                        anomalies.push(format!("acknowledged insert {id} is missing"));
                    }
                }
                Outcome::Unknown => {
                    attempted.insert(id.clone());
                }
                Outcome::Fail => {
                    if present.contains(id) {
                        anomalies
                            .push(format!("insert {id} failed ({:?}) but is present", r.error));
                    }
                }
            }
        }
    }
    for id in present.difference(&attempted) {
        anomalies.push(format!("row {id} is present but was never attempted"));
    }
    anomalies
}

/// Registers: each key's history is linearizable from 0.
pub fn check_registers(records: &[Record]) -> Vec<String> {
    let mut per_key: BTreeMap<i32, Vec<Op>> = BTreeMap::new();
    for r in records {
        let answered = match r.outcome {
            Outcome::Ok => Some(r.answered),
            Outcome::Unknown => None,
            Outcome::Fail => continue,
        };
        let (key, action) = match r.operation {
            Operation::Read {
                key,
                value: Some(v),
            } => (key, Action::Read(v)),
            Operation::Read { .. } => continue,
            Operation::Write { key, value } => (key, Action::Write(value)),
            Operation::Cas {
                key,
                from,
                to,
                swapped,
            } => {
                // An unknown compare-and-set may have swapped; a known one says whether it did.
                let swapped = swapped || answered.is_none();
                (key, Action::Cas { from, to, swapped })
            }
            Operation::Insert { .. } => continue,
        };
        per_key.entry(key).or_default().push(Op {
            action,
            invoked: r.invoked,
            answered,
            gave_up: answered.is_none().then_some(r.answered),
        });
    }
    (0..REGISTERS)
        .filter_map(|k| {
            match check(per_key.get(&k).map(Vec::as_slice).unwrap_or(&[]), 0) {
                Verdict::Linearizable => None,
                Verdict::NotLinearizable => {
                    Some(format!("register {k}: the history is not linearizable"))
                }
                Verdict::Inconclusive => Some(format!(
                    "register {k}: no verdict within the search budget (too many concurrent operations of unknown outcome)"
                )),
            }
        })
        .collect()
}
