//! Paxos on PostgreSQL: the acceptor on top of local tables, the proposer over the network, the log
//! and group membership.

pub mod acceptor;
pub mod apply;
pub mod batching;
pub mod compaction;
pub mod forwarding;
pub mod group;
pub mod leadership;
pub mod lease;
pub mod replicated_log;
pub mod round;
pub mod round_claims;
pub mod tables;
