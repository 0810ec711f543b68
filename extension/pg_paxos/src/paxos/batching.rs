//! Group commit: blind inserts of concurrent transactions on this node share one round.
//!
//! A transaction whose writes are all blind inserts (see `intercept::planner::is_blind_insert`)
//! joins this node's commit chain for its group (see `paxos_core::CommitChain`) instead of
//! locking the group alone. At COMMIT it queues its entry in shared memory and waits. The first
//! waiting transaction that finds no batch in flight proposes the queued entries of its epoch as
//! one value in the chain's next round, and hands each member its outcome: the round and its
//! place in the batch, or the error. Each member then records its place (`store::mark_batched`)
//! in its own transaction, so applying the batch later skips what took effect here already.
//!
//! With `pg_paxos.batches_in_flight = 2`, two batches may be in flight per group (see
//! `paxos_core::commit_chain`; the default is one at a time): a second one goes in the round right
//! after the first, naming the first's value as the one that round must hold.
//! If another value wins the first's round, the second is void on every node, so no later round
//! of the chain takes effect while an earlier one holds a foreign value. The second batch's members
//! learn their outcome only once the first's is known.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use paxos_core::commit_chain::{outcome_after, Resolution, PIPELINE};
use paxos_core::CommitChain;
use paxos_model::entries::{Batch, LoggedStatement};
use paxos_model::value::{LogValue, ValueKind};
use pgrx::pg_sys;
use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::error::{PaxosError, Result};
use crate::paxos::leadership::{self, LeaderBallot};
use crate::paxos::replicated_log::{new_value, Record, ReplicatedLog};
use crate::paxos::round_claims;

/// Groups with batched writes at the same time; a further group writes without batching.
const GROUPS: usize = 4;
/// Transactions queued per group at a time; more wait for a free place.
const QUEUE: usize = 64;
/// A queued entry's bytes in shared memory; a longer one stays with its transaction, which then
/// proposes it itself (with whatever else is queued).
const ENTRY_BYTES: usize = 1536;
const MESSAGE_BYTES: usize = 240;
/// A batch value's origin, kept while it is in flight for the batch after it to name; a longer
/// one (a very long node id) only means no batch goes after it while it is in flight.
const ORIGIN_BYTES: usize = 192;
/// Outcomes of recent batch rounds kept for the batches after them.
const RESOLVED: usize = 4;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    Free,
    Waiting,
    Proposing,
    Chosen,
    Failed,
}

#[derive(Copy, Clone)]
struct QueuedWrite {
    state: State,
    /// Tells this place's owner apart from earlier ones.
    ticket: u64,
    epoch: u64,
    procno: i32,
    /// The owner gave up waiting while its entry was being proposed.
    abandoned: bool,
    /// The entry did not fit: only its owner can propose it.
    kept_by_owner: bool,
    len: usize,
    body: [u8; ENTRY_BYTES],
    round: u64,
    index: u32,
    sqlstate: PgSqlErrorCode,
    message_len: usize,
    message: [u8; MESSAGE_BYTES],
}

impl QueuedWrite {
    const FREE: QueuedWrite = QueuedWrite {
        state: State::Free,
        ticket: 0,
        epoch: 0,
        procno: -1,
        abandoned: false,
        kept_by_owner: false,
        len: 0,
        body: [0; ENTRY_BYTES],
        round: 0,
        index: 0,
        sqlstate: PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        message_len: 0,
        message: [0; MESSAGE_BYTES],
    };

    fn fail(&mut self, error: &PaxosError) {
        let text = error.to_string();
        let mut len = text.len().min(MESSAGE_BYTES);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        self.message[..len].copy_from_slice(&text.as_bytes()[..len]);
        self.message_len = len;
        self.sqlstate = error.sqlstate();
        self.state = State::Failed;
    }
}

/// A batch being proposed.
#[derive(Copy, Clone)]
struct Flight {
    active: bool,
    round: u64,
    epoch: u64,
    /// Its round was handed out by this node's leadership (phase 2 only, in round order).
    claimed: bool,
    origin_len: usize,
    origin: [u8; ORIGIN_BYTES],
}

impl Flight {
    const IDLE: Flight = Flight {
        active: false,
        round: 0,
        epoch: 0,
        claimed: false,
        origin_len: 0,
        origin: [0; ORIGIN_BYTES],
    };

