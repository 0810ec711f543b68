//! A linearizability checker for one register with read, write and compare-and-set, after Wing and
//! Gong with Lowe's memoisation (the search Knossos and Porcupine use). An operation whose outcome
//! is unknown (the client lost the answer) may take effect at any point after its invocation, or
//! never, with one bound pg_paxos gives: its fate is sealed by the first successful write invoked
//! after its client gave up. That write's round comes after the unknown one's, which it either
//! completes first or takes over (see `Op::gave_up`).

use std::collections::HashSet;

/// What an operation did, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read this value.
    Read(i64),
    /// Wrote this value.
    Write(i64),
    /// Compare-and-set from `from` to `to`; `swapped` tells whether it matched.
    Cas { from: i64, to: i64, swapped: bool },
}

/// One operation: invoked at `invoked`, answered at `answered` (`None`: outcome unknown).
#[derive(Clone, Copy, Debug)]
pub struct Op {
    pub action: Action,
    pub invoked: u64,
    pub answered: Option<u64>,
    /// For an unknown outcome: when the client gave up. A successful write or compare-and-set
    /// invoked after that is ordered after this operation, or this operation never happened.
    pub gave_up: Option<u64>,
}

impl Op {
    /// Whether this operation, once linearized, seals the fate of unknown operations whose
    /// clients gave up before it was invoked.
    fn seals(&self) -> bool {
        self.answered.is_some()
            && matches!(
                self.action,
                Action::Write(_) | Action::Cas { swapped: true, .. }
            )
    }
}

/// The value after `action` on `value`, if `action` could have happened then.
fn step(value: i64, action: Action) -> Option<i64> {
    match action {
        Action::Read(v) => (v == value).then_some(value),
        Action::Write(v) => Some(v),
        Action::Cas { from, to, swapped } => match (swapped, value == from) {
            (true, true) => Some(to),
            (false, false) => Some(value),
            _ => None,
        },
    }
}

/// The checker's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The search visited `SEARCH_BUDGET` states without a verdict.
    Inconclusive,
}

/// States the search may visit before it gives up.
pub const SEARCH_BUDGET: usize = 5_000_000;

/// Whether the history is linearizable from `initial`.
pub fn linearizable(ops: &[Op], initial: i64) -> bool {
    check(ops, initial) == Verdict::Linearizable
}

/// A search state: every operation before `prefix` is linearized except those in `pending`
/// (unknown outcomes not placed yet), plus those in `ahead` (linearized out of order); and the
/// register's value. Operations are sorted by invocation, so both sets stay small and a state is
/// cheap to copy and hash even for histories of many thousand operations.
#[derive(Clone, PartialEq, Eq, Hash)]
struct State {
    prefix: usize,
    pending: Vec<usize>,
    ahead: Vec<usize>,
    value: i64,
}

impl State {
    fn is_done(&self, i: usize) -> bool {
        if i < self.prefix {
            !self.pending.contains(&i)
        } else {
            self.ahead.contains(&i)
        }
    }

    /// This state with operation `i` linearized; unknown operations the prefix passes stay
    /// pending, unless `i` seals them (then they never happened).
    fn with(&self, i: usize, value: i64, ops: &[Op]) -> State {
        let mut next = self.clone();
        next.value = value;
        if ops[i].seals() {
            next.pending
                .retain(|&p| p == i || ops[p].gave_up.is_none_or(|g| ops[i].invoked <= g));
        }
        if i < next.prefix {
            next.pending.retain(|&p| p != i);
        } else {
            next.ahead.push(i);
        }
        while next.ahead.contains(&next.prefix) {
            let p = next.prefix;
            next.ahead.retain(|&a| a != p);
            next.prefix += 1;
        }
        // Unknown operations never block others: let the prefix move past them.
        while next.prefix < ops.len() && ops[next.prefix].answered.is_none() {
            next.pending.push(next.prefix);
            next.prefix += 1;
            while next.ahead.contains(&next.prefix) {
                let p = next.prefix;
                next.ahead.retain(|&a| a != p);
                next.prefix += 1;
            }
        }
        next.pending.sort_unstable();
        next.ahead.sort_unstable();
        next
    }
}

/// The verdict on a history, from `initial`. Reads of unknown outcome carry no information and
/// are ignored.
pub fn check(ops: &[Op], initial: i64) -> Verdict {
    let mut ops: Vec<Op> = ops
        .iter()
        .copied()
        .filter(|op| {
            op.answered.is_some() || matches!(op.action, Action::Write(_) | Action::Cas { .. })
        })
        .collect();
    ops.sort_by_key(|op| op.invoked);
    let n = ops.len();
    let start = State {
        prefix: 0,
        pending: Vec::new(),
        ahead: Vec::new(),
        value: initial,
    }
    .with_skipped_unknowns(&ops);
    let mut seen: HashSet<State> = HashSet::new();
    let mut stack = vec![start];
    while let Some(state) = stack.pop() {
        // Done when every operation with a known outcome is linearized.
        if state.prefix == n {
            return Verdict::Linearizable;
        }
        if !seen.insert(state.clone()) {
            continue;
        }
        if seen.len() > SEARCH_BUDGET {
            return Verdict::Inconclusive;
        }
        // An operation may go next only if no operation still to be linearized was answered
        // before it was invoked. Operations are sorted by invocation, so candidates are pending
        // unknowns and operations from the prefix up to the first answer among those not done.
        let mut horizon = u64::MAX;
        let mut candidates: Vec<usize> = state.pending.clone();
        for (i, op) in ops.iter().enumerate().skip(state.prefix) {
            if op.invoked > horizon {
                break;
            }
            if state.is_done(i) {
                continue;
            }
            candidates.push(i);
            if let Some(a) = op.answered {
                horizon = horizon.min(a);
            }
        }
        for i in candidates {
            if ops[i].invoked > horizon {
                continue;
            }
            if let Some(next) = step(state.value, ops[i].action) {
                stack.push(state.with(i, next, &ops));
            }
        }
    }
    Verdict::NotLinearizable
}

