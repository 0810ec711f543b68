//! Giving log entries their effect on this node. A logged statement runs again here, in log order,
//! as the role that issued it and with `search_path` pinned to `pg_catalog, pg_temp`, so that a
//! replayed statement can neither gain privileges nor be redirected to objects planted in a schema
//! its users can write to. A table registration checks the local table before registering it.
//!
//! An entry that fails here (it succeeded where it was proposed) is never skipped. When the cause
//! is the entry's (a missing privilege, a constraint this node's rows break), it is reported as a
//! failure and the caller stops applying the group on this node. When the cause is this node's
//! own trouble of the moment (a full disk, a resource limit, a cancel, an I/O error), the
//! statement that was applying fails with that error instead, and the next one tries again.

use std::cell::RefCell;
use std::ffi::CString;

use paxos_model::entries::{Batch, LoggedStatement, Step, TableDefinition};
use paxos_model::value::{LogValue, ValueKind};
use pgrx::pg_sys;
use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::prelude::*;

use crate::error::{PaxosError, Result};
use crate::store::{self, Group};

/// What this backend found visible of a group (see [`known_visible`]).
struct Visible {
    group: String,
    /// The version of the group's row it was found on (see `store::Group::version`).
    version: u64,
    /// Every round through this one was visible.
    through: u64,
    /// A transaction id above every transaction whose rows and marks that relied on.
    below_xid: pg_sys::TransactionId,
}

thread_local! {
    static VISIBLE: RefCell<Vec<Visible>> = const { RefCell::new(Vec::new()) };
}

/// True when this backend found every round of `group` after its applied round through `top`
/// visible before, on the same version of the group's row, and the current snapshot sees every
/// transaction that finding relied on: a read needs nothing else (not even a look at the log).
/// What was visible stays so while the row version stands: rows and marks committed stay, and
/// marks go only when the applied round moves, which makes a new version, as does a group
/// created again. The snapshot test keeps an older snapshot (an imported one) from using it.
pub fn known_visible(group: &Group, top: u64) -> bool {
    if top <= group.applied_round {
        return true;
    }
    let Some(version) = group.version else {
        return false;
    };
    // SAFETY: reads the active snapshot of this backend, checked to be set first.
    let snapshot_xmin = unsafe {
        if !pg_sys::ActiveSnapshotSet() {
            return false;
        }
        (*pg_sys::GetActiveSnapshot()).xmin
    };
    VISIBLE.with(|v| {
        v.borrow().iter().any(|seen| {
            seen.group == group.id
                && seen.version == version
                && top <= seen.through
                // SAFETY: compares two transaction ids, no state involved.
                && unsafe { pg_sys::TransactionIdFollowsOrEquals(snapshot_xmin, seen.below_xid) }
        })
    })
}

/// Remembers that every round of `group` after its applied round through `top` is visible, as the
/// statements just run found it.
fn remember_visible(group: &Group, top: u64) {
    let Some(version) = group.version else {
        return;
    };
    // Read after those statements: above every transaction whose rows they saw.
    // SAFETY: reads the next transaction id from shared memory under its own lock.
    let next = unsafe { pg_sys::ReadNextFullTransactionId() };
    let below_xid = pg_sys::TransactionId::from_inner((next.value & 0xFFFF_FFFF) as u32);
    VISIBLE.with(|v| {
        let mut v = v.borrow_mut();
        v.retain(|seen| seen.group != group.id);
        v.push(Visible {
            group: group.id.clone(),
            version,
            through: top,
            below_xid,
        });
    });
}

/// True when every round after `group`'s applied round through `top` is learned here and changes
/// no table, or is a batch whose every write took effect here already (its rows and mark
/// committed): a read then sees all of them without applying, so it needs no lock and does not
/// wait for the writers of this node's commit chain. Only asked for short stretches (`LOOKAHEAD`
/// rounds); remembered for the next read (see [`known_visible`]).
pub fn effects_visible(group: &Group, top: u64) -> Result<bool> {
    const LOOKAHEAD: u64 = 64;
    let applied = group.applied_round;
    if known_visible(group, top) {
        return Ok(true);
    }
    // Past here `top` is above the applied round.
    if top - applied > LOOKAHEAD {
        return Ok(false);
    }
    let rounds = store::log_with_marks(&group.id, applied + 1, top)?;
    if rounds.len() as u64 != top - applied {
        return Ok(false);
    }
    for (_, value, marks) in rounds {
        if !in_effect_without_applying(&value, &marks)? {
            return Ok(false);
        }
    }
    remember_visible(group, top);
    Ok(true)
}

