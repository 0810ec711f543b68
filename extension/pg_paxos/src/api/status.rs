//! `paxos_status()`: per group and member, whether it answered and how far it is. Read by humans
//! and by the operator. Connection strings are shown without passwords.

use std::time::Duration;

use pgrx::prelude::*;

use crate::error::{OrRaise, Result};
use crate::guc;
use crate::net::pool::Param;
use crate::net::rpc;
use crate::paxos::replicated_log::ReplicatedLog;
use crate::paxos::round;
use crate::store;
use paxos_model::conninfo::redact;

type StatusRow = (
    String,
    String,
    bool,
    bool,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// What a member says of itself (`paxos.request_status`, see `rpc::STATUS`).
#[derive(Default)]
struct MemberAnswer {
    node_id: Option<String>,
    accepted: Option<i64>,
    learned: Option<i64>,
    applied: Option<i64>,
    compacted_through: Option<i64>,
    diverged_round: Option<i64>,
    diverged_error: Option<String>,
}

impl MemberAnswer {
    fn from_row(r: &tokio_postgres::Row) -> MemberAnswer {
        MemberAnswer {
            node_id: r.try_get(0).ok(),
            accepted: r.try_get(1).ok(),
            learned: r.try_get(2).ok(),
            applied: r.try_get::<_, Option<i64>>(3).ok().flatten(),
            compacted_through: r.try_get::<_, Option<i64>>(4).ok().flatten(),
            diverged_round: r.try_get::<_, Option<i64>>(5).ok().flatten(),
            diverged_error: r.try_get::<_, Option<String>>(6).ok().flatten(),
        }
    }
}

fn group_status(group_id: &str) -> Result<Vec<StatusRow>> {
    let log = ReplicatedLog::open(group_id)?;
    let members = log.current_members()?;
    let links = log.links(&members)?;
    let wait = Duration::from_millis(guc::millis(&guc::CONNECT_TIMEOUT_MS) + 500);
    let net = crate::net::pool::net()?;
    let answers = net.block_on(round::gather(
        &links,
        rpc::STATUS,
        vec![Param::Text(Some(group_id.to_string()))],
        round::Ask::Everyone,
        &|_| false,
        wait,
    ));
    net.emit_warnings();
    let mut rows = Vec::new();
    for (i, member) in members.iter().enumerate() {
        let is_self = *member == log.group.self_conninfo;
        let answer = answers.iter().find(|(j, _)| *j == i).map(|(_, a)| a);
        let (answer, error) = match answer {
            Some(Ok(result)) => match result.first() {
                Some(r) => (MemberAnswer::from_row(r), None),
                None => (MemberAnswer::default(), Some("empty answer".to_string())),
            },
            Some(Err(e)) => (MemberAnswer::default(), Some(e.message().to_string())),
            None => (
                MemberAnswer::default(),
                Some(format!("no answer within {} ms", wait.as_millis())),
            ),
        };
        rows.push((
            group_id.to_string(),
            redact(member),
            is_self,
            error.is_none(),
            answer.node_id,
            answer.accepted,
            answer.learned,
            answer.applied,
            answer.compacted_through,
            answer.diverged_round,
            answer.diverged_error,
            error,
        ));
    }
    Ok(rows)
}

/// One row per member of each group of this node (or of `current_group_id`).
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_status(
    current_group_id: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(group_id, String),
        name!(member, String),
        name!(is_self, bool),
        name!(reachable, bool),
        name!(node_id, Option<String>),
        name!(highest_accepted_round, Option<i64>),
        name!(highest_learned_round, Option<i64>),
        name!(applied_round, Option<i64>),
        name!(compacted_through_round, Option<i64>),
        name!(diverged_round, Option<i64>),
        name!(diverged_error, Option<String>),
        name!(error, Option<String>),
    ),
> {
    let rows = (|| {
        let groups = match current_group_id {
            Some(g) => {
                store::require_group(g)?;
                vec![g.to_string()]
            }
            None => store::group_ids()?,
        };
        let mut rows = Vec::new();
        for g in groups {
            rows.extend(group_status(&g)?);
        }
        Ok(rows)
    })()
    .or_raise();
    TableIterator::new(rows)
}

#[pg_schema]
mod paxos {
    use pgrx::prelude::*;

    use crate::error::OrRaise;
    use crate::paxos::{batching, leadership, lease};
    use crate::store;

    /// Whether this node leads `group_id` as far as it knows (its own acceptor promised nothing
    /// higher since; a leader cut off from a newer one's campaign finds out at a refused accept),
    /// with its ballot, the first round of its range, the next round it can propose with phase 2
    /// only, how long its leader lease still runs (when leases are on and a majority granted
    /// one), and how many strong reads here went under a lease since the node started.
    #[pg_extern(volatile, parallel_safe)]
    fn leadership(
        group_id: &str,
    ) -> TableIterator<
        'static,
        (
            name!(leads, bool),
            name!(ballot, Option<String>),
            name!(from_round, Option<i64>),
            name!(next_round, Option<i64>),
            name!(lease_remaining_ms, Option<f64>),
            name!(lease_reads, i64),
        ),
    > {
        store::require_group(group_id).or_raise();
        let promised = store::range_promise(group_id).or_raise().map(|r| r.ballot);
        let held = leadership::holds(group_id, promised.as_ref())
            .then(|| leadership::current(group_id))
            .flatten();
        let row = match held {
            Some((ballot, from, next)) => (
                true,
                Some(leadership::ballot(ballot).to_string()),
                Some(from as i64),
                Some(next as i64),
                leadership::lease_left(group_id, lease::now()).map(|micros| micros as f64 / 1000.0),
                leadership::lease_reads(group_id) as i64,
            ),
            None => (
                false,
                None,
                None,
                None,
                None,
                leadership::lease_reads(group_id) as i64,
            ),
        };
        TableIterator::once(row)
    }

    /// This node's acceptor side of leader leases for `group_id` (see `paxos::lease`): the ballot
    /// holding a running grant and how long it still runs, the last holder whose grant was
    /// contested, and how long the node still refuses every promise and grant after its start.
    #[pg_extern(volatile, parallel_safe)]
    fn lease_grant(
        group_id: &str,
    ) -> TableIterator<
        'static,
        (
            name!(holder, Option<String>),
            name!(remaining_ms, Option<f64>),
            name!(contested, Option<String>),
            name!(quiet_ms, f64),
        ),
    > {
        store::require_group(group_id).or_raise();
        let status = lease::grant_status(group_id);
        let ms = |micros: u64| micros as f64 / 1000.0;
        let row = match status {
            Some(s) => (
                s.holder.as_ref().map(|(b, _)| b.to_string()),
                s.holder.map(|(_, left)| ms(left)),
                s.contested.map(|b| b.to_string()),
                ms(s.quiet_left),
            ),
            None => (None, None, None, 0.0),
        };
        TableIterator::once(row)
    }

    /// This node's group commit for `group_id` (see `paxos::batching`): whether inserts may join
    /// its commit chain, the chain's epoch, the applied round it started from and its last
    /// batch's round, whether a batch is being proposed, how many inserts are queued, and how many
    /// inserts were forwarded (see `paxos::forwarding`): received from other members as leader,
    /// and sent to a leader, both chosen, since the node started; and how many batches went while
    /// the one before was still in flight, and how many of those were void (another value won
    /// the round before), since the node started.
    #[pg_extern(volatile, parallel_unsafe)]
    fn group_commit(
        group_id: &str,
    ) -> TableIterator<
        'static,
        (
            name!(chain_open, bool),
            name!(epoch, Option<i64>),
            name!(from_round, Option<i64>),
            name!(tip_round, Option<i64>),
            name!(proposing, bool),
            name!(queued, i32),
            name!(forwarded_in, i64),
            name!(forwarded_out, i64),
            name!(pipelined_batches, i64),
            name!(void_batches, i64),
        ),
    > {
        store::require_group(group_id).or_raise();
        let row = match batching::status(group_id) {
            Some(s) => (
                s.open,
                Some(s.epoch as i64),
                Some(s.from as i64),
                Some(s.tip as i64),
                s.proposing,
                s.queued as i32,
                s.forwarded_in as i64,
                s.forwarded_out as i64,
                s.pipelined as i64,
                s.void as i64,
            ),
            None => (false, None, None, None, false, 0, 0, 0, 0, 0),
        };
        TableIterator::once(row)
    }
}
