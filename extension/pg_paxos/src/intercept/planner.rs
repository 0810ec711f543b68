//! The planner hook: a write to replicated tables (an INSERT, UPDATE or DELETE, also inside a
//! CTE) is made deterministic, deparsed with settings pinned so the text means the same on every
//! node, and its plan tagged so the executor hooks recognise it.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::determinism::{make_deterministic, CaptureFunctions};
use super::statements::{self, replicated_group, Intercepted};
use crate::error::{OrRaise, PaxosError, Result};
use crate::guc;
use crate::paxos::apply::as_extension_owner;
use crate::store;

pub static mut PREV_PLANNER: pg_sys::planner_hook_type = None;

thread_local! {
    /// The capture functions, for the extension object they belong to.
    static FUNCTIONS: Cell<Option<(pg_sys::Oid, CaptureFunctions)>> = const { Cell::new(None) };
}

#[pg_guard]
pub unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: the previous planner gets our arguments, with the query replaced by its
    // deterministic copy when it writes replicated tables.
    unsafe {
        let mut parse = parse;
        if !parse.is_null() && super::active() {
            if let Some(group) = written_group(parse).or_raise() {
                parse = intercept(parse, group).or_raise();
            }
        }
        match PREV_PLANNER {
            Some(prev) => prev(parse, query_string, cursor_options, bound_params),
            None => pg_sys::standard_planner(parse, query_string, cursor_options, bound_params),
        }
    }
}

/// The group whose replicated tables the query writes, if any.
unsafe fn written_group(query: *mut pg_sys::Query) -> Result<Option<String>> {
    // SAFETY: the casts follow PostgreSQL's query tree layout.
    unsafe {
        let mut written = vec![query];
        for cte in super::list_items::<pg_sys::CommonTableExpr>((*query).cteList) {
            let inner = (*cte).ctequery as *mut pg_sys::Query;
            if !inner.is_null() && (*inner).type_ == pg_sys::NodeTag::T_Query {
                written.push(inner);
            }
        }
        let mut groups: Vec<String> = Vec::new();
        for q in written {
            let writes = matches!(
                (*q).commandType,
                pg_sys::CmdType::CMD_INSERT
                    | pg_sys::CmdType::CMD_UPDATE
                    | pg_sys::CmdType::CMD_DELETE
            );
            if !writes || (*q).resultRelation <= 0 {
                continue;
            }
            let rte = pg_sys::list_nth((*q).rtable, (*q).resultRelation - 1)
                as *mut pg_sys::RangeTblEntry;
            if let Some(group) = replicated_group((*rte).relid) {
                if !groups.contains(&group) {
                    groups.push(group);
                }
            }
        }
        match groups.len() {
            0 | 1 => Ok(groups.pop()),
            _ => Err(PaxosError::InvalidArgument {
                message: format!(
                    "a statement writes replicated tables of several paxos groups ({})",
                    groups.join(", ")
                ),
                hint: "Write the tables of one group per transaction.",
            }),
        }
    }
}

/// Makes the write deterministic, refuses what stays mutable, deparses and registers it; returns
/// the tree to plan.
unsafe fn intercept(parse: *mut pg_sys::Query, group: String) -> Result<*mut pg_sys::Query> {
    let tag = statements::next_tag();
    // SAFETY: the trees are copies of `parse`, owned by the planner's memory context.
    unsafe {
        let trees = make_deterministic(parse, tag, capture_functions()?)?;
        if !guc::ALLOW_MUTABLE_FUNCTIONS.get()
            && pg_sys::contain_mutable_functions(trees.check as *mut pg_sys::Node)
        {
            return Err(PaxosError::InvalidArgument {
                message: "a statement on a replicated table calls a function whose result can differ between nodes".into(),
                hint: "Built-in functions such as now(), random() and nextval() are fine; compute the values of other functions first and pass them as constants, or set pg_paxos.allow_mutable_functions = on (superuser) if it does not matter.",
            });
        }
        let sql = statements::deparse(trees.deparse);
        // Concurrent inserts draw from a shared sequence in turns, so one that draws several
        // numbers from it may get gaps, which it cannot log (see `executor::logged_steps`):
        // only an insert of one row that draws each sequence once shares rounds.
        let draws_once = !trees.draws_sequences
            || (trees.draws_each_sequence_at_one_place && inserts_one_row(parse));
        let batchable = !trees.reads_tables && draws_once && is_blind_insert(parse);
        statements::register(
            tag,
            Intercepted {
                group,
                sql,
                sites: trees.sites,
                reads_tables: trees.reads_tables,
                batchable,
                forwardable: batchable && !trees.draws_sequences,
            },
        );
        (*trees.execute).queryId = tag;
        Ok(trees.execute)
    }
}

/// Whether the write only adds rows it carries itself: a plain INSERT (no ON CONFLICT, no CTE)
/// into a table where nothing else runs on the way (no rules, no row security, no triggers but
/// the immediate foreign-key checks). Two such writes running at once on a node give what they
/// give in either order: they read nothing, and two that collide on a key do not run at once (the
/// second waits for the first to end). So they may share a round in any order (see `batching`).
/// The caller has checked that the statement reads no table.
unsafe fn is_blind_insert(query: *mut pg_sys::Query) -> bool {
    // SAFETY: the query tree of the statement being planned; the relation is opened and closed
    // with the lock the parser took on it.
    unsafe {
        if (*query).commandType != pg_sys::CmdType::CMD_INSERT
            || !(*query).onConflict.is_null()
            || !(*query).cteList.is_null()
            || (*query).hasSubLinks
            || (*query).resultRelation <= 0
        {
            return false;
        }
        let rte = pg_sys::list_nth((*query).rtable, (*query).resultRelation - 1)
            as *mut pg_sys::RangeTblEntry;
        let relation = pg_sys::RelationIdGetRelation((*rte).relid);
        if relation.is_null() {
            return false;
        }
        let form = (*relation).rd_rel;
        let mut plain = (*form).relkind == pg_sys::RELKIND_RELATION as std::ffi::c_char
            && !(*form).relhasrules
            && !(*form).relrowsecurity;
        let triggers = (*relation).trigdesc;
        if plain && !triggers.is_null() {
            for i in 0..(*triggers).numtriggers as usize {
                let trigger = &*(*triggers).triggers.add(i);
                if !trigger.tgisinternal || trigger.tgdeferrable {
                    plain = false;
                }
            }
        }
        pg_sys::RelationClose(relation);
        plain
    }
}

/// An INSERT whose only range-table entry is its target: `VALUES` with one row, or `DEFAULT
/// VALUES` (more rows need a `VALUES` list or a `SELECT`, which add entries).
unsafe fn inserts_one_row(query: *mut pg_sys::Query) -> bool {
    // SAFETY: the query tree of the statement being planned.
    unsafe {
        let rtable = (*query).rtable;
        !rtable.is_null() && (*rtable).length == 1
    }
}

fn capture_functions() -> Result<CaptureFunctions> {
    let extension = super::extension_oid();
    if let Some((cached_for, functions)) = FUNCTIONS.get() {
        if cached_for == extension {
            return Ok(functions);
        }
    }
    let (value, sequence) = super::bypassing(|| as_extension_owner(store::capture_functions))?;
    let functions = CaptureFunctions { value, sequence };
    FUNCTIONS.set(Some((extension, functions)));
    Ok(functions)
}
