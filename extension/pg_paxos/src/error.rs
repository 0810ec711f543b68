//! The one error type of the extension. Each variant carries its context and knows its SQLSTATE
//! and hint, so every failure reaches the client as a clear PostgreSQL error.

use std::fmt;

use paxos_model::ModelError;
use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgLogLevel;

#[derive(Debug)]
pub enum PaxosError {
    /// Invalid names, connection strings or stored values (see `ModelError`).
    Model(ModelError),
    UnknownGroup {
        group: String,
    },
    DuplicateGroup {
        group: String,
    },
    /// Too few members answered for a majority.
    NoMajority {
        group: String,
        action: &'static str,
        answered: usize,
        total: usize,
        /// The last transport error; it never contains credentials.
        last_error: Option<String>,
    },
    /// Members answered, but no value was chosen before the round timeout (contention).
    RoundTimeout {
        group: String,
        round: u64,
        millis: u64,
        attempts: u32,
        answered: usize,
        total: usize,
    },
    NotAMember {
        group: String,
        member: String,
    },
    AlreadyMember {
        group: String,
        member: String,
    },
    /// A node joins under a connection string that is a member already, as another copy of
    /// pg_paxos (it lost its data, or it is a copy of another node): its votes are gone.
    MemberReplaced {
        group: String,
        member: String,
    },
    /// An acceptor request for a group this node never founded or joined (see
    /// `paxos.acceptor_groups`): answering it would vote without the promises and votes cast here
    /// before, if this node lost its data.
    NotAnAcceptor {
        group: String,
    },
    /// The join was recorded in the group, but this node could not copy the group's state.
    HalfJoined {
        group: String,
        round: u64,
        cause: String,
    },
    InvalidArgument {
        message: String,
        hint: &'static str,
    },
    /// A round at or before the group's compaction point here: its value and votes are gone.
    Compacted {
        group: String,
        round: u64,
        through: u64,
    },
    /// Compaction needs an answer from every member (each must have applied what goes).
    CompactionIncomplete {
        group: String,
        member: String,
        cause: String,
    },
    /// A table to replicate is missing on a node, or differs there. `node` names it as the message
    /// does: "member <address>", or "this node" for one that joins.
    TableMismatch {
        node: String,
        table: String,
        problem: String,
        missing: bool,
    },
    /// The role lacks a privilege every node needs to replay the statement.
    PermissionDenied {
        message: String,
        hint: &'static str,
    },
    /// The statement cannot be replicated.
    NotSupported {
        message: String,
        hint: &'static str,
    },
    /// Another entry was chosen for the round a transaction's writes were based on.
    Conflict {
        group: String,
        round: u64,
    },
    /// A statement for replicated tables failed where it was proposed: nothing was logged.
    StatementFailed(crate::paxos::apply::StatementError),
    /// A logged entry failed on this node although it succeeded where it was proposed: this node
    /// no longer applies the group's log until it is repaired.
    Diverged {
        group: String,
        round: u64,
        cause: String,
    },
    /// A logged entry could not be applied on this node for a reason of this node's own (a full
    /// disk, a resource limit, a cancel): the statement applying it fails; the entry stays
    /// unapplied and the next statement tries again. Not divergence.
    CannotApplyNow {
        group: String,
        round: u64,
        error: crate::paxos::apply::StatementError,
    },
    Remote {
        member: String,
        message: String,
    },
    /// The round this transaction's write shared with other transactions of this node (group
    /// commit) was not won; `cause` is what the transaction that proposed it met.
    BatchFailed {
        group: String,
        sqlstate: PgSqlErrorCode,
        cause: String,
    },
    /// The group's leader answered this node's forwarded insert with an SQL error (a key that
    /// exists already, a constraint): nothing was chosen.
    ForwardRefused {
        group: String,
        leader: String,
        sqlstate: PgSqlErrorCode,
        message: String,
    },
    /// The member this node took for the leader did not take its forwarded insert (it no longer
    /// leads, or its inserts moved past this node's state): nothing was chosen.
    ForwardNotTaken {
        group: String,
        leader: String,
        cause: &'static str,
    },
    /// No answer from the leader to a forwarded insert: it may still be chosen.
    ForwardUnknown {
        group: String,
        leader: String,
        cause: String,
    },
    Internal(String),
}

