//! Log compaction on a schedule (`spec.logCompaction`): when it is due, a pass compacts the group's
//! log through its anchor member and reports the round in the status. A compaction that fails (a
//! member stopped answering) only publishes a Warning event: the group itself is fine, and the
//! next pass tries again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio_postgres::Client;

use super::Context;
use crate::crd::{LogCompaction, PaxosGroup};
use crate::sql::{ops, Member};

/// Whether a compaction is due at `now`, given the schedule and the last one.
pub fn due(schedule: Option<&LogCompaction>, last: Option<&Time>, now: Timestamp) -> bool {
    let Some(schedule) = schedule else {
        return false;
    };
    match last {
        None => true,
        Some(Time(at)) => {
            now.duration_since(*at) >= SignedDuration::from_secs(schedule.interval_seconds)
        }
    }
}

/// Compacts the log of `group` through `member` if it is due; the round it is compacted through
/// and when, if it ran and succeeded.
pub async fn run_if_due(
    group: &PaxosGroup,
    ctx: &Context,
    client: &Client,
    member: &Member,
    group_id: &str,
) -> Option<(i64, Time)> {
    let last = group
        .status
        .as_ref()
        .and_then(|s| s.last_compaction_time.as_ref());
    let now = Timestamp::now();
    if !due(group.spec.log_compaction.as_ref(), last, now) {
        return None;
    }
    match ops::compact_log(client, member, group_id).await {
        Ok(round) => {
            let note = format!("compacted the log through round {round}");
            ctx.event(group, false, "LogCompacted", "Compact", note)
                .await;
            Some((round, Time(now)))
        }
        Err(e) => {
            ctx.event(group, true, "LogCompactionFailed", "Compact", e.to_string())
                .await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_is_due_once_the_interval_passed_and_never_without_a_schedule() {
        let every_minute = LogCompaction {
            interval_seconds: 60,
        };
        let start = Timestamp::from_second(1_000_000).unwrap();
        let later = |secs: i64| start + SignedDuration::from_secs(secs);
        assert!(!due(None, None, start));
        assert!(due(Some(&every_minute), None, start), "never compacted yet");
        let last = Time(start);
        assert!(!due(Some(&every_minute), Some(&last), later(59)));
        assert!(due(Some(&every_minute), Some(&last), later(60)));
    }
}
