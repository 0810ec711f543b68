//! Test support for pg_paxos: local clusters of real PostgreSQL nodes with the extension preloaded
//! (through `scripts/cluster`), clients, a frozen peer, a link that can be cut, and waiting with deadlines.

pub mod blackhole;
pub mod cluster;
pub mod errors;
pub mod proxy;
pub mod wait;

pub use blackhole::Blackhole;
pub use cluster::Cluster;
pub use errors::{bounded, message, sqlstate};
pub use proxy::Proxy;
pub use wait::wait_until;
