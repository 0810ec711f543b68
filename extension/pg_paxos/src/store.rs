//! Durable state of this node, in the tables of schema `paxos`, through SPI. Every statement is a
//! fixed text with bound arguments, prepared once per backend and kept (the plan cache revalidates
//! kept plans after DDL), since the Paxos hot path runs them several times per round.
//!
//! - `groups`: the groups this node belongs to, its own connection string and its applied round.
//! - `acceptor_slots`: the acceptor's promise and vote per round; never deleted, since a vote may
//!   be needed to keep a chosen value chosen.
//! - `range_promises`: the acceptor's promise to a leader for every round from some round on.
//! - `log`: values known to be chosen, per round; membership changes are read from here.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use paxos_core::{Accepted, Ballot, RangePromise, SlotState};
use paxos_model::conninfo::Defaults;
use paxos_model::log_gaps;
use paxos_model::value::{LogValue, ValueKind};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{BuiltinOid, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiHeapTupleData, SpiTupleTable};

use crate::error::{PaxosError, Result};

/// A statement of this module: its text and the types of its arguments.
struct Sql {
    text: &'static str,
    args: &'static [BuiltinOid],
}

use BuiltinOid::{BOOLOID as BOOL, INT4OID as INT4, INT8OID as INT8, TEXTOID as TEXT};

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
    static DEFAULTS: RefCell<Option<Defaults>> = const { RefCell::new(None) };
}

/// Runs `sql` with `args` and hands the result to `read`, inside one SPI connection.
fn query<R>(
    sql: &Sql,
    args: &[DatumWithOid],
    read: impl FnOnce(SpiTupleTable) -> Result<R>,
) -> Result<R> {
    // The extension's own statements are never intercepted.
    crate::intercept::bypassing(|| {
        Spi::connect_mut(|client| {
            let cached = PLANS.with(|p| p.borrow().get(sql.text).cloned());
            let plan = match cached {
                Some(plan) => plan,
                None => {
                    let types: Vec<PgOid> = sql.args.iter().map(|t| PgOid::BuiltIn(*t)).collect();
                    let plan = Rc::new(client.prepare_mut(sql.text, &types)?.keep());
                    PLANS.with(|p| p.borrow_mut().insert(sql.text, plan.clone()));
                    plan
                }
            };
            // `select`, not `update`: pgrx's `update` assigns a transaction id up front, which
            // made every read of this node's state a transaction with a commit record (and a
            // WAL writer wake-up). PostgreSQL assigns one itself when a statement writes. The plan
            // was prepared as mutating, so each statement still runs with a fresh snapshot.
            let table = client.select(&*plan, None, args)?;
            read(table)
        })
    })
}

/// Runs a statement for its effect.
fn execute(sql: &Sql, args: &[DatumWithOid]) -> Result<()> {
    query(sql, args, |_| Ok(()))
}

/// The first column of the first row, or `None` without rows (or for NULL).
fn first_value<T: FromDatum + IntoDatum>(sql: &Sql, args: &[DatumWithOid]) -> Result<Option<T>> {
    query(sql, args, |table| {
        if table.is_empty() {
            return Ok(None);
        }
        Ok(table.first().get_one::<T>()?)
    })
}

/// Rounds are u64 in Rust and bigint in SQL; `u64::MAX` means "after every round".
fn round_arg<'a>(round: u64) -> DatumWithOid<'a> {
    (round.min(i64::MAX as u64) as i64).into()
}

fn to_round(v: Option<i64>) -> u64 {
    v.unwrap_or(0).max(0) as u64
}

pub struct Group {
    pub id: String,
    pub self_conninfo: String,
    pub applied_round: u64,
    /// The version of the group's row as read (its `xmin`): a new one whenever the applied round
    /// moves or the group is created again (`None` for a group not read from the table).
    pub version: Option<u64>,
}

const GROUP: Sql = Sql {
    text: "SELECT self_conninfo, applied_round, xmin::pg_catalog.text::pg_catalog.int8
           FROM paxos.groups WHERE group_id = $1",
    args: &[TEXT],
};

pub fn group(group_id: &str) -> Result<Option<Group>> {
    query(&GROUP, &[group_id.into()], |table| {
        let mut out = None;
        for row in table {
            out = Some(Group {
                id: group_id.to_string(),
                self_conninfo: row.get::<String>(1)?.unwrap_or_default(),
                applied_round: to_round(row.get::<i64>(2)?),
                version: row.get::<i64>(3)?.map(|v| v as u64),
            });
        }
        Ok(out)
    })
}

pub fn require_group(group_id: &str) -> Result<Group> {
    group(group_id)?.ok_or_else(|| PaxosError::UnknownGroup {
        group: group_id.to_string(),
    })
}

/// What a strong read or a transaction's first write needs to know of this node, in one statement:
/// the group, whether it is stopped here, the highest round it learned and voted in, and its
/// acceptor's range promise.
pub struct ReadState {
    pub group: Group,
    pub diverged: Option<(u64, String)>,
    pub highest_learned: u64,
    /// The highest round this node's acceptor voted in (`None`: not read, see
    /// [`read_state_without_votes`]).
    pub highest_accepted: Option<u64>,
    /// The ballot of this node's acceptor's range promise, if it made one.
    pub range_promise: Option<Ballot>,
}

/// The statement behind [`ReadState`], with this node's highest vote (`votes`) or without it
/// (`no_votes`: NULL), and `$lock` as a further condition on the row.
macro_rules! read_state_sql {
    (votes, $lock:literal) => {
        read_state_sql!(
            "coalesce((SELECT max(round) FROM paxos.acceptor_slots
                       WHERE group_id = $1 AND accepted_num IS NOT NULL), 0)",
            $lock
        )
    };
    (no_votes, $lock:literal) => {
        read_state_sql!("NULL::bigint", $lock)
    };
    ($votes:literal, $lock:literal) => {
        concat!(
            "SELECT g.self_conninfo, g.applied_round, g.diverged_round, g.diverged_error,
                    (SELECT max(round) FROM paxos.log WHERE group_id = $1), ",
            $votes,
            ", r.promised_num, r.promised_by, g.xmin::pg_catalog.text::pg_catalog.int8
             FROM paxos.groups g LEFT JOIN paxos.range_promises r USING (group_id)
             WHERE g.group_id = $1",
            $lock
        )
    };
}

const READ_STATE: Sql = Sql {
    text: read_state_sql!(votes, ""),
    args: &[TEXT],
};

