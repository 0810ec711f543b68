//! Executor hooks. At start, a write brings its transaction's group up to date (first write of
//! the transaction) and starts recording what it draws; at end, it joins its transaction's entry
//! with its parameters and drawn values written in. A strong read catches up at start.

use paxos_model::entries::Step;
use paxos_model::params;
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::capture::{self, Captured, InFlight};
use super::determinism::SITE_PARAMETER_BASE;
use super::literals;
use super::statements::{intercepted, replicated_group, Intercepted};
use super::transaction;
use crate::error::{OrRaise, PaxosError, Result};
use crate::guc::{self, ConsistencyModel};
use crate::store;

pub static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
pub static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;

/// After catching up, a statement under READ COMMITTED runs on a snapshot taken now: the one it
/// was given was taken before, and misses what other backends of this node applied since (a read
/// would be stale; a write would run here on other rows than on the nodes that replay it).
/// Under REPEATABLE READ and SERIALIZABLE the transaction keeps its snapshot.
unsafe fn use_fresh_snapshot(query_desc: *mut pg_sys::QueryDesc) {
    // SAFETY: a query descriptor holds one registration of its snapshot (taken by
    // CreateQueryDesc, released by FreeQueryDesc, both on the current resource owner): it is
    // moved from the old snapshot to the new one.
    unsafe {
        if pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32 {
            let fresh = pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot());
            pg_sys::UnregisterSnapshot((*query_desc).snapshot);
            (*query_desc).snapshot = fresh;
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    // SAFETY: query_desc is the executor's own; we only read it before passing it on.
    unsafe {
        let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0;
        if !explain_only && super::active() {
            let stmt = (*query_desc).plannedstmt;
            if let Some(write) = intercepted((*stmt).queryId) {
                let forward_target = (write.forwardable && sent_by_client(stmt))
                    .then(|| insert_target(stmt))
                    .flatten();
                transaction::begin_write(&write.group, write.batchable, forward_target).or_raise();
                capture::start((*stmt).queryId, write.sites.len());
                use_fresh_snapshot(query_desc);
            } else if matches!(
                (*stmt).commandType,
                pg_sys::CmdType::CMD_INSERT
                    | pg_sys::CmdType::CMD_UPDATE
                    | pg_sys::CmdType::CMD_DELETE
                    | pg_sys::CmdType::CMD_MERGE
            ) {
                // A write to a table that is not replicated: it lives on this node only.
                transaction::note_local_write();
            } else if (*stmt).commandType == pg_sys::CmdType::CMD_SELECT {
                let groups = replicated_groups_read((*stmt).rtable);
                for group in &groups {
                    transaction::note_read(group);
                }
                if guc::CONSISTENCY_MODEL.get() == ConsistencyModel::Strong {
                    for group in &groups {
                        transaction::catch_up_for_read(group).or_raise();
                    }
                    if !groups.is_empty() {
                        use_fresh_snapshot(query_desc);
                    }
                }
            }
        }
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query_desc, eflags),
            None => pg_sys::standard_ExecutorStart(query_desc, eflags),
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn executor_end(query_desc: *mut pg_sys::QueryDesc) {
    // SAFETY: the plan, parameters and estate stay valid until the executor ends below.
    unsafe {
        let tag = (*(*query_desc).plannedstmt).queryId;
        if let Some(write) = intercepted(tag) {
            if let Some(ran) = capture::finish(tag) {
                if !ran.nested {
                    let steps = logged_steps(&write, &ran, (*query_desc).params).or_raise();
                    transaction::record_write(&write.group, steps).or_raise();
                }
            }
        }
        match PREV_EXECUTOR_END {
            Some(prev) => prev(query_desc),
            None => pg_sys::standard_ExecutorEnd(query_desc),
        }
    }
}

/// Whether `stmt` is the one statement of the portal the client runs, not a statement that a
/// function or a DO block runs on its behalf (which may go on to write more, and must then write
/// alone from the start).
unsafe fn sent_by_client(stmt: *mut pg_sys::PlannedStmt) -> bool {
    // SAFETY: ActivePortal is the portal this backend runs now (or null); its statement list is
    // a List of PlannedStmt, the very nodes the executor is given.
    unsafe {
        let portal = pg_sys::ActivePortal;
        if portal.is_null() {
            return false;
        }
        let stmts = (*portal).stmts;
        !stmts.is_null()
            && (*stmts).length == 1
            && pg_sys::list_nth(stmts, 0) as *mut pg_sys::PlannedStmt == stmt
    }
}

/// The table an INSERT plan writes.
unsafe fn insert_target(stmt: *mut pg_sys::PlannedStmt) -> Option<pg_sys::Oid> {
    // SAFETY: resultRelations is an integer List of range-table indexes (from 1) into rtable.
    unsafe {
        let results = (*stmt).resultRelations;
        if results.is_null() || (*results).length != 1 {
            return None;
        }
        let index = pg_sys::list_nth_int(results, 0);
        let rte = pg_sys::list_nth((*stmt).rtable, index - 1) as *mut pg_sys::RangeTblEntry;
        (!rte.is_null()).then(|| (*rte).relid)
    }
}

/// The groups of the replicated tables a plan reads.
unsafe fn replicated_groups_read(rtable: *mut pg_sys::List) -> Vec<String> {
    let mut groups = Vec::new();
    // SAFETY: rtable is a List of RangeTblEntry.
    for rte in unsafe { super::list_items::<pg_sys::RangeTblEntry>(rtable) } {
        // SAFETY: each element is a RangeTblEntry of the plan.
        let (kind, relid) = unsafe { ((*rte).rtekind, (*rte).relid) };
        if kind == pg_sys::RTEKind::RTE_RELATION {
            if let Some(group) = replicated_group(relid) {
                if !groups.contains(&group) {
                    groups.push(group);
                }
            }
        }
    }
    groups
}

/// What a finished write logs: a restart of every sequence it drew from, then its text with
/// parameters and site values written in.
unsafe fn logged_steps(
    write: &Intercepted,
    ran: &InFlight,
    params: pg_sys::ParamListInfo,
) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for drawn in &ran.sequences {
        let (sequence, increment) = store::sequence_facts(drawn.sequence)?;
        if drawn.count > 1 && write.reads_tables {
            return Err(PaxosError::NotSupported {
                message: format!("a write to a replicated table drew several numbers from sequence {sequence} while reading tables, and other nodes may read the rows in another order"),
                hint: "Give the column values explicitly, or insert with VALUES.",
            });
        }
        let span = drawn.last.wrapping_sub(drawn.first);
        if span != (drawn.count as i64 - 1).wrapping_mul(increment) {
            return Err(PaxosError::NotSupported {
                message: format!("sequence {sequence} gave a write to a replicated table numbers that are not consecutive, so other nodes cannot draw the same ones"),
                hint: "Use CACHE 1 on sequences of replicated tables, and retry.",
            });
        }
        steps.push(Step::RestartSequence {
            sequence,
            next: drawn.first,
        });
    }
    // SAFETY: per the caller.
    let user_values = unsafe { parameter_literals(params)? };
    let base = SITE_PARAMETER_BASE as usize;
    let sql = params::substitute_with(&write.sql, |n| {
        if n > base {
            let site = write.sites.get(n - base - 1)?;
            let type_name = literals::type_name(site.typid, site.typmod);
            Some(match ran.values.get(n - base - 1)? {
                Captured::Value(text) => params::literal(text.as_deref(), &type_name),
                Captured::NotEvaluated => params::literal(None, &type_name),
                Captured::Varies => format!("({})::{type_name}", site.expression),
            })
        } else {
            user_values.get(n.checked_sub(1)?).cloned()
        }
    })?;
    steps.push(Step::Sql(sql));
    Ok(steps)
}

/// The bound parameter values as typed literals.
unsafe fn parameter_literals(params: pg_sys::ParamListInfo) -> Result<Vec<String>> {
    // SAFETY: params is the executor's parameter list; fetch hooks (PL/pgSQL) are called as the
    // executor would.
    unsafe {
        if params.is_null() {
            return Ok(Vec::new());
        }
        let mut values = Vec::new();
        for i in 0..(*params).numParams {
            let mut workspace = pg_sys::ParamExternData::default();
            let param = match (*params).paramFetch {
                Some(fetch) => fetch(params, i + 1, false, &mut workspace),
                None => (*params).params.as_mut_ptr().add(i as usize),
            };
            if param.is_null() || (*param).ptype == pg_sys::Oid::INVALID {
                // An unused parameter; a used one always has a type.
                values.push("NULL".to_string());
                continue;
            }
            let text =
                (!(*param).isnull).then(|| literals::output_text((*param).ptype, (*param).value));
            values.push(params::literal(
                text.as_deref(),
                &literals::type_name((*param).ptype, -1),
            ));
        }
        Ok(values)
    }
}
