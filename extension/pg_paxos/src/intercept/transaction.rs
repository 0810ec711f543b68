//! A transaction's writes to replicated tables become one log entry, proposed at COMMIT for the
//! round right after the state it ran on.

use std::cell::RefCell;
use std::time::Duration;

use paxos_model::entries::{LoggedStatement, Step};
use paxos_model::value::ValueKind;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::{OrRaise, PaxosError, Result};
use crate::guc;
use crate::paxos::apply::{self, as_extension_owner, run_as_logged, Subtransaction};
use crate::paxos::batching::{self, Placement};
use crate::paxos::forwarding::{self, ForwardOutcome, Forwarded};
use crate::paxos::leadership;
use crate::paxos::replicated_log::{new_value, Record, ReplicatedLog};
use crate::store;

/// The writes of the current transaction: its group, the round its state is based on (every round
/// up to it applied, and the applied row locked so no other local writer moves it), and the steps
/// of its writes in order, each with the subtransaction level it was made in (a rolled-back
/// savepoint drops its steps).
struct Pending {
    group: String,
    base: u64,
    role: String,
    steps: Vec<(i32, Step)>,
    mode: Mode,
    /// The (sub)transaction ids its writes ran under: rows it applied from the log carry others
    /// (each entry is replayed in a subtransaction of its own).
    write_xids: Vec<pg_sys::TransactionId>,
}

/// How the transaction writes its group.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mode {
    /// Alone: it holds the applied round and proposes its entry in the round after `base`;
    /// unless `forward` names the tables of its writes so far, all inserts a leader may take
    /// (see `paxos::forwarding`): then the entry is offered to the group's leader first.
    Alone { forward: Option<Vec<pg_sys::Oid>> },
    /// With other blind inserts of this node, in a batch of the commit chain's `epoch` (see
    /// `paxos::batching`); `base` is unused.
    Batched { epoch: u64 },
    /// Blind inserts into `tables` that ran on `base`, sent to the group's `leader` at COMMIT (see
    /// `paxos::forwarding`).
    Forwarded {
        leader: String,
        tables: Vec<pg_sys::Oid>,
    },
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
    /// The transaction wrote something that exists on this node only (a table that is not
    /// replicated, a schema change): its commit must be flushed before it is reported.
    static LOCAL_WRITES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The group whose batch chose this transaction's entry: should the transaction still fail,
    /// the write is chosen but did not take effect here, and the group's commit chain breaks.
    static CHOSEN_IN_BATCH: RefCell<Option<String>> = const { RefCell::new(None) };
    /// A read in this transaction applied log rounds: rows and applied round that can always be
    /// derived again from the log, so their commit need not wait for its flush.
    static APPLIED_LOG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Groups whose replicated tables this transaction read: its inserts there may depend on what
    /// it read, so they are not sent to a leader (see `note_read`).
    static READ_GROUPS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// A statement of this transaction reads replicated tables of `group`. Its inserts into the group
/// then stay on this node: a leader would commit them after other inserts this transaction did
/// not see, while a transaction that writes alone is chosen right after the state it read.
pub fn note_read(group: &str) {
    READ_GROUPS.with(|r| {
        let mut read = r.borrow_mut();
        if !read.iter().any(|g| g == group) {
            read.push(group.to_string());
        }
    });
    PENDING.with(|p| {
        if let Some(pending) = p.borrow_mut().as_mut().filter(|p| p.group == group) {
            if let Mode::Alone { forward } = &mut pending.mode {
                *forward = None;
            }
        }
    });
}

fn read_before(group: &str) -> bool {
    READ_GROUPS.with(|r| r.borrow().iter().any(|g| g == group))
}

/// Marks the current transaction as writing data that only this node keeps.
pub fn note_local_write() {
    LOCAL_WRITES.with(|w| w.set(true));
}

