//! Randomized exponential back-off between attempts, so duelling proposers stop pre-empting each
//! other: each retry waits a uniformly random time below a cap that doubles per failed attempt
//! ("full jitter"), which spreads the competitors apart instead of synchronising them.

use crate::rng::SplitMix64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Cap of the first retry's wait, in milliseconds.
    pub base_ms: u64,
    /// Largest cap, in milliseconds.
    pub max_ms: u64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base_ms: 2,
            max_ms: 200,
        }
    }
}

impl BackoffPolicy {
    /// The wait before retry number `attempt` (1 for the first retry).
    pub fn delay_ms(&self, attempt: u32, rng: &mut SplitMix64) -> u64 {
        let shift = attempt.saturating_sub(1).min(20);
        let cap = self
            .base_ms
            .saturating_mul(1 << shift)
            .min(self.max_ms)
            .max(1);
        1 + rng.below(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_and_stays_capped() {
        let policy = BackoffPolicy {
            base_ms: 4,
            max_ms: 50,
        };
        let mut rng = SplitMix64::new(3);
        for attempt in 1..40 {
            let d = policy.delay_ms(attempt, &mut rng);
            assert!((1..=50).contains(&d), "attempt {attempt} gave {d}");
        }
        // The first retry never waits longer than the base cap.
        for _ in 0..100 {
            assert!(policy.delay_ms(1, &mut rng) <= 4);
        }
    }
}
