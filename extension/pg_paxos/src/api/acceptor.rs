//! Functions other members call on this node, in schema `paxos`. Each runs as one autocommit
//! statement of a member's connection, so its writes are committed before the caller sees the reply.

use pgrx::prelude::*;

#[pg_schema]
mod paxos {
    use paxos_core::Ballot;
    use pgrx::prelude::*;

    use crate::error::{OrRaise, PaxosError, Result};
    use crate::paxos::acceptor::{self, ReplyRow};
    use crate::paxos::group;
    use crate::store;
    use paxos_model::entries::LoggedStatement;
    use paxos_model::value::LogValue;

    type ReplyTable = TableIterator<
        'static,
        (
            name!(status, String),
            name!(num, Option<i64>),
            name!(proposer, Option<String>),
            name!(value_origin, Option<String>),
            name!(value_kind, Option<String>),
            name!(value_body, Option<String>),
        ),
    >;

    fn reply(row: ReplyRow) -> ReplyTable {
        let (num, proposer) = match row.ballot {
            Some(b) => (Some(b.number as i64), Some(b.proposer)),
            None => (None, None),
        };
        let (origin, kind, body) = match row.value {
            Some(v) => (Some(v.origin), Some(v.kind.as_str().to_string()), v.body),
            None => (None, None, None),
        };
        TableIterator::once((row.status.to_string(), num, proposer, origin, kind, body))
    }

    fn round(round: i64) -> Result<u64> {
        u64::try_from(round).map_err(|_| PaxosError::InvalidArgument {
            message: format!("round {round} is negative"),
            hint: "Rounds are numbered from 0.",
        })
    }

