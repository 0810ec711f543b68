//! Leader leases, this node's acceptor side: the grants it gave, per group, in shared memory (see
//! `paxos_core::lease` for the rules and why they are safe). The node's own lease as a leader is
//! kept with its leadership (see `leadership`).
//!
//! Grants are volatile on purpose: shared memory starts empty after every postmaster start or
//! crash restart, and a group first seen after that keeps quiet for one lease (no promise, no
//! grant), since a grant given before may still run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use paxos_core::{Ballot, LeaseGrant};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::guc;
use crate::paxos::round_claims;

/// Groups tracked per node. A group whose slot is taken over forgets its grant, and keeps quiet
/// for one lease like after a restart.
const SLOTS: usize = 64;
/// Longest proposer id kept; leader ballots are far shorter (node id, start time, epoch).
const PROPOSER_BYTES: usize = 120;

/// A ballot in shared memory. A proposer id too long to keep is stored as `TOO_LONG`, which
/// equals no grant holder: such a ballot is never granted a lease.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StoredBallot {
    number: u64,
    len: u8,
    proposer: [u8; PROPOSER_BYTES],
}

const TOO_LONG: u8 = u8::MAX;

impl StoredBallot {
    fn new(ballot: &Ballot) -> StoredBallot {
        let bytes = ballot.proposer.as_bytes();
        let mut proposer = [0u8; PROPOSER_BYTES];
        let len = if bytes.len() <= PROPOSER_BYTES {
            proposer[..bytes.len()].copy_from_slice(bytes);
            bytes.len() as u8
        } else {
            TOO_LONG
        };
        StoredBallot {
            number: ballot.number,
            len,
            proposer,
        }
    }

    fn fits(&self) -> bool {
        self.len != TOO_LONG
    }

    fn ballot(&self) -> Ballot {
        let len = usize::from(self.len).min(PROPOSER_BYTES);
        Ballot::new(
            self.number,
            String::from_utf8_lossy(&self.proposer[..len]).into_owned(),
        )
    }
}

#[derive(Copy, Clone)]
struct Slot {
    /// Hash of the group id (0: free).
    group: u64,
    grant: LeaseGrant<StoredBallot>,
}

#[derive(Copy, Clone)]
pub struct GrantTable {
    slots: [Slot; SLOTS],
    /// When this shared memory was first used (µs on [`now`]; 0: not yet): a group's quiet time
    /// after a restart counts from here.
    first_use: u64,
    /// A slot was taken over: a group seen again counts its quiet time from then.
    evicted: bool,
}

// SAFETY: plain integers and byte arrays, no pointers.
unsafe impl PGRXSharedMemory for GrantTable {}

static TABLE: PgLwLock<GrantTable> = unsafe { PgLwLock::new(c"pg_paxos_lease_grants") };
static READY: AtomicBool = AtomicBool::new(false);

/// The postmaster's reference instant, inherited by every backend it forks, so that [`now`] is one
/// clock for all processes of the node (CLOCK_MONOTONIC underneath).
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Reserves the shared memory and fixes the clock's origin; call from `_PG_init`.
pub fn init() {
    EPOCH.get_or_init(Instant::now);
    // SAFETY: reads a flag the postmaster sets while loading preloaded libraries.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        pg_shmem_init!(
            TABLE = GrantTable {
                slots: [Slot {
                    group: 0,
                    grant: LeaseGrant::default(),
                }; SLOTS],
                first_use: 0,
                evicted: false,
            }
        );
        READY.store(true, Ordering::Relaxed);
    }
}

/// The node's monotonic clock in microseconds (never 0).
pub fn now() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

/// The configured lease length in microseconds (0: leases are off).
pub fn duration() -> u64 {
    guc::millis(&guc::LEASE_DURATION_MS) * 1000
}

/// True when this node asks for leases as a leader.
pub fn enabled() -> bool {
    READY.load(Ordering::Relaxed) && duration() > 0
}

/// Runs `f` on the grant of `group` under the table's exclusive lock. A group without a slot gets
/// one that keeps quiet for one lease from the table's first use (or from now, after a slot was
/// taken over), when leases are on.
fn with_grant<R>(
    group: &str,
    f: impl FnOnce(&mut LeaseGrant<StoredBallot>, u64) -> R,
) -> Option<R> {
    if !READY.load(Ordering::Relaxed) {
        return None;
    }
    let key = round_claims::group_key(group);
    let now = now();
    let mut table = TABLE.exclusive();
    if table.first_use == 0 {
        table.first_use = now;
    }
    let index = round_claims::probe(SLOTS, key, |s| table.slots[s].group);
    if table.slots[index].group != key {
        let taken_over = table.slots[index].group != 0;
        table.evicted |= taken_over;
        let since = if table.evicted { now } else { table.first_use };
        table.slots[index] = Slot {
            group: key,
            grant: LeaseGrant::after_restart(since, duration()),
        };
    }
    Some(f(&mut table.slots[index].grant, now))
}

/// Whether this acceptor may answer a phase 1 of `ballot` reaching up to `highest_round`
/// (`u64::MAX` for a range prepare); `Err` holds the ballot to refuse it with. Call under the acceptor lock
/// (see `store::lock_acceptor`), which orders it against [`grant`].
pub fn admit_phase1(group: &str, ballot: &Ballot, highest_round: u64) -> Result<(), Ballot> {
    let stored = StoredBallot::new(ballot);
    with_grant(group, |grant, now| {
        grant
            .admit_phase1(&stored, highest_round, now)
            .map_err(|b| b.ballot())
    })
    .unwrap_or(Ok(()))
}

/// Answers a lease request of `ballot` for `requested` µs (see `LeaseGrant::request`). Refused
/// when leases are off here, or the request asks for more than this node's own setting (its quiet
/// time after a restart would not cover such a grant). Call under the acceptor lock taken alone.
pub fn grant(
    group: &str,
    ballot: &Ballot,
    range_from: Option<u64>,
    higher_slot_promise: bool,
    requested: u64,
) -> bool {
    let own = duration();
    let stored = StoredBallot::new(ballot);
    if own == 0 || requested == 0 || requested > own || !stored.fits() {
        return false;
    }
    with_grant(group, |grant, now| {
        grant.request(&stored, range_from, higher_slot_promise, requested, now)
    })
    .unwrap_or(false)
}

/// This acceptor's lease state for `group`, for status: the holder of a running grant and the
/// µs it still runs, the contested holder, and the µs of quiet left after a restart.
pub struct GrantStatus {
    pub holder: Option<(Ballot, u64)>,
    pub contested: Option<Ballot>,
    pub quiet_left: u64,
}

pub fn grant_status(group: &str) -> Option<GrantStatus> {
    with_grant(group, |grant, now| GrantStatus {
        holder: grant.running(now).map(|(b, left)| (b.ballot(), left)),
        contested: grant.contested().map(StoredBallot::ballot),
        quiet_left: grant.quiet_left(now),
    })
}
