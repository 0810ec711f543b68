//! The Paxos state machine behind pg_paxos, with no I/O of its own.
//!
//! In the style of etcd's raft and raft-rs, every function here takes the current state and an input
//! and returns what the caller must do: which state to persist, which messages to send, which value
//! was chosen, how long to back off. The PostgreSQL extension drives it over SQL connections and
//! durable tables; the simulator in `tests/` drives it over a seeded, faulty network.
//!
//! One Paxos instance decides the value of one *round* (a slot of the Multi-Paxos log).
//!
//! Multi-Paxos: a node that won a [`leader::Campaign`] (phase 1 for every round from `r` on, kept by
//! each acceptor as one [`acceptor::RangePromise`]) proposes later rounds with phase 2 only
//! ([`Proposer::start_accepting`]). The acceptor rules stay per slot: a range promise only raises
//! the `promised` ballot they see ([`SlotState::under`]).
//!
//! Optionally, a leader holds a [`lease::LeaderLease`] granted by a majority of acceptors
//! ([`lease::LeaseGrant`]) and serves strong reads from its own state while it runs.

pub mod acceptor;
pub mod backoff;
pub mod ballot;
pub mod commit_chain;
pub mod leader;
pub mod lease;
pub mod message;
pub mod proposer;
pub mod rng;

pub use acceptor::{Accepted, RangeOutcome, RangePromise, SlotState, Step};
pub use ballot::Ballot;
pub use commit_chain::CommitChain;
pub use leader::{Campaign, CampaignAction, Leadership};
pub use lease::{LeaderLease, LeaseGrant};
pub use message::{AcceptOutcome, PromiseOutcome, Reply, Request};
pub use proposer::{Action, Proposer};
