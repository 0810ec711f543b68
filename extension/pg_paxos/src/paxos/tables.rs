//! Replicated tables: registering a table with a group, and logging statements on them.

use std::time::Duration;

use paxos_model::entries::{LoggedStatement, TableDefinition};
use paxos_model::value::ValueKind;

use crate::error::{PaxosError, Result};
use crate::guc;
use crate::net::pool::{net, Param};
use crate::net::rpc;
use crate::paxos::apply;
use crate::paxos::replicated_log::{new_value, ReplicatedLog};
use crate::paxos::round;
use crate::store;

/// Replicates table `relid` in `group_id`: checks that every reachable member has the same table
/// (a majority must answer), then registers it through the log, so every member registers it when
/// it applies that round. Idempotent.
pub fn replicate(group_id: &str, relid: pgrx::pg_sys::Oid) -> Result<u64> {
    let log = ReplicatedLog::open(group_id)?;
    apply::check_not_diverged(group_id)?;
    let (name, columns) =
        store::table_definition(relid)?.ok_or_else(|| PaxosError::InvalidArgument {
            message: "only ordinary and partitioned tables can be replicated".into(),
            hint: "Pass a table, e.g. paxos_replicate_table('mokka', 'public.coordinates').",
        })?;
    if store::replicated_tables(group_id)?.contains(&name) {
        pgrx::notice!("table {name} is replicated in paxos group {group_id:?} already");
        return Ok(log.group.applied_round);
    }
    check_members_have(&log, &name, &columns)?;
    let definition = TableDefinition { name, columns };
    let round = log.append(new_value(
        "replicate_table",
        ValueKind::ReplicateTable,
        Some(definition.encode()),
    ))?;
    log.apply_log(round)?;
    apply::check_not_diverged(group_id)?;
    register_on_members(&log, round)?;
    Ok(round)
}

/// The members other than this node. This node answers for itself inside the caller's
/// transaction: a call through its own loopback connection would wait for locks this transaction
/// holds.
fn other_members(log: &ReplicatedLog) -> Result<(usize, Vec<String>)> {
    let members = log.current_members()?;
    let total = members.len();
    let others = members
        .into_iter()
        .filter(|m| *m != log.group.self_conninfo)
        .collect();
    Ok((total, others))
}

/// Has every other reachable member apply the log through the registration round, so that each
/// one intercepts writes to the table from now on (this node applied it already). A member that
/// does not answer registers the table when it next applies the log.
fn register_on_members(log: &ReplicatedLog, round: u64) -> Result<()> {
    let (_, members) = other_members(log)?;
    let links = log.links(&members)?;
    let net = net()?;
    let answers = net.block_on(round::gather(
        &links,
        rpc::APPLY_THROUGH,
        vec![
            Param::Text(Some(log.id().to_string())),
            Param::Int(round as i64),
        ],
        round::Ask::SkippingDown,
        &|_| false,
        log.round_timeout(),
    ));
    net.emit_warnings();
    for (i, answer) in answers {
        if let Err(e) = answer {
            pgrx::warning!(
                "pg_paxos: member {} has not registered the table yet ({}); it does when it next applies the log",
                links[i].label,
                e.message()
            );
        }
    }
    Ok(())
}

/// Checks that a majority of the members, this node included, have the table with the same
/// columns, and that no member that answered lacks it or has it otherwise.
fn check_members_have(log: &ReplicatedLog, name: &str, columns: &str) -> Result<()> {
    let (total, members) = other_members(log)?;
    let links = log.links(&members)?;
    let wait = Duration::from_millis(guc::millis(&guc::CONNECT_TIMEOUT_MS) + 1000);
    let net = net()?;
    let answers = net.block_on(round::gather(
        &links,
        rpc::TABLE_COLUMNS,
        vec![Param::Text(Some(name.to_string()))],
        round::Ask::SkippingDown,
        &|_| false,
        wait,
    ));
    net.emit_warnings();
    // This node has the table: its definition is what the others are compared with.
    let mut answered = total - members.len();
    for (i, answer) in answers {
        let Ok(rows) = answer else { continue };
        answered += 1;
        let theirs: Option<String> = rows.first().and_then(|r| r.try_get(0).ok()).flatten();
        compare_table(&format!("member {}", links[i].label), name, columns, theirs)?;
    }
    if answered < paxos_core::proposer::majority(total) {
        return Err(PaxosError::NoMajority {
            group: log.id().to_string(),
            action: "check the table on the members",
            answered,
            total,
            last_error: None,
        });
    }
    Ok(())
}

