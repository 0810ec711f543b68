//! Talking to the other members: connection settings, pooled connections and the acceptor RPCs.

pub mod pool;
pub mod rpc;