/// Makes the rows applied here visible to the statement about to run.
fn refresh_snapshot() {
    // SAFETY: both are called by PostgreSQL itself between commands of one statement; the
    // snapshot is only updated when there is one.
    unsafe {
        pg_sys::CommandCounterIncrement();
        if pg_sys::ActiveSnapshotSet() {
            pg_sys::UpdateActiveSnapshotCommandId();
        }
    }
}

/// A write to `group` is about to run. The transaction's first write brings the node up to date
/// and locks the applied round until the transaction ends; or, when it is a `batchable` write
/// (a blind insert) of a single-statement transaction on the group's leader, joins the node's
/// commit chain instead, so that it runs and commits together with other such writes; or, when it
/// is `forwardable` on a member that does not lead, runs on this node's applied state and is sent
/// to the leader at COMMIT. A write that is not batchable in a batched transaction makes it write
/// alone from then on, if no other batched write runs; else it fails with a serialization error.
/// So does a write that is not forwardable in a forwarded transaction.
///
/// Up to date means the group's highest accepted round (one round trip to a majority), except on
/// the leader: there the rounds it learned are enough. Should its leadership be over without its
/// knowing, the write runs on an old state, but its accept in the next round is refused by the
/// new leader's promise and the transaction fails with a serialization error: no write is ever
/// chosen in a round other than the one right after the state it ran on.
pub fn begin_write(
    group: &str,
    batchable: bool,
    forward_target: Option<pg_sys::Oid>,
) -> Result<()> {
    // An insert after a read of the group may depend on what was read: it stays here.
    let forward_target = forward_target.filter(|_| !read_before(group));
    let started = PENDING.with(|p| match p.borrow().as_ref() {
        Some(pending) if pending.group == group => Ok(Some(pending.mode.clone())),
        Some(pending) => Err(PaxosError::InvalidArgument {
            message: format!(
                "this transaction writes replicated tables of paxos group {:?} already, not of {group:?}",
                pending.group
            ),
            hint: "Write the tables of one group per transaction.",
        }),
        None => Ok(None),
    })?;
    match started {
        Some(Mode::Batched { .. }) if !batchable => return write_alone_from_now(group),
        Some(Mode::Forwarded { leader, .. }) if forward_target.is_none() => {
            // Its insert ran on a state other rounds may have moved past: it cannot write alone.
            forwarding::pause(group);
            return Err(PaxosError::ForwardNotTaken {
                group: group.to_string(),
                leader: ReplicatedLog::open(group)?.link(&leader)?.label,
                cause: "this transaction went on to write more than inserts meant for the leader (the next attempt writes on this node)",
            });
        }
        Some(Mode::Forwarded { .. } | Mode::Alone { .. }) => {
            PENDING.with(|p| {
                if let Some(pending) = p.borrow_mut().as_mut() {
                    pending.note_write(forward_target);
                }
            });
            return Ok(());
        }
        Some(Mode::Batched { .. }) => return Ok(()),
        None => {}
    }
    let role = store::current_role()?;
    let (mode, base) = super::bypassing(|| {
        as_extension_owner(|| {
            if batchable && single_statement_transaction() && guc::BATCH_WRITES.get() {
                if let Some(epoch) = ReplicatedLog::join_batch(group)? {
                    return Ok::<_, PaxosError>((Mode::Batched { epoch }, 0));
                }
                if let Some(table) = forward_target.filter(|_| guc::FORWARD_WRITES.get()) {
                    if let Some((leader, base)) = forwarding::prepare(group)? {
                        let tables = vec![table];
                        return Ok((Mode::Forwarded { leader, tables }, base));
                    }
                }
            }
            let forward = forward_target
                .filter(|_| may_forward())
                .map(|table| vec![table]);
            let base = ReplicatedLog::catch_up_for_write(group)?;
            Ok((Mode::Alone { forward }, base))
        })
    })?;
    refresh_snapshot();
    PENDING.with(|p| {
        *p.borrow_mut() = Some(Pending {
            group: group.to_string(),
            base,
            role,
            steps: Vec::new(),
            mode,
            write_xids: Vec::new(),
        })
    });
    Ok(())
}

