//! Reading server errors and bounding test bodies.

use std::time::Duration;

use tokio_postgres::Error;

/// The SQLSTATE of a server error (or a description of a client-side one).
pub fn sqlstate(e: &Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("not a server error: {e}"))
}

/// The server's message, or the client error's text.
pub fn message(e: &Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// Runs a test body under a deadline: a hang fails the test instead of stalling CI.
pub async fn bounded<F: std::future::Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(180), body)
        .await
        .expect("test exceeded its time budget");
}

/// Runs `sql` with `params` on `client` until it does not fail with a serialization failure
/// (`40001`: its transaction's round went to another write), at most 20 times.
pub async fn execute_retrying(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.execute(sql, params).await {
            Err(e) if sqlstate(&e) == "40001" && attempt < 20 => continue,
            outcome => return outcome,
        }
    }
}
