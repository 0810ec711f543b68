//! This node's Multi-Paxos leadership per group, shared by all its backends in shared memory: the
//! ballot a campaign won, and which rounds were handed out under it (see
//! `paxos_core::Leadership`: each round once, or two values could be chosen under one ballot).
//!
//! Nothing here is trusted for safety beyond that rule: a stale leadership only costs refused
//! accepts, after which the backend that met the refusal gives the leadership up.
//!
//! With leases on, the slot also keeps the leader lease a majority granted (see `lease`): strong
//! reads on the leader then read locally while it runs.

use std::sync::atomic::{AtomicBool, Ordering};

use paxos_core::lease::leader_lease_end;
use paxos_core::{Ballot, LeaderLease, Leadership};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::guc;
use crate::paxos::round_claims;

/// Groups tracked per node; a further group shares a slot (and only loses leadership more often).
const SLOTS: usize = 64;

/// A leader ballot in shared memory: its number and the campaign's epoch, from which the proposer
/// id is rebuilt (see [`proposer_id`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LeaderBallot {
    pub number: u64,
    pub epoch: u64,
}

#[derive(Copy, Clone)]
struct Slot {
    /// Hash of the group id (0: free).
    group: u64,
    held: Option<Leadership<LeaderBallot>>,
    /// A campaign of this node for the group is running (others wait for it or go without).
    campaigning: bool,
    /// The highest ballot number this node saw for the group: campaigns start above it.
    highest_number: u64,
    /// The lease a majority granted to a leadership of this node, and the membership generation
    /// it was asked under (see [`membership_changed`]).
    lease: Option<LeaderLease<LeaderBallot>>,
    lease_generation: u64,
    /// A backend renews the lease until then (µs on `lease::now`); the others do not meanwhile.
    renewing_until: u64,
    /// Strong reads served under a lease since this slot was taken (for status).
    lease_reads: u64,
    /// Rounds through this one may be known as chosen outside this node's log (see
    /// [`expose_through`]).
    exposed_through: u64,
}

impl Slot {
    /// A slot of group key `group` (0: free) that knows nothing yet.
    const fn vacant(group: u64) -> Slot {
        Slot {
            group,
            held: None,
            campaigning: false,
            highest_number: 0,
            lease: None,
            lease_generation: 0,
            renewing_until: 0,
            lease_reads: 0,
            exposed_through: 0,
        }
    }
}

impl Slot {
    /// The lease that lets the leadership held here read locally at `now`: granted to that
    /// leadership, still running, and asked under the current membership `generation`.
    fn running_lease(&self, generation: u64, now: u64) -> Option<LeaderLease<LeaderBallot>> {
        let held = self.held?;
        self.lease
            .filter(|l| l.covers(&held.ballot, now) && self.lease_generation == generation)
    }
}

/// Node-wide counters beside the slots.
#[derive(Copy, Clone)]
struct Counters {
    next_epoch: u64,
    /// Bumped whenever this node records a membership change: a lease is only good for the
    /// memberships it was granted under.
    membership_generation: u64,
}

#[derive(Copy, Clone)]
pub struct LeaderTable {
    slots: [Slot; SLOTS],
    counters: Counters,
}

// SAFETY: plain integers and flags, no pointers.
unsafe impl PGRXSharedMemory for LeaderTable {}

static TABLE: PgLwLock<LeaderTable> = unsafe { PgLwLock::new(c"pg_paxos_leadership") };
static READY: AtomicBool = AtomicBool::new(false);

