//! Log compaction: the members of a group drop the values and acceptor votes of the rounds that
//! every member has applied. Nothing needs them any more: each member
//! applies from its own applied round on, learns later rounds only, and a joining node copies the
//! tables as of an applied round. Membership changes stay in the log (memberships are computed
//! from them), and so does the round compaction stops before, so "highest round" answers do not
//! go back.
//!
//! A compacted round is refused by every acceptor that compacted it (see `acceptor`), so no
//! proposer can get another value chosen there: one would need a majority, and every member
//! compacted the same rounds or will refuse them once it does (until then it still has the
//! round's votes, which carry the chosen value into any new proposal).

use crate::error::{PaxosError, Result};
use crate::net::pool::{Link, Param};
use crate::net::rpc;
use crate::paxos::replicated_log::ReplicatedLog;
use crate::paxos::round;
use crate::store;

/// Compacts `group_id` on every member: each applies the log through this node's highest learned
/// round, then all drop what comes before the lowest applied round among them. Returns the round
/// the group is compacted through here. Every member must answer; one that does not fails the
/// call (members that compacted meanwhile keep their compaction, which is safe).
///
/// This node applies through its loopback connection, in a transaction of its own, and compacts
/// last: until then this transaction holds none of its locks, so two compactions started at once
/// on different members do not wait for each other.
pub fn compact_log(group_id: &str) -> Result<u64> {
    let log = ReplicatedLog::open(group_id)?;
    let members = log.current_members()?;
    let links = log.links(&members)?;
    let target = store::highest_learned(group_id)?;
    let group = Param::Text(Some(group_id.to_string()));
    let applied = ask_every_member(
        &log,
        &links,
        rpc::APPLY_THROUGH,
        vec![group.clone(), Param::Int(target as i64)],
    )?;
    let Some(below) = applied.into_iter().min() else {
        return store::compacted_through(group_id);
    };
    let already = store::compacted_through(group_id)?;
    if below <= already + 1 {
        return Ok(already);
    }
    let self_conninfo = &log.group.self_conninfo;
    let others: Vec<Link> = members
        .iter()
        .zip(links)
        .filter(|(m, _)| *m != self_conninfo)
        .map(|(_, link)| link)
        .collect();
    ask_every_member(
        &log,
        &others,
        rpc::COMPACT,
        vec![group, Param::Int(below as i64)],
    )?;
    compact_here(group_id, below)
}

/// A member's part (`paxos.request_compact`): drops what it keeps of the rounds before `below`,
/// which it must have applied. Returns the round it is compacted through.
pub fn compact_here(group_id: &str, below: u64) -> Result<u64> {
    // No applier and no acceptor request runs meanwhile: the first lock orders this against
    // writers and appliers of this node, the second against every acceptor request.
    let applied = store::lock_applied_round(group_id)?;
    if below > applied {
        return Err(PaxosError::InvalidArgument {
            message: format!(
                "cannot compact paxos group {group_id:?} before round {below}: this node applied only through round {applied}"
            ),
            hint: "Compaction keeps every round a member has not applied; paxos_compact_log() asks every member for its applied round first.",
        });
    }
    store::lock_acceptor(group_id, true)?;
    store::compact(group_id, below)
}

/// Sends `sql` to every member of `links` and returns each one's first column (a round), or fails
/// naming the first member that did not answer.
fn ask_every_member(
    log: &ReplicatedLog,
    links: &[Link],
    sql: &'static str,
    params: Vec<Param>,
) -> Result<Vec<u64>> {
    let net = crate::net::pool::net()?;
    let everyone = links.len();
    let answers = net.block_on(round::gather(
        links,
        sql,
        params,
        round::Ask::Everyone,
        &|answered| answered.len() == everyone,
        log.round_timeout(),
    ));
    net.emit_warnings();
    let mut rounds = Vec::with_capacity(everyone);
    for (i, _) in links.iter().enumerate() {
        let answer = answers.iter().find(|(at, _)| *at == i).map(|(_, a)| a);
        let first = match answer {
            Some(Ok(rows)) => rows.first().and_then(|r| r.try_get::<_, i64>(0).ok()),
            Some(Err(e)) => {
                return Err(incomplete(log, &links[i], e.message().to_string()));
            }
            None => {
                return Err(incomplete(log, &links[i], "no answer in time".into()));
            }
        };
        match first {
            Some(round) => rounds.push(round.max(0) as u64),
            None => return Err(incomplete(log, &links[i], "an empty answer".into())),
        }
    }
    Ok(rounds)
}

fn incomplete(log: &ReplicatedLog, link: &Link, cause: String) -> PaxosError {
    PaxosError::CompactionIncomplete {
        group: log.id().to_string(),
        member: link.label.clone(),
        cause,
    }
}
