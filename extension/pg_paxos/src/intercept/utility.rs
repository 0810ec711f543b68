//! Utility statements on replicated tables: TRUNCATE goes through the log like any write; COPY
//! FROM, ALTER TABLE and DROP TABLE would change one node only, so they are refused with a hint
//! (a superuser sets `pg_paxos.enabled = off` on every member for schema maintenance).

use paxos_model::entries::Step;
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::statements::replicated_group;
use super::transaction;
use crate::error::{OrRaise, PaxosError};
use crate::store;

pub static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// The table a RangeVar names, if it exists.
unsafe fn relation_oid(relation: *const pg_sys::RangeVar) -> Option<pg_sys::Oid> {
    if relation.is_null() {
        return None;
    }
    // SAFETY: a name lookup without locking; a missing table gives InvalidOid.
    let oid = unsafe {
        pg_sys::RangeVarGetRelidExtended(
            relation,
            pg_sys::NoLock as i32,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    };
    (oid != pg_sys::Oid::INVALID).then_some(oid)
}

fn refuse(what: &str, group: &str) -> ! {
    PaxosError::NotSupported {
        message: format!("{what} a table replicated in paxos group {group:?} would change this node only"),
        hint: "Use INSERT, UPDATE, DELETE or TRUNCATE. To change the schema, a superuser sets pg_paxos.enabled = off and makes the same change on every member.",
    }
    .raise()
}

/// The statement as SQL for the log: TRUNCATE of replicated tables of one group.
unsafe fn truncate_sql(stmt: *mut pg_sys::TruncateStmt) -> Option<(String, String)> {
    let mut names = Vec::new();
    let mut group: Option<String> = None;
    let mut other = false;
    // SAFETY: `relations` is a List of RangeVar.
    unsafe {
        for rv in super::list_items::<pg_sys::RangeVar>((*stmt).relations) {
            let Some(oid) = relation_oid(rv) else {
                continue;
            };
            match replicated_group(oid) {
                Some(g) => {
                    if group.as_ref().is_some_and(|x| *x != g) {
                        PaxosError::InvalidArgument {
                            message: "TRUNCATE names tables of more than one paxos group".into(),
                            hint: "Truncate the tables of one group per statement.",
                        }
                        .raise();
                    }
                    let (name, _) = store::table_definition(oid).or_raise()?;
                    names.push(name);
                    group = Some(g);
                }
                None => other = true,
            }
        }
        let group = group?;
        if other {
            PaxosError::InvalidArgument {
                message: "TRUNCATE names replicated and local tables together".into(),
                hint: "Truncate the replicated tables in a statement of their own.",
            }
            .raise();
        }
        if (*stmt).behavior == pg_sys::DropBehavior::DROP_CASCADE {
            refuse("TRUNCATE ... CASCADE on", &group);
        }
        let restart = if (*stmt).restart_seqs {
            " RESTART IDENTITY"
        } else {
            ""
        };
        Some((
            group,
            format!("TRUNCATE TABLE {}{restart}", names.join(", ")),
        ))
    }
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: we read the utility statement and pass every argument on unchanged.
    unsafe {
        if super::active() && !(*pstmt).utilityStmt.is_null() {
            let node = (*pstmt).utilityStmt;
            if !matches!(
                (*node).type_,
                pg_sys::NodeTag::T_TransactionStmt
                    | pg_sys::NodeTag::T_VariableSetStmt
                    | pg_sys::NodeTag::T_VariableShowStmt
                    | pg_sys::NodeTag::T_TruncateStmt
            ) {
                // Schema changes, COPY and the like write this node only: its commit must flush.
                transaction::note_local_write();
            }
            match (*node).type_ {
                pg_sys::NodeTag::T_TruncateStmt => {
                    if let Some((group, sql)) = truncate_sql(node as *mut pg_sys::TruncateStmt) {
                        super::with_snapshot(|| {
                            transaction::begin_write(&group, false, None)?;
                            transaction::record_write(&group, vec![Step::Sql(sql)])
                        })
                        .or_raise();
                    }
                }
                pg_sys::NodeTag::T_CopyStmt => {
                    let copy = node as *mut pg_sys::CopyStmt;
                    if (*copy).is_from {
                        if let Some(g) = relation_oid((*copy).relation).and_then(replicated_group) {
                            refuse("COPY FROM into", &g);
                        }
                    }
                }
                pg_sys::NodeTag::T_AlterTableStmt => {
                    let alter = node as *mut pg_sys::AlterTableStmt;
                    if let Some(g) = relation_oid((*alter).relation).and_then(replicated_group) {
                        refuse("ALTER TABLE on", &g);
                    }
                }
                pg_sys::NodeTag::T_DropStmt => {
                    let drop = node as *mut pg_sys::DropStmt;
                    if (*drop).removeType == pg_sys::ObjectType::OBJECT_TABLE {
                        for names in super::list_items::<pg_sys::List>((*drop).objects) {
                            let rv = pg_sys::makeRangeVarFromNameList(names);
                            if let Some(g) = relation_oid(rv).and_then(replicated_group) {
                                refuse("DROP TABLE of", &g);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
    }
}
