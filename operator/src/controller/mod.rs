//! The reconcilers, in the shape of kube-rs's controller-rs: one per resource, sharing a
//! [`Context`]; status by server-side apply; events for every step; metrics.

pub mod conditions;
pub mod context;
pub mod group;
pub mod metrics;
pub mod table;

pub use context::{Context, MemberAddresses};

/// The field manager of everything the operator applies.
pub const MANAGER: &str = "pg-paxos-operator";
