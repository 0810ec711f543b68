//! The proposer of one round: phase 1 (prepare/promise), phase 2 (accept/accepted), learn.
//!
//! Drive it with [`Proposer::start`], feed every reply to [`Proposer::handle`], and call
//! [`Proposer::timeout`] when the current phase has not finished in time. It returns [`Action`]s:
//! requests to send, the chosen value, or a back-off after which the caller calls `start` again with
//! a higher ballot.

use std::collections::{BTreeMap, BTreeSet};

use crate::acceptor::Accepted;
use crate::backoff::BackoffPolicy;
use crate::ballot::Ballot;
use crate::message::{AcceptOutcome, PromiseOutcome, Reply, Request};
use crate::rng::SplitMix64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<N, V> {
    Send {
        to: N,
        request: Request<V>,
    },
    /// `value` is chosen in `round`; Learn requests to every member accompany this action.
    Chosen {
        round: u64,
        value: V,
    },
    /// This attempt failed (pre-empted or timed out): wait `millis`, then call `start` again.
    BackOff {
        millis: u64,
    },
}

#[derive(Clone, Debug)]
enum Phase<N, V> {
    Idle,
    Preparing {
        granted: BTreeMap<N, Option<Accepted<V>>>,
        refused: BTreeSet<N>,
    },
    Accepting {
        value: V,
        accepted: BTreeSet<N>,
        refused: BTreeSet<N>,
    },
    Chosen(V),
}

#[derive(Clone, Debug)]
pub struct Proposer<N, V> {
    round: u64,
    members: Vec<N>,
    proposer_id: String,
    own_value: V,
    ballot: Option<Ballot>,
    highest_number_seen: u64,
    attempts: u32,
    phase: Phase<N, V>,
    rng: SplitMix64,
    backoff: BackoffPolicy,
}

/// The smallest number of members that forms a majority.
pub fn majority(members: usize) -> usize {
    members / 2 + 1
}

impl<N: Ord + Clone, V: Clone> Proposer<N, V> {
    /// A proposer for `round` among `members`, proposing `own_value` unless phase 1 reveals an
    /// earlier vote. `proposer_id` must be unique to this proposer (see [`Ballot`]); `seed` drives
    /// the back-off jitter.
    pub fn new(
        round: u64,
        members: Vec<N>,
        proposer_id: impl Into<String>,
        own_value: V,
        seed: u64,
        backoff: BackoffPolicy,
    ) -> Self {
        let mut members = members;
        members.sort();
        members.dedup();
        Proposer {
            round,
            members,
            proposer_id: proposer_id.into(),
            own_value,
            ballot: None,
            highest_number_seen: 0,
            attempts: 0,
            phase: Phase::Idle,
            rng: SplitMix64::new(seed),
            backoff,
        }
    }

    /// Starts the next ballot above `number` (e.g. a number the caller knows is taken already).
    pub fn observe_number(&mut self, number: u64) {
        self.highest_number_seen = self.highest_number_seen.max(number);
    }

    pub fn round(&self) -> u64 {
        self.round
    }

    pub fn members(&self) -> &[N] {
        &self.members
    }