impl Pending {
    /// Another write of this transaction: its table joins those of a forwarded transaction; a
    /// write no leader may take makes an alone transaction propose its entry itself.
    fn note_write(&mut self, forward_target: Option<pg_sys::Oid>) {
        match (&mut self.mode, forward_target) {
            (
                Mode::Forwarded { tables, .. }
                | Mode::Alone {
                    forward: Some(tables),
                },
                Some(t),
            ) if !tables.contains(&t) => tables.push(t),
            (Mode::Alone { forward }, None) => *forward = None,
            _ => {}
        }
    }
}

/// Whether a transaction that writes alone on this node may still offer its entry to a leader
/// at COMMIT: forwarding is on, and the transaction is not SERIALIZABLE (whose checks at COMMIT
/// could fail it after the leader committed its entry).
fn may_forward() -> bool {
    // SAFETY: reads the transaction state of this backend.
    let serializable = unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_SERIALIZABLE as i32 };
    guc::FORWARD_WRITES.get() && !serializable
}

/// Not inside BEGIN ... COMMIT, nor SERIALIZABLE (whose checks at commit could still fail a
/// transaction after its batch was chosen).
fn single_statement_transaction() -> bool {
    // SAFETY: reads the transaction state of this backend.
    unsafe {
        !pg_sys::IsTransactionBlock() && pg_sys::XactIsoLevel < pg_sys::XACT_SERIALIZABLE as i32
    }
}

/// A batched transaction is about to write something that is not a blind insert: it takes the
/// group alone, applies what is pending and goes on from there (its blind inserts commute with
/// the batches it did not see), or fails when other batched writers run.
fn write_alone_from_now(group: &str) -> Result<()> {
    let base = super::bypassing(|| {
        as_extension_owner(|| {
            if !store::try_lock_writers_exclusive(group)? {
                return Err(PaxosError::BatchFailed {
                    group: group.to_string(),
                    sqlstate: pgrx::pg_sys::errcodes::PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
                    cause: "this transaction started as an insert that shares rounds with other transactions, and then wrote more while they ran".into(),
                });
            }
            ReplicatedLog::catch_up_for_write(group)
        })
    })?;
    refresh_snapshot();
    PENDING.with(|p| {
        if let Some(pending) = p.borrow_mut().as_mut() {
            pending.mode = Mode::Alone { forward: None };
            pending.base = base;
        }
    });
    Ok(())
}

/// A write to `group` finished: its steps join the transaction's entry.
pub fn record_write(group: &str, steps: Vec<Step>) -> Result<()> {
    // SAFETY: reads the transaction state of this backend.
    let (level, xid) = unsafe {
        (
            pg_sys::GetCurrentTransactionNestLevel(),
            pg_sys::GetCurrentTransactionIdIfAny(),
        )
    };
    PENDING.with(|p| match p.borrow_mut().as_mut() {
        Some(pending) if pending.group == group => {
            pending
                .steps
                .extend(steps.into_iter().map(|step| (level, step)));
            if xid != pg_sys::TransactionId::INVALID && !pending.write_xids.contains(&xid) {
                pending.write_xids.push(xid);
            }
            Ok(())
        }
        _ => Err(PaxosError::Internal(format!(
            "a write to paxos group {group:?} finished without having started"
        ))),
    })
}

/// Before a read: apply the log up to the group's highest accepted round, unless this transaction
/// writes the group (it reads the state its writes are based on).
pub fn catch_up_for_read(group: &str) -> Result<()> {
    if PENDING.with(|p| p.borrow().as_ref().is_some_and(|p| p.group == group)) {
        return Ok(());
    }
    let applied =
        super::bypassing(|| as_extension_owner(|| ReplicatedLog::catch_up_for_read(group)))?;
    if applied {
        APPLIED_LOG.with(|a| a.set(true));
    }
    refresh_snapshot();
    Ok(())
}

