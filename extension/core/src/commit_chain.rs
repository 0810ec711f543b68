//! Group commit on one node: which rounds a batch of concurrent writes may take.
//!
//! Writes of several transactions that share a round ran at the same time on the proposing node,
//! each without seeing the others, while every other node replays them one after the other. That
//! is only the same result for writes that commute (blind inserts: they read nothing, and two that
//! collide on a key never run at once). So a transaction may only join a batch if every round
//! between the state it runs on and the batch's round is itself a batch of this node (whose
//! writes commute with its own) or applied.
//!
//! A [`CommitChain`] tracks those rounds: `from` is an applied round, and every round in
//! `from + 1 ..= tip` holds a batch of this node that was chosen. Each chain has an epoch; a
//! transaction joins an epoch, and its write is only proposed while that epoch lasts. The chain
//! breaks (and a new epoch must start from an applied state) as soon as one of its rounds may
//! hold something else, or a chosen write of it does not take effect where it ran.
//!
//! Two batches may be in flight at once ([`CommitChain::round_for_batch`]): the second, in the
//! round after the first, names the first's value as the one its preceding round must hold, and is
//! void everywhere otherwise (`paxos_model::entries::Batch::after`). One look back suffices: a
//! batch is only proposed once the round two before it is a chosen batch of the chain (or its
//! start), so the batch it names was itself proposed after its own predecessor was chosen. Its
//! members learn their outcome from both decisions ([`outcome_after`]).

/// How many batches of one chain may be in flight at once.
pub const PIPELINE: usize = 2;

/// How many rounds past the node's applied round a chain runs before one of its writers settles
/// them (see [`CommitChain::claim_settling`]).
pub const SETTLE_EVERY: u64 = 256;

/// How a batch's round ended, for its members and for the batch after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The batch was chosen and takes effect.
    Chosen,
    /// It never takes effect: another value won its round, or it is void.
    Lost,
    /// Not known (a timeout, a lost proposer): it may still take effect.
    Unknown,
}

/// The outcome of a batch decided as `own` whose preceding round ended as `previous` (`None`:
/// the batch names no predecessor). A conditional batch takes effect only if its predecessor did.
pub fn outcome_after(previous: Option<Resolution>, own: Resolution) -> Resolution {
    match (previous, own) {
        (None | Some(Resolution::Chosen), own) => own,
        (Some(Resolution::Lost), _) | (Some(Resolution::Unknown), Resolution::Lost) => {
            Resolution::Lost
        }
        (Some(Resolution::Unknown), _) => Resolution::Unknown,
    }
}

/// See the module documentation. Plain data, so it can live in shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitChain {
    epoch: u64,
    from: u64,
    tip: u64,
    valid: bool,
    /// The node's applied round as the last settling left it (at least `from`).
    settled: u64,
    /// A writer is settling rounds of the chain.
    settling: bool,
}

impl Default for CommitChain {
    fn default() -> Self {
        Self::new()
    }
}

impl CommitChain {
    /// No chain yet: the first writer starts one.
    pub const fn new() -> Self {
        CommitChain {
            epoch: 0,
            from: 0,
            tip: 0,
            valid: false,
            settled: 0,
            settling: false,
        }
    }

    /// A writer about to run on this node, which has applied every round up to `applied` and
    /// learned rounds up to `learned` (both read while no writer outside the chain can move
    /// them). Returns the epoch it joins, or `None` when rounds it would not see are pending:
    /// it must apply them first, alone. A new epoch starts only when `idle` (no batch in flight),
    /// numbered `fresh`: a number never used for an epoch before.
    pub fn join(&mut self, applied: u64, learned: u64, idle: bool, fresh: u64) -> Option<u64> {
        if self.valid && self.from <= applied && learned <= self.tip {
            return Some(self.epoch);
        }
        if learned <= applied && idle {
            self.epoch = fresh;
            self.from = applied;
            self.tip = applied;
            self.settled = applied;
            // A settling writer that never reported (it exited) does not hold up the next one;
            // two at once are harmless (the group's row admits one).
            self.settling = false;
            self.valid = true;
            return Some(self.epoch);
        }
        None
    }

