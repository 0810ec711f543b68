//! The operator's reconcilers against an in-memory Kubernetes API (kube-rs's mock service) and
//! real local PostgreSQL nodes standing in for the member pods: objects created, the group formed
//! once pods are ready, status with rounds, scale up and down (a departing member that is down
//! removed through member 0), a group managed through another member while member 0 is down,
//! deletion through the finalizer, and failures that set Degraded with an event.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::Api;
use pg_paxos_operator::controller::metrics::Metrics;
use pg_paxos_operator::controller::{group, table, Context};
use pg_paxos_operator::crd::{PaxosGroup, ReplicatedTable};
use pg_paxos_operator::resources::Names;
use pg_paxos_operator::sql::Member;
use pg_paxos_operator::Error;
use pg_paxos_tests::{bounded, Cluster, FakeKube};
use serde_json::{json, Value};

const NS: &str = "prod";

/// A context whose members are the local nodes: ordinal i is node i + 1.
fn context(client: kube::Client, ports: Vec<u16>) -> Arc<Context> {
    let addresses = Arc::new(move |names: &Names, ordinal: i32, database: &str| Member {
        name: names.pod(ordinal),
        host: "127.0.0.1".into(),
        port: ports.get(ordinal as usize).copied().unwrap_or(1),
        database: database.into(),
        user: "postgres".into(),
    });
    Arc::new(Context::with_addresses(
        client,
        Arc::new(Metrics::default()),
        addresses,
    ))
}

fn group_object(members: i32, extra: Value) -> Value {
    let mut spec = json!({ "members": members });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({
        "apiVersion": "pgpaxos.io/v1alpha1", "kind": "PaxosGroup",
        "metadata": { "name": "shop", "namespace": NS },
        "spec": spec,
    })
}

/// The stored group, as the controller would be handed it.
async fn current(client: &kube::Client) -> Arc<PaxosGroup> {
    let api: Api<PaxosGroup> = Api::namespaced(client.clone(), NS);
    Arc::new(api.get("shop").await.expect("the group"))
}

async fn reconcile(client: &kube::Client, ctx: &Arc<Context>) -> Result<Action, Error> {
    group::reconcile(current(client).await, ctx.clone()).await
}

/// Marks pods of ordinals `range` Ready, as the kubelet would once PostgreSQL answers.
fn pods_ready(fake: &FakeKube, ordinals: std::ops::Range<i32>) {
    for i in ordinals {
        fake.insert(
            "pods",
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": format!("shop-{i}"), "namespace": NS, "labels": {
                    "app.kubernetes.io/name": "pg-paxos", "app.kubernetes.io/instance": "shop" } },
                "status": { "conditions": [{ "type": "Ready", "status": "True" }] },
            }),
        );
    }
}

fn status(fake: &FakeKube) -> Value {
    fake.get(NS, "paxosgroups", "shop").expect("group")["status"].clone()
}

fn condition(status: &Value, type_: &str) -> Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

/// A group of `members` on the first nodes of `cluster`, its pods Ready and formed by two
/// reconciles: the API client, the fake API server and the context.
async fn formed_group(cluster: &Cluster, members: i32) -> (kube::Client, FakeKube, Arc<Context>) {
    let (client, fake) = FakeKube::start();
    let ctx = context(
        client.clone(),
        cluster.nodes().map(|n| cluster.port(n)).collect(),
    );
    fake.insert("paxosgroups", group_object(members, json!({})));
    pods_ready(&fake, 0..members);
    for _ in 0..2 {
        reconcile(&client, &ctx).await.unwrap();
    }
    assert_eq!(status(&fake)["phase"], "Ready");
    (client, fake, ctx)
}

/// The spec of the ReplicatedTable `orders` of group `shop`, with columns to create it with.
fn orders() -> Value {
    json!({ "group": "shop", "table": "public.orders",
            "columns": "id bigint PRIMARY KEY, item text" })
}

