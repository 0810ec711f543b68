//! The PaxosGroup reconciler. Each pass: credentials, owned objects by server-side apply, then,
//! once pods are ready, the group formed over SQL through an anchor member (member 0 creates it;
//! later passes work through the lowest ready member that belongs to it, so a member that is down,
//! member 0 included, stops nothing), departing members leave before their pods go, and the
//! status is applied with rounds and member health. Every step is idempotent, so a pass that
//! failed half-way is simply run again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_postgres::Client;

use super::compaction;
use super::conditions::condition;
use super::metrics::Kind;
use super::{apply_status, Context, MANAGER};
use crate::crd::{
    MemberStatus, PaxosGroup, PaxosGroupStatus, Phase, ReplicatedTable, ReplicatedTableSpec,
};
use crate::error::{Error, Result};
use crate::resources::{self, Names};
use crate::sql::ops::{self, GroupObservation, Outcome};
use crate::sql::{Credentials, Member};

pub const FINALIZER: &str = "pgpaxos.io/cleanup";

/// Entry point for the controller.
pub async fn reconcile(group: Arc<PaxosGroup>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled(Kind::PaxosGroup);
    let names = Names::of(&group)?;
    let api: Api<PaxosGroup> = Api::namespaced(ctx.client.clone(), &names.namespace);
    finalizer(&api, FINALIZER, group, |event| async {
        match event {
            Finalizer::Apply(group) => apply(&group, &ctx).await,
            Finalizer::Cleanup(group) => cleanup(&group, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Requeue with backoff; the failed pass already set Degraded and published an event.
pub fn error_policy(_group: Arc<PaxosGroup>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(Kind::PaxosGroup);
    tracing::warn!(error = %error, "PaxosGroup reconcile failed");
    Action::requeue(error.retry_after(1))
}

async fn apply(group: &PaxosGroup, ctx: &Context) -> Result<Action> {
    match apply_steps(group, ctx).await {
        Ok(action) => Ok(action),
        Err(error) => {
            report_failure(group, ctx, &error).await;
            Err(error)
        }
    }
}

/// Deletion: owned objects go with the group (owner references); data volumes stay, so a group
/// created again with the same name finds its data.
async fn cleanup(group: &PaxosGroup, ctx: &Context) -> Result<Action> {
    let names = Names::of(group)?;
    ctx.metrics.forget(&names.namespace, &names.group);
    ctx.event(
        group,
        false,
        "Deleting",
        "Delete",
        "Owned objects are deleted with the group; the members' volumes are kept".into(),
    )
    .await;
    Ok(Action::await_change())
}

/// Applies `object` by server-side apply, as the operator's field manager.
async fn apply_object<K>(ctx: &Context, namespace: &str, object: &K) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

async fn apply_steps(group: &PaxosGroup, ctx: &Context) -> Result<Action> {
    let names = Names::of(group)?;
    let spec = &group.spec;
    if spec.members < 1 {
        return Err(Error::InvalidSpec("members must be at least 1".into()));
    }
    if spec.members % 2 == 0 {
        ctx.event(
            group,
            true,
            "EvenMemberCount",
            "Validate",
            format!(
                "{} members tolerate as many failures as {}: an odd count is better",
                spec.members,
                spec.members - 1
            ),
        )
        .await;
    }
    let credentials = ensure_credentials(group, &names, ctx).await?;
    apply_object(
        ctx,
        &names.namespace,
        &resources::config_map(group, &names)?,
    )
    .await?;
    apply_object(
        ctx,
        &names.namespace,
        &resources::members_service(group, &names),
    )
    .await?;
    apply_object(
        ctx,
        &names.namespace,
        &resources::client_service(group, &names),
    )
    .await?;
    apply_object(
        ctx,
        &names.namespace,
        &resources::disruption_budget(group, &names),
    )
    .await?;

    // Members above the desired count leave the group before the StatefulSet drops their pods.
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let current = sts_api
        .get_opt(&names.stateful_set())
        .await?
        .and_then(|s| s.spec.and_then(|s| s.replicas))
        .unwrap_or(spec.members);
    let mut stateful_set = resources::stateful_set(group, &names);
    let departing: Vec<i32> = (spec.members..current).rev().collect();
    if !departing.is_empty() {
        if let Some(s) = stateful_set.spec.as_mut() {
            s.replicas = Some(current);
        }
    }
    apply_object(ctx, &names.namespace, &stateful_set).await?;

    let mut pods = list_pods(ctx, &names).await?;
    let ready = pods.ready.clone();
    let member = |ordinal: i32| (ctx.addresses)(&names, ordinal, &spec.database);
    let created_before = group.status.as_ref().and_then(|s| s.created_time.clone());
    let Some(anchor) = find_anchor(
        ctx,
        group,
        &names,
        &ready,
        spec.members.max(current),
        &member,
        &credentials,
        created_before.is_some(),
    )
    .await?
    else {
        let status = status(
            group,
            &names,
            ready.len(),
            None,
            &[],
            Health {
                phase: Phase::Pending,
                reason: "PodsStarting",
                serving: false,
                degraded: None,
            },
            created_before,
        );
        apply_status(ctx, group, status).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    // The group's replicated tables, listed once a pod needs them.
    let mut tables = None;
    // Clients stop reaching departing members before they leave.
    for &ordinal in &departing {
        label_member(ctx, &names, &mut pods, ordinal, false).await?;
    }
    for ordinal in 0..spec.members {
        if !ready.contains(&ordinal) {
            continue;
        }
        if ordinal == anchor.ordinal {
            label_member(ctx, &names, &mut pods, ordinal, true).await?;
            continue;
        }
        let joining = member(ordinal);
        let client = match joining.connect(&credentials, ctx.sql_timeout).await {
            Ok(client) => client,
            // Down (its pod may still count as Ready): the status reports it, the rest goes on.
            Err(e @ Error::Unreachable { .. }) => {
                ctx.event(group, true, e.reason(), "Connect", e.to_string())
                    .await;
                continue;
            }
            Err(e) => return Err(e),
        };
        ops::ensure_extension(&client, &joining).await?;
        if !ops::is_member(&client, &joining, &names.group).await? {
            let newcomer = Newcomer {
                ordinal,
                member: &joining,
                client: &client,
            };
            bring_in(
                ctx,
                group,
                &names,
                &anchor,
                newcomer,
                &mut pods,
                &mut tables,
            )
            .await?;
        }
        label_member(ctx, &names, &mut pods, ordinal, true).await?;
    }
    // Departing members leave one per pass, highest ordinal first, so a majority always remains;
    // their pods go once every one of them left.
    let mut still_departing = departing.len();
    // Through a member that stays (the anchor is a departing one only while every staying member
    // is down: the departures then wait).
    let departures = if anchor.ordinal < spec.members {
        departing.as_slice()
    } else {
        &[]
    };
    for &ordinal in departures {
        let outcome = leave(
            ctx,
            group,
            &names,
            &anchor.client,
            &anchor.member,
            &member(ordinal),
            &credentials,
        )
        .await?;
        still_departing -= 1;
        if outcome == Outcome::Done {
            break;
        }
    }
    if !departing.is_empty() && still_departing == 0 {
        if let Some(s) = stateful_set.spec.as_mut() {
            s.replicas = Some(spec.members);
        }
        apply_object(ctx, &names.namespace, &stateful_set).await?;
    }

    let members: Vec<Member> = (0..spec.members.max(current)).map(member).collect();
    let observation =
        observe_most_informed(ctx, &names, &anchor, &members, &ready, &credentials).await?;
    let member_status = member_status(&members, &observation, &ready);
    let staying = &member_status[..(spec.members as usize).min(member_status.len())];
    let joined = staying.iter().filter(|m| m.joined).count();
    let joined_ready = staying.iter().filter(|m| m.joined && m.reachable).count();
    let wanted = spec.members as usize;
    let majority = joined_ready > wanted / 2;
    let (phase, reason) = if still_departing > 0 {
        (Phase::Scaling, "MembersLeaving")
    } else if joined < wanted {
        (Phase::Forming, "MembersJoining")
    } else if joined_ready == wanted {
        (Phase::Ready, "AllMembersJoined")
    } else if majority {
        (Phase::Degraded, "MembersUnreachable")
    } else {
        (Phase::Degraded, "NoMajority")
    };
    ctx.metrics.rounds(
        &names.namespace,
        &names.group,
        observation.max_round,
        member_status
            .iter()
            .filter_map(|m| m.applied_round.map(|r| (m.pod.clone(), r)))
            .collect(),
    );
    let unreachable: Vec<&str> = staying
        .iter()
        .filter(|m| m.joined && !m.reachable)
        .map(|m| m.pod.as_str())
        .collect();
    let degraded = (phase == Phase::Degraded).then(|| {
        format!(
            "{} unreachable: {joined_ready} of {wanted} members answer, {}",
            unreachable.join(", "),
            if majority {
                "a majority: the group keeps working"
            } else {
                "no majority: the group cannot choose values until more members are back"
            }
        )
    });
    let mut status = status(
        group,
        &names,
        joined_ready,
        Some(observation.max_round),
        &member_status,
        Health {
            phase,
            reason,
            serving: joined == wanted && majority,
            degraded,
        },
        // The anchor holds the group: it exists from now on, if it did not before.
        created_before.or_else(|| Some(Time(Timestamp::now()))),
    );
    // Compaction needs every member to answer.
    if phase == Phase::Ready {
        if let Some((round, at)) =
            compaction::run_if_due(group, ctx, &anchor.client, &anchor.member, &names.group).await
        {
            status.compacted_through_round = Some(round);
            status.last_compaction_time = Some(at);
        }
    }
    apply_status(ctx, group, status).await?;
    Ok(Action::requeue(if phase == Phase::Ready {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(5)
    }))
}

/// The credentials Secret: the spec's, or one the operator generates once (never updated).
async fn ensure_credentials(
    group: &PaxosGroup,
    names: &Names,
    ctx: &Context,
) -> Result<Credentials> {
    let secret = names.credentials_secret(group);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    if group.spec.credentials_secret.is_none() && api.get_opt(&secret).await?.is_none() {
        let password = resources::generated_password()
            .map_err(|e| Error::NotReady(format!("no randomness for a password: {e}")))?;
        let generated = resources::credentials_secret(group, names, &password);
        api.create(&PostParams::default(), &generated).await?;
        ctx.event(
            group,
            false,
            "CredentialsCreated",
            "Create",
            format!("Created Secret {secret}"),
        )
        .await;
    }
    ctx.credentials(&names.namespace, &secret)
        .await
        .map_err(|e| match e {
            Error::NotReady(_) => {
                Error::InvalidSpec(format!("credentialsSecret {secret} does not exist"))
            }
            other => other,
        })
}

/// The member a pass works through, with its connection.
struct Anchor {
    ordinal: i32,
    member: Member,
    client: Client,
}

/// The lowest ready member, among the first `count` ordinals, that belongs to the group and
/// answers: the group stays observed, joined and scaled while any member (member 0 included) is
/// down. Member 0 founds the group when no member that answers belongs to it and the group was
/// never `created` before; no other member ever does, so a group is never founded twice. `None`
/// while that cannot happen yet: member 0's pod is not ready. Member 0 ready but not answering is
/// an error (the pass reports it), and so is a created group that no member answering holds.
#[allow(clippy::too_many_arguments)]
async fn find_anchor(
    ctx: &Context,
    group: &PaxosGroup,
    names: &Names,
    ready: &BTreeSet<i32>,
    count: i32,
    member: &impl Fn(i32) -> Member,
    credentials: &Credentials,
    created: bool,
) -> Result<Option<Anchor>> {
    let mut founder = None;
    let mut founder_error = None;
    for &ordinal in ready.iter().filter(|&&o| o < count) {
        let candidate = member(ordinal);
        let client = match candidate.connect(credentials, ctx.sql_timeout).await {
            Ok(client) => client,
            Err(e @ Error::Unreachable { .. }) => {
                if ordinal == 0 {
                    founder_error = Some(e);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        ops::ensure_extension(&client, &candidate).await?;
        if ops::is_member(&client, &candidate, &names.group).await? {
            return Ok(Some(Anchor {
                ordinal,
                member: candidate,
                client,
            }));
        }
        if ordinal == 0 {
            founder = Some(Anchor {
                ordinal,
                member: candidate,
                client,
            });
        }
    }
    let Some(founder) = founder else {
        return match founder_error {
            Some(e) => Err(e),
            None => Ok(None),
        };
    };
    if created {
        // Member 0 lost its data while every member that holds the group is down or unready:
        // creating it again would start a second group under the same name. Once another member
        // answers, member 0 is replaced and joins as a new voter.
        return Err(Error::NotReady(format!(
            "no member that holds the group answers, and {} does not hold it although the group was created before (its data is lost): waiting for another member",
            founder.member.name
        )));
    }
    if ops::ensure_group(&founder.client, &founder.member, &names.group).await? == Outcome::Done {
        ctx.event(
            group,
            false,
            "GroupCreated",
            "Create",
            format!("{} created the group", founder.member.name),
        )
        .await;
    }
    Ok(Some(founder))
}

/// A ready pod that does not hold the group, with its connection.
struct Newcomer<'a> {
    ordinal: i32,
    member: &'a Member,
    client: &'a Client,
}

/// Brings `newcomer` into the group through the anchor. A member that lost its data (a replaced
/// or wiped volume) is removed first, through the log by a majority of the others, so that it
/// joins as a new voter. The group's replicated tables are created on it where their
/// ReplicatedTable gives columns, since a join copies their rows into them (`tables`: listed on
/// first use).
async fn bring_in(
    ctx: &Context,
    group: &PaxosGroup,
    names: &Names,
    anchor: &Anchor,
    newcomer: Newcomer<'_>,
    pods: &mut Pods,
    tables: &mut Option<Vec<ReplicatedTableSpec>>,
) -> Result<()> {
    let Newcomer {
        ordinal,
        member,
        client,
    } = newcomer;
    if ops::lost_its_data(client, member, &anchor.client, &anchor.member, &names.group).await? {
        let note = format!(
            "{} lost its data (its volume was replaced or wiped): its old membership is removed and it joins again as a new voter",
            member.name
        );
        ctx.event(group, true, "MemberReplaced", "Remove", note)
            .await;
        label_member(ctx, names, pods, ordinal, false).await?;
        ops::ensure_removed(&anchor.client, &anchor.member, &names.group, member).await?;
    }
    let tables = match tables {
        Some(listed) => listed,
        None => tables.insert(replicated_tables(ctx, names).await?),
    };
    for table in tables.iter() {
        ops::ensure_table(client, member, &table.table, table.columns.as_deref())
            .await
            .map_err(|e| match e {
                // A table without columns to create it with is waited for (someone creates it
                // by hand), not a spec error to wait out.
                Error::InvalidSpec(message) => Error::NotReady(message),
                other => other,
            })?;
    }
    if ops::ensure_joined(client, member, &names.group, &anchor.member).await? == Outcome::Done {
        let note = format!("{} joined the group", member.name);
        ctx.member_event(group, &member.name, "MemberJoined", "Join", note)
            .await;
    }
    Ok(())
}

/// The specs of the ReplicatedTables of the group.
async fn replicated_tables(ctx: &Context, names: &Names) -> Result<Vec<ReplicatedTableSpec>> {
    let api: Api<ReplicatedTable> = Api::namespaced(ctx.client.clone(), &names.namespace);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|t| t.spec.group == names.group)
        .map(|t| t.spec)
        .collect())
}

/// The group as the best-informed member that answers sees it: the anchor's view, unless another
/// member learned more rounds (the anchor was down while members joined or left, and has not
/// learned those changes yet), whose view is taken then.
async fn observe_most_informed(
    ctx: &Context,
    names: &Names,
    anchor: &Anchor,
    members: &[Member],
    ready: &BTreeSet<i32>,
    credentials: &Credentials,
) -> Result<GroupObservation> {
    let observation = ops::observe(&anchor.client, &anchor.member, &names.group).await?;
    let own = observation
        .members
        .iter()
        .find(|m| m.is_self)
        .and_then(|m| m.learned_round);
    let better = observation
        .members
        .iter()
        .filter(|m| m.reachable && !m.is_self && m.learned_round > own)
        .max_by_key(|m| m.learned_round)
        .and_then(|best| {
            members
                .iter()
                .zip(0..)
                .find(|(m, ordinal)| m.conninfo() == best.conninfo && ready.contains(ordinal))
        });
    let Some((informed, _)) = better else {
        return Ok(observation);
    };
    let client = informed.connect(credentials, ctx.sql_timeout).await?;
    ops::observe(&client, informed, &names.group).await
}

/// Has a departing member leave the group itself, or, if it cannot be reached, removes it
/// through `via`, a member that stays.
async fn leave(
    ctx: &Context,
    group: &PaxosGroup,
    names: &Names,
    via_client: &Client,
    via: &Member,
    leaving: &Member,
    credentials: &Credentials,
) -> Result<Outcome> {
    let outcome = match leaving.connect(credentials, ctx.sql_timeout).await {
        Ok(client) => ops::ensure_left(&client, leaving, &names.group).await?,
        Err(Error::Unreachable { .. }) => {
            ops::ensure_removed(via_client, via, &names.group, leaving).await?
        }
        Err(e) => return Err(e),
    };
    if outcome == Outcome::Done {
        let note = format!("{} left the group", leaving.name);
        ctx.member_event(group, &leaving.name, "MemberLeft", "Leave", note)
            .await;
    }
    Ok(outcome)
}

/// The group's pods by ordinal: which are Ready, and which carry the member label (see
/// `resources::MEMBER_LABEL`).
struct Pods {
    present: BTreeSet<i32>,
    ready: BTreeSet<i32>,
    labelled_members: BTreeSet<i32>,
}

async fn list_pods(ctx: &Context, names: &Names) -> Result<Pods> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let pods = api
        .list(&ListParams::default().labels(&resources::selector_string(names)))
        .await?;
    let prefix = format!("{}-", names.group);
    let ordinal = |pod: &Pod| pod.name_any().strip_prefix(&prefix)?.parse().ok();
    Ok(Pods {
        present: pods.items.iter().filter_map(ordinal).collect(),
        ready: pods
            .items
            .iter()
            .filter(|pod| {
                pod.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(ordinal)
            .collect(),
        labelled_members: pods
            .items
            .iter()
            .filter(|pod| {
                pod.labels()
                    .get(resources::MEMBER_LABEL)
                    .map(String::as_str)
                    == Some("true")
            })
            .filter_map(ordinal)
            .collect(),
    })
}

/// Sets or clears the member label of the pod `ordinal` (so the client Service reaches it or
/// not), unless it is so already or the pod is gone.
async fn label_member(
    ctx: &Context,
    names: &Names,
    pods: &mut Pods,
    ordinal: i32,
    member: bool,
) -> Result<()> {
    if !pods.present.contains(&ordinal) || pods.labelled_members.contains(&ordinal) == member {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let value = if member { "true" } else { "false" };
    let patch = serde_json::json!({ "metadata": { "labels": { resources::MEMBER_LABEL: value } } });
    api.patch(
        &names.pod(ordinal),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    if member {
        pods.labelled_members.insert(ordinal);
    } else {
        pods.labelled_members.remove(&ordinal);
    }
    Ok(())
}

fn member_status(
    members: &[Member],
    observation: &GroupObservation,
    ready: &BTreeSet<i32>,
) -> Vec<MemberStatus> {
    members
        .iter()
        .enumerate()
        .map(|(ordinal, m)| {
            let seen = observation
                .members
                .iter()
                .find(|o| o.conninfo == m.conninfo());
            MemberStatus {
                pod: m.name.clone(),
                node_id: seen
                    .and_then(|o| o.node_id.clone())
                    .unwrap_or_else(|| m.name.clone()),
                reachable: seen.is_some_and(|o| o.reachable) && ready.contains(&(ordinal as i32)),
                joined: seen.is_some(),
                applied_round: seen.and_then(|o| o.applied_round),
            }
        })
        .collect()
}

/// What a pass found: the phase, why, whether the group serves (every member joined and a
/// majority answers: the Ready condition), and what is degraded (nothing: `None`).
struct Health {
    phase: Phase,
    reason: &'static str,
    serving: bool,
    degraded: Option<String>,
}

fn status(
    group: &PaxosGroup,
    names: &Names,
    ready_members: usize,
    max_round: Option<i64>,
    members: &[MemberStatus],
    health: Health,
    created_time: Option<Time>,
) -> PaxosGroupStatus {
    let Health {
        phase,
        reason,
        serving,
        degraded,
    } = health;
    let previous = group
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = group.metadata.generation;
    let compaction = group
        .status
        .as_ref()
        .map(|s| (s.compacted_through_round, s.last_compaction_time.clone()));
    let (compacted_through_round, last_compaction_time) = compaction.unwrap_or_default();
    let wanted = group.spec.members;
    let joined = members
        .iter()
        .take(wanted as usize)
        .filter(|m| m.joined)
        .count();
    PaxosGroupStatus {
        phase,
        observed_generation: generation,
        max_round,
        ready_members: ready_members as i32,
        selector: Some(resources::selector_string(names)),
        members: members.to_vec(),
        conditions: vec![
            condition(
                &previous,
                "Ready",
                serving,
                reason,
                format!("{ready_members} of {wanted} members joined and reachable"),
                generation,
            ),
            condition(
                &previous,
                "MembersJoined",
                joined == wanted as usize,
                reason,
                format!("{joined} of {wanted} members joined"),
                generation,
            ),
            condition(
                &previous,
                "Degraded",
                degraded.is_some(),
                reason,
                degraded.unwrap_or_default(),
                generation,
            ),
        ],
        compacted_through_round,
        last_compaction_time,
        created_time,
    }
}

/// A failed pass: Degraded with the reason, a Warning event.
async fn report_failure(group: &PaxosGroup, ctx: &Context, error: &Error) {
    let mut status = group.status.clone().unwrap_or_default();
    let previous = status.conditions.clone();
    let generation = group.metadata.generation;
    status.phase = Phase::Degraded;
    status
        .conditions
        .retain(|c| c.type_ != "Degraded" && c.type_ != "Ready");
    status.conditions.push(condition(
        &previous,
        "Ready",
        false,
        error.reason(),
        "see the Degraded condition",
        generation,
    ));
    status.conditions.push(condition(
        &previous,
        "Degraded",
        true,
        error.reason(),
        error.to_string(),
        generation,
    ));
    if let Err(e) = apply_status(ctx, group, status).await {
        tracing::warn!(error = %e, "could not set Degraded");
    }
    ctx.event(group, true, error.reason(), "Reconcile", error.to_string())
        .await;
}
