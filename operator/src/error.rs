//! The operator's one error type. Messages name the member and the action, never credentials.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("member {member} is unreachable: {reason}")]
    Unreachable { member: String, reason: String },
    #[error("member {member} failed to {action}: {message}{}", code.as_ref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
    Sql {
        member: String,
        action: String,
        code: Option<String>,
        message: String,
    },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("waiting: {0}")]
    NotReady(String),
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("finalizer: {0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error a reconcile step raised, looking through the finalizer wrapper.
    pub fn root(&self) -> &Error {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.root(),
                _ => self,
            },
            _ => self,
        }
    }

    /// A short reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self.root() {
            Error::Kube(_) => "KubernetesError",
            Error::Unreachable { .. } => "MemberUnreachable",
            Error::Sql { .. } => "SqlFailed",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::NotReady(_) => "Waiting",
            Error::NoNamespace(_) => "InvalidSpec",
            Error::Finalizer(_) => "FinalizerFailed",
        }
    }

    /// How long to wait before reconciling again after this error.
    pub fn retry_after(&self, attempt: u32) -> Duration {
        match self.root() {
            // A spec error waits for the spec to change (which triggers a reconcile anyway).
            Error::InvalidSpec(_) | Error::NoNamespace(_) => Duration::from_secs(300),
            Error::NotReady(_) => Duration::from_secs(5),
            _ => Duration::from_secs((2u64 << attempt.min(6)).min(120)),
        }
    }
}