/// Stores the ReplicatedTable `name` with `spec` and reconciles it once.
async fn add_replicated_table(
    client: &kube::Client,
    fake: &FakeKube,
    ctx: &Arc<Context>,
    name: &str,
    spec: Value,
) {
    fake.insert(
        "replicatedtables",
        json!({
            "apiVersion": "pgpaxos.io/v1alpha1", "kind": "ReplicatedTable",
            "metadata": { "name": name, "namespace": NS },
            "spec": spec,
        }),
    );
    let tables: Api<ReplicatedTable> = Api::namespaced(client.clone(), NS);
    let table = Arc::new(tables.get(name).await.unwrap());
    table::reconcile(table, ctx.clone()).await.unwrap();
}

/// How often `reason` is among `events` (see `FakeKube::event_reasons`).
fn occurrences(events: &[String], reason: &str) -> usize {
    events.iter().filter(|e| *e == reason).count()
}

/// Each pod's member label (see `resources::MEMBER_LABEL`), "-" where it has none.
fn member_labels(fake: &FakeKube) -> Vec<(String, String)> {
    fake.list(NS, "pods")
        .iter()
        .map(|p| {
            let label = p["metadata"]["labels"]["pgpaxos.io/member"].as_str();
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                label.unwrap_or("-").to_string(),
            )
        })
        .collect()
}

fn labelled(pods: &[(&str, &str)]) -> Vec<(String, String)> {
    pods.iter()
        .map(|(p, l)| (p.to_string(), l.to_string()))
        .collect()
}