/// At COMMIT: propose the transaction's statements for the round after its base. The chosen entry
/// is recorded in this transaction, which then commits without waiting for its own flush (unless
/// it also wrote data only this node keeps): the entry is durable already in the votes of a
/// majority, and after a crash this node learns and applies it again (log row, applied round and
/// the writes commit together or not at all).
fn propose_pending() -> Result<()> {
    let pending = PENDING
        .with(|p| p.borrow_mut().take())
        .filter(|p| !p.steps.is_empty());
    let Some(pending) = pending else {
        // Nothing to propose. A transaction that only applied the log (a strong read) commits
        // without waiting for its flush, unless it also wrote data only this node keeps.
        if APPLIED_LOG.with(|a| a.get()) {
            return commit_without_flush_unless_local_writes();
        }
        return Ok(());
    };
    let statement = LoggedStatement {
        role: pending.role,
        steps: pending.steps.into_iter().map(|(_, step)| step).collect(),
    };
    match pending.mode {
        Mode::Batched { epoch } => return propose_batched(&pending.group, epoch, &statement),
        Mode::Forwarded { leader, tables } => {
            let written = Written {
                tables: &tables,
                xids: &pending.write_xids,
            };
            return propose_forwarded(&pending.group, &leader, pending.base, written, &statement);
        }
        Mode::Alone {
            forward: Some(tables),
        } => {
            let written = Written {
                tables: &tables,
                xids: &pending.write_xids,
            };
            if offer_to_leader(&pending.group, pending.base, written, &statement)? {
                return Ok(());
            }
        }
        Mode::Alone { forward: None } => {}
    }
    let round = pending.base + 1;
    internally(|| {
        let log = ReplicatedLog::open(&pending.group)?;
        let value = new_value(
            "transaction",
            ValueKind::Statement,
            Some(statement.encode()),
        );
        log.prepare_to_propose(round)?;
        let chosen = log.decide_recorded(round, Some(value.clone()), Record::InThisTransaction)?;
        if chosen.origin != value.origin {
            return Err(PaxosError::Conflict {
                group: pending.group.clone(),
                round,
            });
        }
        store::set_applied_round(&pending.group, round)?;
        commit_without_flush_unless_local_writes()
    })
}

/// Runs `f` as the extension's own work (at COMMIT, or for a member's request): not intercepted,
/// with an active snapshot, as the extension's owner.
fn internally<T>(f: impl FnOnce() -> T) -> T {
    super::bypassing(|| super::with_snapshot(|| as_extension_owner(f)))
}

/// What this transaction wrote can be derived again from the log: its commit need not wait for
/// its flush, unless it also wrote data only this node keeps.
fn commit_without_flush_unless_local_writes() -> Result<()> {
    if LOCAL_WRITES.with(|w| w.get()) {
        Ok(())
    } else {
        store::relax_synchronous_commit()
    }
}

/// At COMMIT of a batched transaction: its entry joins this node's next batch; once the batch is
/// chosen, the transaction records its place in it and commits (durable already in the votes of a
/// majority, as in `propose_pending`).
fn propose_batched(group: &str, epoch: u64, statement: &LoggedStatement) -> Result<()> {
    internally(|| commit_in_batch(group, epoch, statement).map(|_| ()))
}

/// Queues `statement` in this node's next batch of `epoch` and records its place once chosen.
fn commit_in_batch(group: &str, epoch: u64, statement: &LoggedStatement) -> Result<Placement> {
    // The log is only opened by the transaction that proposes the batch.
    let limit = Duration::from_millis(guc::millis(&guc::ROUND_TIMEOUT_MS)) * 3;
    let open = || ReplicatedLog::open(group);
    let placement = batching::commit(group, open, epoch, statement, limit)?;
    CHOSEN_IN_BATCH.with(|c| *c.borrow_mut() = Some(group.to_string()));
    store::mark_batched(group, placement.round, placement.index)?;
    crate::paxos::apply::settle_commit_chain(group)?;
    commit_without_flush_unless_local_writes()?;
    Ok(placement)
}