/// How often a statement is retried when other entries keep winning the round it was run for.
const STATEMENT_ATTEMPTS: u32 = 5;

/// Runs `sql` as the current role and logs it, so that every member replays it in the same order.
/// It runs here on the state of every round before the one it is proposed for, inside a
/// subtransaction: if it fails, nothing is logged; if another entry wins that round, its effects
/// are undone, the winner applied, and it runs again for the next round. So a statement logged by
/// one node produced its effect on exactly the state every other node replays it on. Returns the
/// round; fails with 40001 when other entries won every attempt.
pub fn append_statement(group_id: &str, sql: &str) -> Result<u64> {
    let role = store::current_role()?;
    apply::as_extension_owner(|| append_statement_as(group_id, sql, role))
}

fn append_statement_as(group_id: &str, sql: &str, role: String) -> Result<u64> {
    let log = ReplicatedLog::open(group_id)?;
    apply::check_not_diverged(group_id)?;
    let statement = LoggedStatement::sql(role, sql);
    let value = new_value("statement", ValueKind::Statement, Some(statement.encode()));
    for _ in 0..STATEMENT_ATTEMPTS {
        let applied = log.apply_log(store::highest_learned(group_id)?)?;
        apply::check_not_diverged(group_id)?;
        let round = applied + 1;
        if store::learned(group_id, round)?.is_some() {
            continue;
        }
        log.prepare_to_propose(round)?;
        let sub = apply::Subtransaction::begin();
        if let Err(error) = apply::run_as_logged(&statement) {
            sub.rollback();
            return Err(PaxosError::StatementFailed(error));
        }
        let chosen = log.decide(round, Some(value.clone()))?;
        if chosen.origin == value.origin {
            sub.commit();
            store::set_applied_round(group_id, round)?;
            return Ok(round);
        }
        sub.rollback();
    }
    Err(PaxosError::RoundTimeout {
        group: group_id.to_string(),
        round: 0,
        millis: 0,
        attempts: STATEMENT_ATTEMPTS,
        answered: 0,
        total: 0,
    })
}

/// Lets a repaired node apply its group again, optionally from another applied round (when its
/// tables were copied from a member that had applied that far).
pub fn resume(group_id: &str, applied_round: Option<u64>) -> Result<()> {
    store::require_group(group_id)?;
    store::lock_applied_round(group_id)?;
    if let Some(round) = applied_round {
        // Every mark up to the new applied round goes, whichever round the node had reached.
        store::advance_applied_round(group_id, 0, round)?;
    }
    store::set_divergence(group_id, None)
}

/// A replicated table's definition and rows, as of one applied round.
pub struct TableCopy {
    pub name: String,
    pub columns: String,
    /// The rows as a JSON array of objects.
    pub rows: String,
}