/// `object_not_in_prerequisite_state` as a member's refusal arrives in a reply: the SQLSTATE of
/// `PaxosError::NotAnAcceptor` (a member that lost its data, asked to vote) and of
/// `PaxosError::MemberReplaced` (a member refusing an admission).
pub const NOT_IN_PREREQUISITE_STATE: &str = "55000";

/// The error code of a five-character SQLSTATE (an unknown one reads as an internal error).
pub fn sqlstate_from_code(code: &str) -> PgSqlErrorCode {
    let bytes = code.as_bytes();
    if bytes.len() != 5 {
        return PgSqlErrorCode::ERRCODE_INTERNAL_ERROR;
    }
    // PostgreSQL's MAKE_SQLSTATE: six bits per character, first character lowest.
    let packed = bytes.iter().enumerate().fold(0i32, |acc, (i, &ch)| {
        acc + (((ch as i32 - '0' as i32) & 0x3F) << (6 * i))
    });
    PgSqlErrorCode::from(packed)
}

/// The five-character SQLSTATE of an error code (the inverse of [`sqlstate_from_code`]).
pub fn code_of_sqlstate(sqlstate: PgSqlErrorCode) -> String {
    let packed = sqlstate as isize;
    (0..5)
        .map(|i| char::from(((packed >> (6 * i)) & 0x3F) as u8 + b'0'))
        .collect()
}

/// True for an SQLSTATE that tells of the node's trouble of the moment rather than of the
/// statement: insufficient resources (class 53: disk, memory, configured limits), an operator
/// intervention (57: cancel, shutdown), a system error (58: I/O) or an internal error (XX).
pub fn is_nodes_own_trouble(sqlstate: &str) -> bool {
    matches!(sqlstate.get(..2), Some("53" | "57" | "58" | "XX"))
}

pub type Result<T> = std::result::Result<T, PaxosError>;

impl From<ModelError> for PaxosError {
    fn from(e: ModelError) -> Self {
        PaxosError::Model(e)
    }
}

impl From<pgrx::spi::SpiError> for PaxosError {
    fn from(e: pgrx::spi::SpiError) -> Self {
        PaxosError::Internal(format!("SPI: {e}"))
    }
}

