//! Interception of statements on replicated tables (hooks; active when `pg_paxos` is in
//! `shared_preload_libraries`):
//!
//! - when planned, an INSERT, UPDATE or DELETE on a replicated table (also in a CTE) is made
//!   deterministic (`determinism`), deparsed with settings pinned so the text means the same on
//!   every node, and tagged (`planner`);
//! - at executor start, the log is applied up to the group's highest round (first write of the
//!   transaction); while it runs, the values of `now()`, `random()`, `nextval()` and the like are
//!   recorded (`capture`); at executor end, its parameters and recorded values are written into
//!   the text, which joins its transaction's entry;
//! - at COMMIT, the transaction's statements are proposed as one entry for exactly the next round
//!   (`40001` when another entry won it); ROLLBACK logs nothing;
//! - TRUNCATE goes through the log too; COPY FROM, ALTER TABLE and DROP TABLE are refused;
//! - a SELECT on a replicated table under `pg_paxos.consistency_model = strong` first applies the
//!   log up to the group's highest accepted round.
//!
//! Replayed statements and the extension's own queries are never intercepted.

mod capture;
mod determinism;
mod executor;
mod literals;
mod planner;
mod statements;
mod transaction;
mod utility;

use std::cell::Cell;

use pgrx::pg_sys;

use crate::guc;

thread_local! {
    /// Set while this backend replays log entries or runs its own queries.
    static BYPASS: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` with interception off (replay, internal queries). Nested calls are fine; an error
/// raised inside ends the transaction, and `reset_bypass` at transaction end clears the count.
pub fn bypassing<T>(f: impl FnOnce() -> T) -> T {
    BYPASS.with(|b| b.set(b.get() + 1));
    let out = f();
    BYPASS.with(|b| b.set(b.get().saturating_sub(1)));
    out
}

fn bypassed() -> bool {
    BYPASS.with(|b| b.get() > 0)
}

pub(crate) fn reset_bypass() {
    BYPASS.with(|b| b.set(0));
}

/// Runs `f` with an active snapshot, pushing one when there is none (hooks and transaction
/// callbacks run SPI at moments PostgreSQL has not set one up).
pub fn with_snapshot<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: a snapshot pushed here is popped before returning; on error the transaction abort
    // cleans up the active snapshot stack.
    unsafe {
        let pushed = !pg_sys::ActiveSnapshotSet();
        if pushed {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        let out = f();
        if pushed {
            pg_sys::PopActiveSnapshot();
        }
        out
    }
}

/// Interception applies: enabled, not bypassed, and the extension exists in this database (the
/// library is preloaded into every database of the server).
fn active() -> bool {
    if !guc::ENABLED.get() || bypassed() {
        return false;
    }
    // SAFETY: reads backend-global flags.
    unsafe {
        if pg_sys::creating_extension || !pg_sys::IsTransactionState() {
            return false;
        }
    }
    extension_oid() != pg_sys::Oid::INVALID
}

thread_local! {
    /// The extension's oid in this database, once looked up (that scans pg_extension, and every
    /// statement asks several times). Creating or dropping the extension creates or drops its
    /// tables, whose relcache invalidations reach every backend before its next transaction and
    /// clear this (see `statements::relation_changed`).
    static EXTENSION: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
}

/// The oid of extension pg_paxos in this database (invalid when it is not created).
pub(crate) fn extension_oid() -> pg_sys::Oid {
    if let Some(oid) = EXTENSION.get() {
        return oid;
    }
    // SAFETY: a catalog lookup inside a transaction (the callers check).
    let oid = unsafe { pg_sys::get_extension_oid(c"pg_paxos".as_ptr(), true) };
    EXTENSION.set(Some(oid));
    oid
}

/// Relations changed: the extension may have been created or dropped since.
pub(crate) fn forget_extension_oid() {
    EXTENSION.set(None);
}

/// Reserves shared memory; call from `_PG_init`.
pub fn init() {
    statements::init();
}

pub use transaction::write_forwarded;

/// Tables were registered as replicated in this transaction (see `statements`).
pub fn tables_registered() {
    statements::tables_registered();
}

/// The elements of a PostgreSQL `List` of pointers (none for NIL).
///
/// # Safety
/// `list` must be NIL or a valid pointer list whose elements point to `T`.
unsafe fn list_items<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    // SAFETY: per the contract above.
    unsafe {
        let n = if list.is_null() { 0 } else { (*list).length };
        (0..n)
            .map(|i| pg_sys::list_nth(list, i) as *mut T)
            .collect()
    }
}

/// Installs the hooks, chaining to whatever was installed before; call from `_PG_init`.
pub fn install() {
    // SAFETY: _PG_init runs once per process before any query; the previous hooks are saved and
    // always called.
    unsafe {
        planner::PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner::planner);
        executor::PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor::executor_start);
        executor::PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor::executor_end);
        utility::PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(utility::process_utility);
        pg_sys::RegisterXactCallback(Some(transaction::xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(transaction::subxact_callback), std::ptr::null_mut());
    }
}
