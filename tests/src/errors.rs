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