pub fn read_state(group_id: &str) -> Result<ReadState> {
    read_state_with(&READ_STATE, &[group_id.into()], group_id)
}

const READ_STATE_WITHOUT_VOTES: Sql = Sql {
    text: read_state_sql!(no_votes, ""),
    args: &[TEXT],
};

/// [`read_state`] without this node's highest vote: all a read under a leader lease or a write
/// needs.
pub fn read_state_without_votes(group_id: &str) -> Result<ReadState> {
    read_state_with(&READ_STATE_WITHOUT_VOTES, &[group_id.into()], group_id)
}

const READ_STATE_SHARING_WRITERS: Sql = Sql {
    text: read_state_sql!(
        no_votes,
        " AND pg_catalog.pg_try_advisory_xact_lock_shared($2, $3)"
    ),
    args: &[TEXT, INT4, INT4],
};

/// [`read_state_without_votes`] with the group's writer lock taken shared (see [`lock_writers_shared`]) in the
/// same statement, when that needs no wait; `None` (and no lock) when it would. The state read is
/// then as of just before the lock: a writer that held the lock alone and ended in between is
/// missed, which only makes a write based on it fail with `40001` (its round is taken).
fn read_state_sharing_writers(group_id: &str) -> Result<Option<ReadState>> {
    let args = [
        group_id.into(),
        WRITER_LOCK_SPACE.into(),
        group_lock_key(group_id).into(),
    ];
    match read_state_with(&READ_STATE_SHARING_WRITERS, &args, group_id) {
        Ok(state) => Ok(Some(state)),
        // No row: either the lock was not free or the group is missing; the caller falls back to
        // waiting for the lock and reading again, which tells the two apart.
        Err(PaxosError::UnknownGroup { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`read_state_without_votes`] with the group's writer lock taken shared: in one statement when
/// the lock is free, else after waiting for it. (Writers need no vote of this node's; leaving it
/// out spares every write a scan of the acceptor's slots.)
pub fn read_state_with_writers_shared(group_id: &str) -> Result<ReadState> {
    match read_state_sharing_writers(group_id)? {
        Some(state) => Ok(state),
        None => {
            lock_writers_shared(group_id)?;
            read_state_without_votes(group_id)
        }
    }
}

fn read_state_with(sql: &Sql, args: &[DatumWithOid], group_id: &str) -> Result<ReadState> {
    query(sql, args, |table| {
        let mut out = None;
        for row in table {
            let diverged = row.get::<i64>(3)?.map(|round| {
                (
                    round.max(0) as u64,
                    row.get::<String>(4).ok().flatten().unwrap_or_default(),
                )
            });
            out = Some(ReadState {
                group: Group {
                    id: group_id.to_string(),
                    self_conninfo: row.get::<String>(1)?.unwrap_or_default(),
                    applied_round: to_round(row.get::<i64>(2)?),
                    version: row.get::<i64>(9)?.map(|v| v as u64),
                },
                diverged,
                highest_learned: to_round(row.get::<i64>(5)?),
                highest_accepted: row.get::<i64>(6)?.map(|r| r.max(0) as u64),
                range_promise: ballot(row.get::<i64>(7)?, row.get::<String>(8)?),
            });
        }
        out.ok_or_else(|| PaxosError::UnknownGroup {
            group: group_id.to_string(),
        })
    })
}

const GROUP_IDS: Sql = Sql {
    text: "SELECT group_id FROM paxos.groups ORDER BY 1",
    args: &[],
};

pub fn group_ids() -> Result<Vec<String>> {
    query(&GROUP_IDS, &[], |table| {
        let mut out = Vec::new();
        for row in table {
            out.extend(row.get::<String>(1)?);
        }
        Ok(out)
    })
}

const INSERT_GROUP: Sql = Sql {
    text: "INSERT INTO paxos.groups (group_id, self_conninfo, applied_round) VALUES ($1, $2, $3)
           ON CONFLICT (group_id) DO NOTHING RETURNING true",
    args: &[TEXT, TEXT, INT8],
};

/// Creates the local record of a group. False when it exists already.
pub fn insert_group(group_id: &str, self_conninfo: &str, applied_round: u64) -> Result<bool> {
    let args = [
        group_id.into(),
        self_conninfo.into(),
        round_arg(applied_round),
    ];
    Ok(first_value::<bool>(&INSERT_GROUP, &args)?.unwrap_or(false))
}

const DELETE_GROUP: Sql = Sql {
    text: "DELETE FROM paxos.groups WHERE group_id = $1",
    args: &[TEXT],
};

pub fn delete_group(group_id: &str) -> Result<()> {
    crate::paxos::batching::break_chain(group_id);
    execute(&DELETE_GROUP, &[group_id.into()])
}

/// The first key of the writer locks ("Pxow"), apart from the acceptor's and other users' keys.
const WRITER_LOCK_SPACE: i32 = 0x5078_6f77;

fn group_lock_key(group_id: &str) -> i32 {
    group_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    }) as i32
}

const LOCK_APPLIED: Sql = Sql {
    text: "SELECT applied_round FROM paxos.groups
           WHERE group_id = $1 AND pg_catalog.pg_advisory_xact_lock($2, $3)::text = ''
           FOR UPDATE",
    args: &[TEXT, INT4, INT4],
};

const LOCK_WRITERS_SHARED: Sql = Sql {
    text: "SELECT pg_catalog.pg_advisory_xact_lock_shared($1, $2)",
    args: &[INT4, INT4],
};

const TRY_LOCK_WRITERS: Sql = Sql {
    text: "SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2)",
    args: &[INT4, INT4],
};

/// Lets this transaction write `group_id` together with other batched writers of this node, until
/// it ends; waits while a transaction holds the applied round (see [`lock_applied_round`]), and
/// queues behind one that waits for it.
fn lock_writers_shared(group_id: &str) -> Result<()> {
    execute(
        &LOCK_WRITERS_SHARED,
        &[WRITER_LOCK_SPACE.into(), group_lock_key(group_id).into()],
    )
}

/// Takes the writer lock of `group_id` shared, as [`lock_writers_shared`] does, if that needs no
/// wait (nobody holds it alone or queues for it); false otherwise. No statement: a direct call.
pub fn try_lock_writers_shared(group_id: &str) -> bool {
    // SAFETY: the built-in function behind pg_try_advisory_xact_lock_shared(int4, int4), called
    // with its two arguments inside a transaction; it returns a non-null boolean.
    unsafe {
        pgrx::direct_function_call::<bool>(
            pg_sys::pg_try_advisory_xact_lock_shared_int4,
            &[
                WRITER_LOCK_SPACE.into_datum(),
                group_lock_key(group_id).into_datum(),
            ],
        )
    }
    .unwrap_or(false)
}

/// Takes the writer lock of `group_id` alone if nobody else holds it (the caller may hold it
/// shared already); false otherwise.
pub fn try_lock_writers_exclusive(group_id: &str) -> Result<bool> {
    Ok(first_value::<bool>(
        &TRY_LOCK_WRITERS,
        &[WRITER_LOCK_SPACE.into(), group_lock_key(group_id).into()],
    )?
    .unwrap_or(false))
}

/// The applied round, locked until the end of the transaction so that concurrent appliers on this
/// node apply every entry exactly once. It takes the group's writer lock alone first (batched
/// writers hold it shared: see `batching`), a lock whose queue is fair, unlike a row lock's.
pub fn lock_applied_round(group_id: &str) -> Result<u64> {
    let args = [
        group_id.into(),
        WRITER_LOCK_SPACE.into(),
        group_lock_key(group_id).into(),
    ];
    first_value::<i64>(&LOCK_APPLIED, &args)?
        .map(|r| r.max(0) as u64)
        .ok_or_else(|| PaxosError::UnknownGroup {
            group: group_id.to_string(),
        })
}

const TRY_LOCK_APPLIED_ROW: Sql = Sql {
    text: "SELECT applied_round FROM paxos.groups WHERE group_id = $1
           FOR NO KEY UPDATE SKIP LOCKED",
    args: &[TEXT],
};

/// The applied round, with the group's row locked until the transaction ends; `None` when another
/// transaction holds that lock (an applier, a compaction): the caller does without. Unlike
/// [`lock_applied_round`], without the writer lock: a writer of the commit chain settles the
/// chain's own rounds (see `apply::settle_commit_chain`) while the other writers go on.
pub fn try_lock_applied_row(group_id: &str) -> Result<Option<u64>> {
    Ok(first_value::<i64>(&TRY_LOCK_APPLIED_ROW, &[group_id.into()])?.map(|r| r.max(0) as u64))
}

const SET_APPLIED: Sql = Sql {
    text: "UPDATE paxos.groups SET applied_round = $2 WHERE group_id = $1",
    args: &[TEXT, INT8],
};

pub fn set_applied_round(group_id: &str, round: u64) -> Result<()> {
    execute(&SET_APPLIED, &[group_id.into(), round_arg(round)])
}

/// Moves the applied round from `applied` (read under the group row's lock) to `through`, and
/// drops the marks of the rounds in between: they are covered by it.
pub fn advance_applied_round(group_id: &str, applied: u64, through: u64) -> Result<()> {
    set_applied_round(group_id, through)?;
    forget_batched(group_id, applied, through)
}

const MARK_BATCHED: Sql = Sql {
    text: "INSERT INTO paxos.batched_writes (group_id, round, entry) VALUES ($1, $2, $3)",
    args: &[TEXT, INT8, INT4],
};

/// Records, in the writing transaction, that entry `entry` of the batch in `round` took effect
/// here: applying the batch skips it.
pub fn mark_batched(group_id: &str, round: u64, entry: u32) -> Result<()> {
    execute(
        &MARK_BATCHED,
        &[group_id.into(), round_arg(round), (entry as i32).into()],
    )
}

const HIGHEST_BATCHED: Sql = Sql {
    text: "SELECT max(round) FROM paxos.batched_writes WHERE group_id = $1",
    args: &[TEXT],
};

/// The highest round with a batched write that took effect here (0 without any).
pub fn highest_batched(group_id: &str) -> Result<u64> {
    Ok(to_round(first_value::<i64>(
        &HIGHEST_BATCHED,
        &[group_id.into()],
    )?))
}

const FORGET_BATCHED: Sql = Sql {
    text: "DELETE FROM paxos.batched_writes WHERE group_id = $1 AND round > $2 AND round <= $3",
    args: &[TEXT, INT8, INT8],
};

/// Drops the marks of the rounds after `applied` through `through`: the marks up to `applied` went
/// when the applied round reached it (see `advance_applied_round`). Bounded below so that the
/// index scan starts at the first live mark: marks come and go all the time, and one starting at
/// the group's first round went through every dead index entry that vacuum had not removed yet (a
/// third of a busy leader's strong reads).
fn forget_batched(group_id: &str, applied: u64, through: u64) -> Result<()> {
    execute(
        &FORGET_BATCHED,
        &[group_id.into(), round_arg(applied), round_arg(through)],
    )
}

fn value_from_row(row: &SpiHeapTupleData, first: usize) -> Result<Option<LogValue>> {
    let origin = row.get::<String>(first)?;
    let kind = row.get::<String>(first + 1)?;
    let body = row.get::<String>(first + 2)?;
    match (origin, kind) {
        (Some(origin), Some(kind)) => Ok(Some(LogValue::from_columns(origin, &kind, body)?)),
        _ => Ok(None),
    }
}

const LEARNED: Sql = Sql {
    text: "SELECT value_origin, value_kind, value_body FROM paxos.log
           WHERE group_id = $1 AND round = $2",
    args: &[TEXT, INT8],
};

pub fn learned(group_id: &str, round: u64) -> Result<Option<LogValue>> {
    query(&LEARNED, &[group_id.into(), round_arg(round)], |table| {
        let mut out = None;
        for row in table {
            out = value_from_row(&row, 1)?;
        }
        Ok(out)
    })
}

const RECORD_LEARNED: Sql = Sql {
    text: "INSERT INTO paxos.log (group_id, round, value_origin, value_kind, value_body)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_id, round) DO NOTHING",
    args: &[TEXT, INT8, TEXT, TEXT, TEXT],
};

/// Records a chosen value. Idempotent: a chosen value never changes, so a second record of the same
/// round is the same value.
pub fn record_learned(group_id: &str, round: u64, value: &LogValue) -> Result<()> {
    if matches!(value.kind, ValueKind::AddHost | ValueKind::RemoveHost) {
        // Before the row can commit: no lease read after it may use a lease granted for the
        // memberships before it.
        crate::paxos::leadership::membership_changed();
    }
    crate::paxos::batching::round_learned(group_id, round);
    let args = [
        group_id.into(),
        round_arg(round),
        value.origin.as_str().into(),
        value.kind.as_str().into(),
        value.body.as_deref().into(),
    ];
    execute(&RECORD_LEARNED, &args)
}

const HIGHEST_LEARNED: Sql = Sql {
    text: "SELECT max(round) FROM paxos.log WHERE group_id = $1",
    args: &[TEXT],
};

pub fn highest_learned(group_id: &str) -> Result<u64> {
    Ok(to_round(first_value::<i64>(
        &HIGHEST_LEARNED,
        &[group_id.into()],
    )?))
}

/// The learned rounds of a stretch that border its gaps (the first, the last, and each one
/// followed by a gap), with the round after each, read from the log's primary key in order: the
/// cost follows the stretch, never the log's length. (A NOT EXISTS over `generate_series` was
/// planned as a hash anti join over the group's whole log once statistics made that look cheap,
/// and strong reads on a busy leader, which look at the rounds in flight again and again, spent
/// most of their time hashing the log.) `low` is where the stretch starts: at `$2`, or after the
/// compaction point.
const UNLEARNED: Sql = Sql {
    text: "WITH bounds AS (
             SELECT greatest($2::bigint, coalesce((SELECT compacted_through FROM paxos.groups
                                                   WHERE group_id = $1), 0) + 1) AS low)
           SELECT bounds.low, learned.round, learned.next
           FROM bounds LEFT JOIN LATERAL (
             SELECT round, lag(round) OVER w AS previous, lead(round) OVER w AS next
             FROM paxos.log WHERE group_id = $1 AND round BETWEEN bounds.low AND $3
             WINDOW w AS (ORDER BY round)) AS learned
           ON learned.previous IS NULL OR learned.next IS NULL
              OR learned.next > learned.round + 1",
    args: &[TEXT, INT8, INT8],
};

