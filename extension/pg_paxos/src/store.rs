//! Durable state of this node, in the tables of schema `paxos`, through SPI. Every query names
//! its tables schema-qualified and binds its values.
//!
//! - `groups`: the groups this node belongs to, its own connection string and its applied round.
//! - `acceptor_slots`: the acceptor's promise and vote per round; never deleted, since a vote may
//!   be needed to keep a chosen value chosen.
//! - `log`: values known to be chosen, per round; membership changes are read from here.

use paxos_core::{Accepted, Ballot, SlotState};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::error::{PaxosError, Result};
use paxos_model::conninfo::Defaults;
use paxos_model::value::{LogValue, ValueKind};

pub struct Group {
    pub id: String,
    pub self_conninfo: String,
    pub applied_round: u64,
}

/// Rounds are u64 in Rust and bigint in SQL; `u64::MAX` means "after every round".
fn round_arg<'a>(round: u64) -> DatumWithOid<'a> {
    (round.min(i64::MAX as u64) as i64).into()
}

fn to_round(v: Option<i64>) -> u64 {
    v.unwrap_or(0).max(0) as u64
}

/// The first column of the first row of `sql`, or `None` when it returns no row (or NULL).
fn first_value<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> Result<Option<T>> {
    Ok(Spi::connect_mut(|client| {
        let table = client.update(sql, Some(1), args)?;
        if table.is_empty() {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        table.first().get_one::<T>()
    })?)
}

pub fn group(group_id: &str) -> Result<Option<Group>> {
    Ok(Spi::connect(|client| {
        let rows = client.select(
            "SELECT self_conninfo, applied_round FROM paxos.groups WHERE group_id = $1",
            Some(1),
            &[group_id.into()],
        )?;
        let mut out = None;
        for row in rows {
            out = Some(Group {
                id: group_id.to_string(),
                self_conninfo: row.get::<String>(1)?.unwrap_or_default(),
                applied_round: to_round(row.get::<i64>(2)?),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?)
}

pub fn require_group(group_id: &str) -> Result<Group> {
    group(group_id)?.ok_or_else(|| PaxosError::UnknownGroup {
        group: group_id.to_string(),
    })
}

pub fn group_ids() -> Result<Vec<String>> {
    Ok(Spi::connect(|client| {
        let rows = client.select("SELECT group_id FROM paxos.groups ORDER BY 1", None, &[])?;
        let mut out = Vec::new();
        for row in rows {
            out.extend(row.get::<String>(1)?);
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?)
}

/// Creates the local record of a group. False when it exists already.
pub fn insert_group(group_id: &str, self_conninfo: &str, applied_round: u64) -> Result<bool> {
    let inserted = first_value::<bool>(
        "INSERT INTO paxos.groups (group_id, self_conninfo, applied_round) VALUES ($1, $2, $3)
         ON CONFLICT (group_id) DO NOTHING RETURNING true",
        &[
            group_id.into(),
            self_conninfo.into(),
            round_arg(applied_round),
        ],
    )?;
    Ok(inserted.unwrap_or(false))
}

pub fn delete_group(group_id: &str) -> Result<()> {
    Spi::run_with_args(
        "DELETE FROM paxos.groups WHERE group_id = $1",
        &[group_id.into()],
    )?;
    Ok(())
}

/// The applied round, locked until the end of the transaction so that concurrent appliers on this
/// node apply every entry exactly once.
pub fn lock_applied_round(group_id: &str) -> Result<u64> {
    let round = first_value::<i64>(
        "SELECT applied_round FROM paxos.groups WHERE group_id = $1 FOR UPDATE",
        &[group_id.into()],
    )?;
    round
        .map(|r| r.max(0) as u64)
        .ok_or_else(|| PaxosError::UnknownGroup {
            group: group_id.to_string(),
        })
}

pub fn set_applied_round(group_id: &str, round: u64) -> Result<()> {
    Spi::run_with_args(
        "UPDATE paxos.groups SET applied_round = $2 WHERE group_id = $1",
        &[group_id.into(), round_arg(round)],
    )?;
    Ok(())
}

fn value_from_row(row: &pgrx::spi::SpiHeapTupleData, first: usize) -> Result<Option<LogValue>> {
    let origin = row.get::<String>(first)?;
    let kind = row.get::<String>(first + 1)?;
    let body = row.get::<String>(first + 2)?;
    match (origin, kind) {
        (Some(origin), Some(kind)) => Ok(Some(LogValue::from_columns(origin, &kind, body)?)),
        _ => Ok(None),
    }
}

pub fn learned(group_id: &str, round: u64) -> Result<Option<LogValue>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT value_origin, value_kind, value_body FROM paxos.log
             WHERE group_id = $1 AND round = $2",
            Some(1),
            &[group_id.into(), round_arg(round)],
        )?;
        let mut out = None;
        for row in rows {
            out = value_from_row(&row, 1)?;
        }
        Ok(out)
    })
}

/// Records a chosen value. Idempotent: a chosen value never changes, so a second record of the same
/// round is the same value.
pub fn record_learned(group_id: &str, round: u64, value: &LogValue) -> Result<()> {
    Spi::run_with_args(
        "INSERT INTO paxos.log (group_id, round, value_origin, value_kind, value_body)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_id, round) DO NOTHING",
        &[
            group_id.into(),
            round_arg(round),
            value.origin.as_str().into(),
            value.kind.as_str().into(),
            value.body.as_deref().into(),
        ],
    )?;
    Ok(())
}

pub fn highest_learned(group_id: &str) -> Result<u64> {
    Ok(to_round(first_value::<i64>(
        "SELECT max(round) FROM paxos.log WHERE group_id = $1",
        &[group_id.into()],
    )?))
}

/// Rounds in `from..=to` whose value this node does not know yet, ascending.
pub fn unlearned_rounds(group_id: &str, from: u64, to: u64) -> Result<Vec<u64>> {
    if from > to {
        return Ok(Vec::new());
    }
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT r FROM generate_series($2::bigint, $3::bigint) AS r
             WHERE NOT EXISTS (SELECT 1 FROM paxos.log WHERE group_id = $1 AND round = r)
             ORDER BY r",
            None,
            &[group_id.into(), round_arg(from), round_arg(to)],
        )?;
        let mut out = Vec::new();
        for row in rows {
            out.push(to_round(row.get::<i64>(1)?));
        }
        Ok(out)
    })
}

/// Membership changes recorded in the log before `round`, ascending: (round, kind, member).
pub fn membership_changes(
    group_id: &str,
    before_round: u64,
) -> Result<Vec<(u64, ValueKind, String)>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT round, value_kind, value_body FROM paxos.log
             WHERE group_id = $1 AND round < $2 AND value_kind IN ('add_host', 'remove_host')
             ORDER BY round",
            None,
            &[group_id.into(), round_arg(before_round)],
        )?;
        let mut out = Vec::new();
        for row in rows {
            let kind = ValueKind::parse(&row.get::<String>(2)?.unwrap_or_default())?;
            out.push((
                to_round(row.get::<i64>(1)?),
                kind,
                row.get::<String>(3)?.unwrap_or_default(),
            ));
        }
        Ok(out)
    })
}