/// True when applying `value` here would change nothing: it changes no table, or it is a batch
/// whose every write took effect here already (`marks`: their marks, see `store::mark_batched`).
fn in_effect_without_applying(value: &LogValue, marks: &[u32]) -> Result<bool> {
    Ok(match value.kind {
        ValueKind::Value | ValueKind::Noop | ValueKind::AddHost | ValueKind::RemoveHost => true,
        ValueKind::Batch => {
            let batch = Batch::decode(value.body.as_deref().unwrap_or_default())?;
            marks.len() == batch.statements.len()
        }
        ValueKind::Statement | ValueKind::ReplicateTable => false,
    })
}

/// Rounds [`settle_commit_chain`] reads per settling (it stops earlier at the first round whose
/// writes did not all take effect yet).
const SETTLE_LIMIT: u64 = 4 * paxos_core::commit_chain::SETTLE_EVERY;

/// Called by a writer of this node's commit chain once its write was chosen (its mark written, in
/// its transaction): when the chain is due (see `CommitChain::claim_settling`), moves the applied
/// round over the rounds after it whose writes all took effect here (the writers committed, or
/// the write is this transaction's), and drops their marks. That is what applying them would do;
/// it commits with this transaction. Only under READ COMMITTED, where each statement sees what
/// committed before it and the row update cannot fail on a concurrent one; and only when the
/// group's row is free (an applier holding it does the same work anyway).
pub fn settle_commit_chain(group_id: &str) -> Result<()> {
    // SAFETY: reads a backend-local setting of the current transaction.
    if unsafe { pg_sys::XactIsoLevel } != pg_sys::XACT_READ_COMMITTED as i32 {
        return Ok(());
    }
    let Some(tip) = crate::paxos::batching::claim_settling(group_id) else {
        return Ok(());
    };
    // Reports back also when an error unwinds from here.
    struct Claim<'a> {
        group: &'a str,
        settled: Option<u64>,
    }
    impl Drop for Claim<'_> {
        fn drop(&mut self) {
            crate::paxos::batching::settling_done(self.group, self.settled);
        }
    }
    let mut claim = Claim {
        group: group_id,
        settled: None,
    };
    let Some(applied) = store::try_lock_applied_row(group_id)? else {
        return Ok(());
    };
    let last = tip.min(applied.saturating_add(SETTLE_LIMIT));
    let mut through = applied;
    for (round, value, marks) in store::log_with_marks(group_id, applied + 1, last)? {
        if round != through + 1 || !in_effect_without_applying(&value, &marks)? {
            break;
        }
        through = round;
    }
    if through > applied {
        store::advance_applied_round(group_id, applied, through)?;
    }
    claim.settled = Some(through);
    Ok(())
}

/// Applies one entry. `done` lists the writes of a batch that took effect here already (see
/// `store::log_with_marks`); `previous` is the value of the round before, when the caller has it.
/// `Ok(Err(reason))` means the entry failed on this node; an error of this node's own (see
/// [`StatementError::is_this_nodes`]) comes back as `Err`, for the caller's statement to fail with.
pub fn apply_entry(
    group_id: &str,
    round: u64,
    value: &LogValue,
    done: &[u32],
    previous: Option<&LogValue>,
) -> Result<std::result::Result<(), String>> {
    let body = value.body.as_deref().unwrap_or_default();
    match value.kind {
        ValueKind::Statement => {
            let statement = LoggedStatement::decode(body)?;
            Ok(replay(group_id, round, &statement)?)
        }
        ValueKind::Batch => {
            let batch = Batch::decode(body)?;
            if batch.after.is_some() {
                // Every node has the round before learned and applied by now: all decide alike.
                let previous = match previous {
                    Some(value) => Some(value.origin.clone()),
                    None => store::learned(group_id, round.saturating_sub(1))?.map(|v| v.origin),
                };
                if !batch.takes_effect_after(previous.as_deref()) {
                    return Ok(Ok(()));
                }
            }
            // Writes of this node's batch that committed here already are skipped.
            let pending: Vec<(usize, &LoggedStatement)> = batch
                .statements
                .iter()
                .enumerate()
                .filter(|(entry, _)| !done.contains(&(*entry as u32)))
                .collect();
            // All of the batch or none of it: a write that fails here after others of the batch
            // ran must not leave those behind, since the applied round stays before the batch
            // (a caller may commit after an error of this node's own, and a diverged node
            // resumes with the whole batch).
            let whole = (pending.len() > 1).then(Subtransaction::begin);
            for (entry, statement) in pending {
                let outcome = match replay(group_id, round, statement) {
                    Ok(Ok(())) => continue,
                    Ok(Err(cause)) => Ok(Err(format!("write {} of the batch: {cause}", entry + 1))),
                    Err(e) => Err(e),
                };
                if let Some(whole) = whole {
                    whole.rollback();
                }
                return outcome;
            }
            if let Some(whole) = whole {
                whole.commit();
            }
            Ok(Ok(()))
        }
        ValueKind::ReplicateTable => {
            let table = TableDefinition::decode(body)?;
            match store::table_columns(&table.name)? {
                Some(columns) if columns == table.columns => {
                    store::register_table(group_id, &table.name, &table.columns, round)?;
                    Ok(Ok(()))
                }
                Some(columns) => Ok(Err(format!(
                    "table {} has columns ({columns}) here but ({}) where it was replicated",
                    table.name, table.columns
                ))),
                None => Ok(Err(format!("table {} does not exist here", table.name))),
            }
        }
        ValueKind::Value | ValueKind::Noop | ValueKind::AddHost | ValueKind::RemoveHost => {
            Ok(Ok(()))
        }
    }
}

