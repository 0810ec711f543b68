//! The acceptor of this node: the core's rules applied to the slot rows of `paxos.acceptor_slots`.
//! Requests arrive as autocommit SQL calls from proposers; the slot is written and committed (with
//! synchronous_commit on) before the reply reaches the proposer, because a tokio-postgres query
//! completes only at ReadyForQuery, after the commit.

use paxos_core::acceptor::{on_accept, on_prepare, on_prepare_range, RangeStep};
use paxos_core::lease::range_held_by;
use paxos_core::{
    AcceptOutcome, Accepted, Ballot, PromiseOutcome, RangeOutcome, RangePromise, SlotState,
};

use crate::error::{PaxosError, Result};
use crate::paxos::lease;
use crate::store;
use paxos_model::value::LogValue;

/// A reply row: status, a ballot (number, proposer) and a value, each possibly absent.
pub struct ReplyRow {
    pub status: &'static str,
    pub ballot: Option<Ballot>,
    pub value: Option<LogValue>,
}

impl ReplyRow {
    fn chosen(value: LogValue) -> Self {
        ReplyRow {
            status: "chosen",
            ballot: None,
            value: Some(value),
        }
    }
}

/// Applies `rule` to the slot of `round` (its promise raised by a range promise that covers it)
/// under a row lock and persists its result. A concurrent first request for the same round may win
/// the insert; the rule then runs again on its row. The caller holds the acceptor lock shared
/// (see `store::lock_acceptor`), so a compaction is either seen here or waits for this request.
///
/// A compacted round is refused: its slot is gone, and a fresh one would let a proposer (a node
/// restored from an old backup, a `paxos()` call) get another value chosen in a round whose value
/// every member applied.
fn with_slot<R>(
    group_id: &str,
    round: u64,
    rule: impl Fn(&SlotState<LogValue>) -> (Option<SlotState<LogValue>>, R),
) -> Result<R> {
    let store::AcceptorState {
        range,
        compacted,
        serves,
    } = store::acceptor_state(group_id)?;
    if !serves {
        return Err(not_an_acceptor(group_id));
    }
    refuse_compacted(group_id, round, compacted)?;
    for _ in 0..2 {
        let existing = store::lock_slot(group_id, round)?;
        let slot = existing
            .clone()
            .unwrap_or_default()
            .under(range.as_ref(), round);
        let (persist, reply) = rule(&slot);
        match persist {
            Some(state) => {
                if store::write_slot(group_id, round, &state, existing.is_some())? {
                    return Ok(reply);
                }
            }
            None => return Ok(reply),
        }
    }
    Err(PaxosError::Internal(format!(
        "acceptor slot {round} of group {group_id:?} kept changing"
    )))
}

pub fn prepare(group_id: &str, round: u64, ballot: Ballot) -> Result<ReplyRow> {
    store::require_synchronous_commit()?;
    if let Some(value) = store::learned(group_id, round)? {
        return Ok(ReplyRow::chosen(value));
    }
    store::lock_acceptor(group_id, false)?;
    if let Err(holder) = lease::admit_phase1(group_id, &ballot, round) {
        return Ok(ReplyRow {
            status: "refused",
            ballot: Some(holder),
            value: None,
        });
    }
    with_slot(group_id, round, |slot| {
        let step = on_prepare(slot, &ballot);
        let reply = match step.reply {
            PromiseOutcome::Granted { accepted } => ReplyRow {
                status: "granted",
                ballot: accepted.as_ref().map(|a| a.ballot.clone()),
                value: accepted.map(|a| a.value),
            },
            PromiseOutcome::Refused { promised } => ReplyRow {
                status: "refused",
                ballot: Some(promised),
                value: None,
            },
        };
        (step.persist, reply)
    })
}

pub fn accept(group_id: &str, round: u64, ballot: Ballot, value: LogValue) -> Result<ReplyRow> {
    store::require_synchronous_commit()?;
    if let Some(chosen) = store::learned(group_id, round)? {
        return Ok(ReplyRow::chosen(chosen));
    }
    store::lock_acceptor(group_id, false)?;
    with_slot(group_id, round, |slot| {
        let step = on_accept(slot, &ballot, &value);
        let reply = match step.reply {
            AcceptOutcome::Accepted => ReplyRow {
                status: "accepted",
                ballot: None,
                value: None,
            },
            AcceptOutcome::Refused { promised } => ReplyRow {
                status: "refused",
                ballot: Some(promised),
                value: None,
            },
        };
        (step.persist, reply)
    })
}

/// The answer to a range prepare: refused with the higher promise, or granted with the votes cast
/// in the rounds it covers.
pub enum RangeReply {
    Granted(Vec<(u64, Accepted<LogValue>)>),
    Refused(Ballot),
}