impl State {
    /// Unknown operations at the very start are pending from the outset.
    fn with_skipped_unknowns(mut self, ops: &[Op]) -> State {
        while self.prefix < ops.len() && ops[self.prefix].answered.is_none() {
            self.pending.push(self.prefix);
            self.prefix += 1;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(action: Action, invoked: u64, answered: Option<u64>) -> Op {
        Op {
            action,
            invoked,
            answered,
            gave_up: None,
        }
    }

    #[test]
    fn sequential_and_concurrent_histories() {
        use Action::*;
        // w1, then r1: fine; r0 after w1 finished: stale read.
        assert!(linearizable(
            &[op(Write(1), 0, Some(1)), op(Read(1), 2, Some(3))],
            0
        ));
        assert!(!linearizable(
            &[op(Write(1), 0, Some(1)), op(Read(0), 2, Some(3))],
            0
        ));
        // A read overlapping the write may see either value.
        assert!(linearizable(
            &[op(Write(1), 0, Some(5)), op(Read(0), 1, Some(2))],
            0
        ));
        assert!(linearizable(
            &[op(Write(1), 0, Some(5)), op(Read(1), 1, Some(2))],
            0
        ));
        // Two reads inside one write cannot see new then old.
        assert!(!linearizable(
            &[
                op(Write(1), 0, Some(10)),
                op(Read(1), 1, Some(2)),
                op(Read(0), 3, Some(4)),
            ],
            0
        ));
        // Compare-and-set.
        assert!(linearizable(
            &[
                op(
                    Cas {
                        from: 0,
                        to: 2,
                        swapped: true
                    },
                    0,
                    Some(1)
                ),
                op(
                    Cas {
                        from: 0,
                        to: 3,
                        swapped: false
                    },
                    2,
                    Some(3)
                ),
                op(Read(2), 4, Some(5)),
            ],
            0
        ));
        assert!(!linearizable(
            &[
                op(
                    Cas {
                        from: 0,
                        to: 2,
                        swapped: true
                    },
                    0,
                    Some(1)
                ),
                op(
                    Cas {
                        from: 0,
                        to: 3,
                        swapped: true
                    },
                    2,
                    Some(3)
                ),
            ],
            0
        ));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_have_happened() {
        use Action::*;
        // A lost write, then reads of it: it happened.
        assert!(linearizable(
            &[op(Write(7), 0, None), op(Read(7), 5, Some(6))],
            0
        ));
        // A lost write never seen: it did not happen.
        assert!(linearizable(
            &[op(Write(7), 0, None), op(Read(0), 5, Some(6))],
            0
        ));
        // But it cannot take effect before it was invoked.
        assert!(!linearizable(
            &[op(Read(7), 0, Some(1)), op(Write(7), 2, None)],
            0
        ));
        // Once a later write succeeded, a lost write can no longer take effect.
        let lost = Op {
            gave_up: Some(1),
            ..op(Write(7), 0, None)
        };
        assert!(!linearizable(
            &[lost, op(Write(8), 2, Some(3)), op(Read(7), 4, Some(5))],
            0
        ));
        assert!(linearizable(
            &[lost, op(Write(8), 2, Some(3)), op(Read(8), 4, Some(5))],
            0
        ));
        // And once seen, it cannot be undone.
        assert!(!linearizable(
            &[
                op(Write(7), 0, None),
                op(Read(7), 5, Some(6)),
                op(Read(0), 7, Some(8)),
            ],
            0
        ));
    }

    #[test]
    fn a_few_hundred_operations_are_checked_quickly() {
        use Action::*;
        let mut ops = Vec::new();
        for i in 0..300u64 {
            let t = i * 10;
            ops.push(op(Write(i as i64 + 1), t, Some(t + 6)));
            ops.push(op(Read(i as i64 + 1), t + 7, Some(t + 9)));
            ops.push(op(Read(i as i64), t + 1, Some(t + 3)));
        }
        let started = std::time::Instant::now();
        assert!(linearizable(&ops, 0));
        assert!(started.elapsed().as_secs() < 5);
    }

    #[test]
    fn long_histories_with_lost_answers_are_checked_quickly() {
        use Action::*;
        // Ten thousand rounds of two overlapping clients; every tenth write's answer is lost.
        let mut ops = Vec::new();
        let mut value = 0i64;
        for i in 0..10_000u64 {
            let t = i * 10;
            let lost = i % 10 == 0;
            ops.push(op(Write(i as i64 + 1), t, (!lost).then_some(t + 6)));
            ops.push(op(Read(value), t + 1, Some(t + 2)));
            value = i as i64 + 1;
            ops.push(op(Read(value), t + 7, Some(t + 9)));
        }
        let started = std::time::Instant::now();
        assert_eq!(check(&ops, 0), Verdict::Linearizable);
        assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
        // The same with one stale read near the end is caught.
        ops.push(op(Read(5), 200_000, Some(200_001)));
        assert_eq!(check(&ops, 0), Verdict::NotLinearizable);
    }
}
