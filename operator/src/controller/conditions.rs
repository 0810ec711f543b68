//! Standard Kubernetes Conditions, keeping a condition's transition time while its status holds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as it should be now: the previous transition time is kept when the status did not
/// change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_changes_only_with_the_status() {
        let mut first = condition(&[], "Ready", false, "Forming", "0 of 3", Some(1));
        // Set long ago, so a new transition time differs whatever the clock's resolution.
        first.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        let same = condition(
            std::slice::from_ref(&first),
            "Ready",
            false,
            "Forming",
            "1 of 3",
            Some(1),
        );
        assert_eq!(same.last_transition_time, first.last_transition_time);
        let flipped = condition(
            std::slice::from_ref(&first),
            "Ready",
            true,
            "AllJoined",
            "3 of 3",
            Some(2),
        );
        assert_ne!(flipped.last_transition_time, first.last_transition_time);
        assert_eq!(flipped.status, "True");
    }
}