/// Rounds in `from..=to` whose value this node does not know yet, ascending. Compacted rounds are
/// not among them: this node applied them before it dropped their values (a caller that read the
/// applied round before a compaction would otherwise try to learn them, and be refused).
pub fn unlearned_rounds(group_id: &str, from: u64, to: u64) -> Result<Vec<u64>> {
    if from > to {
        return Ok(Vec::new());
    }
    let args = [group_id.into(), round_arg(from), round_arg(to)];
    let (low, borders) = query(&UNLEARNED, &args, |table| {
        let mut low = from;
        let mut borders = Vec::new();
        for row in table {
            low = to_round(row.get::<i64>(1)?);
            if let Some(round) = row.get::<i64>(2)? {
                let next = row.get::<i64>(3)?.map(|n| to_round(Some(n)));
                borders.push((to_round(Some(round)), next));
            }
        }
        borders.sort_unstable();
        Ok((low, borders))
    })?;
    Ok(log_gaps::missing_rounds(low, to, &borders))
}

const MEMBERSHIP_CHANGES: Sql = Sql {
    text: "SELECT round, value_kind, value_body FROM paxos.log
           WHERE group_id = $1 AND round < $2 AND value_kind IN ('add_host', 'remove_host')
           ORDER BY round",
    args: &[TEXT, INT8],
};

