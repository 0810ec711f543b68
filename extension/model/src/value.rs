//! What the log holds: user values, no-ops for abandoned rounds, and membership changes.

use crate::error::{ModelError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A value given by a user (`paxos`, `paxos_append`).
    Value,
    /// Proposed by a learner for a round with no value, so the log can move past it.
    Noop,
    /// The member with the connection string in `body` counts from `CHANGE_DELAY` rounds on.
    AddHost,
    /// The member with the connection string in `body` stops counting `CHANGE_DELAY` rounds on.
    RemoveHost,
    /// A table becomes replicated; `body` is a [`crate::entries::TableDefinition`].
    ReplicateTable,
    /// A write to replicated tables, replayed on every node; `body` is a
    /// [`crate::entries::LoggedStatement`].
    Statement,
    /// The writes of several transactions of one node that share a round, replayed in order;
    /// `body` is a [`crate::entries::Batch`].
    Batch,
}

impl ValueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueKind::Value => "value",
            ValueKind::Noop => "noop",
            ValueKind::AddHost => "add_host",
            ValueKind::RemoveHost => "remove_host",
            ValueKind::ReplicateTable => "replicate_table",
            ValueKind::Statement => "statement",
            ValueKind::Batch => "batch",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "value" => ValueKind::Value,
            "noop" => ValueKind::Noop,
            "add_host" => ValueKind::AddHost,
            "remove_host" => ValueKind::RemoveHost,
            "replicate_table" => ValueKind::ReplicateTable,
            "statement" => ValueKind::Statement,
            "batch" => ValueKind::Batch,
            other => return Err(ModelError::UnknownValueKind(other.to_string())),
        })
    }
}

/// One log value. `origin` is unique per proposal, so a proposer can tell its own value apart from
/// an equal value proposed by someone else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogValue {
    pub origin: String,
    pub kind: ValueKind,
    pub body: Option<String>,
}

impl LogValue {
    pub fn from_columns(origin: String, kind: &str, body: Option<String>) -> Result<Self> {
        Ok(LogValue {
            origin,
            kind: ValueKind::parse(kind)?,
            body,
        })
    }
}
