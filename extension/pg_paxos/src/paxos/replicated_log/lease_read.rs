//! Strong reads on a leader that holds a lease (see `paxos_core::lease` and `paxos::lease`).
//!
//! While the lease runs, no other node can get a value chosen in the leader's range, so the leader's
//! own log is complete up to now, but for its own rounds still in flight, whose writers have not
//! been answered yet: it applies what it learned before the first of those and reads, with no
//! round trip (unless that round is exposed: see `apply_for_read_as_leader`). Without a running
//! lease it falls back to the read index. Renewing the lease is a read index too: every acceptor
//! answers with its highest voted round.

use std::collections::BTreeSet;
use std::time::Duration;

use super::ReplicatedLog;
use crate::error::Result;
use crate::net::pool::{LinkError, Param};
use crate::net::rpc;
use crate::paxos::leadership::{self, LeaderBallot, LeaseCheck};
use crate::paxos::lease;
use crate::paxos::round::{self, Answers};
use crate::store;

/// Clears a renewal mark when the renewal fails on the way (another backend may then renew).
struct Renewal<'a> {
    group: &'a str,
    ballot: LeaderBallot,
    generation: u64,
    ended: bool,
}

impl Renewal<'_> {
    fn end(mut self, sent_at: u64, duration: u64, granted: bool) {
        self.ended = true;
        leadership::end_renewal(
            self.group,
            self.ballot,
            self.generation,
            sent_at,
            duration,
            granted,
        );
    }
}

impl Drop for Renewal<'_> {
    fn drop(&mut self) {
        if !self.ended {
            leadership::end_renewal(self.group, self.ballot, self.generation, 0, 0, false);
        }
    }
}

impl ReplicatedLog {
    /// A strong read's catch-up on this node while it leads, with leases on. `learned` and
    /// `accepted` are this node's highest learned and voted rounds, read just before (the latter
    /// only when known). True when it applied rounds.
    pub(super) fn read_under_lease(&self, learned: u64, accepted: Option<u64>) -> Result<bool> {
        let duration = lease::duration();
        let renew_for = self.timing.round_timeout.as_micros() as u64;
        let check = leadership::lease_check(self.id(), lease::now(), duration / 2, renew_for);
        match check {
            LeaseCheck::Local {
                ballot,
                claimed_through,
                generation,
            } => self.read_locally(ballot, generation, claimed_through, learned, accepted),
            LeaseCheck::Renew {
                ballot,
                from,
                generation,
                claimed_through,
                running,
            } => {
                let renewal = Renewal {
                    group: self.id(),
                    ballot,
                    generation,
                    ended: false,
                };
                // While the lease still runs, a renewal that cannot finish before it ends is of no
                // use: the read then goes on under the running lease.
                let deadline = running.map_or(self.timing.round_timeout, |micros| {
                    Duration::from_micros(micros).min(self.timing.round_timeout)
                });
                match self.renew_lease(renewal, from, learned, duration, deadline) {
                    Ok(top) => self.apply_for_read(top),
                    Err(_) if running.is_some() => {
                        self.read_locally(ballot, generation, claimed_through, learned, accepted)
                    }
                    Err(e) => Err(e),
                }
            }
            LeaseCheck::ReadIndex => self.apply_through_read_index(learned, accepted),
        }
    }