    fn origin(&self) -> Option<String> {
        (self.origin_len > 0)
            .then(|| String::from_utf8_lossy(&self.origin[..self.origin_len]).into_owned())
    }
}

#[derive(Copy, Clone)]
struct GroupQueue {
    /// Hash of the group id (0: free).
    group: u64,
    chain: CommitChain,
    flights: [Flight; PIPELINE],
    /// (round, outcome) of the batches that ended last, for the batch proposed after each.
    resolved: [(u64, Resolution); RESOLVED],
    next_resolved: usize,
    writes: [QueuedWrite; QUEUE],
    /// Inserts of other members this node committed in its batches as leader, and inserts of
    /// this node that a leader committed (see `paxos::forwarding`), since the queue was set up.
    forwarded_in: u64,
    forwarded_out: u64,
    /// Batches proposed while the one before was in flight, and those of them found void.
    pipelined: u64,
    void: u64,
}

impl GroupQueue {
    const VACANT: GroupQueue = GroupQueue {
        group: 0,
        chain: CommitChain::new(),
        flights: [Flight::IDLE; PIPELINE],
        resolved: [(0, Resolution::Unknown); RESOLVED],
        next_resolved: 0,
        writes: [QueuedWrite::FREE; QUEUE],
        forwarded_in: 0,
        forwarded_out: 0,
        pipelined: 0,
        void: 0,
    };

    fn idle(&self) -> bool {
        !self.proposing() && self.writes.iter().all(|w| w.state == State::Free)
    }

    fn proposing(&self) -> bool {
        self.flights.iter().any(|f| f.active)
    }

    /// A batch ended: frees its place and keeps its outcome for the batch after it.
    fn land(&mut self, slot: usize, round: u64, resolution: Resolution) {
        self.flights[slot] = Flight::IDLE;
        self.resolved[self.next_resolved] = (round, resolution);
        self.next_resolved = (self.next_resolved + 1) % RESOLVED;
    }

    fn resolution_of(&self, round: u64) -> Option<Resolution> {
        self.resolved
            .iter()
            .find(|(r, _)| *r == round)
            .map(|(_, resolution)| *resolution)
    }

    /// Owners to wake: every one with an entry here (one of them proposes the next batch).
    fn waiting_procs(&self) -> Vec<i32> {
        self.writes
            .iter()
            .filter(|w| w.state != State::Free)
            .map(|w| w.procno)
            .collect()
    }
}

#[derive(Copy, Clone)]
pub struct BatchTable {
    groups: [GroupQueue; GROUPS],
    next_ticket: u64,
}

// SAFETY: plain integers, flags and byte arrays, no pointers.
unsafe impl PGRXSharedMemory for BatchTable {}

static TABLE: PgLwLock<BatchTable> = unsafe { PgLwLock::new(c"pg_paxos_batches") };
static READY: AtomicBool = AtomicBool::new(false);