/// For a joining member: applies the log through `through` (or further, if this node is ahead) and
/// returns the applied round with every replicated table's rows at exactly that round.
pub fn snapshot(group_id: &str, through: u64) -> Result<(u64, Vec<TableCopy>)> {
    crate::intercept::bypassing(|| {
        let log = ReplicatedLog::open(group_id)?;
        apply::check_not_diverged(group_id)?;
        // Batched writes may have committed here beyond the applied round: the copy covers them,
        // so it is taken once their rounds are applied (and with no batched writer running).
        // The round read under the lock, not the one `open` read before it: a transaction that
        // applied further and committed while this one waited for the lock left its rows in the
        // tables, and `apply_log` has nothing to apply then (it answers the older round).
        let locked = store::lock_applied_round(group_id)?;
        let through = through.max(store::highest_batched(group_id)?).max(locked);
        let applied = log.apply_log(through)?;
        apply::check_not_diverged(group_id)?;
        let mut copies = Vec::new();
        for name in store::replicated_tables(group_id)? {
            let columns = store::table_columns(&name)?.unwrap_or_default();
            // `name` comes from our catalog, written by format('%I.%I').
            let rows = pgrx::Spi::get_one::<String>(&format!(
                "SELECT coalesce(pg_catalog.json_agg(t), '[]')::text FROM {name} AS t"
            ))?
            .unwrap_or_else(|| "[]".into());
            copies.push(TableCopy {
                name,
                columns,
                rows,
            });
        }
        Ok((applied, copies))
    })
}

/// Checks that table `name` on `node` (as the error names it) has the group's `columns`, given
/// the columns `found` there (`None`: no such table).
fn compare_table(node: &str, name: &str, columns: &str, found: Option<String>) -> Result<()> {
    let problem = match found {
        Some(found) if found == columns => return Ok(()),
        Some(_) => "has other columns",
        None => "does not exist",
    };
    Err(PaxosError::TableMismatch {
        node: node.to_string(),
        table: name.to_string(),
        problem: problem.to_string(),
        missing: problem == "does not exist",
    })
}

/// Checks that a table the group replicates exists on this node, which joins the group, with the
/// group's `columns`.
pub fn check_local_table(name: &str, columns: &str) -> Result<()> {
    compare_table(
        "this node, which joins the group",
        name,
        columns,
        store::table_columns(name)?,
    )
}

/// For a joining member: registers the tables of a snapshot and replaces their rows. A table that
/// is missing or different here fails the join.
pub fn install_snapshot(group_id: &str, round: u64, copies: &[TableCopy]) -> Result<()> {
    crate::intercept::bypassing(|| {
        for copy in copies {
            check_local_table(&copy.name, &copy.columns)?;
            store::register_table(group_id, &copy.name, &copy.columns, round)?;
            let name = &copy.name;
            pgrx::Spi::run(&format!("DELETE FROM {name}"))?;
            pgrx::Spi::run_with_args(
                &format!(
                    "INSERT INTO {name} OVERRIDING SYSTEM VALUE SELECT * FROM pg_catalog.json_populate_recordset(NULL::{name}, $1::pg_catalog.json)"
                ),
                &[copy.rows.as_str().into()],
            )?;
            advance_sequences_past_rows(name)?;
        }
        Ok(())
    })
}

/// Moves the sequences of a table's serial and identity columns past the copied rows, so that
/// this node never draws a number a row has. (Every later entry restarts the sequences it draws
/// from at the proposer's numbers.)
fn advance_sequences_past_rows(table: &str) -> Result<()> {
    let owned: Vec<(String, String)> = pgrx::Spi::connect(|client| {
        let rows = client.select(
            "SELECT pg_catalog.quote_ident(a.attname), pg_catalog.pg_get_serial_sequence($1, a.attname) \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped",
            None,
            &[table.into()],
        )?;
        let mut owned = Vec::new();
        for row in rows {
            if let (Some(column), Some(sequence)) = (row.get::<String>(1)?, row.get::<String>(2)?) {
                owned.push((column, sequence));
            }
        }
        Ok::<_, pgrx::spi::SpiError>(owned)
    })?;
    for (column, sequence) in owned {
        // `table` comes from our catalog and `column` is quoted by quote_ident.
        pgrx::Spi::run_with_args(
            &format!(
                "SELECT pg_catalog.setval($1::pg_catalog.regclass, max({column})::pg_catalog.int8) FROM {table} HAVING max({column}) IS NOT NULL"
            ),
            &[sequence.as_str().into()],
        )?;
    }
    Ok(())
}
