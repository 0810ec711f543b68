//! The Paxos state machine behind pg_paxos, with no I/O of its own.
//!
//! In the style of etcd's raft and raft-rs, every function here takes the current state and an input
//! and returns what the caller must do: which state to persist, which messages to send, which value
//! was chosen, how long to back off. The PostgreSQL extension drives it over SQL connections and
//! durable tables; the simulator in `tests/` drives it over a seeded, faulty network.
//!
//! One Paxos instance decides the value of one *round* (a slot of the Multi-Paxos log).
//!
//! Multi-Paxos is designed in, not built yet: a proposer holding promises from a majority for every
//! round from `r` on may skip phase 1 for those rounds. The acceptor rules take the `promised` ballot
//! of a slot as their only input, so a range promise (one durable record for all rounds >= r, from
//! which a fresh slot's `promised` is read) needs no change to [`acceptor::on_prepare`] or
//! [`acceptor::on_accept`]; the proposer would start in its accept phase. The fast-path issue adds
//! both, with simulator coverage.

pub mod acceptor;
pub mod backoff;
pub mod ballot;
pub mod message;
pub mod proposer;
pub mod rng;

pub use acceptor::{Accepted, SlotState, Step};
pub use ballot::Ballot;
pub use message::{AcceptOutcome, PromiseOutcome, Reply, Request};
pub use proposer::{Action, Proposer};