    /// Reads under the lease of leadership `ballot` once every round this leadership handed out
    /// (through `claimed_through`) is learned; otherwise, or when the lease ends meanwhile, falls
    /// back to the read index.
    fn read_locally(
        &self,
        ballot: LeaderBallot,
        generation: u64,
        claimed_through: u64,
        learned: u64,
        accepted: Option<u64>,
    ) -> Result<bool> {
        // `learned` may predate a claim made just before the lease check: look once more.
        let learned = if learned >= claimed_through {
            learned
        } else {
            store::highest_learned(self.id())?
        };
        let applied = if learned < claimed_through {
            // A round of this leader is in flight. Under the lease no other node got a value
            // chosen in its range, so, as after a read index that no higher promise challenged,
            // the read applies through the round before the first one in flight, without waiting
            // (see `apply_for_read_as_leader`).
            self.apply_for_read_as_leader(claimed_through)?
        } else {
            // Fills any gap below `learned` too (a round before the range nobody recorded here).
            self.apply_for_read(learned)?
        };
        if leadership::lease_still_covers(self.id(), ballot, generation, lease::now()) {
            return Ok(applied);
        }
        // The lease ran out while applying, or a membership change was learned.
        Ok(self.apply_through_read_index(learned, accepted)? || applied)
    }

    /// Asks every member for a lease of `duration` µs for this node's leadership (of rounds from
    /// `from` on) and returns the read index their answers give. The lease holds once a majority
    /// of every membership granted it; it is counted from before the request left. Answers are
    /// awaited until `deadline`.
    fn renew_lease(
        &self,
        renewal: Renewal<'_>,
        from: u64,
        learned: u64,
        duration: u64,
        deadline: Duration,
    ) -> Result<u64> {
        let quorum = self.quorum_after(learned)?;
        // Every member, this node included, answers in a transaction of its own: the grant must
        // be ordered against phase 1 requests by the acceptor lock, which this read must not hold.
        let links = self.links(&quorum.members)?;
        let ballot = leadership::ballot(renewal.ballot);
        let params = vec![
            Param::Text(Some(self.id().to_string())),
            Param::Int(ballot.number as i64),
            Param::Text(Some(ballot.proposer.clone())),
            Param::Int(from as i64),
            Param::Int((duration / 1000) as i64),
            // Every round through the applied one is learned here: slots promised higher there
            // (rounds another member took with both phases) no longer keep a grant back.
            Param::Int(self.group.applied_round as i64),
        ];
        let sent_at = lease::now();
        // A read index needs answers; the lease needs grants, worth waiting for a little longer.
        let granted_by_enough = |answers: &Answers| {
            let granted: BTreeSet<usize> = answers
                .iter()
                .filter(|(_, a)| matches!(a.as_ref().map(|rows| decode(rows)), Ok(Ok((true, _)))))
                .map(|(i, _)| *i)
                .collect();
            quorum.enough(&granted)
        };
        let answers = self.net.block_on(round::gather_hoping(
            &links,
            rpc::REQUEST_LEASE,
            params,
            round::Ask::SkippingDown,
            &|answered| quorum.enough(answered),
            &granted_by_enough,
            deadline,
        ));
        self.net.emit_warnings();
        let mut answered = BTreeSet::new();
        let mut granted = BTreeSet::new();
        let mut highest = learned;
        let mut last_error = None;
        for (i, answer) in answers {
            match answer.and_then(|rows| decode(&rows)) {
                Ok((yes, round)) => {
                    answered.insert(i);
                    if yes {
                        granted.insert(i);
                    }
                    highest = highest.max(round);
                }
                Err(e) => last_error = Some(format!("{}: {}", links[i].label, e.message())),
            }
        }
        renewal.end(sent_at, duration, quorum.enough(&granted));
        if !quorum.enough(&answered) {
            return Err(quorum.no_majority(
                self.id(),
                "renew the leader lease",
                &answered,
                last_error,
            ));
        }
        Ok(highest)
    }
}

/// A member's answer to a lease request: granted or not, and its highest voted round.
fn decode(rows: &[tokio_postgres::Row]) -> std::result::Result<(bool, u64), LinkError> {
    let row = rows
        .first()
        .ok_or_else(|| LinkError::Remote("empty reply".into()))?;
    let granted: bool = row.try_get(0).map_err(rpc::protocol)?;
    let round: i64 = row.try_get(1).map_err(rpc::protocol)?;
    Ok((granted, round.max(0) as u64))
}