    pub fn ballot(&self) -> Option<&Ballot> {
        self.ballot.as_ref()
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn chosen(&self) -> Option<&V> {
        match &self.phase {
            Phase::Chosen(v) => Some(v),
            _ => None,
        }
    }

    /// True while a phase waits for replies (the caller should run a timer).
    pub fn in_flight(&self) -> bool {
        matches!(
            self.phase,
            Phase::Preparing { .. } | Phase::Accepting { .. }
        )
    }

    fn majority(&self) -> usize {
        majority(self.members.len())
    }

    /// True when so many members refused that a majority can no longer be reached this ballot.
    fn lost(&self, refused: usize) -> bool {
        refused > self.members.len() - self.majority()
    }

    /// Phase 1a with a ballot higher than any seen so far.
    pub fn start(&mut self) -> Vec<Action<N, V>> {
        if matches!(self.phase, Phase::Chosen(_)) {
            return Vec::new();
        }
        self.attempts += 1;
        self.highest_number_seen += 1;
        let ballot = Ballot::new(self.highest_number_seen, self.proposer_id.clone());
        self.ballot = Some(ballot.clone());
        self.phase = Phase::Preparing {
            granted: BTreeMap::new(),
            refused: BTreeSet::new(),
        };
        self.broadcast(|round| Request::Prepare {
            round,
            ballot: ballot.clone(),
        })
    }

    /// Phase 2 straight away under `ballot`, a leader's ballot whose phase 1 covers this round (see
    /// `leader::Leadership::claim`, which hands each round out once). Should it be refused, later
    /// attempts run both phases with this proposer's own ballots, as [`Proposer::start`] does.
    pub fn start_accepting(&mut self, ballot: Ballot) -> Vec<Action<N, V>> {
        if matches!(self.phase, Phase::Chosen(_)) {
            return Vec::new();
        }
        self.attempts += 1;
        self.observe_number(ballot.number);
        self.ballot = Some(ballot.clone());
        let value = self.own_value.clone();
        self.phase = Phase::Accepting {
            value: value.clone(),
            accepted: BTreeSet::new(),
            refused: BTreeSet::new(),
        };
        self.broadcast(|round| Request::Accept {
            round,
            ballot: ballot.clone(),
            value: value.clone(),
        })
    }

    /// The current phase did not finish in time: give up this ballot and back off.
    pub fn timeout(&mut self) -> Vec<Action<N, V>> {
        if self.in_flight() {
            self.fail()
        } else {
            Vec::new()
        }
    }

    pub fn handle(&mut self, from: N, reply: Reply<V>) -> Vec<Action<N, V>> {
        if self.members.binary_search(&from).is_err() {
            return Vec::new();
        }
        let Some(current) = self.ballot.clone() else {
            return match reply {
                Reply::Chosen { round, value } if round == self.round => self.finish(value),
                _ => Vec::new(),
            };
        };
        match reply {
            Reply::Chosen { round, value } if round == self.round => {
                if matches!(self.phase, Phase::Chosen(_)) {
                    Vec::new()
                } else {
                    self.finish(value)
                }
            }
            Reply::Promise {
                round,
                ballot,
                outcome,
            } if round == self.round => match outcome {
                PromiseOutcome::Refused { promised } => {
                    self.observe_number(promised.number);
                    if ballot != current {
                        return Vec::new();
                    }
                    self.on_refusal(from, true)
                }
                PromiseOutcome::Granted { accepted } => {
                    if ballot != current {
                        return Vec::new();
                    }
                    if let Some(vote) = &accepted {
                        self.observe_number(vote.ballot.number);
                    }
                    self.on_promise(from, accepted)
                }
            },
            Reply::Accept {
                round,
                ballot,
                outcome,
            } if round == self.round => match outcome {
                AcceptOutcome::Refused { promised } => {
                    self.observe_number(promised.number);
                    if ballot != current {
                        return Vec::new();
                    }
                    self.on_refusal(from, false)
                }
                AcceptOutcome::Accepted => {
                    if ballot != current {
                        return Vec::new();
                    }
                    self.on_accepted(from)
                }
            },
            _ => Vec::new(),
        }
    }

    fn on_promise(&mut self, from: N, vote: Option<Accepted<V>>) -> Vec<Action<N, V>> {
        let majority = self.majority();
        let Phase::Preparing { granted, .. } = &mut self.phase else {
            return Vec::new();
        };
        granted.insert(from, vote);
        if granted.len() < majority {
            return Vec::new();
        }
        // A majority that voted under one ballot means that ballot's value is chosen already: a
        // learner needs no phase 2 for it.
        let mut votes_per_ballot: BTreeMap<&Ballot, usize> = BTreeMap::new();
        for vote in granted.values().flatten() {
            *votes_per_ballot.entry(&vote.ballot).or_default() += 1;
        }
        if let Some((ballot, _)) = votes_per_ballot.iter().find(|(_, n)| **n >= majority) {
            let ballot = (*ballot).clone();
            let value = granted
                .values()
                .flatten()
                .find(|vote| vote.ballot == ballot)
                .map(|vote| vote.value.clone());
            if let Some(value) = value {
                return self.finish(value);
            }
        }
        // Phase 2 must propose the value of the highest-ballot vote any promiser reported: if a
        // value was chosen before, every majority contains one of its voters, so it is found here.
        let value = granted
            .values()
            .flatten()
            .max_by(|a, b| a.ballot.cmp(&b.ballot))
            .map(|vote| vote.value.clone())
            .unwrap_or_else(|| self.own_value.clone());
        self.phase = Phase::Accepting {
            value: value.clone(),
            accepted: BTreeSet::new(),
            refused: BTreeSet::new(),
        };
        // `start` set the ballot before any promise could arrive.
        let ballot = self.ballot.clone().unwrap_or_else(|| Ballot::new(0, ""));
        self.broadcast(|round| Request::Accept {
            round,
            ballot: ballot.clone(),
            value: value.clone(),
        })
    }

    fn on_accepted(&mut self, from: N) -> Vec<Action<N, V>> {
        let majority = self.majority();
        let Phase::Accepting {
            value, accepted, ..
        } = &mut self.phase
        else {
            return Vec::new();
        };
        accepted.insert(from);
        if accepted.len() < majority {
            return Vec::new();
        }
        let value = value.clone();
        self.finish(value)
    }

    fn on_refusal(&mut self, from: N, in_prepare: bool) -> Vec<Action<N, V>> {
        let refused_count = match (&mut self.phase, in_prepare) {
            (Phase::Preparing { refused, .. }, true)
            | (Phase::Accepting { refused, .. }, false) => {
                refused.insert(from);
                refused.len()
            }
            _ => return Vec::new(),
        };
        if self.lost(refused_count) {
            self.fail()
        } else {
            Vec::new()
        }
    }

    fn fail(&mut self) -> Vec<Action<N, V>> {
        self.phase = Phase::Idle;
        let millis = self.backoff.delay_ms(self.attempts, &mut self.rng);
        vec![Action::BackOff { millis }]
    }

    fn finish(&mut self, value: V) -> Vec<Action<N, V>> {
        self.phase = Phase::Chosen(value.clone());
        let mut actions = vec![Action::Chosen {
            round: self.round,
            value: value.clone(),
        }];
        actions.extend(self.broadcast(|round| Request::Learn {
            round,
            value: value.clone(),
        }));
        actions
    }

    fn broadcast(&self, make: impl Fn(u64) -> Request<V>) -> Vec<Action<N, V>> {
        self.members
            .iter()
            .map(|to| Action::Send {
                to: to.clone(),
                request: make(self.round),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acceptor::{on_accept, on_prepare, SlotState};

    type P = Proposer<u8, &'static str>;

    fn sends(actions: &[Action<u8, &'static str>]) -> Vec<(u8, Request<&'static str>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, request } => Some((*to, request.clone())),
                _ => None,
            })
            .collect()
    }

    /// Runs `proposer` against in-memory acceptors `slots` reachable at `up`, delivering every
    /// message at once, until it chooses or backs off.
    fn run(
        proposer: &mut P,
        slots: &mut [SlotState<&'static str>],
        up: &[u8],
    ) -> Vec<Action<u8, &'static str>> {
        let mut pending = proposer.start();
        let mut outcome = Vec::new();
        while !pending.is_empty() {
            let mut next = Vec::new();
            for action in pending {
                match action {
                    Action::Send { to, request } if up.contains(&to) => {
                        let slot = &mut slots[to as usize];
                        let reply = match request {
                            Request::Prepare { round, ballot } => {
                                let step = on_prepare(slot, &ballot);
                                if let Some(s) = step.persist {
                                    *slot = s;
                                }
                                Reply::Promise {
                                    round,
                                    ballot,
                                    outcome: step.reply,
                                }
                            }
                            Request::Accept {
                                round,
                                ballot,
                                value,
                            } => {
                                let step = on_accept(slot, &ballot, &value);
                                if let Some(s) = step.persist {
                                    *slot = s;
                                }
                                Reply::Accept {
                                    round,
                                    ballot,
                                    outcome: step.reply,
                                }
                            }
                            Request::Learn { .. } | Request::PrepareRange { .. } => continue,
                        };
                        next.extend(proposer.handle(to, reply));
                    }
                    Action::Send { .. } => {}
                    other => outcome.push(other),
                }
            }
            pending = next;
        }
        outcome
    }

    #[test]
    fn chooses_own_value_with_a_majority() {
        let mut slots = vec![SlotState::default(); 3];
        let mut p = P::new(1, vec![0, 1, 2], "a", "x", 1, BackoffPolicy::default());
        let out = run(&mut p, &mut slots, &[0, 1]);
        assert_eq!(
            out,
            vec![Action::Chosen {
                round: 1,
                value: "x"
            }]
        );
        assert_eq!(p.chosen(), Some(&"x"));
    }

    #[test]
    fn no_majority_means_no_choice() {
        let mut slots = vec![SlotState::default(); 3];
        let mut p = P::new(1, vec![0, 1, 2], "a", "x", 1, BackoffPolicy::default());
        let out = run(&mut p, &mut slots, &[0]);
        assert!(out.is_empty(), "waits for replies that never come: {out:?}");
        assert!(matches!(p.timeout()[..], [Action::BackOff { .. }]));
        assert_eq!(p.chosen(), None);
    }

    #[test]
    fn adopts_a_previously_accepted_value() {
        let mut slots = vec![SlotState::default(); 3];
        let mut first = P::new(1, vec![0, 1, 2], "a", "x", 1, BackoffPolicy::default());
        run(&mut first, &mut slots, &[0, 1]);
        // A later proposer reaching a different majority still sees "x" through member 1.
        let mut second = P::new(1, vec![0, 1, 2], "b", "y", 2, BackoffPolicy::default());
        second.observe_number(5);
        let out = run(&mut second, &mut slots, &[1, 2]);
        assert_eq!(
            out,
            vec![Action::Chosen {
                round: 1,
                value: "x"
            }]
        );
    }

    #[test]
    fn refusal_from_a_majority_backs_off_and_retry_uses_higher_ballot() {
        let mut slots = vec![SlotState::default(); 3];
        for slot in &mut slots {
            slot.promised = Some(Ballot::new(7, "z"));
        }
        let mut p = P::new(1, vec![0, 1, 2], "a", "x", 1, BackoffPolicy::default());
        let out = run(&mut p, &mut slots, &[0, 1, 2]);
        assert!(matches!(out[..], [Action::BackOff { .. }]));
        let out = run(&mut p, &mut slots, &[0, 1, 2]);
        assert_eq!(
            out,
            vec![Action::Chosen {
                round: 1,
                value: "x"
            }]
        );
        assert_eq!(p.ballot().unwrap().number, 8);
    }

    #[test]
    fn learner_skips_phase_two_when_a_majority_voted_alike() {
        let mut slots = vec![SlotState::default(); 3];
        let mut first = P::new(1, vec![0, 1, 2], "a", "x", 1, BackoffPolicy::default());
        run(&mut first, &mut slots, &[0, 1, 2]);
        let mut learner = P::new(1, vec![0, 1, 2], "b", "noop", 2, BackoffPolicy::default());
        let out = learner.start();
        let mut chosen = Vec::new();
        for (to, request) in sends(&out) {
            if let Request::Prepare { round, ballot } = request {
                let step = on_prepare(&slots[to as usize], &ballot);
                chosen.extend(learner.handle(
                    to,
                    Reply::Promise {
                        round,
                        ballot,
                        outcome: step.reply,
                    },
                ));
            }
        }
        assert_eq!(
            chosen[0],
            Action::Chosen {
                round: 1,
                value: "x"
            }
        );
        assert!(
            sends(&chosen)
                .iter()
                .all(|(_, r)| matches!(r, Request::Learn { .. })),
            "no accept round was needed"
        );
    }

    #[test]
    fn chosen_reply_short_circuits() {
        let mut p = P::new(4, vec![0, 1, 2], "a", "x", 1, BackoffPolicy::default());
        p.start();
        let out = p.handle(
            2,
            Reply::Chosen {
                round: 4,
                value: "w",
            },
        );
        assert_eq!(
            out[0],
            Action::Chosen {
                round: 4,
                value: "w"
            }
        );
        assert_eq!(sends(&out).len(), 3, "learn goes to every member");
    }

    #[test]
    fn a_leader_skips_phase_one_and_falls_back_when_refused() {
        let mut slots = vec![SlotState::default(); 3];
        let mut p = P::new(1, vec![0, 1, 2], "a", "x", 1, BackoffPolicy::default());
        let out = p.start_accepting(Ballot::new(4, "leader"));
        assert!(sends(&out)
            .iter()
            .all(|(_, r)| matches!(r, Request::Accept { .. })));
        // A higher promise at a majority refuses the leader's accept; the retry runs phase 1.
        for slot in &mut slots {
            slot.promised = Some(Ballot::new(6, "other"));
        }
        for (to, request) in sends(&out) {
            if let Request::Accept {
                round,
                ballot,
                value,
            } = request
            {
                let step = on_accept(&slots[to as usize], &ballot, &value);
                p.handle(
                    to,
                    Reply::Accept {
                        round,
                        ballot,
                        outcome: step.reply,
                    },
                );
            }
        }
        assert!(!p.in_flight(), "refused by a majority");
        let out = run(&mut p, &mut slots, &[0, 1, 2]);
        assert_eq!(
            out,
            vec![Action::Chosen {
                round: 1,
                value: "x"
            }]
        );
        assert_eq!(p.ballot().unwrap(), &Ballot::new(7, "a"));
    }

    #[test]
    fn ignores_strangers_and_stale_ballots() {
        let mut p = P::new(1, vec![0, 1, 2], "a", "x", 1, BackoffPolicy::default());
        p.start();
        let stale = Reply::Promise {
            round: 1,
            ballot: Ballot::new(0, "a"),
            outcome: PromiseOutcome::Granted { accepted: None },
        };
        assert!(p.handle(1, stale.clone()).is_empty());
        assert!(p.handle(9, stale).is_empty());
        assert_eq!(majority(5), 3);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(1), 1);
    }
}