/// Runs a logged statement as its role with a pinned search_path, inside a subtransaction so that
/// its failure can be reported instead of aborting the caller. `Ok(Err(message))` is the entry's
/// failure here; a failure of this node's own is returned as `Err`.
fn replay(
    group_id: &str,
    round: u64,
    statement: &LoggedStatement,
) -> Result<std::result::Result<(), String>> {
    let sub = Subtransaction::begin();
    match run_as_logged(statement) {
        Ok(()) => {
            sub.commit();
            Ok(Ok(()))
        }
        Err(e) => {
            sub.rollback();
            if e.is_this_nodes() {
                return Err(PaxosError::CannotApplyNow {
                    group: group_id.to_string(),
                    round,
                    error: e,
                });
            }
            Ok(Err(e.message))
        }
    }
}

/// Runs `statement` the way every node replays it: its SQL as its role, with search_path pinned
/// to `pg_catalog, pg_temp`; its sequence restarts as the extension's owner (the proposer drew
/// those values already, possibly through an identity column that needs no privilege). Must run
/// inside a [`Subtransaction`]; a PostgreSQL error is returned as its message (the caller then
/// rolls the subtransaction back).
///
/// A restarted sequence never ends up behind where it was: writes of one batch drew their numbers
/// concurrently, in any order, and replaying a lower number after a higher one would leave the
/// sequence to hand the higher one out again (to this node's next write, once it leads).
pub fn run_as_logged(statement: &LoggedStatement) -> std::result::Result<(), StatementError> {
    crate::intercept::bypassing(|| {
        let mut restarted = Vec::new();
        for step in &statement.steps {
            match step {
                Step::Sql(sql) => run_sql_as(&statement.role, sql.clone())?,
                Step::RestartSequence { sequence, next } => {
                    let (sequence, next) = (sequence.clone(), *next);
                    let before = catch_error(move || {
                        let before = store::sequence_position(&sequence)
                            .map_err(|e| internal(e.to_string()))?;
                        store::restart_sequence(&sequence, next)
                            .map_err(|e| internal(e.to_string()))?;
                        Ok((sequence, before))
                    })?;
                    restarted.push(before);
                }
            }
        }
        for (sequence, before) in restarted {
            if let Some(last) = before {
                catch_error(move || {
                    store::keep_sequence_past(&sequence, last).map_err(|e| internal(e.to_string()))
                })?;
            }
        }
        Ok(())
    })
}

