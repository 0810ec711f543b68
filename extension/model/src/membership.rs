//! Who counts in which round.
//!
//! A membership change chosen in round `c` takes effect in round `c + CHANGE_DELAY` (the founder,
//! recorded in round 0, counts from round 1). So a proposer only needs to know every round up to
//! `r - CHANGE_DELAY` to know the members of round `r`, and backends of one node can have up to
//! `CHANGE_DELAY` rounds in flight at once, each with a known membership (Lamport's alpha).

use crate::value::ValueKind;

pub const CHANGE_DELAY: u64 = 32;

/// The first round in which a change chosen in round `at` counts.
pub fn effective_round(at: u64) -> u64 {
    if at == 0 {
        1
    } else {
        at.saturating_add(CHANGE_DELAY)
    }
}

/// The members of round `round`, given membership changes (ascending by round).
pub fn members_at(changes: &[(u64, ValueKind, String)], round: u64) -> Vec<String> {
    let mut members: Vec<String> = Vec::new();
    for (at, kind, member) in changes {
        if effective_round(*at) > round {
            continue;
        }
        match kind {
            ValueKind::AddHost => {
                if !members.contains(member) {
                    members.push(member.clone());
                }
            }
            ValueKind::RemoveHost => members.retain(|m| m != member),
            ValueKind::Value
            | ValueKind::Noop
            | ValueKind::ReplicateTable
            | ValueKind::Statement
            | ValueKind::Batch => {}
        }
    }
    members
}

/// Every distinct membership in force from `round` on: the one of `round` and one more for each
/// change that takes effect later. Rounds chosen from `round` on were chosen by a majority of one
/// of these.
pub fn configurations_from(changes: &[(u64, ValueKind, String)], round: u64) -> Vec<Vec<String>> {
    let mut configs = vec![members_at(changes, round)];
    for (at, _, _) in changes {
        let from = effective_round(*at);
        if from > round {
            let config = members_at(changes, from);
            if !configs.contains(&config) {
                configs.push(config);
            }
        }
    }
    configs
}

/// The proposer label of a membership addition that names the added node's copy of pg_paxos
/// (its random token): `role` is `founder` or `admit`. The value's origin becomes
/// `<role>/<token>@<unique>`, so the log remembers which copy a connection string was admitted as.
pub fn admission_label(role: &str, token: &str) -> String {
    format!("{role}/{token}")
}

/// The token an addition's origin names (see [`admission_label`]); `None` for additions recorded
/// without one.
pub fn admitted_token(origin: &str) -> Option<&str> {
    let labelled = origin
        .strip_prefix("admit/")
        .or_else(|| origin.strip_prefix("founder/"))?;
    let (token, _unique) = labelled.split_once('@')?;
    (!token.is_empty()).then_some(token)
}

/// How a node is a member now: the addition that made it one, and the copy of pg_paxos the log
/// binds that membership to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The round of the addition that started the current membership.
    pub round: u64,
    /// The first token recorded since then: by that addition, or, when it recorded none (an
    /// address added while nothing answered there), by the first join that claimed it. Later
    /// additions of the same member change nothing, so the first copy to claim a membership keeps
    /// it.
    pub token: Option<String>,
}

