//! The ReplicatedTable reconciler: once its group is Ready, creates the table where it is missing
//! (from the given columns), replicates it through member 0, and reports where it is replicated.
//! pg_paxos has no way to stop replicating a table, so deleting the resource changes nothing in
//! the database.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::conditions::condition;
use super::metrics::Kind;
use super::{apply_status, Context};
use crate::crd::{PaxosGroup, Phase, ReplicatedTable, ReplicatedTableStatus};
use crate::error::{Error, Result};
use crate::resources::Names;
use crate::sql::ops::{self, Outcome};

pub async fn reconcile(table: Arc<ReplicatedTable>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled(Kind::ReplicatedTable);
    match replicate(&table, &ctx).await {
        Ok(members) => {
            let status = status(
                &table,
                true,
                "Replicated",
                "replicated on every member".into(),
                members,
            );
            apply_status(&ctx, table.as_ref(), status).await?;
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        Err(error) => {
            let waiting = matches!(error, Error::NotReady(_));
            let reason = if waiting {
                "WaitingForGroup"
            } else {
                error.reason()
            };
            let members = table
                .status
                .as_ref()
                .map(|s| s.members.clone())
                .unwrap_or_default();
            let status = status(&table, false, reason, error.to_string(), members);
            if let Err(e) = apply_status(&ctx, table.as_ref(), status).await {
                tracing::warn!(error = %e, "could not update a ReplicatedTable's status");
            }
            if !waiting {
                ctx.event(
                    table.as_ref(),
                    true,
                    error.reason(),
                    "Replicate",
                    error.to_string(),
                )
                .await;
            }
            Err(error)
        }
    }
}

pub fn error_policy(_table: Arc<ReplicatedTable>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(Kind::ReplicatedTable);
    tracing::warn!(error = %error, "ReplicatedTable reconcile failed");
    Action::requeue(error.retry_after(1))
}

/// Creates and replicates the table; returns the pods it is replicated on.
async fn replicate(table: &ReplicatedTable, ctx: &Context) -> Result<Vec<String>> {
    let namespace = table
        .namespace()
        .ok_or_else(|| Error::NoNamespace(table.name_any()))?;
    let groups: Api<PaxosGroup> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(group) = groups.get_opt(&table.spec.group).await? else {
        return Err(Error::NotReady(format!(
            "PaxosGroup {} does not exist",
            table.spec.group
        )));
    };
    if group.status.as_ref().map(|s| s.phase) != Some(Phase::Ready) {
        return Err(Error::NotReady(format!(
            "PaxosGroup {} is not Ready",
            table.spec.group
        )));
    }
    let names = Names::of(&group)?;
    let credentials = ctx
        .credentials(&namespace, &names.credentials_secret(&group))
        .await?;
    let mut pods = Vec::new();
    let mut first = None;
    for ordinal in 0..group.spec.members {
        let member = (ctx.addresses)(&names, ordinal, &group.spec.database);
        let client = member.connect(&credentials, ctx.sql_timeout).await?;
        ops::ensure_table(
            &client,
            &member,
            &table.spec.table,
            table.spec.columns.as_deref(),
        )
        .await?;
        pods.push(member.name.clone());
        if first.is_none() {
            first = Some((client, member));
        }
    }
    if let Some((client, member)) = first {
        if ops::ensure_replicated(&client, &member, &names.group, &table.spec.table).await?
            == Outcome::Done
        {
            ctx.event(
                table,
                false,
                "Replicated",
                "Replicate",
                format!(
                    "{} is replicated in group {}",
                    table.spec.table, names.group
                ),
            )
            .await;
        }
    }
    Ok(pods)
}

fn status(
    table: &ReplicatedTable,
    replicated: bool,
    reason: &str,
    message: String,
    members: Vec<String>,
) -> ReplicatedTableStatus {
    let previous = table
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = table.metadata.generation;
    ReplicatedTableStatus {
        observed_generation: generation,
        members,
        conditions: vec![
            condition(
                &previous,
                "Replicated",
                replicated,
                reason,
                message.clone(),
                generation,
            ),
            condition(
                &previous,
                "Degraded",
                !replicated && reason != "WaitingForGroup",
                reason,
                if replicated { String::new() } else { message },
                generation,
            ),
        ],
    }
}