/// At COMMIT of a forwarded transaction: the leader runs and commits its entry in a batch (see
/// [`took_effect_through_leader`]); a leader that does not take it fails the transaction.
fn propose_forwarded(
    group: &str,
    leader: &str,
    base: u64,
    written: Written,
    statement: &LoggedStatement,
) -> Result<()> {
    internally(
        || match forwarding::forward(group, leader, base, statement)? {
            Forwarded::Chosen { placement, keep } => {
                took_effect_through_leader(group, placement, keep, written)
            }
            Forwarded::NotTaken { leader, cause } => Err(PaxosError::ForwardNotTaken {
                group: group.to_string(),
                leader,
                cause,
            }),
        },
    )
}

/// At COMMIT of a transaction that wrote alone and only inserted rows a leader may take: offers
/// its entry to the group's leader, which saves a campaign here (and the leader's writes in
/// flight). False when there is no leader to take it: the caller proposes the entry itself, as
/// nothing was chosen (this transaction still holds the applied round it ran on).
fn offer_to_leader(
    group: &str,
    base: u64,
    written: Written,
    statement: &LoggedStatement,
) -> Result<bool> {
    internally(|| {
        if !may_forward() {
            return Ok(false);
        }
        let Some(leader) = forwarding::leader_now(group)? else {
            return Ok(false);
        };
        match forwarding::forward(group, &leader, base, statement)? {
            Forwarded::Chosen { placement, keep } => {
                took_effect_through_leader(group, placement, keep, written)?;
                Ok(true)
            }
            Forwarded::NotTaken { .. } => Ok(false),
        }
    })
}

/// The rows a transaction of inserts wrote itself: in `tables`, under `xids`.
#[derive(Clone, Copy)]
struct Written<'a> {
    tables: &'a [pg_sys::Oid],
    xids: &'a [pg_sys::TransactionId],
}