    fn ballot(num: i64, proposer: &str) -> Result<Ballot> {
        Ok(Ballot::new(round(num)?, proposer))
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn request_prepare(
        group_id: &str,
        round_num: i64,
        ballot_num: i64,
        ballot_proposer: &str,
    ) -> TableIterator<
        'static,
        (
            name!(status, String),
            name!(num, Option<i64>),
            name!(proposer, Option<String>),
            name!(value_origin, Option<String>),
            name!(value_kind, Option<String>),
            name!(value_body, Option<String>),
        ),
    > {
        (|| {
            acceptor::prepare(
                group_id,
                round(round_num)?,
                ballot(ballot_num, ballot_proposer)?,
            )
        })()
        .map(reply)
        .or_raise()
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn request_accept(
        group_id: &str,
        round_num: i64,
        ballot_num: i64,
        ballot_proposer: &str,
        value_origin: &str,
        value_kind: &str,
        value_body: Option<&str>,
    ) -> TableIterator<
        'static,
        (
            name!(status, String),
            name!(num, Option<i64>),
            name!(proposer, Option<String>),
            name!(value_origin, Option<String>),
            name!(value_kind, Option<String>),
            name!(value_body, Option<String>),
        ),
    > {
        (|| {
            let value = LogValue::from_columns(
                value_origin.to_string(),
                value_kind,
                value_body.map(str::to_string),
            )?;
            acceptor::accept(
                group_id,
                round(round_num)?,
                ballot(ballot_num, ballot_proposer)?,
                value,
            )
        })()
        .map(reply)
        .or_raise()
    }

    /// Phase 1b for every round from `from_round` on: a first row with the status (and, when
    /// refused, the higher promise), then one row per vote cast in those rounds.
    #[pg_extern(volatile, parallel_unsafe)]
    fn request_prepare_range(
        group_id: &str,
        from_round: i64,
        ballot_num: i64,
        ballot_proposer: &str,
    ) -> TableIterator<
        'static,
        (
            name!(status, String),
            name!(round, Option<i64>),
            name!(num, Option<i64>),
            name!(proposer, Option<String>),
            name!(value_origin, Option<String>),
            name!(value_kind, Option<String>),
            name!(value_body, Option<String>),
        ),
    > {
        let reply = (|| {
            acceptor::prepare_range(
                group_id,
                round(from_round)?,
                ballot(ballot_num, ballot_proposer)?,
            )
        })()
        .or_raise();
        let rows: Vec<_> = match reply {
            acceptor::RangeReply::Refused(promised) => vec![(
                "refused".to_string(),
                None,
                Some(promised.number as i64),
                Some(promised.proposer),
                None,
                None,
                None,
            )],
            acceptor::RangeReply::Granted(votes) => {
                std::iter::once(("granted".to_string(), None, None, None, None, None, None))
                    .chain(votes.into_iter().map(|(r, vote)| {
                        (
                            "vote".to_string(),
                            Some(r as i64),
                            Some(vote.ballot.number as i64),
                            Some(vote.ballot.proposer),
                            Some(vote.value.origin),
                            Some(vote.value.kind.as_str().to_string()),
                            vote.value.body,
                        )
                    }))
                    .collect()
            }
        };
        TableIterator::new(rows)
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn request_learn(
        group_id: &str,
        round_num: i64,
        value_origin: &str,
        value_kind: &str,
        value_body: Option<&str>,
    ) -> bool {
        (|| {
            let value = LogValue::from_columns(
                value_origin.to_string(),
                value_kind,
                value_body.map(str::to_string),
            )?;
            acceptor::learn(group_id, round(round_num)?, value)
        })()
        .or_raise();
        true
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn request_highest_round(group_id: &str, accepted_only: bool) -> i64 {
        acceptor::require_acceptor_of(group_id)
            .and_then(|()| store::highest_known_round(group_id, accepted_only))
            .or_raise() as i64
    }

    /// A leader's read index: this node's highest voted (or learned) round, and the highest
    /// ballot it promised for its range or for a round after `above_round` (the leader's applied
    /// round), so that the leader can tell whether anybody may have been choosing values over it.
    #[pg_extern(volatile, parallel_unsafe)]
    fn request_read_index(
        group_id: &str,
        above_round: i64,
    ) -> TableIterator<
        'static,
        (
            name!(highest_round, i64),
            name!(promised_num, Option<i64>),
            name!(promised_by, Option<String>),
        ),
    > {
        (|| {
            acceptor::require_acceptor_of(group_id)?;
            let highest = store::highest_known_round(group_id, true)?;
            let promise = store::highest_promise_above(group_id, round(above_round)?)?;
            Ok::<_, PaxosError>((
                highest as i64,
                promise.as_ref().map(|b| b.number as i64),
                promise.map(|b| b.proposer),
            ))
        })()
        .map(TableIterator::once)
        .or_raise()
    }

    /// A leader's lease request for `duration_ms`, for its range from `from_round` on (see
    /// `paxos::lease`), from a leader that learned every round through `learned_through`: whether
    /// it was granted, and this node's highest voted round.
    #[pg_extern(volatile, parallel_unsafe)]
    fn request_lease(
        group_id: &str,
        ballot_num: i64,
        ballot_proposer: &str,
        from_round: i64,
        duration_ms: i64,
        learned_through: default!(Option<i64>, "NULL"),
    ) -> TableIterator<'static, (name!(granted, bool), name!(highest_accepted_round, i64))> {
        (|| {
            let ballot = ballot(ballot_num, ballot_proposer)?;
            let millis = u64::try_from(duration_ms).map_err(|_| PaxosError::InvalidArgument {
                message: format!("lease duration {duration_ms} ms is negative"),
                hint: "Leaders ask for pg_paxos.lease_duration, which is never negative.",
            })?;
            let micros = millis.saturating_mul(1000);
            acceptor::request_lease(
                group_id,
                &ballot,
                round(from_round)?,
                learned_through.map(round).transpose()?,
                micros,
            )
        })()
        .map(|(granted, highest)| TableIterator::once((granted, highest as i64)))
        .or_raise()
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn request_log(
        group_id: &str,
        from_round: i64,
        to_round: i64,
    ) -> TableIterator<
        'static,
        (
            name!(round, i64),
            name!(value_origin, String),
            name!(value_kind, String),
            name!(value_body, Option<String>),
        ),
    > {
        let rows =
            store::log_range(group_id, from_round.max(0) as u64, to_round.max(0) as u64).or_raise();
        TableIterator::new(
            rows.into_iter()
                .map(|(r, v)| (r as i64, v.origin, v.kind.as_str().to_string(), v.body)),
        )
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn request_status(
        group_id: &str,
    ) -> TableIterator<
        'static,
        (
            name!(node_id, String),
            name!(highest_accepted_round, i64),
            name!(highest_learned_round, i64),
            name!(applied_round, Option<i64>),
            name!(compacted_through_round, Option<i64>),
            name!(diverged_round, Option<i64>),
            name!(diverged_error, Option<String>),
        ),
    > {
        (|| {
            // A node that lost its data reports so instead of rounds it no longer has.
            acceptor::require_acceptor_of(group_id)?;
            let accepted = store::highest_known_round(group_id, true)?;
            let learned = store::highest_learned(group_id)?;
            let applied = store::group(group_id)?.map(|g| g.applied_round as i64);
            // 0: never compacted.
            let compacted = Some(store::compacted_through(group_id)? as i64).filter(|&r| r > 0);
            let diverged = store::divergence(group_id)?;
            Ok((
                crate::guc::node_id(),
                accepted as i64,
                learned as i64,
                applied,
                compacted,
                diverged.as_ref().map(|(r, _)| *r as i64),
                diverged.map(|(_, e)| e),
            ))
        })()
        .map(TableIterator::once)
        .or_raise()
    }

    /// A member's insert sent to this node as the group's leader (see `paxos::forwarding`): the
    /// entry ran there on `base_round`; it runs here and is committed in this node's next batch.
    /// `outcome` is `chosen` (with the round, the entry's place in its batch, and whether the member
    /// keeps the rows it wrote or applies the log instead), `not_leading`, or `busy` (try again).
    #[pg_extern(volatile, parallel_unsafe)]
    fn request_forwarded_write(
        group_id: &str,
        base_round: i64,
        entry: &str,
    ) -> TableIterator<
        'static,
        (
            name!(outcome, String),
            name!(round, Option<i64>),
            name!(entry_index, Option<i32>),
            name!(member_keeps_rows, Option<bool>),
        ),
    > {
        (|| {
            let base = round(base_round)?;
            let statement = LoggedStatement::decode(entry)?;
            crate::intercept::write_forwarded(group_id, base, &statement)
        })()
        .map(|outcome| TableIterator::once(outcome.to_row()))
        .or_raise()
    }

    /// Records this node as an acceptor of `group_id`: a joining node calls it on itself, through a
    /// connection of its own (so that it is committed at once), right after its admission.
    #[pg_extern(volatile, parallel_unsafe)]
    fn serve_as_acceptor(group_id: &str) {
        store::serve_as_acceptor(group_id).or_raise()
    }

    #[pg_extern(stable, parallel_safe)]
    fn node_identity() -> String {
        group::node_identity().or_raise()
    }

    /// The membership changes of `member` recorded in this node's log, ascending: a node that
    /// cannot follow the log any more asks whether it was removed.
    #[pg_extern(stable, parallel_safe)]
    fn request_membership_changes(
        group_id: &str,
        member_connection_string: &str,
    ) -> TableIterator<'static, (name!(round, i64), name!(value_kind, String))> {
        let changes: Vec<_> = store::membership_changes(group_id, u64::MAX)
            .or_raise()
            .into_iter()
            .filter(|(_, _, member)| member == member_connection_string)
            .map(|(round, kind, _)| (round as i64, kind.as_str().to_string()))
            .collect();
        TableIterator::new(changes)
    }

    /// The token of the copy of pg_paxos the current admission of `member_connection_string`
    /// recorded (NULL: no member, or added without one); compare it with `node_identity()` on
    /// that node to tell a node that lost its data from one that did not finish joining.
    #[pg_extern(volatile, parallel_unsafe)]
    fn admitted_token(group_id: &str, member_connection_string: &str) -> Option<String> {
        group::admitted_copy(group_id, member_connection_string).or_raise()
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn admit_member(
        group_id: &str,
        member_connection_string: &str,
        member_token: default!(Option<&str>, "NULL"),
    ) -> i64 {
        group::admit(group_id, member_connection_string, member_token).or_raise() as i64
    }
}
