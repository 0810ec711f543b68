//! At executor start: writes join their transaction's entry; strong reads catch up first.

use std::ffi::CStr;

use paxos_model::params;
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::analyze::{intercepted, replicated_group};
use super::transaction;
use crate::error::{OrRaise, PaxosError};
use crate::guc::{self, ConsistencyModel};

pub static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;

#[pg_guard]
pub unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    // SAFETY: query_desc is the executor's own; we only read it before passing it on.
    unsafe {
        let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0;
        if !explain_only && super::active() {
            let stmt = (*query_desc).plannedstmt;
            if let Some(write) = intercepted((*stmt).queryId) {
                let sql = with_parameters(&write.sql, (*query_desc).params).or_raise();
                transaction::record_write(&write.group, sql).or_raise();
            } else if (*stmt).commandType == pg_sys::CmdType::CMD_SELECT
                && guc::CONSISTENCY_MODEL.get() == ConsistencyModel::Strong
            {
                for group in replicated_groups_read((*stmt).rtable) {
                    transaction::catch_up_for_read(&group).or_raise();
                }
            }
        }
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query_desc, eflags),
            None => pg_sys::standard_ExecutorStart(query_desc, eflags),
        }
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

/// The deparsed statement with its bound parameter values written in as typed literals.
unsafe fn with_parameters(
    sql: &str,
    params: pg_sys::ParamListInfo,
) -> crate::error::Result<String> {
    // SAFETY: params is the executor's parameter list; fetch hooks (PL/pgSQL) are called as the
    // executor would.
    unsafe {
        if params.is_null() || (*params).numParams == 0 {
            return Ok(sql.to_string());
        }
        let mut values = Vec::new();
        for i in 0..(*params).numParams {
            let mut workspace = pg_sys::ParamExternData::default();
            let param = match (*params).paramFetch {
                Some(fetch) => fetch(params, i + 1, false, &mut workspace),
                None => (*params).params.as_mut_ptr().add(i as usize),
            };
            if param.is_null() || (*param).ptype == pg_sys::Oid::INVALID {
                return Err(PaxosError::InvalidArgument {
                    message: format!(
                        "parameter ${} of a statement on a replicated table has no type",
                        i + 1
                    ),
                    hint: "Give the parameter a type, e.g. $1::integer.",
                });
            }
            let type_name = CStr::from_ptr(pg_sys::format_type_extended(
                (*param).ptype,
                -1,
                pg_sys::FORMAT_TYPE_FORCE_QUALIFY as u16,
            ))
            .to_string_lossy()
            .into_owned();
            let text = if (*param).isnull {
                None
            } else {
                let mut output = pg_sys::Oid::INVALID;
                let mut varlena = false;
                pg_sys::getTypeOutputInfo((*param).ptype, &mut output, &mut varlena);
                let out = pg_sys::OidOutputFunctionCall(output, (*param).value);
                Some(CStr::from_ptr(out).to_string_lossy().into_owned())
            };
            values.push(params::literal(text.as_deref(), &type_name));
        }
        Ok(params::substitute(sql, &values)?)
    }
}