    /// The current epoch (valid or not).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether writers may join (the current epoch has not broken off).
    pub fn is_open(&self) -> bool {
        self.valid
    }

    /// The applied round the chain started from, and its last batch's round.
    pub fn span(&self) -> (u64, u64) {
        (self.from, self.tip)
    }

    /// Whether writes that joined `epoch` may still be proposed.
    pub fn accepts(&self, epoch: u64) -> bool {
        self.valid && self.epoch == epoch
    }

    /// The round the next batch takes.
    pub fn next_round(&self) -> u64 {
        self.tip + 1
    }

    /// The round for a batch of this chain proposed now, given the round of the chain's batch in
    /// flight (`None`: none is): the next round, or with one in flight the round after it, which
    /// is allowed only while the chain holds and that batch is in the round right after its tip.
    /// `None`: wait for the batch in flight.
    pub fn round_for_batch(&self, in_flight: Option<u64>) -> Option<u64> {
        match in_flight {
            None => Some(self.next_round()),
            Some(round) if self.valid && round == self.next_round() => Some(round + 1),
            Some(_) => None,
        }
    }

    /// The batch of `epoch` in `round` was chosen: later batches follow it.
    pub fn extend(&mut self, epoch: u64, round: u64) {
        if self.accepts(epoch) && round == self.tip + 1 {
            self.tip = round;
        } else {
            self.valid = false;
        }
    }

    /// The chain's writes take effect here as their transactions commit, while the node's applied
    /// round stays where the chain started: without settling, its marks of batched writes would
    /// pile up and the next read or exclusive write would go through every round since. Returns
    /// the chain's tip when it ran [`SETTLE_EVERY`] rounds past the last settled round and no
    /// other writer is settling: the caller then moves the applied round over the chain's rounds
    /// whose writes all committed, and reports with [`CommitChain::settling_done`].
    pub fn claim_settling(&mut self) -> Option<u64> {
        if !self.settling_due() {
            return None;
        }
        self.settling = true;
        Some(self.tip)
    }

    /// Whether [`CommitChain::claim_settling`] would claim now (a read, for a look under a shared
    /// lock before taking the exclusive one).
    pub fn settling_due(&self) -> bool {
        let start = self.from.max(self.settled);
        self.valid && !self.settling && self.tip.saturating_sub(start) >= SETTLE_EVERY
    }

    /// A settling claimed with [`CommitChain::claim_settling`] ended, having moved the applied
    /// round to `applied` (`None`: it did not get that far).
    pub fn settling_done(&mut self, applied: Option<u64>) {
        self.settling = false;
        if let Some(applied) = applied {
            self.settled = self.settled.max(applied);
        }
    }

