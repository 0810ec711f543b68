//! Errors of the plain-Rust parts. The extension turns each into its own error type, with a
//! SQLSTATE and a hint.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    InvalidName { what: &'static str, reason: String },
    NameTooLong { what: &'static str, bytes: usize },
    BadConnectionString { reason: String },
    UnknownValueKind(String),
    MalformedEntry(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::InvalidName { what, reason } => write!(f, "invalid {what}: {reason}"),
            ModelError::NameTooLong { what, bytes } => {
                write!(f, "{what} is {bytes} bytes long, more than the limit of 63")
            }
            ModelError::BadConnectionString { reason } => {
                write!(f, "invalid connection string: {reason}")
            }
            ModelError::UnknownValueKind(kind) => write!(f, "unknown log entry kind {kind:?}"),
            ModelError::MalformedEntry(kind) => write!(f, "malformed {kind} entry in the log"),
        }
    }
}

impl std::error::Error for ModelError {}

pub type Result<T> = std::result::Result<T, ModelError>;