/// Chosen values in `from..=to`, ascending, for a joining member.
pub fn log_range(group_id: &str, from: u64, to: u64) -> Result<Vec<(u64, LogValue)>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT round, value_origin, value_kind, value_body FROM paxos.log
             WHERE group_id = $1 AND round BETWEEN $2 AND $3 ORDER BY round",
            None,
            &[group_id.into(), round_arg(from), round_arg(to)],
        )?;
        let mut out = Vec::new();
        for row in rows {
            if let Some(value) = value_from_row(&row, 2)? {
                out.push((to_round(row.get::<i64>(1)?), value));
            }
        }
        Ok(out)
    })
}

/// The acceptor's slot for a round, row-locked so that concurrent requests for the same round are
/// handled one after another. `None` when the acceptor never saw this round.
pub fn lock_slot(group_id: &str, round: u64) -> Result<Option<SlotState<LogValue>>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT promised_num, promised_by, accepted_num, accepted_by,
                    value_origin, value_kind, value_body
             FROM paxos.acceptor_slots WHERE group_id = $1 AND round = $2 FOR UPDATE",
            Some(1),
            &[group_id.into(), round_arg(round)],
        )?;
        let mut out = None;
        for row in rows {
            let promised = match (row.get::<i64>(1)?, row.get::<String>(2)?) {
                (Some(n), Some(by)) => Some(Ballot::new(n as u64, by)),
                _ => None,
            };
            let accepted = match (
                row.get::<i64>(3)?,
                row.get::<String>(4)?,
                value_from_row(&row, 5)?,
            ) {
                (Some(n), Some(by), Some(value)) => Some(Accepted {
                    ballot: Ballot::new(n as u64, by),
                    value,
                }),
                _ => None,
            };
            out = Some(SlotState { promised, accepted });
        }
        Ok(out)
    })
}

