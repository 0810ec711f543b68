//! Test support for pg_paxos: local clusters of real PostgreSQL nodes with the extension preloaded
//! (through `scripts/cluster`), clients, a frozen peer, a link that can be cut, an in-memory Kubernetes API for the operator, and waiting with deadlines.

pub mod cluster;
pub mod errors;
pub mod fake_kube;
pub mod faults;
pub mod links;
pub mod wait;

pub use cluster::{count, groups_and_acceptor_records, Cluster};
pub use errors::{bounded, execute_retrying, message, sqlstate};
pub use fake_kube::FakeKube;
pub use links::{LinkProxy, Rule};
pub use wait::{wait_until, wait_until_running};
