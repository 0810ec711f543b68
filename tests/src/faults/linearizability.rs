//! A linearizability checker for one register with read, write and compare-and-set, after Wing and
//! Gong with Lowe's memoisation (the search Knossos and Porcupine use). An operation whose outcome
//! is unknown (the client lost the answer) may take effect at any point after its invocation, or
//! never, with one bound pg_paxos gives: its fate is sealed by the first successful write invoked
//! after its client gave up. That write's round comes after the unknown one's, which it either
//! completes first or takes over (see `Op::gave_up`).

use std::collections::HashMap;

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
            let sealed = |p: usize| p != i && ops[p].gave_up.is_some_and(|g| g < ops[i].invoked);
            next.pending.retain(|&p| !sealed(p));
            // Also those the prefix has not reached yet: they are settled, as never happened.
            // (Such an operation was invoked before its client gave up, so before `i`.)
            for p in next.prefix..i {
                if sealed(p) && !next.ahead.contains(&p) {
                    next.ahead.push(p);
                }
            }
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

/// The states the search has reached, by everything but their pending unknown operations.
///
/// A state covers another with the same prefix, operations ahead and value whose pending set is
/// a subset of its own: a pending unknown operation may still take effect later or never, so every
/// continuation of the other state is open to it too (which operations may go next does not
/// depend on the pending set). Only states no earlier one covers are explored. Without this, a
/// stretch of k unknown writes while no majority answers gave up to 2^k states that differ only
/// in which of them took effect, though none was ever observed.
#[derive(Default)]
struct Seen {
    by_rest: HashMap<(usize, Vec<usize>, i64), Vec<Vec<usize>>>,
    states: usize,
}

impl Seen {
    /// Records `state`; false when a state recorded before covers it.
    fn insert(&mut self, state: &State) -> bool {
        let pendings = self
            .by_rest
            .entry((state.prefix, state.ahead.clone(), state.value))
            .or_default();
        if pendings.iter().any(|p| is_subset(&state.pending, p)) {
            return false;
        }
        pendings.retain(|p| !is_subset(p, &state.pending));
        pendings.push(state.pending.clone());
        self.states += 1;
        true
    }

    /// States recorded, covered ones that were dropped included.
    fn len(&self) -> usize {
        self.states
    }
}

/// Whether sorted `small` is a subset of sorted `large`.
fn is_subset(small: &[usize], large: &[usize]) -> bool {
    let mut rest = large.iter();
    small.iter().all(|x| rest.any(|y| y == x))
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
    let mut seen = Seen::default();
    seen.insert(&start);
    let mut stack = vec![start];
    while let Some(state) = stack.pop() {
        // Done when every operation with a known outcome is linearized.
        if state.prefix == n {
            return Verdict::Linearizable;
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
        // Pushed last, operations of known outcome are tried first: a state that keeps an
        // unknown operation pending covers the states that placed it (see `Seen`).
        for i in candidates {
            if ops[i].invoked > horizon {
                continue;
            }
            if let Some(value) = step(state.value, ops[i].action) {
                let next = state.with(i, value, &ops);
                if seen.insert(&next) {
                    stack.push(next);
                }
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

    /// Every order of the operations that took effect (each unknown one either did or did not),
    /// tried one by one: the definition of linearizability, for small histories.
    fn linearizable_by_enumeration(ops: &[Op], initial: i64) -> bool {
        let ops: Vec<Op> = ops
            .iter()
            .copied()
            .filter(|op| op.answered.is_some() || !matches!(op.action, Action::Read(_)))
            .collect();
        let unknown: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].answered.is_none())
            .collect();
        (0..1u32 << unknown.len()).any(|mask| {
            let chosen: Vec<usize> = (0..ops.len())
                .filter(|&i| match unknown.iter().position(|&u| u == i) {
                    Some(bit) => mask & (1 << bit) != 0,
                    None => true,
                })
                .collect();
            permutations(&chosen)
                .into_iter()
                .any(|order| valid_order(&ops, &order, initial))
        })
    }

    fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
        if items.is_empty() {
            return vec![Vec::new()];
        }
        let mut out = Vec::new();
        for (k, &first) in items.iter().enumerate() {
            let mut rest = items.to_vec();
            rest.remove(k);
            for mut tail in permutations(&rest) {
                tail.insert(0, first);
                out.push(tail);
            }
        }
        out
    }

    /// `order` respects real time (an operation answered before another was invoked comes first),
    /// puts each unknown operation before every sealing operation invoked after its client gave
    /// up, and every step is possible on the register.
    fn valid_order(ops: &[Op], order: &[usize], initial: i64) -> bool {
        for (x, &a) in order.iter().enumerate() {
            for &b in &order[x + 1..] {
                if ops[b]
                    .answered
                    .is_some_and(|answered| answered < ops[a].invoked)
                {
                    return false;
                }
                if ops[a].seals() && ops[b].gave_up.is_some_and(|g| g < ops[a].invoked) {
                    return false;
                }
            }
        }
        let mut value = initial;
        order.iter().all(|&i| match step(value, ops[i].action) {
            Some(next) => {
                value = next;
                true
            }
            None => false,
        })
    }

    #[test]
    fn small_random_histories_get_the_verdict_of_trying_every_order() {
        use Action::*;
        // xorshift: the same histories on every run.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let (mut yes, mut no) = (0, 0);
        for _ in 0..4000 {
            let count = 1 + next(7) as usize;
            let ops: Vec<Op> = (0..count)
                .map(|_| {
                    let value = next(3) as i64;
                    let action = match next(4) {
                        0 | 1 => Read(value),
                        2 => Write(value),
                        _ => Cas {
                            from: value,
                            to: next(3) as i64,
                            swapped: next(2) == 0,
                        },
                    };
                    let invoked = next(20);
                    let end = invoked + 1 + next(8);
                    let lost = !matches!(action, Read(_)) && next(3) == 0;
                    Op {
                        action,
                        invoked,
                        answered: (!lost).then_some(end),
                        gave_up: lost.then_some(end),
                    }
                })
                .collect();
            let expected = linearizable_by_enumeration(&ops, 0);
            assert_eq!(linearizable(&ops, 0), expected, "{ops:#?}");
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
        }
        // Both verdicts were exercised plenty.
        assert!(yes > 500 && no > 500, "{yes} linearizable, {no} not");
    }

    #[test]
    fn a_long_stretch_of_unknown_writes_while_no_majority_answers_is_decided_quickly() {
        use Action::*;
        // 40 clients each lose a write or a compare-and-set while no majority answers; none of
        // them is ever seen. Then reads find the value written before. Every subset of the lost
        // operations could have taken effect: without covering states, 2^40 of them.
        let mut ops = vec![op(Write(1), 0, Some(5)), op(Read(1), 6, Some(7))];
        for i in 0..40u64 {
            let action = if i % 3 == 0 {
                Write(100 + i as i64)
            } else {
                Cas {
                    from: 2,
                    to: 200 + i as i64,
                    swapped: true,
                }
            };
            ops.push(Op {
                gave_up: Some(1_000 + i),
                ..op(action, 10 + i, None)
            });
        }
        ops.push(op(
            Cas {
                from: 2,
                to: 3,
                swapped: false,
            },
            2_000,
            Some(2_001),
        ));
        ops.push(op(Read(1), 2_002, Some(2_003)));
        let started = std::time::Instant::now();
        assert_eq!(check(&ops, 0), Verdict::Linearizable);
        assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
        // A read of a value nobody wrote is still caught.
        ops.push(op(Read(2), 2_004, Some(2_005)));
        assert_eq!(check(&ops, 0), Verdict::NotLinearizable);
    }
}