/// The leader committed this transaction's entry at `placement`. With `keep`, the rows written
/// here are that entry's: they commit with its batch mark. Otherwise rounds that do not commute
/// with them came first: the rows it wrote are discarded (not those it applied from the log) and
/// the log is applied through the batch, so they come back in log order (or, when this node
/// cannot apply it now, later, with a warning). Either way the commit
/// need not wait for its flush (the entry is durable already in the votes of a majority, as in
/// `propose_pending`).
fn took_effect_through_leader(
    group: &str,
    placement: Placement,
    keep: bool,
    written: Written,
) -> Result<()> {
    batching::count_forwarded(group, false);
    if keep {
        store::mark_batched(group, placement.round, placement.index)?;
    } else {
        for &table in written.tables {
            store::discard_rows_written_under(table, written.xids)?;
        }
        // Applying needs the writer lock alone. Waiting for it while holding it shared could
        // deadlock with another such transaction: with other writers running, the next strong
        // read applies the rows instead.
        if store::try_lock_writers_exclusive(group)? {
            refresh_snapshot();
            let applied = ReplicatedLog::open(group)?
                .apply_log(placement.round)
                .and_then(|_| apply::check_not_diverged(group));
            match applied {
                Ok(()) => {}
                // The write is chosen: what keeps this node from applying the log now is this
                // node's matter. An error would tell the client that its write failed (and invite
                // it to write the row again); a divergence found on the way is recorded.
                Err(e @ (PaxosError::CannotApplyNow { .. } | PaxosError::Diverged { .. })) => {
                    pgrx::warning!(
                        "pg_paxos: this write was chosen in round {} of paxos group {group:?}, but {e}",
                        placement.round
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }
    commit_without_flush_unless_local_writes()
}

/// On the leader: a member's forwarded insert that ran there on `base` (see `paxos::forwarding`).
/// It runs here as one of this node's batched inserts and is committed in the chain's next batch,
/// if every round between `base` and the chain's tip is a batch of the chain; a failure of the
/// statement (a key that exists here) is this transaction's error.
pub fn write_forwarded(
    group: &str,
    base: u64,
    statement: &LoggedStatement,
) -> Result<ForwardOutcome> {
    internally(|| {
        // `join_batch` answers `None` at once, taking no lock, on a node that does not lead. A
        // node that left the group may still hold its leadership in shared memory a while.
        let joined = match ReplicatedLog::join_batch(group) {
            Err(PaxosError::UnknownGroup { .. }) => return Ok(ForwardOutcome::NotLeading),
            joined => joined?,
        };
        let Some(epoch) = joined else {
            if leadership::current(group).is_none() {
                return Ok(ForwardOutcome::NotLeading);
            }
            // Rounds are pending here: apply them (with the writer lock alone), so that the
            // chain can start again for the member's next attempt.
            ReplicatedLog::catch_up_for_write(group)?;
            return Ok(ForwardOutcome::Busy);
        };
        // The member may keep the rows it wrote on `base` if every round after it is
        // applied there or a batch of this chain; the statement runs here in any case, on
        // this node's state, which is what makes it valid in the chain's next round.
        let keep = match batching::status(group) {
            Some(chain) if chain.epoch == epoch => chain.from <= base && base <= chain.tip,
            _ => return Ok(ForwardOutcome::Busy),
        };
        let sub = Subtransaction::begin();
        if let Err(e) = run_as_logged(statement) {
            sub.rollback();
            return Err(PaxosError::StatementFailed(e));
        }
        sub.commit();
        let placement = commit_in_batch(group, epoch, statement)?;
        batching::count_forwarded(group, true);
        Ok(ForwardOutcome::Chosen { placement, keep })
    })
}

#[pg_guard]
pub unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT => propose_pending().or_raise(),
        pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE if PENDING.with(|p| p.borrow().is_some()) => {
            PaxosError::InvalidArgument {
                message: "a transaction that writes replicated tables cannot be prepared".into(),
                hint: "Commit it directly.",
            }
            .raise()
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
        | pg_sys::XactEvent::XACT_EVENT_COMMIT => {
            let chosen_in_batch = CHOSEN_IN_BATCH.with(|c| c.borrow_mut().take());
            if event != pg_sys::XactEvent::XACT_EVENT_COMMIT {
                batching::abandon();
                if let Some(group) = chosen_in_batch {
                    batching::break_chain(&group);
                }
            }
            PENDING.with(|p| p.borrow_mut().take());
            LOCAL_WRITES.with(|w| w.set(false));
            APPLIED_LOG.with(|a| a.set(false));
            READ_GROUPS.with(|r| r.borrow_mut().clear());
            super::statements::transaction_ended();
            super::capture::abort(0);
            super::reset_bypass();
        }
        _ => {}
    }
}

/// A rolled-back savepoint (or a caught error in PL/pgSQL) drops the writes made inside it; a
/// released one hands them to its parent.
#[pg_guard]
pub unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    _my_subid: pg_sys::SubTransactionId,
    _parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    // SAFETY: reads the transaction state of this backend; the callback runs inside the
    // subtransaction that ends.
    let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
            super::capture::abort(level);
            PENDING.with(|p| {
                if let Some(pending) = p.borrow_mut().as_mut() {
                    pending.steps.retain(|(l, _)| *l < level);
                }
            });
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => PENDING.with(|p| {
            if let Some(pending) = p.borrow_mut().as_mut() {
                for (l, _) in pending.steps.iter_mut() {
                    if *l >= level {
                        *l = level - 1;
                    }
                }
            }
        }),
        _ => {}
    }
}
