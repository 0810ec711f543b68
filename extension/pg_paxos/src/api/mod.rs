//! The SQL functions: thin wrappers that validate arguments, call into `paxos`, and raise errors.

pub mod acceptor;
pub mod group;
pub mod log;
pub mod status;
pub mod tables;
