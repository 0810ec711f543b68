//! Messages between proposers and acceptors. They carry one round each.

use crate::acceptor::{Accepted, RangeOutcome};
use crate::ballot::Ballot;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<V> {
    /// Phase 1a: promise to refuse ballots lower than `ballot` in `round`.
    Prepare { round: u64, ballot: Ballot },
    /// Phase 1a for every round from `from` on (a leader's election, see `leader`).
    PrepareRange { from: u64, ballot: Ballot },
    /// Phase 2a: accept `value` with `ballot` in `round`.
    Accept {
        round: u64,
        ballot: Ballot,
        value: V,
    },
    /// Tell a learner that `value` was chosen in `round`.
    Learn { round: u64, value: V },
}

impl<V> Request<V> {
    pub fn round(&self) -> u64 {
        match self {
            Request::Prepare { round, .. }
            | Request::PrepareRange { from: round, .. }
            | Request::Accept { round, .. }
            | Request::Learn { round, .. } => *round,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromiseOutcome<V> {
    /// The promise was given; `accepted` is the acceptor's earlier vote, if any.
    Granted { accepted: Option<Accepted<V>> },
    /// A higher ballot was promised already.
    Refused { promised: Ballot },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptOutcome {
    Accepted,
    Refused { promised: Ballot },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply<V> {
    /// Phase 1b, answering the Prepare with `ballot`.
    Promise {
        round: u64,
        ballot: Ballot,
        outcome: PromiseOutcome<V>,
    },
    /// Phase 1b for every round from `from` on, answering the PrepareRange with `ballot`.
    RangePromise {
        from: u64,
        ballot: Ballot,
        outcome: RangeOutcome<V>,
    },
    /// Phase 2b, answering the Accept with `ballot`.
    Accept {
        round: u64,
        ballot: Ballot,
        outcome: AcceptOutcome,
    },
    /// The acceptor already learned that `value` was chosen in `round`: any request may be answered
    /// with this, since a chosen value never changes.
    Chosen { round: u64, value: V },
}
