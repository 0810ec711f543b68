//! The pg_paxos Kubernetes operator: the `PaxosGroup` and `ReplicatedTable` resources (`crd`), the
//! Kubernetes objects a group owns (`resources`, pure builders), what it does to PostgreSQL (`sql`),
//! and the reconcilers (`controller`).

pub mod controller;
pub mod crd;
pub mod error;
pub mod resources;
pub mod sql;

pub use error::{Error, Result};
