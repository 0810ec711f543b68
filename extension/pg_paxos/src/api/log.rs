//! The log functions of the original pg_paxos, with its names and argument names.

use pgrx::prelude::*;

use crate::error::{OrRaise, PaxosError, Result};
use crate::paxos::replicated_log::{new_value, ReplicatedLog};
use crate::store;
use paxos_model::value::ValueKind;

fn round_arg(name: &'static str, round: i64) -> Result<u64> {
    if round < 1 {
        return Err(PaxosError::InvalidArgument {
            message: format!("{name} must be at least 1, got {round}"),
            hint: "Rounds of the log are numbered from 1.",
        });
    }
    Ok(round as u64)
}

/// Runs Paxos for one round: returns the value chosen in it (the proposed one unless another value
/// was chosen first), and whether that differs from the proposal. With a NULL value it only learns
/// the round, closing it with a no-op if it was abandoned.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos(
    current_proposer_id: &str,
    current_group_id: &str,
    current_round_num: i64,
    proposed_value: default!(Option<&str>, "NULL"),
) -> pgrx::composite_type!('static, "paxos_result") {
    let (body, changed) = (|| {
        let round = round_arg("current_round_num", current_round_num)?;
        let log = ReplicatedLog::open(current_group_id)?;
        let proposal = proposed_value
            .map(|v| new_value(current_proposer_id, ValueKind::Value, Some(v.to_string())));
        refuse_compacted(current_group_id, round)?;
        log.prepare_to_propose(round)?;
        let chosen = log.decide(round, proposal.clone())?;
        let changed = proposal.is_some_and(|p| p.origin != chosen.origin);
        Ok((chosen.body, changed))
    })()
    .or_raise();
    let mut result = PgHeapTuple::new_composite_type("paxos_result")
        .unwrap_or_else(|e| PaxosError::Internal(format!("type paxos_result: {e}")).raise());
    result
        .set_by_name("accepted_value", body)
        .and_then(|_| result.set_by_name("value_changed", changed))
        .unwrap_or_else(|e| PaxosError::Internal(format!("building paxos_result: {e}")).raise());
    result
}

/// Appends a value to the group's log and returns the round it was chosen in.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_append(current_proposer_id: &str, current_group_id: &str, proposed_value: &str) -> i64 {
    (|| {
        let log = ReplicatedLog::open(current_group_id)?;
        let value = new_value(
            current_proposer_id,
            ValueKind::Value,
            Some(proposed_value.to_string()),
        );
        log.append(value)
    })()
    .or_raise() as i64
}

/// A round at least as high as every round chosen when the call started, from a majority.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_max_group_round(current_group_id: &str, accepted_only: default!(bool, true)) -> i64 {
    ReplicatedLog::open(current_group_id)
        .and_then(|log| log.max_group_round(accepted_only))
        .or_raise() as i64
}

/// Learns and applies the log up to and including `max_round_num`; returns the applied round.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_apply_log(current_proposer_id: &str, current_group_id: &str, max_round_num: i64) -> i64 {
    let _ = current_proposer_id;
    (|| {
        let log = ReplicatedLog::open(current_group_id)?;
        log.apply_log(max_round_num.max(0) as u64)
    })()
    .or_raise() as i64
}

/// Appends a value after applying everything before it, then applies it; returns its round.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_apply_and_append(
    current_proposer_id: &str,
    current_group_id: &str,
    proposed_value: &str,
) -> i64 {
    (|| {
        let log = ReplicatedLog::open(current_group_id)?;
        let value = new_value(
            current_proposer_id,
            ValueKind::Value,
            Some(proposed_value.to_string()),
        );
        let round = log.append(value)?;
        log.apply_log(round)?;
        Ok(round)
    })()
    .or_raise() as i64
}

/// A round compacted here whose value is gone (membership changes keep theirs) cannot be answered.
fn refuse_compacted(group_id: &str, round: u64) -> Result<()> {
    let through = store::compacted_through(group_id)?;
    if round <= through && store::learned(group_id, round)?.is_none() {
        return Err(PaxosError::Compacted {
            group: group_id.to_string(),
            round,
            through,
        });
    }
    Ok(())
}

/// Compacts the group's log on every member: each applies the log through this node's highest
/// learned round, then all drop the values and votes of the rounds before the lowest applied
/// round among them (membership changes stay). Returns the round the group is
/// compacted through here; `paxos()` refuses rounds through it. Every member must answer.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_compact_log(current_group_id: &str) -> i64 {
    crate::paxos::compaction::compact_log(current_group_id).or_raise() as i64
}
