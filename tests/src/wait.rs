//! Waiting for a condition with a deadline, instead of sleeping and hoping.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until backend `pid` (seen from `observer`, a client of the same node) is running a
/// statement that contains `statement`, e.g. before cancelling it or killing its node.
pub async fn wait_until_running(observer: &tokio_postgres::Client, pid: i32, statement: &str) {
    let pattern = format!("%{statement}%");
    wait_until(
        &format!("backend {pid} to run {statement}"),
        Duration::from_secs(10),
        || {
            let pattern = &pattern;
            async move {
                observer
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE pid = $1 AND state = 'active' AND query LIKE $2",
                        &[&pid, pattern],
                    )
                    .await
                    .map(|row| row.get::<_, i64>(0) == 1)
                    .unwrap_or(false)
            }
        },
    )
    .await;
}
