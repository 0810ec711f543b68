//! Properties of the acceptor rules over random request sequences on one slot (seeded, so a failure
//! names the seed that replays it).

use paxos_core::acceptor::{on_accept, on_prepare};
use paxos_core::rng::SplitMix64;
use paxos_core::{AcceptOutcome, Ballot, PromiseOutcome, SlotState};

fn random_ballot(rng: &mut SplitMix64) -> Ballot {
    Ballot::new(rng.below(8), format!("p{}", rng.below(3)))
}

#[test]
fn promises_never_go_down_and_votes_never_exceed_them() {
    for seed in 0..2_000u64 {
        let mut rng = SplitMix64::new(seed);
        let mut slot: SlotState<u64> = SlotState::default();
        for step in 0..40 {
            let ballot = random_ballot(&mut rng);
            let before = slot.clone();
            let granted = if rng.chance(50) {
                let s = on_prepare(&slot, &ballot);
                if let Some(next) = s.persist {
                    slot = next;
                }
                match s.reply {
                    PromiseOutcome::Granted { accepted } => {
                        assert_eq!(
                            accepted, before.accepted,
                            "seed {seed} step {step}: reports its vote"
                        );
                        true
                    }
                    PromiseOutcome::Refused { promised } => {
                        assert!(
                            promised > ballot,
                            "seed {seed} step {step}: refused only for a higher promise"
                        );
                        false
                    }
                }
            } else {
                let value = rng.below(1000);
                let s = on_accept(&slot, &ballot, &value);
                if let Some(next) = s.persist {
                    slot = next;
                }
                match s.reply {
                    AcceptOutcome::Accepted => {
                        let vote = slot.accepted.as_ref().expect("a vote after accepting");
                        assert_eq!(
                            (&vote.ballot, vote.value),
                            (&ballot, value),
                            "seed {seed} step {step}"
                        );
                        true
                    }
                    AcceptOutcome::Refused { promised } => {
                        assert!(promised > ballot, "seed {seed} step {step}");
                        false
                    }
                }
            };
            if !granted {
                assert_eq!(
                    slot, before,
                    "seed {seed} step {step}: a refusal changes nothing"
                );
            }
            assert!(
                slot.promised >= before.promised,
                "seed {seed} step {step}: promise went down"
            );
            if let (Some(vote), Some(promised)) = (&slot.accepted, &slot.promised) {
                assert!(
                    &vote.ballot <= promised,
                    "seed {seed} step {step}: vote above promise"
                );
            }
        }
    }
}
