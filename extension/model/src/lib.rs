//! The parts of the pg_paxos extension that need no PostgreSQL server: what the log holds, who is a
//! member in which round, which names are valid, how members are reached, and the error type.
//! Unit-tested with plain `cargo test`; the extension crate adds SPI, the network and SQLSTATEs.

pub mod conninfo;
pub mod entries;
pub mod error;
pub mod log_gaps;
pub mod membership;
pub mod names;
pub mod params;
pub mod value;

pub use error::{ModelError, Result};