    /// A round of the chain may hold something else, or a chosen write did not take effect here:
    /// nobody joins until the node applied its rounds alone.
    pub fn break_off(&mut self) {
        self.valid = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_join_while_only_own_batches_are_pending() {
        let mut chain = CommitChain::new();
        let epoch = chain.join(7, 7, true, 101).unwrap();
        assert_eq!(chain.next_round(), 8);
        chain.extend(epoch, 8);
        chain.extend(epoch, 9);
        // Applied is still 7 (the batches' writes committed on their own), learned is 9.
        assert_eq!(chain.join(7, 9, false, 102), Some(epoch));
        assert_eq!(chain.next_round(), 10);
        // Another node's round 10 was learned: it must be applied first.
        assert_eq!(chain.join(7, 10, true, 103), None);
    }

    #[test]
    fn a_broken_chain_restarts_only_from_an_applied_state() {
        let mut chain = CommitChain::new();
        let epoch = chain.join(3, 3, true, 104).unwrap();
        chain.extend(epoch, 4);
        chain.break_off();
        assert!(!chain.accepts(epoch));
        // Round 4 is learned but not applied: no new epoch yet, even when idle.
        assert_eq!(chain.join(3, 4, true, 105), None);
        // Not idle: a batch of the old epoch is still in flight.
        assert_eq!(chain.join(4, 4, false, 106), None);
        let next = chain.join(4, 4, true, 107).unwrap();
        assert!(next > epoch);
        assert!(!chain.accepts(epoch));
        assert_eq!(chain.next_round(), 5);
    }

    #[test]
    fn a_stale_or_out_of_order_batch_breaks_the_chain() {
        let mut chain = CommitChain::new();
        let epoch = chain.join(1, 1, true, 108).unwrap();
        chain.extend(epoch, 3);
        assert!(!chain.accepts(epoch));
        let mut chain = CommitChain::new();
        let old = chain.join(1, 1, true, 109).unwrap();
        chain.break_off();
        let new = chain.join(1, 1, true, 110).unwrap();
        chain.extend(old, 2);
        assert!(!chain.accepts(new));
    }

    #[test]
    fn a_second_batch_goes_right_after_the_one_in_flight_only() {
        let mut chain = CommitChain::new();
        let epoch = chain.join(10, 10, true, 114).unwrap();
        assert_eq!(chain.round_for_batch(None), Some(11));
        assert_eq!(chain.round_for_batch(Some(11)), Some(12));
        // The batch in 11 was chosen: the one in 12 is now the next in flight.
        chain.extend(epoch, 11);
        assert_eq!(chain.round_for_batch(Some(12)), Some(13));
        // A batch in flight further ahead (of an older chain) makes the next one wait.
        assert_eq!(chain.round_for_batch(Some(14)), None);
        chain.break_off();
        assert_eq!(
            chain.round_for_batch(Some(12)),
            None,
            "a broken chain does not pipeline"
        );
    }

    #[test]
    fn a_conditional_batch_takes_effect_only_after_its_predecessor() {
        use Resolution::*;
        for own in [Chosen, Lost, Unknown] {
            assert_eq!(outcome_after(None, own), own);
            assert_eq!(outcome_after(Some(Chosen), own), own);
            assert_eq!(outcome_after(Some(Lost), own), Lost, "void everywhere");
        }
        assert_eq!(outcome_after(Some(Unknown), Chosen), Unknown);
        assert_eq!(outcome_after(Some(Unknown), Unknown), Unknown);
        assert_eq!(outcome_after(Some(Unknown), Lost), Lost);
    }

    #[test]
    fn one_writer_at_a_time_settles_a_long_chain() {
        let mut chain = CommitChain::new();
        let epoch = chain.join(100, 100, true, 115).unwrap();
        for round in 101..100 + SETTLE_EVERY {
            chain.extend(epoch, round);
        }
        assert_eq!(chain.claim_settling(), None, "not long enough yet");
        chain.extend(epoch, 100 + SETTLE_EVERY);
        assert!(chain.settling_due());
        assert_eq!(chain.claim_settling(), Some(100 + SETTLE_EVERY));
        assert!(!chain.settling_due());
        assert_eq!(chain.claim_settling(), None, "one settling at a time");
        // It got through all but the last round (whose writers had not all committed).
        chain.settling_done(Some(99 + SETTLE_EVERY));
        assert_eq!(chain.claim_settling(), None);
        for round in 101 + SETTLE_EVERY..100 + 2 * SETTLE_EVERY {
            chain.extend(epoch, round);
        }
        assert_eq!(chain.claim_settling(), Some(99 + 2 * SETTLE_EVERY));
        // A settling that got nowhere lets the next writer try again.
        chain.settling_done(None);
        assert!(chain.claim_settling().is_some());
        chain.settling_done(None);
        // Joining goes on as before: settling only moves the applied round within the chain.
        assert_eq!(
            chain.join(99 + SETTLE_EVERY, 99 + 2 * SETTLE_EVERY, false, 116),
            Some(epoch)
        );
        chain.break_off();
        assert_eq!(
            chain.claim_settling(),
            None,
            "a broken chain is applied instead"
        );
    }

    #[test]
    fn an_exclusive_write_past_the_tip_needs_a_new_epoch() {
        let mut chain = CommitChain::new();
        let epoch = chain.join(5, 5, true, 111).unwrap();
        chain.extend(epoch, 6);
        // A transaction applied the chain and wrote round 7 alone: learned 7 > tip.
        assert_eq!(chain.join(7, 7, false, 112), None);
        let next = chain.join(7, 7, true, 113).unwrap();
        assert_ne!(next, epoch);
        assert_eq!(chain.next_round(), 8);
    }
}
