//! The clients: unique inserts, and reads, writes and compare-and-sets on a few registers, from
//! every node, each operation bounded by a deadline (a late answer counts as unknown).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use super::history::{classify, describe, History, Operation, Outcome, Record};
use paxos_core::rng::SplitMix64 as Rng;

/// Registers are keys 0..REGISTERS of table `reg`, all starting at 0.
pub const REGISTERS: i32 = 3;
const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);

pub const SCHEMA: &str = "CREATE TABLE uniq (id text PRIMARY KEY, node int NOT NULL);
     CREATE TABLE reg (k int PRIMARY KEY, v bigint NOT NULL);";

pub(super) async fn connect(port: u16) -> Option<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2));
    let (client, connection) = tokio::time::timeout(Duration::from_secs(3), config.connect(NoTls))
        .await
        .ok()?
        .ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Some(client)
}

pub struct ClientSpec {
    pub id: usize,
    pub node: usize,
    pub port: u16,
    pub registers: bool,
    pub seed: u64,
}

/// Runs one client until `until`.
pub async fn run(spec: ClientSpec, history: History, values: Arc<AtomicI64>, until: Instant) {
    let mut rng = Rng::new(spec.seed);
    let mut client: Option<Client> = None;
    let mut seq = 0u64;
    let mut last_seen = [0i64; REGISTERS as usize];
    while Instant::now() < until {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = connect(spec.port).await;
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let c = client.as_ref().expect("connected above");
        let invoked = history.now();
        let (operation, result) = if spec.registers {
            let key = rng.below(REGISTERS as u64) as i32;
            match rng.below(4) {
                0 | 1 => {
                    let r = timed(c.query_opt("SELECT v FROM reg WHERE k = $1", &[&key])).await;
                    let value = r
                        .as_ref()
                        .ok()
                        .and_then(|row| row.as_ref().map(|row| row.get(0)));
                    if let Some(v) = value {
                        last_seen[key as usize] = v;
                    }
                    (Operation::Read { key, value }, r.map(|_| ()))
                }
                2 => {
                    let value = values.fetch_add(1, Ordering::Relaxed);
                    let r = timed(c.execute("UPDATE reg SET v = $1 WHERE k = $2", &[&value, &key]))
                        .await;
                    (Operation::Write { key, value }, r.map(|_| ()))
                }
                _ => {
                    let (from, to) = (
                        last_seen[key as usize],
                        values.fetch_add(1, Ordering::Relaxed),
                    );
                    let r = timed(c.execute(
                        "UPDATE reg SET v = $1 WHERE k = $2 AND v = $3",
                        &[&to, &key, &from],
                    ))
                    .await;
                    let swapped = matches!(r, Ok(1));
                    (
                        Operation::Cas {
                            key,
                            from,
                            to,
                            swapped,
                        },
                        r.map(|_| ()),
                    )
                }
            }
        } else {
            seq += 1;
            let id = format!("c{}-{seq}", spec.id);
            let r = timed(c.execute(
                "INSERT INTO uniq (id, node) VALUES ($1, $2)",
                &[&id, &(spec.node as i32)],
            ))
            .await;
            (Operation::Insert { id }, r.map(|_| ()))
        };
        let (outcome, error) = match &result {
            Ok(()) => (Outcome::Ok, None),
            Err(Failure::Timeout) => (Outcome::Unknown, Some("no answer in time".to_string())),
            Err(Failure::Db(e)) => (classify(e), Some(describe(e))),
        };
        if matches!(result, Err(Failure::Timeout))
            || matches!(&result, Err(Failure::Db(e)) if e.as_db_error().is_none())
        {
            // The connection is in an unknown state: start afresh.
            client = None;
        }
        history.add(Record {
            client: spec.id,
            node: spec.node,
            operation,
            invoked,
            answered: history.now(),
            outcome,
            error,
        });
        if outcome != Outcome::Ok {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub enum Failure {
    Timeout,
    Db(tokio_postgres::Error),
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(OPERATION_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Db(e)),
        Err(_) => Err(Failure::Timeout),
    }
}