/// Membership changes recorded in the log before `round`, ascending: (round, kind, member).
pub fn membership_changes(
    group_id: &str,
    before_round: u64,
) -> Result<Vec<(u64, ValueKind, String)>> {
    let args = [group_id.into(), round_arg(before_round)];
    query(&MEMBERSHIP_CHANGES, &args, |table| {
        let mut out = Vec::new();
        for row in table {
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

const LOG_RANGE: Sql = Sql {
    text: "SELECT round, value_origin, value_kind, value_body FROM paxos.log
           WHERE group_id = $1 AND round BETWEEN $2 AND $3 ORDER BY round",
    args: &[TEXT, INT8, INT8],
};

/// Chosen values in `from..=to`, ascending, for a joining member.
pub fn log_range(group_id: &str, from: u64, to: u64) -> Result<Vec<(u64, LogValue)>> {
    let args = [group_id.into(), round_arg(from), round_arg(to)];
    query(&LOG_RANGE, &args, |table| {
        let mut out = Vec::new();
        for row in table {
            if let Some(value) = value_from_row(&row, 2)? {
                out.push((to_round(row.get::<i64>(1)?), value));
            }
        }
        Ok(out)
    })
}

const LOG_WITH_MARKS: Sql = Sql {
    text: "SELECT l.round, l.value_origin, l.value_kind, l.value_body,
                  (SELECT array_agg(b.entry) FROM paxos.batched_writes b
                    WHERE b.group_id = l.group_id AND b.round = l.round)
           FROM paxos.log l WHERE l.group_id = $1 AND l.round BETWEEN $2 AND $3 ORDER BY round",
    args: &[TEXT, INT8, INT8],
};

/// Chosen values in `from..=to`, ascending, each with the entries of its batch that took effect
/// here already (see [`mark_batched`]): one statement for a whole stretch of the log.
pub fn log_with_marks(
    group_id: &str,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, LogValue, Vec<u32>)>> {
    let args = [group_id.into(), round_arg(from), round_arg(to)];
    query(&LOG_WITH_MARKS, &args, |table| {
        let mut out = Vec::new();
        for row in table {
            if let Some(value) = value_from_row(&row, 2)? {
                let marks = row
                    .get::<Vec<i32>>(5)?
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| e.max(0) as u32)
                    .collect();
                out.push((to_round(row.get::<i64>(1)?), value, marks));
            }
        }
        Ok(out)
    })
}

const LOCK_SLOT: Sql = Sql {
    text: "SELECT promised_num, promised_by, accepted_num, accepted_by,
                  value_origin, value_kind, value_body
           FROM paxos.acceptor_slots WHERE group_id = $1 AND round = $2 FOR UPDATE",
    args: &[TEXT, INT8],
};

fn ballot(number: Option<i64>, by: Option<String>) -> Option<Ballot> {
    match (number, by) {
        (Some(n), Some(by)) => Some(Ballot::new(n.max(0) as u64, by)),
        _ => None,
    }
}

/// The acceptor's slot for a round, row-locked so that concurrent requests for the same round are
/// handled one after another. `None` when the acceptor never saw this round.
pub fn lock_slot(group_id: &str, round: u64) -> Result<Option<SlotState<LogValue>>> {
    query(&LOCK_SLOT, &[group_id.into(), round_arg(round)], |table| {
        let mut out = None;
        for row in table {
            out = Some(slot_from_row(&row, 1)?);
        }
        Ok(out)
    })
}

const UPDATE_SLOT: Sql = Sql {
    text: "UPDATE paxos.acceptor_slots SET promised_num = $3, promised_by = $4,
                  accepted_num = $5, accepted_by = $6,
                  value_origin = $7, value_kind = $8, value_body = $9
           WHERE group_id = $1 AND round = $2",
    args: &[TEXT, INT8, INT8, TEXT, INT8, TEXT, TEXT, TEXT, TEXT],
};

const INSERT_SLOT: Sql = Sql {
    text: "INSERT INTO paxos.acceptor_slots (group_id, round, promised_num, promised_by,
                  accepted_num, accepted_by, value_origin, value_kind, value_body)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (group_id, round) DO NOTHING RETURNING true",
    args: &[TEXT, INT8, INT8, TEXT, INT8, TEXT, TEXT, TEXT, TEXT],
};

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
        execute(&UPDATE_SLOT, &args)?;
        return Ok(true);
    }
    Ok(first_value::<bool>(&INSERT_SLOT, &args)?.unwrap_or(false))
}