fn refuse_compacted(group_id: &str, round: u64, compacted: u64) -> Result<()> {
    if round <= compacted {
        return Err(PaxosError::Compacted {
            group: group_id.to_string(),
            round,
            through: compacted,
        });
    }
    Ok(())
}

fn not_an_acceptor(group_id: &str) -> PaxosError {
    PaxosError::NotAnAcceptor {
        group: group_id.to_string(),
    }
}

/// Refuses every request that counts this node's votes or promises for a group it never founded
/// or joined (see `paxos.acceptor_groups`). A node whose data was wiped (a new volume, a dropped
/// extension) holds nothing, so it would promise and report as if it had never voted, and a
/// majority counting it could choose a second value in a round whose value was chosen (an
/// acceptor that forgets: the simulator's `the_checker_catches_acceptors_that_forget`). Refusing,
/// it counts as a member that is down until it is replaced.
pub fn require_acceptor_of(group_id: &str) -> Result<()> {
    if store::serves_as_acceptor(group_id)? {
        Ok(())
    } else {
        Err(not_an_acceptor(group_id))
    }
}

/// Phase 1b for every round from `from` on (a leader's campaign).
pub fn prepare_range(group_id: &str, from: u64, ballot: Ballot) -> Result<RangeReply> {
    require_acceptor_of(group_id)?;
    store::lock_acceptor(group_id, true)?;
    refuse_compacted(group_id, from, store::compacted_through(group_id)?)?;
    if let Err(holder) = lease::admit_phase1(group_id, &ballot, u64::MAX) {
        return Ok(RangeReply::Refused(holder));
    }
    let range = store::range_promise(group_id)?;
    let step = promise_range(group_id, range.as_ref(), from, &ballot)?;
    Ok(match step.reply {
        RangeOutcome::Granted { votes } => RangeReply::Granted(votes),
        RangeOutcome::Refused { promised } => RangeReply::Refused(promised),
    })
}

/// The range prepare rule on this acceptor's slots from `from` on, given its range promise
/// `range`; a new promise is persisted (durably: the reply follows the commit). The caller holds
/// the acceptor lock alone and had the lease admit `ballot`.
fn promise_range(
    group_id: &str,
    range: Option<&RangePromise>,
    from: u64,
    ballot: &Ballot,
) -> Result<RangeStep<LogValue>> {
    let slots = store::slots_from(group_id, from)?;
    let step = on_prepare_range(
        range,
        slots.iter().map(|(round, slot)| (*round, slot)),
        from,
        ballot,
    );
    if let Some(promised) = &step.persist {
        store::require_synchronous_commit()?;
        store::write_range_promise(group_id, promised)?;
    }
    Ok(step)
}

pub fn learn(group_id: &str, round: u64, value: LogValue) -> Result<()> {
    require_acceptor_of(group_id)?;
    store::relax_synchronous_commit()?;
    store::record_learned(group_id, round, &value)
}

/// A leader's lease request (see `lease`): granted or not, with this acceptor's highest voted
/// round (so that the request doubles as the read index). Taken under the acceptor lock alone:
/// every phase 1 admitted before it is then committed and seen here, and every later one meets
/// the grant.
///
/// A slot that promised a higher ballot refuses the grant unless its round is learned here or by
/// the leader (through `learned_through`): no proposal can change a chosen value (the simulator's
/// `the_checker_catches_grants_over_higher_slot_promises` shows the rule is needed otherwise).
///
/// An acceptor the leader's campaign did not reach (it needed a majority only) promises the
/// leader's range (rounds from `from` on) here first, when nothing higher was promised. The votes
/// such a promise would report cannot matter: a majority promised the same ballot and reported
/// theirs, and any value chosen before had a vote among them.
pub fn request_lease(
    group_id: &str,
    ballot: &Ballot,
    from: u64,
    learned_through: Option<u64>,
    duration_micros: u64,
) -> Result<(bool, u64)> {
    require_acceptor_of(group_id)?;
    store::lock_acceptor(group_id, true)?;
    let mut range = store::range_promise(group_id)?;
    let behind = range.as_ref().is_none_or(|r| r.ballot < *ballot);
    if behind && lease::admit_phase1(group_id, ballot, u64::MAX).is_ok() {
        if let Some(promised) = promise_range(group_id, range.as_ref(), from, ballot)?.persist {
            range = Some(promised);
        }
    }
    let range_from = range_held_by(range.as_ref(), ballot);
    let higher = match range_from {
        Some(from) => {
            let unknown_from = learned_through.map_or(from, |l| from.max(l + 1));
            store::higher_slot_promise(group_id, unknown_from, ballot)?
        }
        None => false,
    };
    let granted = lease::grant(group_id, ballot, range_from, higher, duration_micros);
    Ok((granted, store::highest_known_round(group_id, true)?))
}
