//! Node-local allocation of rounds to propose in. Backends of one node that append at the same time
//! claim different rounds instead of duelling for the same one; rounds then run in parallel, each
//! with its own Paxos instance. Claims are only hints for efficiency: two claims of one round (by
//! two nodes, or after the table wrapped) just make Paxos pick one winner, as it always does.

use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

/// Groups tracked per node; a further group shares a slot and only loses the hint.
const SLOTS: usize = 128;

#[derive(Copy, Clone)]
pub struct ClaimTable {
    /// Hash of the group id per slot (0: free).
    groups: [u64; SLOTS],
    /// The next round to hand out per slot.
    next: [u64; SLOTS],
}

impl ClaimTable {
    const fn new() -> Self {
        ClaimTable {
            groups: [0; SLOTS],
            next: [0; SLOTS],
        }
    }
}

// SAFETY: plain arrays of integers, no pointers.
unsafe impl PGRXSharedMemory for ClaimTable {}

static CLAIMS: PgLwLock<ClaimTable> = unsafe { PgLwLock::new(c"pg_paxos_round_claims") };

/// Set in the postmaster when the library is preloaded (inherited by every backend); without it
/// there is no shared memory and claims fall back to the lowest free round.
static READY: AtomicBool = AtomicBool::new(false);

/// Reserves the shared memory; call from `_PG_init`.
pub fn init() {
    // SAFETY: reads a flag the postmaster sets while loading preloaded libraries.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        pg_shmem_init!(CLAIMS = ClaimTable::new());
        READY.store(true, Ordering::Relaxed);
    }
}

/// FNV-1a, never 0 (0 marks a free slot).
pub fn group_key(group: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash | 1
}

/// The slot of `key` in an open-addressing table whose slot `i` holds key `key_at(i)` (0: free):
/// its own slot, else the first free one from its home slot on, else (table full) the home slot,
/// which the caller then takes over.
pub fn probe(slots: usize, key: u64, key_at: impl Fn(usize) -> u64) -> usize {
    let home = (key % slots as u64) as usize;
    (0..slots)
        .map(|i| (home + i) % slots)
        .find(|&s| key_at(s) == key || key_at(s) == 0)
        .unwrap_or(home)
}

/// A round to propose in for `group`: the lowest round not handed out yet that is at least `floor`
/// (the first round this node has not learned), and never `window` or more rounds past it.
pub fn claim(group: &str, floor: u64, window: u64) -> u64 {
    if !READY.load(Ordering::Relaxed) {
        return floor;
    }
    let key = group_key(group);
    let mut table = CLAIMS.exclusive();
    let slot = probe(SLOTS, key, |s| table.groups[s]);
    if table.groups[slot] != key {
        table.groups[slot] = key;
        table.next[slot] = 0;
    }
    let mut round = table.next[slot].max(floor);
    if round >= floor.saturating_add(window) {
        round = floor;
    }
    table.next[slot] = round + 1;
    round
}
