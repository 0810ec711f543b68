//! Multi-Paxos leadership: one phase 1 for every round from `from` on, then phase 2 only.
//!
//! A node runs a [`Campaign`]: a range prepare ([`Request::PrepareRange`]) to every member. Once a
//! majority granted it, no ballot below the campaign's can be accepted in any of those rounds by
//! that majority, and the votes they reported are all the votes that could have been chosen there.
//! The node then holds a [`Leadership`]: it proposes the highest-ballot vote of each reported round
//! again, and its own values in fresh rounds, each with phase 2 only ([`Proposer::start_accepting`]).
//!
//! A leader is never trusted, only refused: when another node campaigns with a higher ballot, a
//! majority raises its promise, so every later accept of the old leader meets at least one refusal
//! in each majority and can no longer be chosen. The refused proposer falls back to both phases.
//!
//! [`Proposer::start_accepting`]: crate::proposer::Proposer::start_accepting

use std::collections::{BTreeMap, BTreeSet};

use crate::acceptor::{Accepted, RangeOutcome};
use crate::ballot::Ballot;
use crate::message::{Reply, Request};
use crate::proposer::majority;

/// Rounds a leader may propose with phase 2 only, each at most once.
///
/// Once is essential: two different values accepted under one ballot in one round could both
/// gather a majority. A round handed out once stays taken even if its proposal failed (its outcome
/// is unknown); such a round is decided with both phases by whoever needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership<B> {
    pub ballot: B,
    pub from: u64,
    next_free: u64,
}

impl<B: Clone> Leadership<B> {
    /// The leadership a campaign won for rounds `from` and later.
    pub fn new(ballot: B, from: u64) -> Self {
        Leadership {
            ballot,
            from,
            next_free: from,
        }
    }

    /// The ballot to propose `round` with, in phase 2 only, if this leadership may still do so:
    /// rounds from `from` on, each once, in increasing order (a round below one handed out already
    /// is never handed out).
    pub fn claim(&mut self, round: u64) -> Option<B> {
        if round < self.next_free {
            return None;
        }
        self.next_free = round + 1;
        Some(self.ballot.clone())
    }

    /// Never hands out rounds up to `round`: phase 1 reported votes there that this leader leaves to
    /// both-phase proposers (it may only propose the highest reported vote in such a round).
    pub fn reserve_through(&mut self, round: u64) {
        self.next_free = self.next_free.max(round + 1);
    }

