//! A linearizability checker for one register with read, write and compare-and-set, after Wing and
//! Gong with Lowe's memoisation (the search Knossos and Porcupine use). An operation whose outcome
//! is unknown (the client lost the answer) may take effect at any point after its invocation, or
//! never.

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

/// The verdict on a history, from `initial`. Reads of unknown outcome carry no information and
/// are ignored.
pub fn check(ops: &[Op], initial: i64) -> Verdict {
    let ops: Vec<Op> = ops
        .iter()
        .copied()
        .filter(|op| {
            op.answered.is_some() || matches!(op.action, Action::Write(_) | Action::Cas { .. })
        })
        .collect();
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let known = ops.iter().filter(|op| op.answered.is_some()).count();
    let mut seen: HashSet<(Vec<u64>, i64)> = HashSet::new();
    // Depth-first over (operations linearized so far, register value).
    let mut stack = vec![(vec![0u64; words], initial, 0usize)];
    while let Some((done, value, done_known)) = stack.pop() {
        if done_known == known {
            return Verdict::Linearizable;
        }
        if !seen.insert((done.clone(), value)) {
            continue;
        }
        if seen.len() > SEARCH_BUDGET {
            return Verdict::Inconclusive;
        }
        let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        // An operation may go next only if no pending one was answered before it was invoked.
        let horizon = (0..n)
            .filter(|&i| !is_done(i))
            .filter_map(|i| ops[i].answered)
            .min()
            .unwrap_or(u64::MAX);
        for i in (0..n).filter(|&i| !is_done(i) && ops[i].invoked <= horizon) {
            if let Some(next) = step(value, ops[i].action) {
                let mut now = done.clone();
                now[i / 64] |= 1 << (i % 64);
                let known_now = done_known + usize::from(ops[i].answered.is_some());
                stack.push((now, next, known_now));
            }
        }
    }
    Verdict::NotLinearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(action: Action, invoked: u64, answered: Option<u64>) -> Op {
        Op {
            action,
            invoked,
            answered,
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
}
