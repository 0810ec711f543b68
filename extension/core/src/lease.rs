//! Leader leases: an optional way for a leader to serve strong reads from its own state.
//!
//! An acceptor grants a lease only to the holder of its range promise, and only if no round of
//! that range promised a higher ballot ([`LeaseGrant::request`]), rounds whose chosen value the
//! leader or the acceptor knows excepted (no later proposal there can change it). Until the grant ends, it refuses
//! every phase 1 of another ballot that touches the range (rounds from the range's first on). Once
//! a majority granted, no other ballot collects a majority of promises in the range, so while the
//! lease runs every value chosen there is the leader's own, in a round it handed out. Rounds before
//! the range the leader must have learned, or learn before it reads: a value may still be chosen
//! there by a proposal begun earlier.
//!
//! Time is each node's monotonic clock, in any unit, injected by the caller. The one assumption is
//! on clock *rates*: no node's clock runs more than [`MAX_DRIFT_PERMILLE`] per mille faster than
//! another's. The acceptor counts its grant from when the request arrived; the leader counts its
//! lease from before it sent the request and shortens it by that bound ([`leader_lease_end`]), so
//! the leader's lease always ends before the grant of any acceptor that counted towards it.
//!
//! Grants live in memory only. An acceptor that restarts refuses every phase 1 and every lease for
//! one lease duration ([`LeaseGrant::after_restart`]): a grant it forgot may still be running.

use crate::acceptor::RangePromise;
use crate::ballot::Ballot;

/// The largest difference in clock rate between two nodes the lease tolerates, per mille.
pub const MAX_DRIFT_PERMILLE: u64 = 100;

/// The end of a lease requested at `sent_at` (leader clock) for `duration`, once a majority granted
/// it: `duration` less the drift allowance, so that it ends before any granting acceptor's grant.
pub fn leader_lease_end(sent_at: u64, duration: u64) -> u64 {
    sent_at + duration - duration * MAX_DRIFT_PERMILLE / 1000
}

/// A lease a leader holds: the ballot it was granted to and when it ends (leader clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderLease<B> {
    pub ballot: B,
    pub ends_at: u64,
}

impl<B: PartialEq> LeaderLease<B> {
    /// True while this lease lets the leadership of `ballot` read locally at `now`.
    pub fn covers(&self, ballot: &B, now: u64) -> bool {
        self.ballot == *ballot && now < self.ends_at
    }
}

/// One acceptor's lease state for one group. Volatile: see [`LeaseGrant::after_restart`].
/// `B` is the ballot as the caller stores it (a fixed-size copy in shared memory, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant<B = Ballot> {
    /// The current grant: the ballot it was given to, the first round of that ballot's range
    /// promise, and when the grant ends (acceptor clock).
    holder: Option<Holder<B>>,
    /// A holder whose grant was contested: it is never granted again (see [`LeaseGrant::request`]).
    contested: Option<B>,
    /// Until then this acceptor refuses every phase 1 and every lease (acceptor clock).
    quiet_until: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holder<B> {
    ballot: B,
    from: u64,
    until: u64,
}

impl<B> Default for LeaseGrant<B> {
    fn default() -> Self {
        LeaseGrant {
            holder: None,
            contested: None,
            quiet_until: 0,
        }
    }
}

impl<B: Clone + PartialEq> LeaseGrant<B> {
    /// The state of an acceptor that started at `now` and may have granted leases of up to
    /// `duration` before: it refuses all phase 1 and all leases until `now + duration`.
    pub fn after_restart(now: u64, duration: u64) -> Self {
        LeaseGrant {
            holder: None,
            contested: None,
            quiet_until: now.saturating_add(duration),
        }
    }

    /// The ballot holding a running grant at `now`.
    pub fn holder(&self, now: u64) -> Option<&B> {
        self.holder
            .as_ref()
            .filter(|h| now < h.until)
            .map(|h| &h.ballot)
    }

    /// The running grant at `now`: its holder and how long it still runs.
    pub fn running(&self, now: u64) -> Option<(&B, u64)> {
        self.holder
            .as_ref()
            .filter(|h| now < h.until)
            .map(|h| (&h.ballot, h.until - now))
    }

    /// The holder whose grant was contested, if any.
    pub fn contested(&self) -> Option<&B> {
        self.contested.as_ref()
    }

    /// How long this acceptor still keeps quiet after a restart at `now`.
    pub fn quiet_left(&self, now: u64) -> u64 {
        self.quiet_until.saturating_sub(now)
    }

    /// Whether a phase 1 with `ballot` whose rounds reach up to `highest_round` (`u64::MAX` for a
    /// range prepare) may go ahead at `now`. `Err` carries the ballot to report in the refusal. A
    /// refusal on behalf of a holder contests its grant: the grant ends at its term and is not
    /// renewed, so that the other proposer gets through then.
    pub fn admit_phase1(&mut self, ballot: &B, highest_round: u64, now: u64) -> Result<(), B> {
        if now < self.quiet_until {
            return Err(ballot.clone());
        }
        match self.holder.clone().filter(|h| now < h.until) {
            Some(h) if h.ballot != *ballot && highest_round >= h.from => {
                self.contested = Some(h.ballot.clone());
                Err(h.ballot)
            }
            _ => Ok(()),
        }
    }