    /// The lowest round `claim` can still hand out.
    pub fn next_free(&self) -> u64 {
        self.next_free
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CampaignAction<N, V> {
    Send {
        to: N,
        request: Request<V>,
    },
    /// A majority promised `ballot` for every round from `from` on. `recovered` holds, per round,
    /// the value of the highest-ballot vote they reported: the leader proposes it again in that
    /// round before anything else goes there.
    Elected {
        ballot: Ballot,
        from: u64,
        recovered: BTreeMap<u64, V>,
    },
    /// Too many members refused: a ballot numbered `promised_number` or higher is taken. Campaign
    /// again above it after a back-off, or fall back to both phases per round.
    Lost {
        promised_number: u64,
    },
}

/// One attempt at leadership with one ballot.
#[derive(Clone, Debug)]
pub struct Campaign<N, V> {
    from: u64,
    ballot: Ballot,
    members: Vec<N>,
    granted: BTreeMap<N, Vec<(u64, Accepted<V>)>>,
    refused: BTreeSet<N>,
    highest_refusal: u64,
    finished: bool,
}

impl<N: Ord + Clone, V: Clone> Campaign<N, V> {
    /// A campaign for rounds `from` and later among `members` with `ballot` (unique to this
    /// campaign, see [`Ballot`]).
    pub fn new(from: u64, members: Vec<N>, ballot: Ballot) -> Self {
        let mut members = members;
        members.sort();
        members.dedup();
        Campaign {
            from,
            ballot,
            members,
            granted: BTreeMap::new(),
            refused: BTreeSet::new(),
            highest_refusal: 0,
            finished: false,
        }
    }

    pub fn ballot(&self) -> &Ballot {
        &self.ballot
    }

    pub fn start(&self) -> Vec<CampaignAction<N, V>> {
        self.members
            .iter()
            .map(|to| CampaignAction::Send {
                to: to.clone(),
                request: Request::PrepareRange {
                    from: self.from,
                    ballot: self.ballot.clone(),
                },
            })
            .collect()
    }

    /// True once the campaign was won or lost.
    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn handle(&mut self, from: N, reply: Reply<V>) -> Vec<CampaignAction<N, V>> {
        if self.finished || self.members.binary_search(&from).is_err() {
            return Vec::new();
        }
        let Reply::RangePromise {
            from: first,
            ballot,
            outcome,
        } = reply
        else {
            return Vec::new();
        };
        if first != self.from || ballot != self.ballot {
            return Vec::new();
        }
        let needed = majority(self.members.len());
        match outcome {
            RangeOutcome::Granted { votes } => {
                self.granted.insert(from, votes);
                if self.granted.len() < needed {
                    return Vec::new();
                }
                self.finished = true;
                let mut best: BTreeMap<u64, &Accepted<V>> = BTreeMap::new();
                for (round, vote) in self.granted.values().flatten() {
                    if *round < self.from {
                        continue;
                    }
                    let entry = best.entry(*round).or_insert(vote);
                    if vote.ballot > entry.ballot {
                        *entry = vote;
                    }
                }
                vec![CampaignAction::Elected {
                    ballot: self.ballot.clone(),
                    from: self.from,
                    recovered: best
                        .into_iter()
                        .map(|(round, vote)| (round, vote.value.clone()))
                        .collect(),
                }]
            }
            RangeOutcome::Refused { promised } => {
                self.highest_refusal = self.highest_refusal.max(promised.number);
                self.refused.insert(from);
                if self.refused.len() > self.members.len() - needed {
                    self.finished = true;
                    return vec![CampaignAction::Lost {
                        promised_number: self.highest_refusal,
                    }];
                }
                Vec::new()
            }
        }
    }

    /// The campaign did not finish in time: it is lost.
    pub fn timeout(&mut self) -> Vec<CampaignAction<N, V>> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        vec![CampaignAction::Lost {
            promised_number: self.highest_refusal.max(self.ballot.number),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acceptor::{on_prepare_range, SlotState};

    #[test]
    fn each_round_is_claimed_once_and_never_below_one_claimed() {
        let mut l = Leadership::new(7u64, 10);
        assert_eq!(l.claim(9), None, "before the range");
        assert_eq!(l.claim(10), Some(7));
        assert_eq!(l.claim(10), None, "twice");
        assert_eq!(l.claim(13), Some(7));
        assert_eq!(l.claim(12), None, "below a claimed round");
        assert_eq!(l.next_free(), 14);
        l.reserve_through(20);
        assert_eq!(l.claim(20), None, "reserved");
        assert_eq!(l.claim(21), Some(7));
    }

    #[test]
    fn elected_with_the_highest_vote_per_round() {
        let old = |n: u64, v: &'static str| SlotState {
            promised: Some(Ballot::new(n, "x")),
            accepted: Some(Accepted {
                ballot: Ballot::new(n, "x"),
                value: v,
            }),
        };
        let acceptors = [
            vec![(4u64, old(1, "a")), (5, old(2, "b"))],
            vec![(4u64, old(3, "c"))],
            vec![],
        ];
        let ballot = Ballot::new(9, "leader");
        let mut campaign = Campaign::new(4, vec![0, 1, 2], ballot.clone());
        assert_eq!(campaign.start().len(), 3);
        let mut out = Vec::new();
        for (i, slots) in acceptors.iter().enumerate().take(2) {
            let step = on_prepare_range(None, slots.iter().map(|(r, s)| (*r, s)), 4, &ballot);
            out = campaign.handle(
                i,
                Reply::RangePromise {
                    from: 4,
                    ballot: ballot.clone(),
                    outcome: step.reply,
                },
            );
        }
        assert_eq!(
            out,
            vec![CampaignAction::Elected {
                ballot,
                from: 4,
                recovered: BTreeMap::from([(4, "c"), (5, "b")]),
            }]
        );
        assert!(campaign.finished());
    }

    #[test]
    fn lost_when_a_majority_refuses() {
        let ballot = Ballot::new(2, "leader");
        let mut campaign: Campaign<u8, &str> = Campaign::new(1, vec![0, 1, 2], ballot.clone());
        let refusal = || Reply::RangePromise {
            from: 1,
            ballot: ballot.clone(),
            outcome: RangeOutcome::Refused {
                promised: Ballot::new(5, "other"),
            },
        };
        assert!(campaign.handle(0, refusal()).is_empty());
        assert_eq!(
            campaign.handle(1, refusal()),
            vec![CampaignAction::Lost { promised_number: 5 }]
        );
        assert!(campaign.handle(2, refusal()).is_empty(), "finished");
    }
}
