//! Proposal numbers ("ballots"), totally ordered by (number, proposer id).

use std::fmt;

/// A proposal number. Ballots compare by `number` first and by `proposer` second, so two proposers
/// never issue equal ballots as long as their ids differ; callers must make proposer ids unique per
/// proposer incarnation (node id, process and call counter in the extension).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    pub number: u64,
    pub proposer: String,
}

impl Ballot {
    pub fn new(number: u64, proposer: impl Into<String>) -> Self {
        Ballot {
            number,
            proposer: proposer.into(),
        }
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.number, self.proposer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_number_then_proposer() {
        assert!(Ballot::new(2, "a") > Ballot::new(1, "z"));
        assert!(Ballot::new(1, "b") > Ballot::new(1, "a"));
        assert_eq!(Ballot::new(1, "a"), Ballot::new(1, "a"));
    }
}