    /// A lease request at `now` from `ballot` for `duration`. `range_from` is the first round of
    /// this acceptor's range promise when `ballot` holds it (see [`range_held_by`]). Granted when
    /// `ballot` holds the range promise, no slot in that range promised a higher ballot
    /// (`higher_slot_promise`: its proposer could still get a value chosen there without a new
    /// phase 1; slots of rounds known to be chosen do not count), this acceptor is not quiet after a restart, and `ballot`'s grant was never
    /// contested.
    pub fn request(
        &mut self,
        ballot: &B,
        range_from: Option<u64>,
        higher_slot_promise: bool,
        duration: u64,
        now: u64,
    ) -> bool {
        let Some(from) = range_from else {
            return false;
        };
        if higher_slot_promise || now < self.quiet_until || self.contested.as_ref() == Some(ballot)
        {
            return false;
        }
        if let Some(current) = self.holder(now) {
            if current != ballot {
                // Unreachable while the rules hold (a running grant refuses the phase 1 another
                // ballot needs to take the range), kept as a guard.
                return false;
            }
        }
        self.holder = Some(Holder {
            ballot: ballot.clone(),
            from,
            until: now.saturating_add(duration),
        });
        true
    }
}

/// The first round of `range` when `ballot` holds it: what [`LeaseGrant::request`] needs.
pub fn range_held_by(range: Option<&RangePromise>, ballot: &Ballot) -> Option<u64> {
    range.filter(|r| r.ballot == *ballot).map(|r| r.from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u64, p: &str) -> Ballot {
        Ballot::new(n, p)
    }

    fn range(ballot: Ballot) -> Option<u64> {
        range_held_by(
            Some(&RangePromise {
                from: 5,
                ballot: ballot.clone(),
            }),
            &ballot,
        )
    }

    #[test]
    fn a_grant_refuses_other_ballots_until_it_ends() {
        let mut grant = LeaseGrant::default();
        let leader = b(3, "l");
        assert!(grant.request(&leader, range(leader.clone()), false, 100, 10));
        assert_eq!(
            grant.admit_phase1(&leader, u64::MAX, 50),
            Ok(()),
            "the holder itself"
        );
        assert_eq!(
            grant.admit_phase1(&b(9, "x"), 4, 50),
            Ok(()),
            "before the range"
        );
        assert_eq!(grant.admit_phase1(&b(9, "x"), 5, 109), Err(leader.clone()));
        assert_eq!(
            grant.admit_phase1(&b(9, "x"), u64::MAX, 110),
            Ok(()),
            "ended"
        );
    }

    #[test]
    fn a_contested_holder_is_not_renewed() {
        let mut grant = LeaseGrant::default();
        let leader = b(3, "l");
        let promise = range(leader.clone());
        assert!(grant.request(&leader, promise, false, 100, 0));
        assert!(grant.request(&leader, promise, false, 100, 50), "renewed");
        assert!(grant.admit_phase1(&b(4, "x"), u64::MAX, 60).is_err());
        assert!(!grant.request(&leader, promise, false, 100, 70));
        assert!(
            !grant.request(&leader, promise, false, 100, 500),
            "never again under that ballot"
        );
        let next = b(5, "l");
        assert!(grant.request(&next, range(next.clone()), false, 100, 500));
    }

    #[test]
    fn only_the_range_holder_without_higher_slot_promises_is_granted() {
        let mut grant = LeaseGrant::default();
        let leader = b(3, "l");
        assert!(!grant.request(&leader, None, false, 100, 0));
        assert!(!grant.request(&leader, range_held_by(None, &leader), false, 100, 0));
        let other = RangePromise {
            from: 1,
            ballot: b(4, "y"),
        };
        assert!(!grant.request(&leader, range_held_by(Some(&other), &leader), false, 100, 0));
        assert!(!grant.request(&leader, range(leader.clone()), true, 100, 0));
        assert_eq!(grant.holder(0), None);
    }

    #[test]
    fn a_restarted_acceptor_is_quiet_for_one_lease() {
        let mut grant = LeaseGrant::after_restart(1000, 100);
        let leader = b(3, "l");
        assert!(grant.admit_phase1(&leader, 0, 1050).is_err());
        assert!(!grant.request(&leader, range(leader.clone()), false, 100, 1099));
        assert_eq!(grant.admit_phase1(&leader, 0, 1100), Ok(()));
        assert!(grant.request(&leader, range(leader.clone()), false, 100, 1100));
    }

    #[test]
    fn the_leader_lease_ends_before_any_grant_under_the_drift_bound() {
        // The request leaves at 0 on the leader's clock. The acceptor gets it later, on a clock up
        // to MAX_DRIFT_PERMILLE faster: its grant of 1000 ends after 1000/1.1 > 900 leader units.
        let end = leader_lease_end(0, 1000);
        assert_eq!(end, 900);
        let fastest_grant_end_in_leader_units = 1000 * 1000 / (1000 + MAX_DRIFT_PERMILLE);
        assert!(end <= fastest_grant_end_in_leader_units);
    }
}