/// The first key of the acceptor's advisory locks ("Pxos"): keeps them apart from other users'.
const ACCEPTOR_LOCK_SPACE: i32 = 0x5078_6f73;

const LOCK_ACCEPTOR_SHARED: Sql = Sql {
    text: "SELECT pg_catalog.pg_advisory_xact_lock_shared($1, $2)",
    args: &[INT4, INT4],
};

const LOCK_ACCEPTOR_EXCLUSIVE: Sql = Sql {
    text: "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)",
    args: &[INT4, INT4],
};

/// Orders this transaction's acceptor work on `group_id` against range prepares, until commit:
/// requests for single rounds share the lock, a range prepare takes it alone. Without it, a vote
/// committed while a range prepare runs could be missing from that prepare's answer, although it
/// was cast under a ballot the new promise refuses.
pub fn lock_acceptor(group_id: &str, range_prepare: bool) -> Result<()> {
    let key = group_lock_key(group_id);
    let sql = if range_prepare {
        &LOCK_ACCEPTOR_EXCLUSIVE
    } else {
        &LOCK_ACCEPTOR_SHARED
    };
    execute(sql, &[ACCEPTOR_LOCK_SPACE.into(), key.into()])
}

const ACCEPTOR_STATE: Sql = Sql {
    text: "SELECT r.from_round, r.promised_num, r.promised_by,
                  (SELECT g.compacted_through FROM paxos.groups g WHERE g.group_id = $1),
                  EXISTS (SELECT 1 FROM paxos.acceptor_groups a WHERE a.group_id = $1)
           FROM (VALUES (1)) AS one
           LEFT JOIN paxos.range_promises r ON r.group_id = $1",
    args: &[TEXT],
};

/// What this node's acceptor rules need besides a slot, for a group it is the acceptor of.
pub struct AcceptorState {
    pub range: Option<RangePromise>,
    /// The round through which the group was compacted here (0: never; also for a group this node
    /// left).
    pub compacted: u64,
    /// This node founded, joined or left the group (see [`serve_as_acceptor`]).
    pub serves: bool,
}

pub fn acceptor_state(group_id: &str) -> Result<AcceptorState> {
    query(&ACCEPTOR_STATE, &[group_id.into()], |table| {
        let mut out = AcceptorState {
            range: None,
            compacted: 0,
            serves: false,
        };
        for row in table {
            out.range = range_promise_at(&row)?;
            out.compacted = to_round(row.get::<i64>(4)?);
            out.serves = row.get::<bool>(5)?.unwrap_or(false);
        }
        Ok(out)
    })
}

const SERVE_AS_ACCEPTOR: Sql = Sql {
    text: "INSERT INTO paxos.acceptor_groups (group_id) VALUES ($1) ON CONFLICT DO NOTHING",
    args: &[TEXT],
};

/// Records that this node is an acceptor of `group_id` from now on (see `paxos.acceptor_groups`).
pub fn serve_as_acceptor(group_id: &str) -> Result<()> {
    execute(&SERVE_AS_ACCEPTOR, &[group_id.into()])
}

const SERVES_AS_ACCEPTOR: Sql = Sql {
    text: "SELECT EXISTS (SELECT 1 FROM paxos.acceptor_groups WHERE group_id = $1)",
    args: &[TEXT],
};

/// This node founded, joined or left `group_id` (see [`serve_as_acceptor`]).
pub fn serves_as_acceptor(group_id: &str) -> Result<bool> {
    Ok(first_value::<bool>(&SERVES_AS_ACCEPTOR, &[group_id.into()])?.unwrap_or(false))
}

const COMPACTED_THROUGH: Sql = Sql {
    text: "SELECT compacted_through FROM paxos.groups WHERE group_id = $1",
    args: &[TEXT],
};

/// The round through which `group_id` was compacted here (0: never).
pub fn compacted_through(group_id: &str) -> Result<u64> {
    Ok(to_round(first_value::<i64>(
        &COMPACTED_THROUGH,
        &[group_id.into()],
    )?))
}

const COMPACT_LOG: Sql = Sql {
    text: "DELETE FROM paxos.log WHERE group_id = $1 AND round > 0 AND round < $2
             AND value_kind NOT IN ('add_host', 'remove_host')",
    args: &[TEXT, INT8],
};
const COMPACT_SLOTS: Sql = Sql {
    text: "DELETE FROM paxos.acceptor_slots WHERE group_id = $1 AND round < $2",
    args: &[TEXT, INT8],
};
const MARK_COMPACTED: Sql = Sql {
    text: "UPDATE paxos.groups SET compacted_through = greatest(compacted_through, $2)
           WHERE group_id = $1 RETURNING compacted_through",
    args: &[TEXT, INT8],
};

/// Marks `group_id` compacted through `through` here, for a node that copied a compacted log.
pub fn mark_compacted(group_id: &str, through: u64) -> Result<()> {
    first_value::<i64>(&MARK_COMPACTED, &[group_id.into(), round_arg(through)]).map(|_| ())
}