async fn members_seen_by(cluster: &Cluster, node: usize) -> i64 {
    cluster
        .client(node)
        .await
        .query_one("SELECT count(*) FROM paxos_status('shop')", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_gets_its_objects_then_forms_and_reports_rounds() {
    bounded(async {
        let cluster = Cluster::new("op_form", 3);
        let (client, fake) = FakeKube::start();
        let ctx = context(
            client.clone(),
            cluster.nodes().map(|n| cluster.port(n)).collect(),
        );
        fake.insert("paxosgroups", group_object(3, json!({})));

        // First pass: only the finalizer.
        reconcile(&client, &ctx).await.unwrap();
        let stored = fake.get(NS, "paxosgroups", "shop").unwrap();
        assert_eq!(stored["metadata"]["finalizers"], json!([group::FINALIZER]));

        // Second pass: every owned object, no pod ready yet.
        reconcile(&client, &ctx).await.unwrap();
        for (plural, name) in [
            ("secrets", "shop-credentials"),
            ("configmaps", "shop-config"),
            ("services", "shop"),
            ("services", "shop-members"),
            ("poddisruptionbudgets", "shop"),
            ("statefulsets", "shop"),
        ] {
            let object = fake
                .get(NS, plural, name)
                .unwrap_or_else(|| panic!("{plural}/{name} was not created"));
            assert_eq!(
                object["metadata"]["ownerReferences"][0]["kind"], "PaxosGroup",
                "{plural}/{name} is owned by the group"
            );
        }
        assert_eq!(
            fake.get(NS, "statefulsets", "shop").unwrap()["spec"]["replicas"],
            3
        );
        assert_eq!(
            fake.get(NS, "poddisruptionbudgets", "shop").unwrap()["spec"]["maxUnavailable"],
            1
        );
        let password =
            fake.get(NS, "secrets", "shop-credentials").unwrap()["data"]["password"].clone();
        assert!(password.is_string());
        let s = status(&fake);
        assert_eq!(s["phase"], "Pending");
        assert!(
            !s.to_string().contains(password.as_str().unwrap()),
            "password in status"
        );

        // Pods ready: the group forms.
        pods_ready(&fake, 0..3);
        reconcile(&client, &ctx).await.unwrap();
        let s = status(&fake);
        assert_eq!(s["phase"], "Ready", "{s}");
        assert_eq!(s["readyMembers"], 3);
        assert!(s["maxRound"].as_i64().unwrap() > 0);
        assert_eq!(condition(&s, "Ready")["status"], "True");
        assert_eq!(condition(&s, "MembersJoined")["status"], "True");
        assert_eq!(condition(&s, "Degraded")["status"], "False");
        let members = s["members"].as_array().unwrap();
        assert_eq!(members.len(), 3);
        assert!(members
            .iter()
            .all(|m| m["joined"] == true && m["reachable"] == true));
        assert_eq!(
            members[1]["nodeId"], "node2",
            "node ids come from the members"
        );
        // Clients reach the pods once they joined, and only those.
        assert_eq!(
            member_labels(&fake),
            labelled(&[("shop-0", "true"), ("shop-1", "true"), ("shop-2", "true")])
        );
        let client_selector = &fake.get(NS, "services", "shop").unwrap()["spec"]["selector"];
        assert_eq!(
            client_selector["pgpaxos.io/member"], "true",
            "{client_selector}"
        );
        let members_selector =
            &fake.get(NS, "services", "shop-members").unwrap()["spec"]["selector"];
        assert!(
            members_selector["pgpaxos.io/member"].is_null(),
            "{members_selector}"
        );
        let events = fake.event_reasons(NS);
        assert!(events.contains(&"GroupCreated".to_string()), "{events:?}");
        assert_eq!(occurrences(&events, "MemberJoined"), 2, "{events:?}");

        // Again: nothing new happens; never a second group or a double join.
        reconcile(&client, &ctx).await.unwrap();
        let events = fake.event_reasons(NS);
        assert_eq!(occurrences(&events, "GroupCreated"), 1);
        assert_eq!(occurrences(&events, "MemberJoined"), 2);
        for node in cluster.nodes() {
            assert_eq!(members_seen_by(&cluster, node).await, 3, "node {node}");
        }

        // A ReplicatedTable: created where missing, replicated, writes flow.
        add_replicated_table(&client, &fake, &ctx, "orders", orders()).await;
        let t = fake.get(NS, "replicatedtables", "orders").unwrap();
        assert_eq!(
            condition(&t["status"], "Replicated")["status"],
            "True",
            "{t}"
        );
        assert_eq!(
            t["status"]["members"],
            json!(["shop-0", "shop-1", "shop-2"])
        );
        cluster
            .client(1)
            .await
            .execute("INSERT INTO public.orders VALUES (1, 'tea')", &[])
            .await
            .unwrap();
        let item: String = cluster
            .client(3)
            .await
            .query_one("SELECT item FROM public.orders WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(item, "tea");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_up_joins_and_scaling_down_leaves_one_member_at_a_time() {
    bounded(async {
        let cluster = Cluster::new("op_scale", 5);
        let (client, fake, ctx) = formed_group(&cluster, 3).await;
        // A replicated table with a row: a new member needs the table before it can join.
        add_replicated_table(&client, &fake, &ctx, "orders", orders()).await;
        cluster
            .client(1)
            .await
            .execute("INSERT INTO public.orders VALUES (1, 'tea')", &[])
            .await
            .unwrap();

        // Up to 5.
        fake.edit(NS, "paxosgroups", "shop", |g| {
            g["spec"]["members"] = json!(5)
        });
        reconcile(&client, &ctx).await.unwrap();
        assert_eq!(
            fake.get(NS, "statefulsets", "shop").unwrap()["spec"]["replicas"],
            5
        );
        pods_ready(&fake, 3..5);
        reconcile(&client, &ctx).await.unwrap();
        assert_eq!(status(&fake)["readyMembers"], 5);
        assert_eq!(members_seen_by(&cluster, 1).await, 5);
        // The new members got the table from its ReplicatedTable, and the group's rows with the join.
        for node in [4, 5] {
            let item: String = cluster
                .client(node)
                .await
                .query_one("SELECT item FROM public.orders WHERE id = 1", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(item, "tea", "node {node}");
        }

        // Down to 3: member 4 leaves, then member 3, and only then do their pods go.
        fake.edit(NS, "paxosgroups", "shop", |g| {
            g["spec"]["members"] = json!(3)
        });
        reconcile(&client, &ctx).await.unwrap();
        assert_eq!(members_seen_by(&cluster, 1).await, 4);
        // Clients stop reaching both departing members at once, before either is gone.
        assert_eq!(
            member_labels(&fake),
            labelled(&[
                ("shop-0", "true"),
                ("shop-1", "true"),
                ("shop-2", "true"),
                ("shop-3", "false"),
                ("shop-4", "false"),
            ])
        );
        assert_eq!(
            fake.get(NS, "statefulsets", "shop").unwrap()["spec"]["replicas"],
            5
        );
        assert_eq!(status(&fake)["phase"], "Scaling");
        reconcile(&client, &ctx).await.unwrap();
        assert_eq!(members_seen_by(&cluster, 1).await, 3);
        assert_eq!(
            fake.get(NS, "statefulsets", "shop").unwrap()["spec"]["replicas"],
            3
        );
        let s = status(&fake);
        assert_eq!(s["phase"], "Ready", "{s}");
        let events = fake.event_reasons(NS);
        assert_eq!(occurrences(&events, "MemberLeft"), 2, "{events:?}");
        // The group still works with the three that stayed.
        cluster
            .client(2)
            .await
            .execute("SELECT paxos_append('after-scale', 'shop', 'v')", &[])
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_waits_for_a_table_it_cannot_be_given() {
    bounded(async {
        let cluster = Cluster::new("op_manual_table", 2);
        let (client, fake, ctx) = formed_group(&cluster, 1).await;
        // A ReplicatedTable without columns: the table is made by hand on each member.
        cluster
            .client(1)
            .await
            .batch_execute("CREATE TABLE manual (id int PRIMARY KEY)")
            .await
            .unwrap();
        let manual = json!({ "group": "shop", "table": "manual" });
        add_replicated_table(&client, &fake, &ctx, "manual", manual).await;

        fake.edit(NS, "paxosgroups", "shop", |g| {
            g["spec"]["members"] = json!(2)
        });
        reconcile(&client, &ctx).await.unwrap();
        pods_ready(&fake, 1..2);
        let err = reconcile(&client, &ctx).await.unwrap_err();
        assert_eq!(err.reason(), "Waiting", "{err}");
        assert!(
            err.to_string().contains("manual") && err.to_string().contains("shop-1"),
            "{err}"
        );
        assert_eq!(
            group::error_policy(current(&client).await, &err, ctx.clone()),
            Action::requeue(Duration::from_secs(5)),
            "waits seconds, not the minutes of a spec error"
        );
        assert_eq!(members_seen_by(&cluster, 1).await, 1, "not added");

        cluster
            .client(2)
            .await
            .batch_execute("CREATE TABLE manual (id int PRIMARY KEY)")
            .await
            .unwrap();
        reconcile(&client, &ctx).await.unwrap();
        assert_eq!(members_seen_by(&cluster, 1).await, 2);
        assert_eq!(status(&fake)["phase"], "Ready");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departing_member_that_is_down_is_removed_through_member_0() {
    bounded(async {
        let cluster = Cluster::new("op_remove_down", 3);
        let (client, fake, ctx) = formed_group(&cluster, 3).await;
        assert_eq!(members_seen_by(&cluster, 1).await, 3);

        // Member 2 (node 3) is down when the group shrinks: it cannot leave by itself, so member
        // 0 removes it, once; the StatefulSet shrinks after that.
        cluster.stop(3);
        fake.edit(NS, "paxosgroups", "shop", |g| {
            g["spec"]["members"] = json!(2)
        });
        reconcile(&client, &ctx).await.unwrap();
        assert_eq!(members_seen_by(&cluster, 1).await, 2);
        reconcile(&client, &ctx).await.unwrap();
        assert_eq!(
            fake.get(NS, "statefulsets", "shop").unwrap()["spec"]["replicas"],
            2
        );
        let events = fake.event_reasons(NS);
        assert_eq!(occurrences(&events, "MemberLeft"), 1, "{events:?}");
        // The two that stayed form a majority of the new membership on their own.
        cluster
            .client(2)
            .await
            .execute("SELECT paxos_append('after-removal', 'shop', 'v')", &[])
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_member_0_is_down_is_still_observed_scaled_and_reported() {
    bounded(async {
        let cluster = Cluster::new("op_zero_down", 5);
        let (client, fake, ctx) = formed_group(&cluster, 3).await;

        // Member 0 (node 1) stops; its pod still counts as Ready (the kubelet has not noticed).
        // The pass works through member 1: the status keeps its rounds and names who is down.
        cluster.stop(1);
        reconcile(&client, &ctx).await.unwrap();
        let s = status(&fake);
        assert_eq!(s["phase"], "Degraded", "{s}");
        assert_eq!(s["readyMembers"], 2, "{s}");
        assert!(s["maxRound"].as_i64().is_some_and(|r| r > 0), "{s}");
        assert_eq!(s["members"][0]["reachable"], false, "{s}");
        assert_eq!(s["members"][1]["reachable"], true, "{s}");
        assert!(s["members"][1]["appliedRound"].as_i64().is_some(), "{s}");
        let degraded = condition(&s, "Degraded");
        assert_eq!(degraded["status"], "True", "{s}");
        assert_eq!(degraded["reason"], "MembersUnreachable", "{s}");
        let message = degraded["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("shop-0") && message.contains("majority"),
            "{message}"
        );
        // A majority answers: the group serves.
        assert_eq!(condition(&s, "Ready")["status"], "True", "{s}");
        assert!(fake
            .event_reasons(NS)
            .contains(&"MemberUnreachable".to_string()));

        // The kubelet notices; the group grows to 5 meanwhile: the new members join through
        // member 1, and nobody founds the group again.
        fake.edit(NS, "pods", "shop-0", |p| {
            p["status"]["conditions"][0]["status"] = json!("False")
        });
        fake.edit(NS, "paxosgroups", "shop", |g| {
            g["spec"]["members"] = json!(5)
        });
        reconcile(&client, &ctx).await.unwrap();
        pods_ready(&fake, 3..5);
        reconcile(&client, &ctx).await.unwrap();
        assert_eq!(members_seen_by(&cluster, 2).await, 5);
        let s = status(&fake);
        assert_eq!(s["phase"], "Degraded", "{s}");
        assert_eq!(s["readyMembers"], 4, "{s}");
        cluster
            .client(4)
            .await
            .execute("SELECT paxos_append('zero-down', 'shop', 'v')", &[])
            .await
            .unwrap();

        // Member 0 is back: the group is Ready with all five (seen through member 1, which learned
        // the joins member 0 missed).
        cluster.start(1);
        pods_ready(&fake, 0..1);
        reconcile(&client, &ctx).await.unwrap();
        let s = status(&fake);
        assert_eq!(s["phase"], "Ready", "{s}");
        assert_eq!(s["readyMembers"], 5, "{s}");
        assert_eq!(condition(&s, "Degraded")["status"], "False", "{s}");
        // Member 0 learns the changes it missed when it catches up: the same group, five members.
        cluster
            .client(1)
            .await
            .execute(
                "SELECT paxos_apply_log('check', 'shop', paxos_max_group_round('shop'))",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(members_seen_by(&cluster, 1).await, 5);
        let created = fake.event_reasons(NS);
        assert_eq!(occurrences(&created, "GroupCreated"), 1, "{created:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_data_is_removed_and_joins_again_as_a_new_voter() {
    bounded(async {
        let cluster = Cluster::new("op_replaced", 3);
        let (client, fake, ctx) = formed_group(&cluster, 3).await;
        // Member 2's volume is replaced: pg_paxos starts over there, with a new token.
        let c3 = cluster.client(3).await;
        c3.batch_execute("DROP EXTENSION pg_paxos CASCADE")
            .await
            .unwrap();
        reconcile(&client, &ctx).await.unwrap();
        let s = status(&fake);
        assert_eq!(s["phase"], "Ready", "{s}");
        assert_eq!(s["readyMembers"], 3, "{s}");
        let reasons = fake.event_reasons(NS);
        assert_eq!(occurrences(&reasons, "MemberReplaced"), 1, "{reasons:?}");
        // The old voter's membership was removed, then the node was added as the copy it is now.
        // Clients stopped reaching the wiped pod before its old membership was removed, and reach
        // it again once it joined.
        let label_patches: Vec<String> = fake
            .requests()
            .into_iter()
            .filter(|r| r.starts_with("PATCH") && r.contains("/pods/shop-2"))
            .collect();
        assert_eq!(
            label_patches.len(),
            3,
            "true, false, true: {label_patches:?}"
        );
        assert_eq!(
            member_labels(&fake)[2],
            ("shop-2".to_string(), "true".to_string())
        );
        let token: String = c3
            .query_one("SELECT paxos.node_identity()", &[])
            .await
            .unwrap()
            .get(0);
        let conninfo: String = c3
            .query_one("SELECT self_conninfo FROM paxos.groups", &[])
            .await
            .unwrap()
            .get(0);
        let c1 = cluster.client(1).await;
        let admitted: Option<String> = c1
            .query_one("SELECT paxos.admitted_token('shop', $1)", &[&conninfo])
            .await
            .unwrap()
            .get(0);
        assert_eq!(admitted.as_deref(), Some(token.as_str()));
        let changes: Vec<String> = c1
            .query(
                "SELECT value_kind FROM paxos.log WHERE group_id = 'shop' AND value_body = $1 \
                 AND value_kind IN ('add_host', 'remove_host') ORDER BY round",
                &[&conninfo],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(changes, ["add_host", "remove_host", "add_host"]);
        assert_eq!(members_seen_by(&cluster, 1).await, 3);
        c3.execute("SELECT paxos_append('replaced', 'shop', 'v')", &[])
            .await
            .unwrap();

        // A healthy member is never taken for a replaced one: the next pass changes nothing.
        reconcile(&client, &ctx).await.unwrap();
        let again = fake.event_reasons(NS);
        assert_eq!(occurrences(&again, "MemberReplaced"), 1, "{again:?}");
        assert_eq!(status(&fake)["phase"], "Ready");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_0_that_lost_its_data_alone_never_creates_a_second_group() {
    bounded(async {
        let cluster = Cluster::new("op_zero_wiped", 3);
        let (client, fake, ctx) = formed_group(&cluster, 3).await;
        assert!(status(&fake)["createdTime"].is_string());
        cluster
            .client(1)
            .await
            .execute("SELECT paxos_append('before', 'shop', 'v')", &[])
            .await
            .unwrap();
        // A full restart where member 0's volume was lost: member 0 is up first, alone.
        for node in [2, 3] {
            cluster.stop(node);
        }
        for pod in ["shop-1", "shop-2"] {
            fake.edit(NS, "pods", pod, |p| {
                p["status"]["conditions"][0]["status"] = json!("False")
            });
        }
        cluster
            .client(1)
            .await
            .batch_execute("DROP EXTENSION pg_paxos CASCADE")
            .await
            .unwrap();
        let err = reconcile(&client, &ctx).await.unwrap_err();
        assert_eq!(err.reason(), "Waiting", "{err}");
        assert!(err.to_string().contains("shop-0"), "{err}");
        let held: i64 = cluster
            .client(1)
            .await
            .query_one("SELECT count(*) FROM paxos.groups", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(held, 0, "member 0 created a second group");
        let s = status(&fake);
        assert_eq!(s["phase"], "Degraded", "{s}");
        assert_eq!(condition(&s, "Degraded")["reason"], "Waiting", "{s}");
        assert!(s["createdTime"].is_string(), "the failed pass kept it: {s}");

        // The others are back: member 0 is replaced through member 1 and joins as a new voter.
        for node in [2, 3] {
            cluster.start(node);
        }
        pods_ready(&fake, 1..3);
        reconcile(&client, &ctx).await.unwrap();
        let s = status(&fake);
        assert_eq!(s["phase"], "Ready", "{s}");
        assert_eq!(s["readyMembers"], 3, "{s}");
        let events = fake.event_reasons(NS);
        assert_eq!(occurrences(&events, "GroupCreated"), 1, "{events:?}");
        assert!(events.contains(&"MemberReplaced".to_string()), "{events:?}");
        let c1 = cluster.client(1).await;
        c1.execute(
            "SELECT paxos_apply_log('check', 'shop', paxos_max_group_round('shop'))",
            &[],
        )
        .await
        .unwrap();
        let before: i64 = c1
            .query_one(
                "SELECT count(*) FROM paxos.log WHERE group_id = 'shop' AND value_body = 'v'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(before, 1, "member 0 holds the group's log again");
        assert_eq!(members_seen_by(&cluster, 1).await, 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_goes_through_the_finalizer() {
    bounded(async {
        let cluster = Cluster::new("op_delete", 1);
        let (client, fake, ctx) = formed_group(&cluster, 1).await;
        let api: Api<PaxosGroup> = Api::namespaced(client.clone(), NS);
        api.delete("shop", &Default::default()).await.unwrap();
        assert!(
            fake.get(NS, "paxosgroups", "shop").is_some(),
            "the finalizer holds the group until cleanup ran"
        );
        reconcile(&client, &ctx).await.unwrap();
        assert!(fake.get(NS, "paxosgroups", "shop").is_none());
        assert!(fake.event_reasons(NS).contains(&"Deleting".to_string()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_set_degraded_with_an_event_and_requeue() {
    bounded(async {
        let (client, fake) = FakeKube::start();
        // Member 0 is unreachable: nothing listens on port 1.
        let ctx = context(client.clone(), vec![1]);
        fake.insert("paxosgroups", group_object(1, json!({})));
        pods_ready(&fake, 0..1);
        reconcile(&client, &ctx).await.unwrap();
        let err = reconcile(&client, &ctx).await.unwrap_err();
        assert_eq!(err.reason(), "MemberUnreachable", "{err}");
        let s = status(&fake);
        assert_eq!(s["phase"], "Degraded");
        assert_eq!(condition(&s, "Degraded")["status"], "True");
        assert_eq!(condition(&s, "Degraded")["reason"], "MemberUnreachable");
        assert!(fake
            .event_reasons(NS)
            .contains(&"MemberUnreachable".to_string()));
        let action = group::error_policy(current(&client).await, &err, ctx.clone());
        assert_ne!(action, Action::await_change(), "errors requeue");

        // An invalid spec: a parameter the operator manages, and a Secret that does not exist.
        for (extra, reason) in [
            (
                json!({"postgresParameters": {"shared_preload_libraries": "evil"}}),
                "InvalidSpec",
            ),
            (json!({"credentialsSecret": "missing"}), "InvalidSpec"),
        ] {
            fake.edit(NS, "paxosgroups", "shop", |g| {
                g["spec"] = group_object(1, extra.clone())["spec"].clone();
            });
            let err = reconcile(&client, &ctx).await.unwrap_err();
            assert_eq!(err.reason(), reason, "{err}");
            let degraded = condition(&status(&fake), "Degraded");
            assert_eq!(degraded["reason"], reason);
            assert!(!degraded["message"].as_str().unwrap_or_default().is_empty());
        }
        // Even member counts are allowed, with a warning.
        fake.edit(NS, "paxosgroups", "shop", |g| {
            g["spec"] = json!({"members": 2})
        });
        let _ = reconcile(&client, &ctx).await;
        assert!(fake
            .event_reasons(NS)
            .contains(&"EvenMemberCount".to_string()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_group_compacts_its_log_on_schedule_and_reports_the_round() {
    bounded(async {
        let cluster = Cluster::new("op_compact", 3);
        let (client, fake, ctx) = formed_group(&cluster, 3).await;
        assert!(
            status(&fake)["compactedThroughRound"].is_null(),
            "no schedule, no compaction"
        );
        fake.edit(NS, "paxosgroups", "shop", |g| {
            g["spec"]["logCompaction"] = json!({ "intervalSeconds": 3600 });
        });
        let c1 = cluster.client(1).await;
        let append = "SELECT paxos_append('test', 'shop', 'v')";
        let first: i64 = c1.query_one(append, &[]).await.unwrap().get(0);
        c1.query_one(append, &[]).await.unwrap();

        reconcile(&client, &ctx).await.unwrap();
        let s = status(&fake);
        let through = s["compactedThroughRound"].as_i64().expect("compacted");
        assert!(through >= first, "through {through}, appended in {first}");
        let at = s["lastCompactionTime"].clone();
        assert!(at.is_string(), "{s}");
        assert!(fake.event_reasons(NS).contains(&"LogCompacted".to_string()));
        let marked: i64 = c1
            .query_one(
                "SELECT compacted_through FROM paxos.groups WHERE group_id = 'shop'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(marked, through);

        // Not due again within the interval: the status keeps the last compaction.
        let later: i64 = c1.query_one(append, &[]).await.unwrap().get(0);
        c1.query_one(append, &[]).await.unwrap();
        reconcile(&client, &ctx).await.unwrap();
        let s = status(&fake);
        assert_eq!(s["compactedThroughRound"].as_i64(), Some(through));
        assert_eq!(s["lastCompactionTime"], at);

        // Once the interval has passed, the next pass compacts further.
        fake.edit(NS, "paxosgroups", "shop", |g| {
            g["status"]["lastCompactionTime"] = json!("2020-01-01T00:00:00Z");
        });
        reconcile(&client, &ctx).await.unwrap();
        let again = status(&fake)["compactedThroughRound"]
            .as_i64()
            .expect("compacted");
        assert!(again >= later, "again {again}, appended in {later}");
    })
    .await;
}