impl PaxosError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            PaxosError::Model(ModelError::InvalidName { .. }) => ERRCODE_INVALID_NAME,
            PaxosError::Model(ModelError::NameTooLong { .. }) => ERRCODE_NAME_TOO_LONG,
            PaxosError::Model(ModelError::BadConnectionString { .. })
            | PaxosError::InvalidArgument { .. }
            | PaxosError::Compacted { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            PaxosError::CompactionIncomplete { .. } => ERRCODE_CONNECTION_FAILURE,
            PaxosError::Model(ModelError::UnknownValueKind(_) | ModelError::MalformedEntry(_))
            | PaxosError::Diverged { .. } => ERRCODE_DATA_CORRUPTED,
            PaxosError::TableMismatch { missing: true, .. } => ERRCODE_UNDEFINED_TABLE,
            PaxosError::TableMismatch { missing: false, .. } => ERRCODE_DATATYPE_MISMATCH,
            PaxosError::UnknownGroup { .. } | PaxosError::NotAMember { .. } => {
                ERRCODE_UNDEFINED_OBJECT
            }
            PaxosError::DuplicateGroup { .. } | PaxosError::AlreadyMember { .. } => {
                ERRCODE_DUPLICATE_OBJECT
            }
            PaxosError::NoMajority { .. } => ERRCODE_CONNECTION_FAILURE,
            PaxosError::NotSupported { .. } => ERRCODE_FEATURE_NOT_SUPPORTED,
            PaxosError::PermissionDenied { .. } => ERRCODE_INSUFFICIENT_PRIVILEGE,
            PaxosError::RoundTimeout { .. } | PaxosError::Conflict { .. } => {
                ERRCODE_T_R_SERIALIZATION_FAILURE
            }
            PaxosError::HalfJoined { .. }
            | PaxosError::MemberReplaced { .. }
            | PaxosError::NotAnAcceptor { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            PaxosError::Remote { .. } => ERRCODE_CONNECTION_EXCEPTION,
            PaxosError::Internal(_) => ERRCODE_INTERNAL_ERROR,
            PaxosError::StatementFailed(e) | PaxosError::CannotApplyNow { error: e, .. } => e.code,
            PaxosError::BatchFailed { sqlstate, .. }
            | PaxosError::ForwardRefused { sqlstate, .. } => *sqlstate,
            PaxosError::ForwardNotTaken { .. } => ERRCODE_T_R_SERIALIZATION_FAILURE,
            PaxosError::ForwardUnknown { .. } => ERRCODE_TRANSACTION_RESOLUTION_UNKNOWN,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        Some(match self {
            PaxosError::Model(ModelError::InvalidName { .. } | ModelError::NameTooLong { .. }) => {
                "Names must be 1 to 63 bytes without control characters."
            }
            PaxosError::Model(ModelError::BadConnectionString { .. }) => {
                "Use libpq key=value syntax naming at least a host, e.g. 'host=10.0.0.1 port=5432 dbname=postgres'."
            }
            PaxosError::UnknownGroup { .. } => {
                "Create it with paxos_create_group() or join it with paxos_join_group(); paxos_status() lists this node's groups."
            }
            PaxosError::DuplicateGroup { .. } => {
                "Pick another group name, or leave the group first with paxos_leave_group()."
            }
            PaxosError::NoMajority { .. } => {
                "Check that a majority of the members run and accept connections; pg_paxos.connect_timeout bounds each attempt."
            }
            PaxosError::RoundTimeout { .. } => {
                "Retry; if members are slow or frozen, check them with paxos_status(), or raise pg_paxos.round_timeout."
            }
            PaxosError::NotAMember { .. } => "paxos_status() lists the members.",
            PaxosError::AlreadyMember { .. } => {
                "Run paxos_join_group() on that node to copy the group's state."
            }
            PaxosError::HalfJoined { .. } => {
                "Run paxos_join_group() again on this node: it is idempotent and finishes the join."
            }
            PaxosError::MemberReplaced { .. } => {
                "Remove the old member first with paxos_remove_host() on a member, then join again."
            }
            PaxosError::NotAnAcceptor { .. } => {
                "If this node lost its data, remove it with paxos_remove_host() on a member, then run paxos_join_group() on it again."
            }
            PaxosError::InvalidArgument { hint, .. } => hint,
            PaxosError::Compacted { .. } => {
                "paxos_compact_log() removed the values of the rounds every member had applied; only later rounds can be read."
            }
            PaxosError::CompactionIncomplete { .. } => {
                "Every member must answer: start the missing member or remove it with paxos_remove_host(), then compact again. Members that answered may have compacted already, which is safe."
            }
            PaxosError::Remote { .. } => {
                "Check that the member runs and has the pg_paxos extension in that database."
            }
            PaxosError::Conflict { .. }
            | PaxosError::BatchFailed { .. }
            | PaxosError::ForwardNotTaken { .. } => "Retry the transaction.",
            PaxosError::ForwardRefused { sqlstate, .. } => {
                if *sqlstate == PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE {
                    "Retry the transaction."
                } else {
                    return None;
                }
            }
            PaxosError::ForwardUnknown { .. } => {
                "Look for the rows before writing them again: a strong read applies the log first."
            }
            PaxosError::NotSupported { hint, .. } | PaxosError::PermissionDenied { hint, .. } => {
                hint
            }
            PaxosError::StatementFailed(_) => {
                "The statement runs with search_path = pg_catalog, pg_temp: name tables and functions with their schema."
            }
            PaxosError::TableMismatch { .. } => {
                "Create the table with the same columns (names and types, in order) on every member first."
            }
            PaxosError::CannotApplyNow { .. } => {
                "The entry is chosen and this node applies it with the next statement; free the resource (disk space, a limit such as temp_file_limit) if the error repeats."
            }
            PaxosError::Diverged { .. } => {
                "See \"Repairing a diverged node\" in the README: fix the cause, or copy the tables from a healthy member, then call paxos.resume_group()."
            }
            PaxosError::Model(ModelError::UnknownValueKind(_) | ModelError::MalformedEntry(_))
            | PaxosError::Internal(_) => return None,
        })
    }

    /// Raises this error as a PostgreSQL ERROR; never returns.
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.to_string(), "pg_paxos");
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) does not return")
    }
}