/// Removes what this node keeps of the rounds before `below`: their values (except membership
/// changes, which later memberships are computed from, and the founder's round 0) and their
/// acceptor slots (records of batched writes go when their rounds are applied); marks the group
/// compacted through `below - 1`.
/// Returns the round it is compacted through now. The caller holds the applied round and the
/// acceptor lock alone, and checked that `below` is applied here.
pub fn compact(group_id: &str, below: u64) -> Result<u64> {
    let args = [group_id.into(), round_arg(below)];
    execute(&COMPACT_LOG, &args)?;
    execute(&COMPACT_SLOTS, &args)?;
    let mark = [group_id.into(), round_arg(below.saturating_sub(1))];
    Ok(to_round(first_value::<i64>(&MARK_COMPACTED, &mark)?))
}

const RANGE_PROMISE: Sql = Sql {
    text: "SELECT from_round, promised_num, promised_by FROM paxos.range_promises
           WHERE group_id = $1",
    args: &[TEXT],
};

/// The acceptor's range promise for `group_id`, if it made one.
pub fn range_promise(group_id: &str) -> Result<Option<RangePromise>> {
    query(&RANGE_PROMISE, &[group_id.into()], |table| {
        let mut out = None;
        for row in table {
            out = range_promise_at(&row)?;
        }
        Ok(out)
    })
}

/// A range promise in columns 1 (from round), 2 and 3 (ballot) of a row, if it has one.
fn range_promise_at(row: &SpiHeapTupleData) -> Result<Option<RangePromise>> {
    let from = row.get::<i64>(1)?;
    let ballot = ballot(row.get::<i64>(2)?, row.get::<String>(3)?);
    Ok(from.zip(ballot).map(|(from, ballot)| RangePromise {
        from: to_round(Some(from)),
        ballot,
    }))
}

const WRITE_RANGE_PROMISE: Sql = Sql {
    text: "INSERT INTO paxos.range_promises (group_id, from_round, promised_num, promised_by)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (group_id) DO UPDATE SET from_round = excluded.from_round,
               promised_num = excluded.promised_num, promised_by = excluded.promised_by",
    args: &[TEXT, INT8, INT8, TEXT],
};

pub fn write_range_promise(group_id: &str, range: &RangePromise) -> Result<()> {
    // This node's leadership may be over: writers must check before they join.
    crate::paxos::batching::break_chain(group_id);
    let args = [
        group_id.into(),
        round_arg(range.from),
        (range.ballot.number as i64).into(),
        range.ballot.proposer.as_str().into(),
    ];
    execute(&WRITE_RANGE_PROMISE, &args)
}

const SLOTS_FROM: Sql = Sql {
    text: "SELECT round, promised_num, promised_by, accepted_num, accepted_by,
                  value_origin, value_kind, value_body
           FROM paxos.acceptor_slots WHERE group_id = $1 AND round >= $2 ORDER BY round",
    args: &[TEXT, INT8],
};

/// The acceptor's slots of rounds `from` and later, ascending.
pub fn slots_from(group_id: &str, from: u64) -> Result<Vec<(u64, SlotState<LogValue>)>> {
    query(&SLOTS_FROM, &[group_id.into(), round_arg(from)], |table| {
        let mut out = Vec::new();
        for row in table {
            let round = to_round(row.get::<i64>(1)?);
            out.push((round, slot_from_row(&row, 2)?));
        }
        Ok(out)
    })
}

fn slot_from_row(row: &SpiHeapTupleData, first: usize) -> Result<SlotState<LogValue>> {
    let promised = ballot(row.get::<i64>(first)?, row.get::<String>(first + 1)?);
    let accepted = match (
        ballot(row.get::<i64>(first + 2)?, row.get::<String>(first + 3)?),
        value_from_row(row, first + 4)?,
    ) {
        (Some(ballot), Some(value)) => Some(Accepted { ballot, value }),
        _ => None,
    };
    Ok(SlotState { promised, accepted })
}

const HIGHER_SLOT_PROMISES: Sql = Sql {
    text: "SELECT promised_num, promised_by FROM paxos.acceptor_slots s
           WHERE group_id = $1 AND round >= $2 AND promised_num >= $3
             AND (promised_num > $3 OR promised_by <> $4)
             AND NOT EXISTS (SELECT 1 FROM paxos.log l
                             WHERE l.group_id = s.group_id AND l.round = s.round)",
    args: &[TEXT, INT8, INT8, TEXT],
};

