//! Prometheus metrics in the text exposition format: reconciles and failures per resource kind,
//! and per group its highest round and each member's applied round.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A group's highest round and each member's applied round, by pod.
type GroupRounds = (i64, Vec<(String, i64)>);

#[derive(Default)]
pub struct Metrics {
    reconciles: [AtomicU64; 2],
    failures: [AtomicU64; 2],
    /// By (namespace, group).
    rounds: Mutex<BTreeMap<(String, String), GroupRounds>>,
}

/// The resource kind a count is about.
#[derive(Clone, Copy)]
pub enum Kind {
    PaxosGroup = 0,
    ReplicatedTable = 1,
}

const KIND_NAMES: [&str; 2] = ["PaxosGroup", "ReplicatedTable"];

impl Metrics {
    pub fn reconciled(&self, kind: Kind) {
        self.reconciles[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self, kind: Kind) {
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rounds(&self, namespace: &str, group: &str, max: i64, applied: Vec<(String, i64)>) {
        if let Ok(mut rounds) = self.rounds.lock() {
            rounds.insert((namespace.into(), group.into()), (max, applied));
        }
    }

    pub fn forget(&self, namespace: &str, group: &str) {
        if let Ok(mut rounds) = self.rounds.lock() {
            rounds.remove(&(namespace.to_string(), group.to_string()));
        }
    }

    /// The metrics as Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        for (name, help, counters) in [
            (
                "pg_paxos_operator_reconciles_total",
                "Reconciles run.",
                &self.reconciles,
            ),
            (
                "pg_paxos_operator_reconcile_failures_total",
                "Reconciles that failed.",
                &self.failures,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (kind, counter) in KIND_NAMES.iter().zip(counters) {
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{kind}\"}} {}",
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP pg_paxos_group_max_round Highest round accepted in the group.\n# TYPE pg_paxos_group_max_round gauge\n\
             # HELP pg_paxos_member_applied_round Highest round a member applied.\n# TYPE pg_paxos_member_applied_round gauge"
        );
        if let Ok(rounds) = self.rounds.lock() {
            for ((namespace, group), (max, applied)) in rounds.iter() {
                let (ns, g) = (label(namespace), label(group));
                let _ = writeln!(
                    out,
                    "pg_paxos_group_max_round{{namespace=\"{ns}\",group=\"{g}\"}} {max}"
                );
                for (pod, round) in applied {
                    let _ = writeln!(
                        out,
                        "pg_paxos_member_applied_round{{namespace=\"{ns}\",group=\"{g}\",pod=\"{}\"}} {round}",
                        label(pod)
                    );
                }
            }
        }
        out
    }
}

/// A minimal HTTP/1.1 responder for the two endpoints a probe and Prometheus use: `/metrics` and
/// `/healthz`; anything else is 404. One request per connection.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 1024];
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buffer[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics.render()),
                "/healthz" => ("200 OK", "ok\n".to_string()),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One GET over a real socket: the status line and the body.
    async fn get(address: std::net::SocketAddr, path: &str) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .expect("a header and a body");
        let status = head.lines().next().unwrap_or_default().to_string();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .expect("a content length");
        assert_eq!(length, body.len(), "content-length matches the body");
        (status, body.to_string())
    }

    #[tokio::test]
    async fn serves_metrics_health_and_404_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        metrics.reconciled(Kind::ReplicatedTable);
        metrics.rounds("prod", "shop", 7, vec![("shop-1".into(), 6)]);
        let server = tokio::spawn(serve(listener, metrics.clone()));

        let (status, body) = get(address, "/healthz").await;
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 200 OK", "ok\n")
        );
        let (status, body) = get(address, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("pg_paxos_operator_reconciles_total{kind=\"ReplicatedTable\"} 1\n"));
        assert!(body.contains("pod=\"shop-1\"} 6\n"), "{body}");
        // Served live: a forgotten group is gone from the next scrape.
        metrics.forget("prod", "shop");
        let (_, body) = get(address, "/metrics").await;
        assert!(!body.contains("shop"), "{body}");
        let (status, _) = get(address, "/nope").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        server.abort();
    }

    #[test]
    fn renders_counters_and_rounds() {
        let m = Metrics::default();
        m.reconciled(Kind::PaxosGroup);
        m.reconciled(Kind::PaxosGroup);
        m.failed(Kind::ReplicatedTable);
        m.rounds("prod", "sh\"op", 42, vec![("shop-0".into(), 41)]);
        let text = m.render();
        assert!(text.contains("pg_paxos_operator_reconciles_total{kind=\"PaxosGroup\"} 2\n"));
        assert!(text
            .contains("pg_paxos_operator_reconcile_failures_total{kind=\"ReplicatedTable\"} 1\n"));
        assert!(
            text.contains("pg_paxos_group_max_round{namespace=\"prod\",group=\"sh\\\"op\"} 42\n")
        );
        assert!(text.contains("pod=\"shop-0\"} 41\n"));
    }
}
