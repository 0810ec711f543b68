//! The acceptor's rules for one round (slot).
//!
//! Persist before reply: every function returns the new slot state to make durable, if it changed,
//! and the reply. The caller must write `persist` durably *before* the reply leaves the node;
//! otherwise a crash could make the acceptor forget a promise or a vote it already announced.

use crate::ballot::Ballot;
use crate::message::{AcceptOutcome, PromiseOutcome};

/// A vote: the acceptor accepted `value` under `ballot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted<V> {
    pub ballot: Ballot,
    pub value: V,
}

/// Everything an acceptor remembers about one round. All of it is durable state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState<V> {
    /// The highest ballot promised (phase 1) or accepted (phase 2) in this round.
    pub promised: Option<Ballot>,
    /// The vote with the highest ballot cast in this round.
    pub accepted: Option<Accepted<V>>,
}

impl<V> Default for SlotState<V> {
    fn default() -> Self {
        SlotState {
            promised: None,
            accepted: None,
        }
    }
}

/// The result of handling a request: `persist` (when `Some`) must be durable before `reply` is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step<V, R> {
    pub persist: Option<SlotState<V>>,
    pub reply: R,
}

impl<V> SlotState<V> {
    /// A ballot may be promised or accepted unless a strictly higher one was promised. Equal is
    /// allowed so that a duplicated or retried message from the same proposer gets the same answer.
    fn admits(&self, ballot: &Ballot) -> bool {
        self.promised.as_ref().is_none_or(|p| ballot >= p)
    }
}

/// Phase 1b: promise `ballot` unless a higher ballot was promised, and report the earlier vote.
pub fn on_prepare<V: Clone>(slot: &SlotState<V>, ballot: &Ballot) -> Step<V, PromiseOutcome<V>> {
    if !slot.admits(ballot) {
        return Step {
            persist: None,
            reply: PromiseOutcome::Refused {
                // `admits` is false only when `promised` is Some.
                promised: slot.promised.clone().unwrap_or_else(|| ballot.clone()),
            },
        };
    }
    let persist = (slot.promised.as_ref() != Some(ballot)).then(|| SlotState {
        promised: Some(ballot.clone()),
        accepted: slot.accepted.clone(),
    });
    Step {
        persist,
        reply: PromiseOutcome::Granted {
            accepted: slot.accepted.clone(),
        },
    }
}

/// Phase 2b: accept `value` under `ballot` unless a higher ballot was promised.
pub fn on_accept<V: Clone + PartialEq>(
    slot: &SlotState<V>,
    ballot: &Ballot,
    value: &V,
) -> Step<V, AcceptOutcome> {
    if !slot.admits(ballot) {
        return Step {
            persist: None,
            reply: AcceptOutcome::Refused {
                promised: slot.promised.clone().unwrap_or_else(|| ballot.clone()),
            },
        };
    }
    let vote = Accepted {
        ballot: ballot.clone(),
        value: value.clone(),
    };
    let unchanged = slot.promised.as_ref() == Some(ballot) && slot.accepted.as_ref() == Some(&vote);
    Step {
        persist: (!unchanged).then(|| SlotState {
            promised: Some(ballot.clone()),
            accepted: Some(vote),
        }),
        reply: AcceptOutcome::Accepted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u64, p: &str) -> Ballot {
        Ballot::new(n, p)
    }

    #[test]
    fn first_prepare_is_promised_and_persisted() {
        let slot = SlotState::<String>::default();
        let step = on_prepare(&slot, &b(1, "a"));
        assert_eq!(step.reply, PromiseOutcome::Granted { accepted: None });
        assert_eq!(step.persist.unwrap().promised, Some(b(1, "a")));
    }

    #[test]
    fn lower_prepare_is_refused_without_persisting() {
        let slot = SlotState::<String> {
            promised: Some(b(5, "a")),
            accepted: None,
        };
        let step = on_prepare(&slot, &b(4, "z"));
        assert_eq!(step.persist, None);
        assert_eq!(
            step.reply,
            PromiseOutcome::Refused {
                promised: b(5, "a")
            }
        );
        // Same number, lower proposer id: refused too.
        assert!(matches!(
            on_prepare(&slot, &b(5, "0")).reply,
            PromiseOutcome::Refused { .. }
        ));
    }

    #[test]
    fn repeated_prepare_is_granted_without_new_write() {
        let slot = SlotState::<String> {
            promised: Some(b(5, "a")),
            accepted: None,
        };
        let step = on_prepare(&slot, &b(5, "a"));
        assert_eq!(step.persist, None);
        assert!(matches!(step.reply, PromiseOutcome::Granted { .. }));
    }

    #[test]
    fn promise_reports_earlier_vote() {
        let vote = Accepted {
            ballot: b(2, "a"),
            value: "x".to_string(),
        };
        let slot = SlotState {
            promised: Some(b(2, "a")),
            accepted: Some(vote.clone()),
        };
        let step = on_prepare(&slot, &b(3, "b"));
        assert_eq!(
            step.reply,
            PromiseOutcome::Granted {
                accepted: Some(vote.clone())
            }
        );
        let persisted = step.persist.unwrap();
        assert_eq!(persisted.promised, Some(b(3, "b")));
        assert_eq!(persisted.accepted, Some(vote));
    }

    #[test]
    fn accept_respects_promise() {
        let slot = SlotState::<String> {
            promised: Some(b(3, "b")),
            accepted: None,
        };
        let refused = on_accept(&slot, &b(2, "a"), &"x".to_string());
        assert_eq!(refused.persist, None);
        assert_eq!(
            refused.reply,
            AcceptOutcome::Refused {
                promised: b(3, "b")
            }
        );
        let ok = on_accept(&slot, &b(3, "b"), &"y".to_string());
        assert_eq!(ok.reply, AcceptOutcome::Accepted);
        let persisted = ok.persist.unwrap();
        assert_eq!(persisted.accepted.unwrap().value, "y");
        // A duplicate accept changes nothing and needs no write.
        let again = on_accept(&persisted_again(), &b(3, "b"), &"y".to_string());
        assert_eq!(again.persist, None);
    }

    fn persisted_again() -> SlotState<String> {
        SlotState {
            promised: Some(b(3, "b")),
            accepted: Some(Accepted {
                ballot: b(3, "b"),
                value: "y".to_string(),
            }),
        }
    }

    #[test]
    fn higher_accept_raises_promise() {
        let slot = SlotState::<String> {
            promised: Some(b(1, "a")),
            accepted: None,
        };
        let step = on_accept(&slot, &b(9, "c"), &"v".to_string());
        assert_eq!(step.persist.unwrap().promised, Some(b(9, "c")));
    }
}
