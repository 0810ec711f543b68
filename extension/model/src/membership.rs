//! Who counts in which round. A membership change chosen in round `c` takes effect from round
//! `c + 1`: a proposer learns every round below the one it proposes in, so it always knows the
//! members of its round. The founder is recorded as an add in round 0.

use crate::value::ValueKind;

/// The members of round `round`, given the changes recorded before it (ascending by round).
pub fn members_at(changes: &[(u64, ValueKind, String)], round: u64) -> Vec<String> {
    let mut members: Vec<String> = Vec::new();
    for (at, kind, member) in changes {
        if *at >= round {
            break;
        }
        match kind {
            ValueKind::AddHost => {
                if !members.contains(member) {
                    members.push(member.clone());
                }
            }
            ValueKind::RemoveHost => members.retain(|m| m != member),
            ValueKind::Value | ValueKind::Noop => {}
        }
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(r: u64, m: &str) -> (u64, ValueKind, String) {
        (r, ValueKind::AddHost, m.to_string())
    }

    #[test]
    fn changes_count_from_the_next_round() {
        let changes = vec![
            add(0, "a"),
            add(3, "b"),
            (5, ValueKind::RemoveHost, "a".to_string()),
        ];
        assert_eq!(members_at(&changes, 1), vec!["a"]);
        assert_eq!(members_at(&changes, 3), vec!["a"]);
        assert_eq!(members_at(&changes, 4), vec!["a", "b"]);
        assert_eq!(members_at(&changes, 6), vec!["b"]);
    }

    #[test]
    fn adding_twice_is_one_member() {
        let changes = vec![add(0, "a"), add(1, "a")];
        assert_eq!(members_at(&changes, 9), vec!["a"]);
    }
}
