//! Which rounds of a stretch of the log a node has not learned, from the learned rounds that
//! border the gaps (what the node's log query returns, so that a stretch costs what its gaps
//! cost, not one row per round).

/// The rounds of `low..=high` missing from the learned rounds given by their borders: each learned
/// round of the stretch that starts it, ends it or is followed by a gap, with the next learned
/// round (`None` after the last one), ascending. No borders: nothing in the stretch is learned.
pub fn missing_rounds(low: u64, high: u64, borders: &[(u64, Option<u64>)]) -> Vec<u64> {
    let Some(&(first, _)) = borders.first() else {
        return (low..=high).collect();
    };
    let mut missing: Vec<u64> = (low..first).collect();
    for &(round, next) in borders {
        match next {
            Some(next) => missing.extend(round + 1..next),
            None => missing.extend(round + 1..=high),
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_before_between_and_after_the_learned_rounds() {
        // Learned: 5, 6, 7, 10, 11. Borders: 5 (first), 7 (gap after), 11 (last).
        let borders = [(5, Some(6)), (7, Some(10)), (11, None)];
        assert_eq!(missing_rounds(3, 13, &borders), vec![3, 4, 8, 9, 12, 13]);
        // The same stretch without gaps at its ends.
        assert_eq!(missing_rounds(5, 11, &borders), vec![8, 9]);
    }

    #[test]
    fn a_stretch_learned_whole_or_not_at_all() {
        assert_eq!(
            missing_rounds(4, 9, &[(4, Some(5)), (9, None)]),
            Vec::<u64>::new()
        );
        assert_eq!(missing_rounds(4, 4, &[(4, None)]), Vec::<u64>::new());
        assert_eq!(missing_rounds(4, 6, &[]), vec![4, 5, 6]);
        // A stretch that starts after its end (everything compacted): nothing missing.
        assert_eq!(missing_rounds(8, 6, &[]), Vec::<u64>::new());
    }
}
