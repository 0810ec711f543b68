//! What a write drew while it ran here: the value of each value site and the numbers drawn from
//! each sequence (see [`super::determinism`]). Writes in flight form a stack, since a write can
//! run another one (a function or trigger that writes); the inner one is then not logged on its
//! own, because replaying the outer write runs it again.

use std::cell::RefCell;

use pgrx::prelude::*;
use pgrx::{pg_sys, AnyElement};

use super::literals;
use crate::error::{OrRaise, PaxosError};
use crate::guc;

/// The value a site took: never evaluated, one value (its text form, `None` for NULL), or several
/// different values (only kept when `pg_paxos.allow_mutable_functions` is on: each node then
/// evaluates the expression itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Captured {
    NotEvaluated,
    Value(Option<String>),
    Varies,
}

/// Draws from one sequence during a write.
#[derive(Clone, Debug)]
pub struct Drawn {
    pub sequence: pg_sys::Oid,
    pub first: i64,
    pub last: i64,
    pub count: u64,
}

/// A write in flight.
pub struct InFlight {
    tag: u64,
    /// The subtransaction it runs in; an abort of that subtransaction drops it.
    level: i32,
    pub nested: bool,
    pub values: Vec<Captured>,
    pub sequences: Vec<Drawn>,
}

thread_local! {
    static IN_FLIGHT: RefCell<Vec<InFlight>> = const { RefCell::new(Vec::new()) };
}

fn nest_level() -> i32 {
    // SAFETY: reads the transaction state of this backend.
    unsafe { pg_sys::GetCurrentTransactionNestLevel() }
}

/// A write with `sites` value sites starts executing.
pub fn start(tag: u64, sites: usize) {
    IN_FLIGHT.with(|stack| {
        let mut stack = stack.borrow_mut();
        let nested = !stack.is_empty();
        stack.push(InFlight {
            tag,
            level: nest_level(),
            nested,
            values: vec![Captured::NotEvaluated; sites],
            sequences: Vec::new(),
        });
    })
}

/// The write finished; its record (none if it was not started, as under EXPLAIN).
pub fn finish(tag: u64) -> Option<InFlight> {
    IN_FLIGHT.with(|stack| {
        let mut stack = stack.borrow_mut();
        let position = stack.iter().rposition(|w| w.tag == tag)?;
        // Anything above it belongs to writes that failed inside it and were caught.
        stack.truncate(position + 1);
        stack.pop()
    })
}

/// Drops the writes of an aborted (sub)transaction at `level` or deeper.
pub fn abort(level: i32) {
    IN_FLIGHT.with(|stack| stack.borrow_mut().retain(|w| w.level < level))
}

fn with_write<T>(tag: i64, f: impl FnOnce(&mut InFlight) -> T) -> Option<T> {
    IN_FLIGHT.with(|stack| {
        let mut stack = stack.borrow_mut();
        stack.iter_mut().rev().find(|w| w.tag == tag as u64).map(f)
    })
}

/// Records the value of site `site` of write `tag` and returns it unchanged.
#[pg_extern(schema = "paxos", stable, parallel_unsafe)]
fn capture_value(tag: i64, site: i32, value: Option<AnyElement>) -> Option<AnyElement> {
    let text = value.as_ref().map(|v| {
        // SAFETY: the datum is the argument, of the type PostgreSQL resolved for it.
        unsafe { literals::output_text(v.oid(), v.datum()) }
    });
    with_write(tag, |write| {
        let Some(slot) = write.values.get_mut(site as usize) else {
            return Ok(());
        };
        match slot {
            Captured::NotEvaluated => *slot = Captured::Value(text),
            Captured::Value(first) if *first == text => {}
            Captured::Value(_) | Captured::Varies => {
                if !guc::ALLOW_MUTABLE_FUNCTIONS.get() {
                    return Err(PaxosError::NotSupported {
                        message: "a function in a write to a replicated table returned different values for different rows, so other nodes cannot store the same values".into(),
                        hint: "Compute such values per row in a VALUES list (one call per row), or pass them as constants.",
                    });
                }
                *slot = Captured::Varies;
            }
        }
        Ok(())
    })
    .unwrap_or(Ok(()))
    .or_raise();
    value
}

/// Records a number drawn from `sequence` by write `tag` and returns it unchanged.
#[pg_extern(schema = "paxos", volatile, parallel_unsafe)]
fn capture_sequence(
    tag: i64,
    sequence: pg_sys::Oid,
    value: Option<AnyElement>,
) -> Option<AnyElement> {
    let drawn = value.as_ref().and_then(|v| {
        let datum = v.datum();
        // SAFETY: the datum is of the integer type its oid says.
        unsafe {
            match v.oid() {
                pg_sys::INT8OID => i64::from_datum(datum, false),
                pg_sys::INT4OID => i32::from_datum(datum, false).map(i64::from),
                pg_sys::INT2OID => i16::from_datum(datum, false).map(i64::from),
                _ => None,
            }
        }
    });
    if let Some(number) = drawn {
        with_write(tag, |write| {
            match write.sequences.iter_mut().find(|d| d.sequence == sequence) {
                Some(d) => {
                    d.last = number;
                    d.count += 1;
                }
                None => write.sequences.push(Drawn {
                    sequence,
                    first: number,
                    last: number,
                    count: 1,
                }),
            }
        });
    }
    value
}
