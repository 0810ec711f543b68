//! The record of every operation: invoked, then ok, failed or unknown, with its client, node and
//! times (microseconds since the run began).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_postgres::error::SqlState;

/// How an operation ended, as far as the client can know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Definitely had no effect.
    Fail,
    /// The answer was lost: it may or may not have taken effect.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    Insert {
        id: String,
    },
    Read {
        key: i32,
        value: Option<i64>,
    },
    Write {
        key: i32,
        value: i64,
    },
    Cas {
        key: i32,
        from: i64,
        to: i64,
        swapped: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Record {
    pub client: usize,
    pub node: usize,
    pub operation: Operation,
    pub invoked: u64,
    pub answered: u64,
    pub outcome: Outcome,
    pub error: Option<String>,
}

/// The shared history of one run.
#[derive(Clone)]
pub struct History {
    started: Instant,
    records: Arc<Mutex<Vec<Record>>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            started: Instant::now(),
            records: Arc::default(),
        }
    }
}

impl History {
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    pub fn add(&self, record: Record) {
        self.records.lock().unwrap().push(record);
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }
}

/// What an error means for the operation that got it. Only errors raised before anything was
/// proposed, or that prove the proposal lost, are definite failures: a unique violation or a bad
/// statement; no majority answering when the node caught up before running the statement; losing
/// the round the transaction was based on (its value was proposed for that round only, and another
/// won it); a leader that did not take an insert sent to it. Anything else, a timeout of a round or a lost connection above all, leaves the outcome
/// unknown.
pub fn classify(error: &tokio_postgres::Error) -> Outcome {
    let Some(db) = error.as_db_error() else {
        return Outcome::Unknown;
    };
    let code = db.code();
    let message = db.message();
    if *code == SqlState::UNIQUE_VIOLATION
        || code.code().starts_with("42")
        || code.code().starts_with("22")
        || (*code == SqlState::CONNECTION_FAILURE
            && message.starts_with("could not read the highest round"))
        || (*code == SqlState::T_R_SERIALIZATION_FAILURE
            && (message.contains("another write was chosen first")
                || message.contains("did not take this node's insert")))
    {
        Outcome::Fail
    } else {
        Outcome::Unknown
    }
}

/// A short description of an error for the history file.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}
