//! Inserts on a member that does not lead, sent to the group's leader.
//!
//! Without this, a write on a member that does not lead takes the leadership over (both phases),
//! and the leader's writes in flight meet the higher promise and fail with `40001`; with several
//! writing members the leadership moves back and forth. A transaction whose writes are all
//! inserts of rows they carry (blind inserts that draw from no sequence, sent by the client) is
//! instead:
//!
//! 1. run here: a single statement on this node's applied state, holding the group's writer lock
//!    shared as the leader's batched writers do, so no transaction of this node applies rounds
//!    meanwhile; BEGIN ... COMMIT as every write here runs (up to date first, holding the applied
//!    round), since it may go on to write more (then it proposes its entry itself);
//! 2. at COMMIT, sent as its log entry, with the applied round it ran on (its *base*), to the
//!    member that leads the group (`paxos.request_forwarded_write`);
//! 3. run there as one of the leader's own batched inserts (a key that exists there fails it, as
//!    it would fail the leader's own insert) and committed in the chain's next batch: running it
//!    on the leader's state is what makes it valid in that round, wherever it ran first;
//! 4. committed here with the batch mark of its place (`store::mark_batched`), exactly like the
//!    leader's own batched writes (applying that batch later skips it), if every round between
//!    the base and the batch is a batch of the leader's chain: blind inserts, which give the same
//!    rows in any order with this one. Otherwise (a round that may touch these rows came first,
//!    e.g. an update this node has not applied) the rows written here are deleted again and the
//!    log is applied through the batch, so they come back in log order.
//!
//! The leader is the member that says it leads with the highest ballot, not below the range
//! promise this node's acceptor holds; each backend asks the members once per range promise.
//! A leader that does not answer within a phase timeout fails the transaction with `08007` (the
//! insert may still be chosen) and this backend writes alone for a member-retry interval, so a
//! paused or lost leader is replaced by the next write as before.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use paxos_core::Ballot;
use paxos_model::entries::LoggedStatement;
use tokio_postgres::Row;

use crate::error::{is_nodes_own_trouble, sqlstate_from_code, PaxosError, Result};
use crate::guc;
use crate::net::pool::{net, Link, LinkError, Param};
use crate::net::rpc;
use crate::paxos::apply;
use crate::paxos::batching::Placement;
use crate::paxos::leadership;
use crate::paxos::replicated_log::ReplicatedLog;
use crate::store;

/// What the leader did with a forwarded insert.
#[derive(Clone, Copy, Debug)]
pub enum ForwardOutcome {
    /// Chosen, at this place of a batch; the leader committed its rows. `keep`: every round
    /// between the member's base and the batch is a batch of the leader's chain, so the rows the
    /// member wrote on its base are the rows of that place; otherwise rounds that do not commute
    /// with them come first, and the member must discard its rows and apply the log instead.
    Chosen { placement: Placement, keep: bool },
    /// The member does not lead the group (any more).
    NotLeading,
    /// The leader had rounds of its own to apply first (it applied them): try again.
    Busy,
}

impl ForwardOutcome {
    /// The row `paxos.request_forwarded_write` answers with.
    pub fn to_row(self) -> (String, Option<i64>, Option<i32>, Option<bool>) {
        let (outcome, round, index, keep) = match self {
            ForwardOutcome::Chosen { placement, keep } => (
                "chosen",
                Some(placement.round as i64),
                Some(placement.index as i32),
                Some(keep),
            ),
            ForwardOutcome::NotLeading => ("not_leading", None, None, None),
            ForwardOutcome::Busy => ("busy", None, None, None),
        };
        (outcome.to_string(), round, index, keep)
    }

    fn from_row(row: Option<&Row>) -> std::result::Result<Self, LinkError> {
        let bad = |what: &str| LinkError::Remote(format!("a forwarded write's reply {what}"));
        let row = row.ok_or_else(|| bad("is empty"))?;
        let outcome: String = row.try_get(0).map_err(rpc::protocol)?;
        let round: Option<i64> = row.try_get(1).map_err(rpc::protocol)?;
        let index: Option<i32> = row.try_get(2).map_err(rpc::protocol)?;
        let keep: Option<bool> = row.try_get(3).map_err(rpc::protocol)?;
        match (outcome.as_str(), round, index, keep) {
            ("chosen", Some(round), Some(index), Some(keep)) if round >= 0 && index >= 0 => {
                Ok(ForwardOutcome::Chosen {
                    placement: Placement {
                        round: round as u64,
                        index: index as u32,
                    },
                    keep,
                })
            }
            ("not_leading", ..) => Ok(ForwardOutcome::NotLeading),
            ("busy", ..) => Ok(ForwardOutcome::Busy),
            _ => Err(bad(&format!("{outcome:?} lacks its fields"))),
        }
    }
}