/// Writes a slot. With `existed` false it inserts, and returns false if a concurrent request created
/// the row first (the caller then retries against the locked row).
pub fn write_slot(
    group_id: &str,
    round: u64,
    slot: &SlotState<LogValue>,
    existed: bool,
) -> Result<bool> {
    let promised = slot.promised.as_ref();
    let accepted = slot.accepted.as_ref();
    let args = [
        group_id.into(),
        round_arg(round),
        promised.map(|b| b.number as i64).into(),
        promised.map(|b| b.proposer.as_str()).into(),
        accepted.map(|a| a.ballot.number as i64).into(),
        accepted.map(|a| a.ballot.proposer.as_str()).into(),
        accepted.map(|a| a.value.origin.as_str()).into(),
        accepted.map(|a| a.value.kind.as_str()).into(),
        accepted.and_then(|a| a.value.body.as_deref()).into(),
    ];
    if existed {
        Spi::run_with_args(
            "UPDATE paxos.acceptor_slots SET promised_num = $3, promised_by = $4,
                    accepted_num = $5, accepted_by = $6,
                    value_origin = $7, value_kind = $8, value_body = $9
             WHERE group_id = $1 AND round = $2",
            &args,
        )?;
        return Ok(true);
    }
    let inserted = first_value::<bool>(
        "INSERT INTO paxos.acceptor_slots (group_id, round, promised_num, promised_by,
                accepted_num, accepted_by, value_origin, value_kind, value_body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (group_id, round) DO NOTHING RETURNING true",
        &args,
    )?;
    Ok(inserted.unwrap_or(false))
}

/// The highest round in which this acceptor voted (or, with `accepted_only` false, promised), or
/// learned a value.
pub fn highest_known_round(group_id: &str, accepted_only: bool) -> Result<u64> {
    Ok(to_round(first_value::<i64>(
        "SELECT greatest(
            (SELECT max(round) FROM paxos.acceptor_slots
              WHERE group_id = $1 AND ($2 = false OR accepted_num IS NOT NULL)),
            (SELECT max(round) FROM paxos.log WHERE group_id = $1))",
        &[group_id.into(), accepted_only.into()],
    )?))
}

/// The promised ballot number of this node's own acceptor for a round (0 if none): a proposer here
/// starts above it instead of learning it from a refusal.
pub fn promised_number(group_id: &str, round: u64) -> Result<u64> {
    Ok(to_round(first_value::<i64>(
        "SELECT promised_num FROM paxos.acceptor_slots WHERE group_id = $1 AND round = $2",
        &[group_id.into(), round_arg(round)],
    )?))
}

/// Makes this transaction's commit durable before the reply that follows it.
pub fn force_synchronous_commit() -> Result<()> {
    Spi::run("SELECT pg_catalog.set_config('synchronous_commit', 'on', true)")?;
    Ok(())
}

/// A learned value needs no flush of its own: it can always be learned again from the acceptors.
pub fn relax_synchronous_commit() -> Result<()> {
    Spi::run("SELECT pg_catalog.set_config('synchronous_commit', 'off', true)")?;
    Ok(())
}

/// What libpq would fill in for a connection string without user or dbname: the bootstrap
/// superuser (the server's OS user) and this database.
pub fn connection_defaults() -> Result<Defaults> {
    let (user, dbname) = Spi::get_two::<String, String>(
        "SELECT (SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = 10),
                pg_catalog.current_database()::text",
    )?;
    Ok(Defaults {
        user: user.unwrap_or_else(|| "postgres".into()),
        dbname: dbname.unwrap_or_else(|| "postgres".into()),
    })
}
