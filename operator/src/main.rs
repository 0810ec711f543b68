//! The operator: watches PaxosGroups and ReplicatedTables in every namespace, serves `/metrics`
//! and `/healthz` on `$METRICS_ADDRESS` (default `0.0.0.0:8080`), logs JSON to stderr, and stops
//! cleanly on SIGTERM or Ctrl-C.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client};
use tokio::net::TcpListener;

use pg_paxos_operator::controller::metrics::{serve, Metrics};
use pg_paxos_operator::controller::{group, table, Context};
use pg_paxos_operator::crd::{PaxosGroup, ReplicatedTable};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context::new(client.clone(), metrics.clone()));
    let address = std::env::var("METRICS_ADDRESS").unwrap_or_else(|_| "0.0.0.0:8080".into());
    let listener = TcpListener::bind(&address).await?;
    tracing::info!(%address, "serving /metrics and /healthz");
    tokio::spawn(serve(listener, metrics));

    let groups = Controller::new(
        Api::<PaxosGroup>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(group::reconcile, group::error_policy, ctx.clone())
    .for_each(|_| futures::future::ready(()));
    let tables = Controller::new(
        Api::<ReplicatedTable>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(table::reconcile, table::error_policy, ctx)
    .for_each(|_| futures::future::ready(()));
    futures::join!(groups, tables);
    tracing::info!("stopped");
    Ok(())
}