/// What this backend knows of one group's leader.
struct Known {
    /// The range promise of this node's acceptor the answer is about ("" for none).
    ballot: String,
    /// The member that leads with that ballot, if one said so.
    leader: Option<String>,
    asked_at: Instant,
    /// No forwarding before this: the leader did not answer, or did not take a write.
    paused_until: Option<Instant>,
}

thread_local! {
    static KNOWN: RefCell<HashMap<String, Known>> = RefCell::new(HashMap::new());
}

fn retry_interval() -> Duration {
    Duration::from_millis(guc::millis(&guc::MEMBER_RETRY_MS))
}

const LEADER_BALLOT: &str = "SELECT ballot FROM paxos.leadership($1) WHERE leads";
const FORWARD_WRITE: &str = "SELECT outcome, round, entry_index, member_keeps_rows
                             FROM paxos.request_forwarded_write($1, $2, $3)";

/// Before a forwardable insert on this node, which does not lead `group`: the leader's connection
/// string and the base the insert runs on, with the group's writer lock held shared until the
/// transaction ends. `None` (and no lock) when there is no leader to send it to: the caller
/// writes alone.
pub fn prepare(group: &str) -> Result<Option<(String, u64)>> {
    let Some(leader) = leader_now(group)? else {
        return Ok(None);
    };
    // The lock only now: a caller that writes alone instead takes it alone, and two that held it
    // shared while waiting to take it alone would wait for each other.
    let state = store::read_state_with_writers_shared(group)?;
    apply::refuse_diverged(group, state.diverged)?;
    Ok(Some((leader, state.group.applied_round)))
}

/// The member leading `group`, as known to this backend or asked of the members now: the one
/// that leads with the highest ballot, if that is not below `promise` (this node's range promise;
/// a member that campaigned with a higher ballot may still be on its way to leading).
fn leader_of(group: &str, promise: Option<&Ballot>) -> Result<Option<String>> {
    let key = promise.map(Ballot::to_string).unwrap_or_default();
    let now = Instant::now();
    let cached = KNOWN.with(|k| {
        k.borrow().get(group).and_then(|known| {
            if known.ballot != key {
                return None;
            }
            if known.paused_until.is_some_and(|until| now < until) {
                return Some(None);
            }
            match &known.leader {
                Some(leader) => Some(Some(leader.clone())),
                // Nobody led a moment ago (a campaign may have been running): ask again only
                // after a while.
                None if now.duration_since(known.asked_at) < retry_interval() => Some(None),
                None => None,
            }
        })
    });
    if let Some(answer) = cached {
        return Ok(answer);
    }
    let log = ReplicatedLog::open(group)?;
    let members = log.other_members()?;
    let links = log.links(&members)?;
    let net = net()?;
    let leading = net.block_on(leaders(&links, group, promise, log.phase_timeout()));
    net.emit_warnings();
    let leader = leading
        .into_iter()
        .filter(|(_, ballot)| promise.is_none_or(|p| ballot >= p))
        .max_by(|a, b| a.1.cmp(&b.1))
        .map(|(i, _)| members[i].clone());
    KNOWN.with(|k| {
        k.borrow_mut().insert(
            group.to_string(),
            Known {
                ballot: key,
                leader: leader.clone(),
                asked_at: now,
                paused_until: None,
            },
        )
    });
    Ok(leader)
}