impl fmt::Display for PaxosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaxosError::Model(e) => e.fmt(f),
            PaxosError::UnknownGroup { group } => {
                write!(f, "paxos group {group:?} does not exist on this node")
            }
            PaxosError::DuplicateGroup { group } => {
                write!(f, "paxos group {group:?} already exists on this node")
            }
            PaxosError::Compacted {
                group,
                round,
                through,
            } => write!(
                f,
                "round {round} of paxos group {group:?} was compacted (rounds through {through} are gone on this node)"
            ),
            PaxosError::CompactionIncomplete {
                group,
                member,
                cause,
            } => write!(
                f,
                "could not compact the log of paxos group {group:?}: member {member} did not answer ({cause})"
            ),
            PaxosError::NoMajority {
                group,
                action,
                answered,
                total,
                last_error,
            } => {
                write!(
                    f,
                    "could not {action} in paxos group {group:?}: {answered} of {total} members reachable, {} needed",
                    paxos_core::proposer::majority(*total)
                )?;
                if let Some(e) = last_error {
                    write!(f, " (last error: {e})")?;
                }
                Ok(())
            }
            PaxosError::RoundTimeout {
                group,
                round,
                millis,
                attempts,
                answered,
                total,
            } => {
                write!(
                    f,
                    "no value was chosen for round {round} of paxos group {group:?} within {millis} ms"
                )?;
                if *total > 0 {
                    write!(
                        f,
                        " ({attempts} attempts, {answered} of {total} members answered)"
                    )?;
                }
                Ok(())
            }
            PaxosError::NotAMember { group, member } => {
                write!(f, "{member} is not a member of paxos group {group:?}")
            }
            PaxosError::AlreadyMember { group, member } => {
                write!(f, "{member} is already a member of paxos group {group:?}")
            }
            PaxosError::MemberReplaced { group, member } => write!(
                f,
                "{member} is a member of paxos group {group:?} as another copy of pg_paxos: that node lost its data (and the votes it cast), or this node is a copy of it"
            ),
            PaxosError::NotAnAcceptor { group } => write!(
                f,
                "this node is no acceptor of paxos group {group:?}: it never founded or joined the group, or it lost its data (and the votes it cast)"
            ),
            PaxosError::HalfJoined { group, round, cause } => write!(
                f,
                "this node was added to paxos group {group:?} in round {round}, but copying the group's state failed: {cause}"
            ),
            PaxosError::InvalidArgument { message, .. }
            | PaxosError::NotSupported { message, .. }
            | PaxosError::PermissionDenied { message, .. } => f.write_str(message),
            PaxosError::TableMismatch {
                node,
                table,
                problem,
                ..
            } => write!(f, "table {table} {problem} on {node}"),
            PaxosError::Conflict { group, round } => write!(
                f,
                "another write was chosen first for round {round} of paxos group {group:?}, which this transaction's writes were based on"
            ),
            PaxosError::StatementFailed(e) => {
                write!(f, "{} (nothing was logged)", e.message)
            }
            PaxosError::Diverged { group, round, cause } => write!(
                f,
                "this node stopped applying paxos group {group:?} at round {round}, which failed here: {cause}"
            ),
            PaxosError::CannotApplyNow { group, round, error } => write!(
                f,
                "this node cannot apply round {round} of paxos group {group:?} for now: {}",
                error.message
            ),
            PaxosError::Remote { member, message } => write!(f, "member {member} failed: {message}"),
            PaxosError::BatchFailed { group, cause, .. } => write!(
                f,
                "the round this transaction shared with other writes of this node in paxos group {group:?} failed: {cause}"
            ),
            PaxosError::ForwardRefused {
                group,
                leader,
                message,
                ..
            } => write!(
                f,
                "{message} (on member {leader}, the leader of paxos group {group:?}, which ran this insert for this node)"
            ),
            PaxosError::ForwardNotTaken {
                group,
                leader,
                cause,
            } => write!(
                f,
                "member {leader} did not take this node's insert for paxos group {group:?}: {cause}; nothing was written"
            ),
            PaxosError::ForwardUnknown {
                group,
                leader,
                cause,
            } => write!(
                f,
                "no answer from member {leader}, the leader of paxos group {group:?}, to this node's insert ({cause}): it may still be chosen, and then shows here once this node applies the log"
            ),
            PaxosError::Internal(message) => write!(f, "pg_paxos internal error: {message}"),
        }
    }
}

/// Unwraps a result in a `#[pg_extern]` function, raising the error as a PostgreSQL ERROR.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| e.raise())
    }
}