/// True when a slot of a round from `from` on that is not learned here promised a ballot higher
/// than `ballot` (a chosen round's value cannot change, whatever was promised there).
pub fn higher_slot_promise(group_id: &str, from: u64, ballot: &Ballot) -> Result<bool> {
    let args = [
        group_id.into(),
        round_arg(from),
        (ballot.number as i64).into(),
        ballot.proposer.as_str().into(),
    ];
    query(&HIGHER_SLOT_PROMISES, &args, |table| {
        for row in table {
            if let Some(promised) = self::ballot(row.get::<i64>(1)?, row.get::<String>(2)?) {
                if promised > *ballot {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    })
}

const HIGHEST_KNOWN: Sql = Sql {
    text: "SELECT greatest(
              (SELECT max(round) FROM paxos.acceptor_slots
                WHERE group_id = $1 AND ($2 = false OR accepted_num IS NOT NULL)),
              (SELECT max(round) FROM paxos.log WHERE group_id = $1))",
    args: &[TEXT, BOOL],
};

/// The highest round in which this acceptor voted (or, with `accepted_only` false, promised), or
/// learned a value.
pub fn highest_known_round(group_id: &str, accepted_only: bool) -> Result<u64> {
    let args = [group_id.into(), accepted_only.into()];
    Ok(to_round(first_value::<i64>(&HIGHEST_KNOWN, &args)?))
}

const PROMISES_ABOVE: Sql = Sql {
    text: "SELECT promised_num, promised_by FROM paxos.range_promises WHERE group_id = $1
           UNION ALL
           SELECT promised_num, promised_by FROM paxos.acceptor_slots
            WHERE group_id = $1 AND round > $2 AND promised_num IS NOT NULL",
    args: &[TEXT, INT8],
};

/// The highest ballot this acceptor promised, for its range or for any round after `above`
/// (`None`: no promise). Rounds after a leader's applied round are few: those in flight.
pub fn highest_promise_above(group_id: &str, above: u64) -> Result<Option<Ballot>> {
    let args = [group_id.into(), round_arg(above)];
    query(&PROMISES_ABOVE, &args, |table| {
        let mut highest: Option<Ballot> = None;
        for row in table {
            if let Some(promise) = ballot(row.get::<i64>(1)?, row.get::<String>(2)?) {
                highest = highest.max(Some(promise));
            }
        }
        Ok(highest)
    })
}

const PROMISED_NUMBER: Sql = Sql {
    text: "SELECT promised_num FROM paxos.acceptor_slots WHERE group_id = $1 AND round = $2",
    args: &[TEXT, INT8],
};

/// The promised ballot number of this node's own acceptor for a round (0 if none): a proposer here
/// starts above it instead of learning it from a refusal.
pub fn promised_number(group_id: &str, round: u64) -> Result<u64> {
    let args = [group_id.into(), round_arg(round)];
    Ok(to_round(first_value::<i64>(&PROMISED_NUMBER, &args)?))
}

const NODE_TOKEN: Sql = Sql {
    text: "SELECT token FROM paxos.node LIMIT 1",
    args: &[],
};

/// The random token of this node's copy of the extension (see table `paxos.node`).
pub fn node_token() -> Result<String> {
    first_value::<String>(&NODE_TOKEN, &[])?
        .ok_or_else(|| PaxosError::Internal("table paxos.node is empty".into()))
}

const SET_SYNCHRONOUS_COMMIT: Sql = Sql {
    text: "SELECT pg_catalog.set_config('synchronous_commit', $1, true)",
    args: &[TEXT],
};

/// Makes this transaction's commit durable before the reply that follows it. Members' connections
/// set it at start-up already; this guards against any other caller.
pub fn require_synchronous_commit() -> Result<()> {
    // SAFETY: reads a GUC variable of this backend.
    let level = unsafe { pgrx::pg_sys::synchronous_commit };
    if level < pgrx::pg_sys::SyncCommitLevel::SYNCHRONOUS_COMMIT_LOCAL_FLUSH as i32 {
        execute(&SET_SYNCHRONOUS_COMMIT, &["on".into()])?;
    }
    Ok(())
}

/// A learned value needs no flush of its own: it can always be learned again from the acceptors.
pub fn relax_synchronous_commit() -> Result<()> {
    // SAFETY: sets a GUC for the rest of the transaction (as SET LOCAL would), inside one.
    unsafe {
        pgrx::pg_sys::set_config_option(
            c"synchronous_commit".as_ptr(),
            c"off".as_ptr(),
            pgrx::pg_sys::GucContext::PGC_USERSET,
            pgrx::pg_sys::GucSource::PGC_S_SESSION,
            pgrx::pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
    Ok(())
}

const CONNECTION_DEFAULTS: Sql = Sql {
    text: "SELECT (SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = 10),
                  pg_catalog.current_database()::text",
    args: &[],
};

/// What libpq would fill in for a connection string without user, dbname or password: the
/// bootstrap superuser (the server's OS user), this database, and the password file. Fixed for
/// the life of a backend.
pub fn connection_defaults() -> Result<Defaults> {
    if let Some(d) = DEFAULTS.with(|d| d.borrow().clone()) {
        return Ok(d);
    }
    let defaults = query(&CONNECTION_DEFAULTS, &[], |table| {
        let row = table.first();
        Ok(Defaults {
            user: row.get::<String>(1)?.unwrap_or_else(|| "postgres".into()),
            dbname: row.get::<String>(2)?.unwrap_or_else(|| "postgres".into()),
            passfile: read_passfile(),
            node_id: crate::guc::node_id(),
        })
    })?;
    DEFAULTS.with(|d| *d.borrow_mut() = Some(defaults.clone()));
    Ok(defaults)
}

/// The server's password file, as libpq finds it: `$PGPASSFILE`, else `~/.pgpass`.
fn read_passfile() -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    std::fs::read_to_string(path).ok()
}

const DIVERGED: Sql = Sql {
    text: "SELECT diverged_round, diverged_error FROM paxos.groups WHERE group_id = $1",
    args: &[TEXT],
};

/// The round that failed on this node and why, if the group is stopped here.
pub fn divergence(group_id: &str) -> Result<Option<(u64, String)>> {
    query(&DIVERGED, &[group_id.into()], |table| {
        let mut out = None;
        for row in table {
            if let Some(round) = row.get::<i64>(1)? {
                out = Some((
                    round.max(0) as u64,
                    row.get::<String>(2)?.unwrap_or_default(),
                ));
            }
        }
        Ok(out)
    })
}

const MARK_DIVERGED: Sql = Sql {
    text: "UPDATE paxos.groups SET diverged_round = $2, diverged_error = $3 WHERE group_id = $1",
    args: &[TEXT, INT8, TEXT],
};

/// Records (or with `None`, clears) that applying `round` failed here.
pub fn set_divergence(group_id: &str, divergence: Option<(u64, &str)>) -> Result<()> {
    if divergence.is_some() {
        // Writers must read the divergence before they join (see `batching::joins_running_chain`).
        crate::paxos::batching::break_chain(group_id);
    }
    let args = [
        group_id.into(),
        divergence
            .map(|(r, _)| r.min(i64::MAX as u64) as i64)
            .into(),
        divergence.map(|(_, e)| e).into(),
    ];
    execute(&MARK_DIVERGED, &args)
}

const TABLE_BY_OID: Sql = Sql {
    text: "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname),
                  (SELECT pg_catalog.string_agg(pg_catalog.format('%I %s', a.attname,
                              pg_catalog.format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
                     FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.oid = $1::pg_catalog.oid AND c.relkind IN ('r', 'p')",
    args: &[INT8],
};

/// The quoted, schema-qualified name and the column signature of an ordinary table.
pub fn table_definition(relid: pgrx::pg_sys::Oid) -> Result<Option<(String, String)>> {
    let oid = i64::from(relid.to_u32());
    query(&TABLE_BY_OID, &[oid.into()], |table| {
        let mut out = None;
        for row in table {
            if let (Some(name), columns) = (row.get::<String>(1)?, row.get::<String>(2)?) {
                out = Some((name, columns.unwrap_or_default()));
            }
        }
        Ok(out)
    })
}

const TABLE_OID_BY_NAME: Sql = Sql {
    text: "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid::bigint",
    args: &[TEXT],
};

/// The column signature of the table called `name` (quoted, qualified), if it exists here.
pub fn table_columns(name: &str) -> Result<Option<String>> {
    let Some(oid) = first_value::<i64>(&TABLE_OID_BY_NAME, &[name.into()])? else {
        return Ok(None);
    };
    let relid = pgrx::pg_sys::Oid::from(oid as u32);
    Ok(table_definition(relid)?.map(|(_, columns)| columns))
}

const REGISTER_TABLE: Sql = Sql {
    text: "INSERT INTO paxos.replicated_tables (group_id, table_name, columns, round)
           VALUES ($1, $2, $3, $4) ON CONFLICT (group_id, table_name) DO NOTHING",
    args: &[TEXT, TEXT, TEXT, INT8],
};

pub fn register_table(group_id: &str, name: &str, columns: &str, round: u64) -> Result<()> {
    let args = [
        group_id.into(),
        name.into(),
        columns.into(),
        round_arg(round),
    ];
    execute(&REGISTER_TABLE, &args)?;
    crate::intercept::tables_registered();
    Ok(())
}

const REPLICATED_TABLES: Sql = Sql {
    text: "SELECT table_name FROM paxos.replicated_tables WHERE group_id = $1 ORDER BY 1",
    args: &[TEXT],
};

pub fn replicated_tables(group_id: &str) -> Result<Vec<String>> {
    query(&REPLICATED_TABLES, &[group_id.into()], |table| {
        let mut out = Vec::new();
        for row in table {
            out.extend(row.get::<String>(1)?);
        }
        Ok(out)
    })
}

/// The role the current statement runs as (logged with its writes, replayed as it): the name of
/// `current_user`.
pub fn current_role() -> Result<String> {
    // SAFETY: a catalog lookup of the current user id inside a transaction; the name is copied
    // out of the palloc'd string.
    unsafe {
        let name = pgrx::pg_sys::GetUserNameFromId(pgrx::pg_sys::GetUserId(), false);
        Ok(std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned())
    }
}

const RESTART_SEQUENCE: Sql = Sql {
    text: "SELECT pg_catalog.setval($1::pg_catalog.regclass, $2, false)",
    args: &[TEXT, INT8],
};

/// Makes `sequence`'s next value `next` (a replayed write then draws what its proposer drew).
pub fn restart_sequence(sequence: &str, next: i64) -> Result<()> {
    first_value::<i64>(&RESTART_SEQUENCE, &[sequence.into(), next.into()]).map(|_| ())
}

const SEQUENCE_POSITION: Sql = Sql {
    text: "SELECT pg_catalog.pg_sequence_last_value($1::pg_catalog.regclass)",
    args: &[TEXT],
};

/// The last value `sequence` handed out, `None` before its first.
pub fn sequence_position(sequence: &str) -> Result<Option<i64>> {
    first_value::<i64>(&SEQUENCE_POSITION, &[sequence.into()])
}

const KEEP_SEQUENCE_PAST: Sql = Sql {
    text: "SELECT pg_catalog.setval(s.seqrelid, $2, true) FROM pg_catalog.pg_sequence s
           WHERE s.seqrelid = $1::pg_catalog.regclass
             AND CASE WHEN s.seqincrement > 0
                      THEN coalesce(pg_catalog.pg_sequence_last_value(s.seqrelid) < $2, true)
                      ELSE coalesce(pg_catalog.pg_sequence_last_value(s.seqrelid) > $2, true) END",
    args: &[TEXT, INT8],
};

/// Moves `sequence` forward to having handed out `last`, if it is not that far yet (in the
/// direction of its increment).
pub fn keep_sequence_past(sequence: &str, last: i64) -> Result<()> {
    execute(&KEEP_SEQUENCE_PAST, &[sequence.into(), last.into()])
}

const SEQUENCE_FACTS: Sql = Sql {
    text: "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname), \
           s.seqincrement FROM pg_catalog.pg_sequence s \
           JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE s.seqrelid = $1::pg_catalog.oid",
    args: &[INT8],
};

/// A sequence's schema-qualified, quoted name and its increment.
pub fn sequence_facts(relid: pgrx::pg_sys::Oid) -> Result<(String, i64)> {
    query(
        &SEQUENCE_FACTS,
        &[i64::from(relid.to_u32()).into()],
        |rows| {
            for row in rows {
                if let (Some(name), Some(increment)) = (row.get::<String>(1)?, row.get::<i64>(2)?) {
                    return Ok(Some((name, increment)));
                }
            }
            Ok(None)
        },
    )?
    .ok_or_else(|| PaxosError::Internal(format!("sequence {relid:?} not found")))
}

const RELATION_NAME: Sql = Sql {
    text: "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) \
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE c.oid = $1::pg_catalog.oid",
    args: &[INT8],
};

/// Deletes the rows of table `relid` written under the (sub)transaction ids `xids` (a
/// transaction's own inserts: see `intercept::transaction::took_effect_through_leader`).
pub fn discard_rows_written_under(
    relid: pgrx::pg_sys::Oid,
    xids: &[pgrx::pg_sys::TransactionId],
) -> Result<()> {
    let name = first_value::<String>(&RELATION_NAME, &[i64::from(relid.to_u32()).into()])?
        .ok_or_else(|| PaxosError::Internal(format!("relation {relid:?} not found")))?;
    let xids: Vec<i64> = xids.iter().map(|&x| i64::from(u32::from(x))).collect();
    // `name` is quoted by quote_ident.
    pgrx::Spi::run_with_args(
        &format!("DELETE FROM ONLY {name} WHERE xmin::pg_catalog.text::pg_catalog.int8 = ANY($1)"),
        &[xids.into()],
    )?;
    Ok(())
}

const CAPTURE_FUNCTIONS: Sql = Sql {
    text: "SELECT 'paxos.capture_value(bigint, integer, anyelement)'::pg_catalog.regprocedure::pg_catalog.oid::pg_catalog.int8, \
           'paxos.capture_sequence(bigint, oid, anyelement)'::pg_catalog.regprocedure::pg_catalog.oid::pg_catalog.int8",
    args: &[],
};

/// The oids of the functions a deterministic write calls to record what it drew.
pub fn capture_functions() -> Result<(pgrx::pg_sys::Oid, pgrx::pg_sys::Oid)> {
    let oid = |v: i64| pgrx::pg_sys::Oid::from(v as u32);
    query(&CAPTURE_FUNCTIONS, &[], |rows| {
        for row in rows {
            if let (Some(value), Some(sequence)) = (row.get::<i64>(1)?, row.get::<i64>(2)?) {
                return Ok(Some((oid(value), oid(sequence))));
            }
        }
        Ok(None)
    })?
    .ok_or_else(|| PaxosError::Internal("capture functions not found".into()))
}