/// Reserves the shared memory; call from `_PG_init`.
pub fn init() {
    // SAFETY: reads a flag the postmaster sets while loading preloaded libraries.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        pg_shmem_init!(
            TABLE = LeaderTable {
                slots: [Slot::vacant(0); SLOTS],
                counters: Counters {
                    next_epoch: 1,
                    membership_generation: 0,
                },
            }
        );
        READY.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` on the slot of `group` under the table's exclusive lock.
fn with_slot<R>(group: &str, f: impl FnOnce(&mut Slot, &mut Counters) -> R) -> Option<R> {
    if !READY.load(Ordering::Relaxed) {
        return None;
    }
    let key = round_claims::group_key(group);
    let mut table = TABLE.exclusive();
    let index = round_claims::probe(SLOTS, key, |s| table.slots[s].group);
    let table = &mut *table;
    let slot = &mut table.slots[index];
    if slot.group != key {
        *slot = Slot::vacant(key);
    }
    Some(f(slot, &mut table.counters))
}

/// The proposer id of this node's campaign `epoch`: unique across nodes and restarts.
pub fn proposer_id(epoch: u64) -> String {
    // SAFETY: a plain read of the postmaster's start time, set before any backend starts.
    let started = unsafe { pgrx::pg_sys::PgStartTime };
    format!("{}/{started:x}/L{epoch}", guc::node_id())
}

pub fn ballot(b: LeaderBallot) -> Ballot {
    Ballot::new(b.number, proposer_id(b.epoch))
}

/// The leader ballot to propose `round` of `group` with in phase 2 only, if this node leads the
/// group and has not handed the round out before.
pub fn claim(group: &str, round: u64) -> Option<LeaderBallot> {
    with_slot(group, |slot, _| {
        slot.held.as_mut().and_then(|l| l.claim(round))
    })
    .flatten()
}

/// The lowest round from `floor` on, and below `floor + window`, that this node's leadership of
/// `group` has not handed out yet, with the ballot to propose it with: backends that append at the
/// same time take consecutive rounds, each in phase 2 only.
pub fn claim_next(group: &str, floor: u64, window: u64) -> Option<(u64, LeaderBallot)> {
    with_slot(group, |slot, _| {
        let held = slot.held.as_mut()?;
        let round = held.next_free().max(floor);
        if round >= floor.saturating_add(window) {
            return None;
        }
        held.claim(round).map(|ballot| (round, ballot))
    })
    .flatten()
}

/// This node's leadership of `group`, if it holds one: the ballot and the lowest round it can still
/// propose with phase 2 only.
pub fn current(group: &str) -> Option<(LeaderBallot, u64, u64)> {
    with_slot(group, |slot, _| {
        slot.held.map(|l| (l.ballot, l.from, l.next_free()))
    })
    .flatten()
}

/// True while this node holds leadership of `group`, as far as it knows: it has one, and its own
/// acceptor promised nothing higher since (a newer leader's campaign reaches this node's acceptor
/// too, unless this node was cut off or paused then; such a stale leadership only costs a refused
/// accept). A leadership found stale here is given up.
pub fn holds(group: &str, own_range_promise: Option<&Ballot>) -> bool {
    let Some((held, _, _)) = current(group) else {
        return false;
    };
    let ours = ballot(held);
    if own_range_promise.is_some_and(|promised| *promised > ours) {
        relinquish(group, held, own_range_promise.map_or(0, |p| p.number));
        return false;
    }
    true
}

/// This node's campaign for a group, while it runs: other backends of the node do not campaign
/// meanwhile. Ended by [`Campaigning::end`], or on drop (an error or a cancel on the way) as lost.
pub struct Campaigning {
    group: String,
    ballot: LeaderBallot,
    ended: bool,
}

impl Campaigning {
    /// Starts a campaign for `group` unless one runs already, with a ballot above every number
    /// seen so far (and `at_least`).
    pub fn begin(group: &str, at_least: u64) -> Option<Campaigning> {
        let ballot = with_slot(group, |slot, counters| {
            if slot.campaigning {
                return None;
            }
            slot.campaigning = true;
            slot.highest_number = slot.highest_number.max(at_least) + 1;
            counters.next_epoch += 1;
            Some(LeaderBallot {
                number: slot.highest_number,
                epoch: counters.next_epoch,
            })
        })
        .flatten()?;
        Some(Campaigning {
            group: group.to_string(),
            ballot,
            ended: false,
        })
    }

    pub fn ballot(&self) -> LeaderBallot {
        self.ballot
    }

    /// `won` becomes this node's leadership (unless a later ballot of this node holds it already);
    /// `highest_number` is the highest ballot number the campaign saw.
    pub fn end(mut self, won: Option<Leadership<LeaderBallot>>, highest_number: u64) {
        self.ended = true;
        with_slot(&self.group, |slot, _| {
            slot.campaigning = false;
            slot.highest_number = slot.highest_number.max(highest_number);
            if let Some(won) = won {
                if slot
                    .held
                    .is_none_or(|h| h.ballot.number < won.ballot.number)
                {
                    slot.held = Some(won);
                }
            }
        });
    }
}

impl Drop for Campaigning {
    fn drop(&mut self) {
        if !self.ended {
            with_slot(&self.group, |slot, _| slot.campaigning = false);
        }
    }
}

/// A refusal showed that `ballot`'s leadership is over (a number up to `seen` is taken): give it
/// up, unless a newer campaign of this node replaced it already.
pub fn relinquish(group: &str, ballot: LeaderBallot, seen: u64) {
    with_slot(group, |slot, _| {
        slot.highest_number = slot.highest_number.max(seen);
        if slot.held.is_some_and(|h| h.ballot == ballot) {
            slot.held = None;
        }
    });
}

/// Rounds of `group` through `round` may be known as chosen outside this node's log before this
/// node records them: a backend found a value chosen there and its learn messages may have left
/// (call before they do), or a campaign recovered votes there (call before the leadership is
/// held). A strong read on the leader never treats such a round as one still in flight (see
/// `ReplicatedLog::apply_for_read_as_leader`). Only ever raised.
pub fn expose_through(group: &str, round: u64) {
    with_slot(group, |slot, _| {
        slot.exposed_through = slot.exposed_through.max(round);
    });
}

/// See [`expose_through`]; without shared memory, every round.
pub fn exposed_through(group: &str) -> u64 {
    with_slot(group, |slot, _| slot.exposed_through).unwrap_or(u64::MAX)
}

/// What a strong read on this node may do with the lease of `group` (see [`lease_check`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LeaseCheck {
    /// Read locally once every round through `claimed_through` (the last round this leadership
    /// handed out) is learned, and [`lease_still_covers`] holds after applying them.
    Local {
        ballot: LeaderBallot,
        claimed_through: u64,
        generation: u64,
    },
    /// This backend renews the lease (its request doubles as the read index); end with
    /// [`end_renewal`]. `running` is set when the lease still runs, for that many µs: should the
    /// renewal fail, the read may still go on locally, as in `Local`.
    Renew {
        ballot: LeaderBallot,
        from: u64,
        generation: u64,
        claimed_through: u64,
        running: Option<u64>,
    },
    /// No lease to use and another backend renews it: use the read index.
    ReadIndex,
}

/// The lease of this node's leadership of `group` at `now`: local while it runs for more than
/// `renew_within` µs (or another backend renews it), renewed by this backend when it runs out
/// sooner or is gone. A renewal is left to one backend for `renew_for` µs.
pub fn lease_check(group: &str, now: u64, renew_within: u64, renew_for: u64) -> LeaseCheck {
    with_slot(group, |slot, counters| {
        let Some(held) = slot.held else {
            return LeaseCheck::ReadIndex;
        };
        let generation = counters.membership_generation;
        let running = slot.running_lease(generation, now);
        let renewing = now < slot.renewing_until;
        let claimed_through = held.next_free().saturating_sub(1);
        match running {
            Some(lease) if renewing || lease.ends_at - now > renew_within => LeaseCheck::Local {
                ballot: held.ballot,
                claimed_through,
                generation,
            },
            None if renewing => LeaseCheck::ReadIndex,
            _ => {
                slot.renewing_until = now.saturating_add(renew_for);
                LeaseCheck::Renew {
                    ballot: held.ballot,
                    from: held.from,
                    generation,
                    claimed_through,
                    running: running.map(|l| l.ends_at - now),
                }
            }
        }
    })
    .unwrap_or(LeaseCheck::ReadIndex)
}

/// True while the lease of leadership `ballot`, under membership `generation`, still runs at
/// `now`: a strong read then goes on under it (and is counted).
pub fn lease_still_covers(group: &str, ballot: LeaderBallot, generation: u64, now: u64) -> bool {
    with_slot(group, |slot, counters| {
        let covers = counters.membership_generation == generation
            && slot
                .running_lease(generation, now)
                .is_some_and(|l| l.ballot == ballot);
        slot.lease_reads += u64::from(covers);
        covers
    })
    .unwrap_or(false)
}

/// How many strong reads on this node went under a lease for `group` (since the node started).
pub fn lease_reads(group: &str) -> u64 {
    with_slot(group, |slot, _| slot.lease_reads).unwrap_or(0)
}

/// Ends a renewal begun by [`lease_check`]: when a majority `granted` the request sent at
/// `sent_at` for `duration` µs, and the leadership and memberships are still those it was asked
/// for, the lease runs until `paxos_core::lease::leader_lease_end`.
pub fn end_renewal(
    group: &str,
    ballot: LeaderBallot,
    generation: u64,
    sent_at: u64,
    duration: u64,
    granted: bool,
) {
    with_slot(group, |slot, counters| {
        slot.renewing_until = 0;
        if granted
            && slot.held.is_some_and(|h| h.ballot == ballot)
            && counters.membership_generation == generation
        {
            slot.lease = Some(LeaderLease {
                ballot,
                ends_at: leader_lease_end(sent_at, duration),
            });
            slot.lease_generation = generation;
        }
    });
}

/// How long the lease of this node's leadership of `group` still runs at `now`, if it does.
pub fn lease_left(group: &str, now: u64) -> Option<u64> {
    with_slot(group, |slot, counters| {
        slot.running_lease(counters.membership_generation, now)
            .map(|l| l.ends_at - now)
    })
    .flatten()
}

/// This node recorded a membership change: every lease it holds was granted for other
/// memberships and is no longer used.
pub fn membership_changed() {
    if !READY.load(Ordering::Relaxed) {
        return;
    }
    TABLE.exclusive().counters.membership_generation += 1;
}