/// Reserves the shared memory; call from `_PG_init`.
pub fn init() {
    // SAFETY: reads a flag the postmaster sets while loading preloaded libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        pg_shmem_init!(
            TABLE = BatchTable {
                groups: [GroupQueue::VACANT; GROUPS],
                next_ticket: 1,
            }
        );
        READY.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` on the queue of `group` under the table's exclusive lock, then wakes the processes
/// `f` names. `None` when the group has no queue and none is free.
fn with_queue<R>(
    group: &str,
    f: impl FnOnce(&mut GroupQueue, &mut u64) -> (R, Vec<i32>),
) -> Option<R> {
    if !READY.load(Ordering::Relaxed) {
        return None;
    }
    let key = round_claims::group_key(group);
    let (out, wake) = {
        let mut table = TABLE.exclusive();
        let index = round_claims::probe(GROUPS, key, |s| table.groups[s].group);
        let table = &mut *table;
        let queue = &mut table.groups[index];
        if queue.group != key {
            if !queue.idle() {
                return None;
            }
            *queue = GroupQueue::VACANT;
            queue.group = key;
        }
        // Epochs come from the table's counter, so no epoch is ever reused for a group, even
        // after its queue was handed to another group and back.
        f(queue, &mut table.next_ticket)
    };
    for procno in wake {
        wake_process(procno);
    }
    Some(out)
}

/// Runs `f` on the queue of `group` under the table's shared lock; `None` when the group has no
/// queue.
fn read_queue<R>(group: &str, f: impl FnOnce(&GroupQueue) -> R) -> Option<R> {
    if !READY.load(Ordering::Relaxed) {
        return None;
    }
    let key = round_claims::group_key(group);
    let table = TABLE.share();
    let index = round_claims::probe(GROUPS, key, |s| table.groups[s].group);
    let queue = &table.groups[index];
    (queue.group == key).then(|| f(queue))
}

fn wake_process(procno: i32) {
    if procno < 0 {
        return;
    }
    // SAFETY: procno was read from a live backend's PGPROC; setting a latch of a process that
    // exited since is harmless (the slot's latch belongs to whoever uses it next).
    unsafe {
        let proc_ = (*pg_sys::ProcGlobal).allProcs.add(procno as usize);
        pg_sys::SetLatch(&mut (*proc_).procLatch);
    }
}

/// A transaction about to write `group` with blind inserts only, on a node that applied rounds up
/// to `applied` and learned rounds up to `learned`: the epoch it joins, or `None` when it must
/// apply pending rounds first (alone) or the group cannot batch now.
pub fn join(group: &str, applied: u64, learned: u64) -> Option<u64> {
    with_queue(group, |queue, next_ticket| {
        let idle = !queue.proposing();
        let fresh = *next_ticket;
        *next_ticket += 1;
        (queue.chain.join(applied, learned, idle, fresh), Vec::new())
    })
    .flatten()
}

/// What `group`'s commit chain and queue look like now (for `paxos.group_commit`).
#[derive(Clone, Copy, Debug)]
pub struct ChainStatus {
    pub open: bool,
    pub epoch: u64,
    pub from: u64,
    pub tip: u64,
    pub proposing: bool,
    pub queued: usize,
    pub forwarded_in: u64,
    pub forwarded_out: u64,
    pub pipelined: u64,
    pub void: u64,
}

/// The status of `group`'s chain; `None` when the group has no queue on this node.
pub fn status(group: &str) -> Option<ChainStatus> {
    read_queue(group, |queue| {
        let (from, tip) = queue.chain.span();
        ChainStatus {
            open: queue.chain.is_open(),
            epoch: queue.chain.epoch(),
            from,
            tip,
            proposing: queue.proposing(),
            queued: queue
                .writes
                .iter()
                .filter(|w| w.state != State::Free)
                .count(),
            forwarded_in: queue.forwarded_in,
            forwarded_out: queue.forwarded_out,
            pipelined: queue.pipelined,
            void: queue.void,
        }
    })
}

/// Counts an insert forwarded to the leader and chosen: one this node `received` as leader, or
/// one it sent.
pub fn count_forwarded(group: &str, received: bool) {
    with_queue(group, |queue, _| {
        if received {
            queue.forwarded_in += 1;
        } else {
            queue.forwarded_out += 1;
        }
        ((), Vec::new())
    });
}

/// Whether `group`'s commit chain is intact: a transaction may then expect to join it.
pub fn chain_runs(group: &str) -> bool {
    read_queue(group, |queue| queue.chain.is_open()).unwrap_or(false)
}

/// A write of the chain was chosen but did not take effect here (its transaction failed after
/// the round was won), or the node's state moved outside the chain (see [`joins_running_chain`]):
/// later writers read the node's state before they join.
pub fn break_chain(group: &str) {
    with_existing_queue(group, |queue| queue.chain.break_off());
}

/// Claims the settling of `group`'s chain when it is due (see `CommitChain::claim_settling`):
/// returns the chain's tip. The claimer reports back with [`settling_done`].
pub fn claim_settling(group: &str) -> Option<u64> {
    // Every batched insert asks: the exclusive lock only once it is due.
    if !read_queue(group, |queue| queue.chain.settling_due()).unwrap_or(false) {
        return None;
    }
    let mut tip = None;
    with_existing_queue(group, |queue| tip = queue.chain.claim_settling());
    tip
}

/// The settling claimed with [`claim_settling`] ended, having moved the applied round to
/// `applied` (`None`: it did not).
pub fn settling_done(group: &str, applied: Option<u64>) {
    with_existing_queue(group, |queue| queue.chain.settling_done(applied));
}

/// The epoch of `group`'s chain while it is open: a writer joins it without reading the node's
/// state (it holds the writer lock shared already). That state can only stop allowing the join
/// through events that break the chain first: a round learned here past the chain's tip that is
/// none of its batches ([`round_learned`]), a divergence, a new range promise of this node's
/// acceptor, or the group's removal (see `store`). A round learned elsewhere and not yet here only
/// dooms the next batch: its round is taken, so it is not chosen, and its writers fail.
pub fn joins_running_chain(group: &str) -> Option<u64> {
    read_queue(group, |queue| {
        queue.chain.is_open().then(|| queue.chain.epoch())
    })
    .flatten()
}

/// Round `round` of `group` is about to be recorded as learned here (before its row can commit):
/// past the chain's tip, and none of its batches in flight, it holds a value the chain's writers
/// would not see, so the chain breaks.
pub fn round_learned(group: &str, round: u64) {
    let outside = |queue: &GroupQueue| {
        queue.chain.is_open()
            && round > queue.chain.span().1
            && !queue.flights.iter().any(|f| f.active && f.round == round)
    };
    if read_queue(group, outside).unwrap_or(false) {
        with_existing_queue(group, |queue| {
            if outside(queue) {
                queue.chain.break_off();
            }
        });
    }
}

/// Runs `f` on the queue of `group` under the table's exclusive lock, if the group has one.
fn with_existing_queue(group: &str, f: impl FnOnce(&mut GroupQueue)) {
    if !READY.load(Ordering::Relaxed) {
        return;
    }
    let key = round_claims::group_key(group);
    let mut table = TABLE.exclusive();
    let index = round_claims::probe(GROUPS, key, |s| table.groups[s].group);
    let queue = &mut table.groups[index];
    if queue.group == key {
        f(queue);
    }
}

/// Where a batched write was chosen: its round and its place in the batch.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub round: u64,
    pub index: u32,
}

/// A batch an owner proposes for the queue.
struct Proposal {
    round: u64,
    epoch: u64,
    bodies: Vec<Option<String>>,
    /// The leader ballot its round was handed out under, if it was.
    claimed: Option<LeaderBallot>,
    origin: String,
    /// The origin of the batch in flight in the round before, which that round must hold.
    after: Option<String>,
}

/// What the queue tells a waiting owner.
enum Turn {
    Done(Result<Placement>),
    Propose(Proposal),
    Wait,
}

/// Commits `statement`, written by a transaction that joined `epoch` of `log`'s group, in a
/// batch: returns where it was chosen. Waits at most `limit` for its batch to be decided.
pub fn commit(
    group: &str,
    open_log: impl Fn() -> Result<ReplicatedLog>,
    epoch: u64,
    statement: &LoggedStatement,
    limit: Duration,
) -> Result<Placement> {
    let group = group.to_string();
    let body = statement.encode();
    let deadline = Instant::now() + limit;
    // SAFETY: MyProc is set for every backend.
    let procno = unsafe { (*pg_sys::MyProc).pgprocno };
    let place = loop {
        let queued = with_queue(&group, |queue, next_ticket| {
            let Some(place) = queue.writes.iter().position(|w| w.state == State::Free) else {
                return (None, Vec::new());
            };
            let ticket = *next_ticket;
            *next_ticket += 1;
            let w = &mut queue.writes[place];
            *w = QueuedWrite::FREE;
            w.state = State::Waiting;
            w.ticket = ticket;
            w.epoch = epoch;
            w.procno = procno;
            w.kept_by_owner = body.len() > ENTRY_BYTES;
            if !w.kept_by_owner {
                w.body[..body.len()].copy_from_slice(body.as_bytes());
                w.len = body.len();
            }
            (Some((place, ticket)), Vec::new())
        })
        .ok_or_else(|| lost(&group))?;
        if let Some(place) = queued {
            break place;
        }
        wait_until(deadline, Duration::from_millis(1), &group)?;
    };
    OWN_PLACE.with(|p| *p.borrow_mut() = Some((group.clone(), place)));
    let _waiter = Waiter;
    loop {
        // SAFETY: MyLatch is this backend's own latch.
        unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
        let turn = with_queue(&group, |queue, _| take_turn(queue, &group, place, &body))
            .ok_or_else(|| lost(&group))?;
        match turn {
            Turn::Done(outcome) => {
                OWN_PLACE.with(|p| p.borrow_mut().take());
                return outcome;
            }
            Turn::Propose(proposal) => {
                // `take_turn` recorded the batch as this backend's already, so that even an
                // error raised from here on fails it instead of leaving it in flight.
                let proposing = Proposing;
                match open_log() {
                    Ok(log) => propose(&log, &group, proposing, proposal),
                    Err(e) => proposing.finish(proposal.epoch, Resolution::Unknown, false, Err(e)),
                }
            }
            Turn::Wait => wait_until(deadline, Duration::from_millis(20), &group)?,
        }
    }
}

/// The owner of `place` looks at its entry: decided, or its turn to propose what is queued, or
/// keep waiting.
fn take_turn(
    queue: &mut GroupQueue,
    group: &str,
    place: (usize, u64),
    own_body: &str,
) -> (Turn, Vec<i32>) {
    let (index, ticket) = place;
    let w = queue.writes[index];
    if w.ticket != ticket {
        return (
            Turn::Done(Err(PaxosError::Internal(
                "a queued write lost its place".into(),
            ))),
            Vec::new(),
        );
    }
    match w.state {
        State::Chosen => {
            queue.writes[index] = QueuedWrite::FREE;
            let placement = Placement {
                round: w.round,
                index: w.index,
            };
            (Turn::Done(Ok(placement)), Vec::new())
        }
        State::Failed => {
            queue.writes[index] = QueuedWrite::FREE;
            let cause = String::from_utf8_lossy(&w.message[..w.message_len]).into_owned();
            (
                Turn::Done(Err(PaxosError::BatchFailed {
                    group: group.to_string(),
                    sqlstate: w.sqlstate,
                    cause,
                })),
                Vec::new(),
            )
        }
        State::Waiting => {
            let in_flight = queue.flights.iter().filter(|f| f.active).count();
            let allowed = crate::guc::BATCHES_IN_FLIGHT.get().max(1) as usize;
            let free = queue.flights.iter().position(|f| !f.active);
            let Some(slot) = free.filter(|_| in_flight < allowed) else {
                return (Turn::Wait, Vec::new());
            };
            // With a batch in flight, the next one goes right after it, if that batch's round
            // was handed out by the leadership (so rounds stay in order) and the chain holds.
            let ahead = queue.flights.iter().find(|f| f.active);
            let Some(round) = queue.chain.round_for_batch(ahead.map(|f| f.round)) else {
                return (Turn::Wait, Vec::new());
            };
            let after = match ahead {
                None => None,
                Some(f) if f.claimed && queue.chain.accepts(f.epoch) => match f.origin() {
                    Some(origin) => Some(origin),
                    None => return (Turn::Wait, Vec::new()),
                },
                Some(_) => return (Turn::Wait, Vec::new()),
            };
            // Oldest first; entries of an epoch that ended can no longer be proposed.
            let mut order: Vec<usize> = (0..QUEUE)
                .filter(|&i| {
                    let q = &queue.writes[i];
                    q.state == State::Waiting && (i == index || !q.kept_by_owner)
                })
                .collect();
            order.sort_by_key(|&i| queue.writes[i].ticket);
            let mut members = Vec::new();
            let mut wake = Vec::new();
            let mut epoch = 0;
            for i in order {
                let q = &mut queue.writes[i];
                if !queue.chain.accepts(q.epoch) {
                    q.fail(&PaxosError::Conflict {
                        group: group.to_string(),
                        round,
                    });
                    wake.push(q.procno);
                    continue;
                }
                epoch = q.epoch;
                members.push(i);
            }
            if members.is_empty() {
                return (Turn::Wait, wake);
            }
            let claimed = leadership::claim(group, round);
            if after.is_some() && claimed.is_none() {
                // This node no longer leads from that round on: wait for the batch in flight.
                return (Turn::Wait, wake);
            }
            let origin = new_value("batch", ValueKind::Batch, None).origin;
            let mut flight = Flight {
                active: true,
                round,
                epoch,
                claimed: claimed.is_some(),
                ..Flight::IDLE
            };
            if origin.len() <= ORIGIN_BYTES {
                flight.origin[..origin.len()].copy_from_slice(origin.as_bytes());
                flight.origin_len = origin.len();
            }
            queue.flights[slot] = flight;
            queue.pipelined += u64::from(after.is_some());
            let mut bodies = Vec::with_capacity(members.len());
            let mut tickets = Vec::with_capacity(members.len());
            for &i in &members {
                let q = &mut queue.writes[i];
                q.state = State::Proposing;
                tickets.push((i, q.ticket));
                bodies.push(Some(if i == index {
                    own_body.to_string()
                } else {
                    String::from_utf8_lossy(&q.body[..q.len]).into_owned()
                }));
            }
            OWN_BATCH.with(|b| {
                *b.borrow_mut() = Some(OwnBatch {
                    group: group.to_string(),
                    members: tickets,
                    slot,
                    round,
                })
            });
            let turn = Turn::Propose(Proposal {
                round,
                epoch,
                bodies,
                claimed,
                origin,
                after,
            });
            (turn, wake)
        }
        _ => (Turn::Wait, Vec::new()),
    }
}

/// Proposes a batch, then hands every member its outcome: once the batch before it (if it names
/// one) has ended too.
fn propose(log: &ReplicatedLog, group: &str, proposing: Proposing, proposal: Proposal) {
    let Proposal {
        round,
        epoch,
        bodies,
        claimed,
        origin,
        after,
    } = proposal;
    let conditional = after.is_some();
    let decided = (|| {
        let statements = bodies
            .into_iter()
            .map(|b| LoggedStatement::decode(b.as_deref().unwrap_or_default()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let value = LogValue {
            origin,
            kind: ValueKind::Batch,
            body: Some(Batch { statements, after }.encode()),
        };
        // No `prepare_to_propose`: every round up to the chain's start is applied, and the
        // rounds after it are batches, which change no membership.
        // The proposer's transaction commits right after the members are told (no network call
        // in between), so the chosen value is recorded in it.
        let chosen = match claimed {
            Some(ballot) => {
                log.decide_claimed(round, value.clone(), ballot, Record::InThisTransaction)?
            }
            None => log.decide_recorded(round, Some(value.clone()), Record::InThisTransaction)?,
        };
        Ok(chosen.origin == value.origin)
    })();
    let own = match &decided {
        Ok(true) => Resolution::Chosen,
        Ok(false) => Resolution::Lost,
        Err(_) => Resolution::Unknown,
    };
    let previous = conditional.then(|| await_resolution(group, round - 1, log.round_timeout()));
    let resolution = outcome_after(previous, own);
    // Chosen in its round behind a batch that lost its own: replayed as nothing everywhere.
    let void = own == Resolution::Chosen && previous == Some(Resolution::Lost);
    let outcome = match (resolution, decided) {
        (Resolution::Chosen, _) => Ok(()),
        (_, Err(e)) => Err(e),
        // Another value won this round, or the round before (this batch is then void).
        (Resolution::Lost, Ok(ours)) => Err(PaxosError::Conflict {
            group: group.to_string(),
            round: if ours { round - 1 } else { round },
        }),
        (_, Ok(_)) => Err(PaxosError::BatchFailed {
            group: group.to_string(),
            sqlstate: PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            cause: format!(
                "round {round} holds its batch, which counts only if round {} holds the batch before it, and that is not known",
                round - 1
            ),
        }),
    };
    proposing.finish(epoch, resolution, void, outcome);
}

/// Waits until the batch in `round` ended, at most `limit`: how it ended (`Unknown` past it).
fn await_resolution(group: &str, round: u64, limit: Duration) -> Resolution {
    let deadline = Instant::now() + limit;
    loop {
        // SAFETY: MyLatch is this backend's own latch.
        unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
        if let Some(resolution) = read_queue(group, |q| q.resolution_of(round)).flatten() {
            return resolution;
        }
        if wait_until(deadline, Duration::from_millis(5), group).is_err() {
            return Resolution::Unknown;
        }
    }
}

/// A batch being proposed by this backend (kept in `OWN_BATCH`): on drop before it finished (an
/// error or a cancel on the way), its members fail and the chain breaks (the round's outcome is
/// unknown).
struct Proposing;

/// The batch this backend proposes.
struct OwnBatch {
    group: String,
    /// Its members' (index, ticket).
    members: Vec<(usize, u64)>,
    /// Its place among the group's flights.
    slot: usize,
    round: u64,
}

thread_local! {
    /// This backend's place in a queue while it waits: group and (index, ticket).
    static OWN_PLACE: std::cell::RefCell<Option<(String, (usize, u64))>> =
        const { std::cell::RefCell::new(None) };
    static OWN_BATCH: std::cell::RefCell<Option<OwnBatch>> =
        const { std::cell::RefCell::new(None) };
}

impl Proposing {
    /// Lands the batch's `resolution` and hands its members their `outcome`; `void` counts a
    /// batch chosen in a round that does not count (`paxos.group_commit`'s `void_batches`).
    fn finish(self, epoch: u64, resolution: Resolution, void: bool, outcome: Result<()>) {
        let Some(OwnBatch {
            group,
            members,
            slot,
            round,
        }) = OWN_BATCH.with(|b| b.borrow_mut().take())
        else {
            return;
        };
        with_queue(&group, |queue, _| {
            queue.land(slot, round, resolution);
            queue.void += u64::from(void);
            let mut abandoned = false;
            for (position, &(i, ticket)) in members.iter().enumerate() {
                let w = &mut queue.writes[i];
                if w.ticket != ticket {
                    continue;
                }
                if w.abandoned {
                    abandoned = true;
                    *w = QueuedWrite::FREE;
                    continue;
                }
                match &outcome {
                    Ok(()) => {
                        w.state = State::Chosen;
                        w.round = round;
                        w.index = position as u32;
                    }
                    Err(e) => w.fail(e),
                }
            }
            match outcome {
                Ok(()) if !abandoned => queue.chain.extend(epoch, round),
                // A member that gave up will not take effect here; a failed round may still be
                // chosen later.
                _ => queue.chain.break_off(),
            }
            ((), queue.waiting_procs())
        });
    }
}

impl Drop for Proposing {
    fn drop(&mut self) {
        fail_own_batch();
    }
}

/// Fails the batch this backend is proposing, if any: its round's outcome is unknown.
fn fail_own_batch() {
    let Some(OwnBatch {
        group,
        members,
        slot,
        round,
    }) = OWN_BATCH.with(|b| b.borrow_mut().take())
    else {
        return;
    };
    let ended = PaxosError::Internal(
        "the transaction proposing this write's round ended before it was decided".into(),
    );
    with_queue(&group, |queue, _| {
        queue.land(slot, round, Resolution::Unknown);
        queue.chain.break_off();
        for &(i, ticket) in &members {
            let w = &mut queue.writes[i];
            if w.ticket == ticket {
                if w.abandoned {
                    *w = QueuedWrite::FREE;
                } else {
                    w.fail(&ended);
                }
            }
        }
        ((), queue.waiting_procs())
    });
}

/// While a queued write's owner waits: on drop before it took its outcome (an error, a cancel or
/// the deadline on the way), its place is given back (see [`release_own_place`]).
struct Waiter;

impl Drop for Waiter {
    fn drop(&mut self) {
        release_own_place();
    }
}

/// Gives this backend's place in a queue back, if it holds one. An entry being proposed is left
/// to its proposer; a chosen one that will not commit here breaks the chain.
fn release_own_place() {
    let Some((group, (index, ticket))) = OWN_PLACE.with(|p| p.borrow_mut().take()) else {
        return;
    };
    with_queue(&group, |queue, _| {
        let w = &mut queue.writes[index];
        if w.ticket == ticket {
            match w.state {
                State::Proposing => w.abandoned = true,
                State::Chosen => {
                    queue.chain.break_off();
                    *w = QueuedWrite::FREE;
                }
                _ => *w = QueuedWrite::FREE,
            }
        }
        ((), Vec::new())
    });
}

/// The transaction ends without committing: whatever this backend still has in a queue is
/// settled. Guards do this when an error unwinds; this also covers a backend that exits without
/// unwinding (FATAL), whose transaction is aborted on the way out.
pub fn abandon() {
    fail_own_batch();
    release_own_place();
}

/// Sleeps until this backend's latch is set or `step` passed; fails past `deadline`.
fn wait_until(deadline: Instant, step: Duration, group: &str) -> Result<()> {
    let now = Instant::now();
    if now >= deadline {
        return Err(PaxosError::BatchFailed {
            group: group.to_string(),
            sqlstate: PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            cause: "its round was not decided in time (its outcome is unknown)".into(),
        });
    }
    let millis = step.min(deadline - now).as_millis().max(1) as std::ffi::c_long;
    // SAFETY: waits on this backend's own latch; interrupts are processed right after.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            millis,
            pg_sys::PG_WAIT_EXTENSION,
        );
    }
    pgrx::check_for_interrupts!();
    Ok(())
}

fn lost(group: &str) -> PaxosError {
    PaxosError::Internal(format!(
        "the write queue of paxos group {group:?} was taken over while in use"
    ))
}