/// Asks every member whether it leads `group`: those that answered within `limit` that they do,
/// with their ballots. Stops early at one that leads with `promise` itself.
async fn leaders(
    links: &[Link],
    group: &str,
    promise: Option<&Ballot>,
    limit: Duration,
) -> Vec<(usize, Ballot)> {
    let mut asks: FuturesUnordered<_> = links
        .iter()
        .enumerate()
        .filter(|(_, link)| !link.recently_down())
        .map(|(i, link)| async move {
            let params = [Param::Text(Some(group.to_string()))];
            (i, link.query_within(limit, LEADER_BALLOT, &params).await)
        })
        .collect();
    let mut found = Vec::new();
    while let Some((i, answer)) = asks.next().await {
        let Some(ballot) = answer.ok().and_then(|rows| {
            let text: String = rows.first()?.try_get::<_, Option<String>>(0).ok()??;
            let (number, proposer) = text.split_once('/')?;
            Some(Ballot::new(number.parse().ok()?, proposer))
        }) else {
            continue;
        };
        let exact = promise == Some(&ballot);
        found.push((i, ballot));
        if exact {
            break;
        }
    }
    found
}

fn with_known(group: &str, f: impl FnOnce(&mut Known)) {
    KNOWN.with(|k| {
        if let Some(known) = k.borrow_mut().get_mut(group) {
            f(known);
        }
    });
}

/// This backend writes `group` alone for a member-retry interval.
pub fn pause(group: &str) {
    let until = Instant::now() + retry_interval();
    with_known(group, |known| known.paused_until = Some(until));
}

/// What became of an entry sent to the leader.
pub enum Forwarded {
    /// Chosen there (see [`ForwardOutcome::Chosen`]).
    Chosen { placement: Placement, keep: bool },
    /// Not run there: the member does not lead, or was busy twice.
    NotTaken { leader: String, cause: &'static str },
}

/// At COMMIT of a transaction that wrote alone: the member leading `group` as far as this
/// backend knows (asking the members if it does not), unless this node leads or forwarding is
/// paused.
pub fn leader_now(group: &str) -> Result<Option<String>> {
    let state = store::read_state_without_votes(group)?;
    apply::refuse_diverged(group, state.diverged.clone())?;
    if leadership::holds(group, state.range_promise.as_ref()) {
        return Ok(None);
    }
    leader_of(group, state.range_promise.as_ref())
}

/// At COMMIT: sends the transaction's entry, which ran on `base`, to `leader`. A leader that
/// refused it with an SQL error, or did not answer (then the entry may still be chosen), is this
/// call's error.
pub fn forward(
    group: &str,
    leader: &str,
    base: u64,
    statement: &LoggedStatement,
) -> Result<Forwarded> {
    let log = ReplicatedLog::open(group)?;
    let link = log.link(leader)?;
    let params = [
        Param::Text(Some(group.to_string())),
        Param::Int(base as i64),
        Param::Text(Some(statement.encode())),
    ];
    let net = net()?;
    let not_taken = |cause| Forwarded::NotTaken {
        leader: link.label.clone(),
        cause,
    };
    // A busy leader applied its pending rounds before answering: the second attempt joins its
    // chain. Nothing ran there, so sending again is safe.
    for _attempt in 0..2 {
        let answer =
            net.block_on(link.query_within_once(log.phase_timeout(), FORWARD_WRITE, &params));
        net.emit_warnings();
        let outcome = answer.and_then(|rows| ForwardOutcome::from_row(rows.first()));
        match outcome {
            Ok(ForwardOutcome::Chosen { placement, keep }) => {
                return Ok(Forwarded::Chosen { placement, keep })
            }
            Ok(ForwardOutcome::Busy) => continue,
            Ok(ForwardOutcome::NotLeading) => {
                // Ask again only after a while: until then nobody is known to lead with it.
                with_known(group, |known| {
                    known.leader = None;
                    known.asked_at = Instant::now();
                });
                return Ok(not_taken("it does not lead the group now"));
            }
            Err(LinkError::Sql { code, message }) => {
                // The leader's own trouble (a full disk, say) may last a while: write alone
                // meanwhile instead of failing every insert there.
                if is_nodes_own_trouble(&code) {
                    pause(group);
                }
                return Err(PaxosError::ForwardRefused {
                    group: group.to_string(),
                    leader: link.label.clone(),
                    sqlstate: sqlstate_from_code(&code),
                    message,
                });
            }
            Err(e) => {
                pause(group);
                return Err(PaxosError::ForwardUnknown {
                    group: group.to_string(),
                    leader: link.label.clone(),
                    cause: e.message().to_string(),
                });
            }
        }
    }
    Ok(not_taken("it had rounds of its own to apply first"))
}