fn run_sql_as(role: &str, sql: String) -> std::result::Result<(), StatementError> {
    let role = CString::new(role).map_err(|_| internal("role name contains NUL"))?;
    catch_error(move || {
        // SAFETY: plain calls of PostgreSQL's user-id and GUC API inside a live transaction; the
        // enclosing subtransaction restores both if the statement fails.
        unsafe {
            let role_oid = pg_sys::get_role_oid(role.as_ptr(), false);
            let mut saved_user = pg_sys::Oid::INVALID;
            let mut saved_context = 0;
            pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
            pg_sys::SetUserIdAndSecContext(
                role_oid,
                saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            );
            let nest_level = pg_sys::NewGUCNestLevel();
            pg_sys::set_config_option(
                c"search_path".as_ptr(),
                c"pg_catalog, pg_temp".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
            Spi::run(&sql).map_err(|e| internal(e.to_string()))?;
            pg_sys::AtEOXact_GUC(true, nest_level);
            pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        }
        Ok(())
    })
}

/// A statement's failure: its SQLSTATE and message.
#[derive(Debug, Clone)]
pub struct StatementError {
    pub code: PgSqlErrorCode,
    pub message: String,
}

impl StatementError {
    /// True when the failure is this node's trouble of the moment rather than the statement's
    /// (see [`crate::error::is_nodes_own_trouble`]): every other node may well apply the same
    /// statement, so it must not count as divergence.
    pub fn is_this_nodes(&self) -> bool {
        crate::error::is_nodes_own_trouble(&crate::error::code_of_sqlstate(self.code))
    }
}

impl std::fmt::Display for StatementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs `f`, turning a PostgreSQL error it raises into its SQLSTATE and message. Only call inside
/// a [`Subtransaction`], which must then be rolled back.
fn catch_error<T>(
    f: impl FnOnce() -> std::result::Result<T, StatementError> + std::panic::UnwindSafe,
) -> std::result::Result<T, StatementError> {
    PgTryBuilder::new(f)
        .catch_others(|caught| {
            Err(match caught {
                pg_sys::panic::CaughtError::PostgresError(report)
                | pg_sys::panic::CaughtError::ErrorReport(report)
                | pg_sys::panic::CaughtError::RustPanic {
                    ereport: report, ..
                } => StatementError {
                    code: report.sql_error_code(),
                    message: report.message().to_string(),
                },
            })
        })
        .execute()
}

fn internal(message: impl Into<String>) -> StatementError {
    StatementError {
        code: PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        message: message.into(),
    }
}

/// An internal subtransaction (as PL/pgSQL's exception blocks use), ended by `commit` or
/// `rollback`. If neither is called, an error is on its way and the enclosing transaction's abort
/// ends it.
pub struct Subtransaction {
    context: pg_sys::MemoryContext,
    owner: pg_sys::ResourceOwner,
}

impl Subtransaction {
    pub fn begin() -> Self {
        // SAFETY: called inside a transaction; the memory context and resource owner are restored
        // when the subtransaction ends.
        unsafe {
            let context = pg_sys::CurrentMemoryContext;
            let owner = pg_sys::CurrentResourceOwner;
            pg_sys::BeginInternalSubTransaction(std::ptr::null());
            pg_sys::MemoryContextSwitchTo(context);
            Subtransaction { context, owner }
        }
    }

    pub fn commit(self) {
        // SAFETY: ends the subtransaction this value began.
        unsafe {
            pg_sys::ReleaseCurrentSubTransaction();
            self.restore();
        }
    }

    pub fn rollback(self) {
        // SAFETY: ends the subtransaction this value began.
        unsafe {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            self.restore();
        }
    }

    unsafe fn restore(&self) {
        unsafe {
            pg_sys::MemoryContextSwitchTo(self.context);
            pg_sys::CurrentResourceOwner = self.owner;
        }
    }
}

/// Runs `f` with the privileges of the bootstrap superuser, who owns the extension's state: callers
/// that write replicated tables need not (and must not) have rights on `paxos.*` themselves. What
/// they asked for still runs as them (see `run_as_logged`). An error raised inside restores the
/// caller's identity through the transaction abort.
pub fn as_extension_owner<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain calls of PostgreSQL's user-id API inside a live transaction.
    unsafe {
        let mut saved_user = pg_sys::Oid::INVALID;
        let mut saved_context = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        let out = f();
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        out
    }
}

/// Refuses to go on with a group that diverged here.
pub fn check_not_diverged(group_id: &str) -> Result<()> {
    refuse_diverged(group_id, store::divergence(group_id)?)
}

/// Refuses to go on with a group whose divergence, read already, is `divergence`.
pub fn refuse_diverged(group_id: &str, divergence: Option<(u64, String)>) -> Result<()> {
    match divergence {
        Some((round, cause)) => Err(PaxosError::Diverged {
            group: group_id.to_string(),
            round,
            cause,
        }),
        None => Ok(()),
    }
}