/// The current admission of one member, given its membership changes in ascending order as
/// (round, kind, token recorded by the change); `None` when it is no member.
pub fn current_admission(
    changes: impl IntoIterator<Item = (u64, ValueKind, Option<String>)>,
) -> Option<Admission> {
    let mut current: Option<Admission> = None;
    for (round, kind, token) in changes {
        match (kind, current.as_mut()) {
            (ValueKind::AddHost, None) => current = Some(Admission { round, token }),
            (ValueKind::AddHost, Some(admission)) if admission.token.is_none() => {
                admission.token = token;
            }
            (ValueKind::RemoveHost, _) => current = None,
            _ => {}
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(r: u64, m: &str) -> (u64, ValueKind, String) {
        (r, ValueKind::AddHost, m.to_string())
    }

    fn remove(r: u64, m: &str) -> (u64, ValueKind, String) {
        (r, ValueKind::RemoveHost, m.to_string())
    }

    #[test]
    fn founder_counts_at_once_changes_after_the_delay() {
        let changes = vec![add(0, "a"), add(3, "b"), remove(5, "a")];
        assert_eq!(members_at(&changes, 1), vec!["a"]);
        assert_eq!(members_at(&changes, 3 + CHANGE_DELAY - 1), vec!["a"]);
        assert_eq!(members_at(&changes, 3 + CHANGE_DELAY), vec!["a", "b"]);
        assert_eq!(members_at(&changes, 5 + CHANGE_DELAY), vec!["b"]);
        assert_eq!(members_at(&changes, u64::MAX), vec!["b"]);
    }

    #[test]
    fn adding_twice_is_one_member() {
        let changes = vec![add(0, "a"), add(1, "a")];
        assert_eq!(members_at(&changes, u64::MAX), vec!["a"]);
    }

    #[test]
    fn configurations_cover_pending_changes() {
        let changes = vec![add(0, "a"), add(1, "b"), add(10, "c")];
        let now = 20;
        assert_eq!(
            configurations_from(&changes, now),
            vec![
                vec!["a".to_string()],
                vec!["a".to_string(), "b".to_string()],
                vec!["a".to_string(), "b".to_string(), "c".to_string()],
            ]
        );
        assert_eq!(
            configurations_from(&changes, 100),
            vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]
        );
    }

    #[test]
    fn an_addition_names_the_copy_it_admitted() {
        let origin = format!("{}@{}", admission_label("admit", "5f0c-77"), "n1-42-7");
        assert_eq!(admitted_token(&origin), Some("5f0c-77"));
        let founder = format!("{}@{}", admission_label("founder", "ab"), "x");
        assert_eq!(admitted_token(&founder), Some("ab"));
        // Recorded before tokens were: none.
        assert_eq!(admitted_token("admit@n1-42-7"), None);
        assert_eq!(admitted_token("founder@x"), None);
        assert_eq!(admitted_token("client-7@x"), None);
        assert_eq!(admitted_token("admit/@x"), None);
    }

    fn change(
        round: u64,
        kind: ValueKind,
        token: Option<&str>,
    ) -> (u64, ValueKind, Option<String>) {
        (round, kind, token.map(str::to_string))
    }

    #[test]
    fn the_first_token_since_the_addition_binds_a_membership() {
        let admitted = |changes: Vec<(u64, ValueKind, Option<String>)>| current_admission(changes);
        assert_eq!(admitted(vec![]), None);
        // Added with a token: later additions with other tokens change nothing.
        assert_eq!(
            admitted(vec![
                change(3, ValueKind::AddHost, Some("a")),
                change(9, ValueKind::AddHost, Some("b")),
            ]),
            Some(Admission {
                round: 3,
                token: Some("a".into())
            })
        );
        // Added without one: the first claim binds it, the round stays the addition's.
        assert_eq!(
            admitted(vec![
                change(3, ValueKind::AddHost, None),
                change(7, ValueKind::AddHost, Some("b")),
                change(9, ValueKind::AddHost, Some("c")),
            ]),
            Some(Admission {
                round: 3,
                token: Some("b".into())
            })
        );
        // A removal ends it; a new addition starts afresh.
        assert_eq!(
            admitted(vec![
                change(3, ValueKind::AddHost, Some("a")),
                change(5, ValueKind::RemoveHost, None),
            ]),
            None
        );
        assert_eq!(
            admitted(vec![
                change(3, ValueKind::AddHost, Some("a")),
                change(5, ValueKind::RemoveHost, None),
                change(8, ValueKind::AddHost, None),
            ]),
            Some(Admission {
                round: 8,
                token: None
            })
        );
    }
}
