//! The Helm chart, rendered with its default values by a minimal renderer (the templates use
//! nothing but value substitution, so a renderer this small can check them), then checked: kinds
//! and names, selectors that match their pods, RBAC without wildcards, a hardened container, CRDs
//! identical to the generated ones, and example manifests that parse as the Rust types.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/pg-paxos-operator")
}

fn lookup<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(values, |v, key| v.get(key))
}

/// Substitutes `{{ .Values.x.y }}`, `{{ .Release.Name }}`, `{{ .Release.Namespace }}` and
/// `{{ .Chart.AppVersion }}`; any other template construct fails the test.
fn render(template: &str, values: &Value, app_version: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("unclosed {{") + start;
        let expr = rest[start + 2..end].trim();
        let value = match expr {
            ".Release.Name" => "pg-paxos".to_string(),
            ".Release.Namespace" => "pg-paxos-system".to_string(),
            ".Chart.AppVersion" => app_version.to_string(),
            e if e.starts_with(".Values.") => {
                let v = lookup(values, &e[".Values.".len()..])
                    .unwrap_or_else(|| panic!("no value for {e}"));
                match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => panic!("{e} is not a scalar: {other:?}"),
                }
            }
            other => panic!("template construct this chart must not use: {{{{ {other} }}}}"),
        };
        out.push_str(&value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

fn rendered() -> Vec<Value> {
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    let chart_yaml: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    let app_version = chart_yaml["appVersion"].as_str().unwrap().to_string();
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(chart().join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let text = render(
            &std::fs::read_to_string(&file).unwrap(),
            &values,
            &app_version,
        );
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{file:?}: {e}"));
            if !value.is_null() {
                docs.push(value);
            }
        }
    }
    docs
}

use serde::Deserialize;

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn the_chart_renders_the_objects_the_operator_needs() {
    let docs = rendered();
    let mut kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "ServiceAccount"
        ]
    );
    let deployment = find(&docs, "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in deployment["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(
            &pod_labels[k], v,
            "the Deployment's selector matches its pods"
        );
    }
    for (k, v) in find(&docs, "Service")["spec"]["selector"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(&pod_labels[k], v, "the Service's selector matches the pods");
    }
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["serviceAccountName"],
        find(&docs, "ServiceAccount")["metadata"]["name"]
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        "ghcr.io/pg-paxos/pg-paxos-operator:0.1.0"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
}

#[test]
fn rbac_has_no_wildcards_and_only_reads_and_creates_secrets() {
    let docs = rendered();
    let role = find(&docs, "ClusterRole");
    for rule in role["rules"].as_sequence().unwrap() {
        for field in ["apiGroups", "resources", "verbs"] {
            for item in rule[field].as_sequence().unwrap() {
                assert_ne!(item.as_str(), Some("*"), "wildcard in {field}: {rule:?}");
            }
        }
        let resources = rule["resources"].as_sequence().unwrap();
        if resources.iter().any(|r| r == "secrets") {
            let verbs: Vec<&str> = rule["verbs"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(verbs, ["get", "create"]);
        }
        let verbs = rule["verbs"].as_sequence().unwrap();
        assert!(
            !verbs.iter().any(|v| v == "delete"),
            "the operator deletes nothing: {rule:?}"
        );
    }
    let binding = find(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let account = find(&docs, "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["namespace"],
        account["metadata"]["namespace"]
    );
}

#[test]
fn the_chart_ships_the_generated_crds() {
    for (file, crd) in pg_paxos_operator::crd::all() {
        let shipped = std::fs::read_to_string(chart().join("crds").join(file)).unwrap_or_default();
        assert!(
            shipped == pg_paxos_operator::crd::to_yaml(&crd),
            "charts/pg-paxos-operator/crds/{file} is stale: run crdgen"
        );
    }
}

#[test]
fn the_examples_are_valid_resources() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/examples");
    let group: pg_paxos_operator::crd::PaxosGroup =
        serde_yaml::from_str(&std::fs::read_to_string(examples.join("paxosgroup.yaml")).unwrap())
            .unwrap();
    assert_eq!(group.spec.members, 3);
    assert_eq!(
        group.spec.log_compaction.map(|c| c.interval_seconds),
        Some(3600)
    );
    let table: pg_paxos_operator::crd::ReplicatedTable = serde_yaml::from_str(
        &std::fs::read_to_string(examples.join("replicatedtable.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(table.spec.group, "mokka");
    pg_paxos_operator::sql::calls::qualified_table(&table.spec.table).unwrap();
    pg_paxos_operator::sql::calls::create_table("t", table.spec.columns.as_deref().unwrap())
        .unwrap();
}
