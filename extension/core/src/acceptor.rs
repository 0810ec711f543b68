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

/// A promise for every round from `from` on, made to a leader in one phase 1 (see `leader`): the
/// acceptor refuses ballots below `ballot` in each of those rounds as if it had promised it there.
/// Durable, like a slot's own promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangePromise {
    pub from: u64,
    pub ballot: Ballot,
}

/// The result of handling a request: `persist` (when `Some`) must be durable before `reply` is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step<V, R> {
    pub persist: Option<SlotState<V>>,
    pub reply: R,
}

impl<V: Clone> SlotState<V> {
    /// The slot of `round` as the rules see it: its own promise, raised to the range promise when
    /// that covers `round`. Feed this to [`on_prepare`] and [`on_accept`].
    pub fn under(&self, range: Option<&RangePromise>, round: u64) -> SlotState<V> {
        let mut slot = self.clone();
        if let Some(range) = range.filter(|r| round >= r.from) {
            if slot.promised.as_ref().is_none_or(|p| *p < range.ballot) {
                slot.promised = Some(range.ballot.clone());
            }
        }
        slot
    }
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

/// What a range prepare changes and answers: `persist` (when `Some`) must be durable before the
/// reply is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeStep<V> {
    pub persist: Option<RangePromise>,
    pub reply: RangeOutcome<V>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeOutcome<V> {
    /// Promised for every round from `from` on; `votes` are this acceptor's votes in those rounds.
    Granted { votes: Vec<(u64, Accepted<V>)> },
    /// A higher ballot was promised for some of those rounds.
    Refused { promised: Ballot },
}

/// Phase 1b for every round from `from` on at once. `range` is the acceptor's current range promise
/// and `slots` its slots of rounds `from` and later (others are ignored). Refused when a higher
/// ballot was promised in any of those rounds, so that the leader retries above it rather than
/// being refused round by round later.
///
/// Promises only ever rise: the new range starts at the lower of the old and the new `from`, so the
/// rounds an earlier range covered stay covered (at the higher ballot now).
pub fn on_prepare_range<'a, V: Clone + 'a>(
    range: Option<&RangePromise>,
    slots: impl IntoIterator<Item = (u64, &'a SlotState<V>)>,
    from: u64,
    ballot: &Ballot,
) -> RangeStep<V> {
    let refuse = |promised: &Ballot| RangeStep {
        persist: None,
        reply: RangeOutcome::Refused {
            promised: promised.clone(),
        },
    };
    if let Some(current) = range.filter(|r| r.ballot > *ballot) {
        return refuse(&current.ballot);
    }
    let mut votes = Vec::new();
    for (round, slot) in slots.into_iter().filter(|(round, _)| *round >= from) {
        if let Some(promised) = slot.promised.as_ref().filter(|p| *p > ballot) {
            return refuse(promised);
        }
        if let Some(vote) = &slot.accepted {
            votes.push((round, vote.clone()));
        }
    }
    let next = RangePromise {
        from: range.map_or(from, |r| r.from.min(from)),
        ballot: ballot.clone(),
    };
    RangeStep {
        persist: (range != Some(&next)).then_some(next),
        reply: RangeOutcome::Granted { votes },
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
    fn range_promise_covers_later_rounds_only() {
        let range = RangePromise {
            from: 10,
            ballot: b(5, "l"),
        };
        let slot = SlotState::<String>::default();
        assert!(matches!(
            on_accept(&slot.under(Some(&range), 10), &b(4, "x"), &"v".to_string()).reply,
            AcceptOutcome::Refused { .. }
        ));
        assert!(matches!(
            on_prepare(&slot.under(Some(&range), 12), &b(4, "x")).reply,
            PromiseOutcome::Refused { .. }
        ));
        assert_eq!(
            on_accept(&slot.under(Some(&range), 9), &b(4, "x"), &"v".to_string()).reply,
            AcceptOutcome::Accepted
        );
        assert_eq!(
            on_accept(&slot.under(Some(&range), 11), &b(5, "l"), &"v".to_string()).reply,
            AcceptOutcome::Accepted
        );
    }

    #[test]
    fn range_prepare_reports_votes_and_never_lowers_a_promise() {
        let voted = persisted_again();
        let slots = [(3u64, SlotState::default()), (7, voted.clone())];
        let step = on_prepare_range(None, slots.iter().map(|(r, s)| (*r, s)), 5, &b(4, "l"));
        assert_eq!(
            step.reply,
            RangeOutcome::Granted {
                votes: vec![(7, voted.accepted.clone().unwrap())]
            }
        );
        let range = step.persist.unwrap();
        assert_eq!(range.from, 5);
        // A lower ballot is refused; a higher one from a later round keeps the earlier rounds.
        let lower = on_prepare_range::<String>(Some(&range), [], 9, &b(3, "z"));
        assert_eq!(
            lower.reply,
            RangeOutcome::Refused {
                promised: b(4, "l")
            }
        );
        let higher = on_prepare_range::<String>(Some(&range), [], 9, &b(6, "m"));
        assert_eq!(
            higher.persist,
            Some(RangePromise {
                from: 5,
                ballot: b(6, "m")
            })
        );
        // A slot promised higher than the range ballot refuses it.
        let above = SlotState::<String> {
            promised: Some(b(9, "q")),
            accepted: None,
        };
        let refused = on_prepare_range(None, [(8, &above)], 5, &b(6, "m"));
        assert_eq!(
            refused.reply,
            RangeOutcome::Refused {
                promised: b(9, "q")
            }
        );
        // Repeating the same range prepare needs no write.
        assert_eq!(
            on_prepare_range::<String>(Some(&range), [], 5, &b(4, "l")).persist,
            None
        );
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
