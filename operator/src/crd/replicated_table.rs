//! `ReplicatedTable`: a table whose writes go through a group's log.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A table to replicate in a group.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "pgpaxos.io",
    version = "v1alpha1",
    kind = "ReplicatedTable",
    namespaced,
    shortname = "rtab",
    status = "ReplicatedTableStatus",
    printcolumn = r#"{"name":"Group","type":"string","jsonPath":".spec.group"}"#,
    printcolumn = r#"{"name":"Table","type":"string","jsonPath":".spec.table"}"#,
    printcolumn = r#"{"name":"Replicated","type":"string","jsonPath":".status.conditions[?(@.type==\"Replicated\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedTableSpec {
    /// Name of the PaxosGroup in the same namespace.
    #[schemars(length(min = 1, max = 63))]
    pub group: String,
    /// The table: `schema.table` or `table` (schema `public`), each part a plain name (it is
    /// quoted, never parsed as SQL).
    #[schemars(length(min = 1, max = 127))]
    pub table: String,
    /// Column definitions, e.g. `id bigint PRIMARY KEY, v text`, used to create the table on a
    /// member where it is missing. Without it, the table must exist on every member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<String>,
}

/// The observed state of a replicated table.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedTableStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the members where the table is registered.
    #[serde(default)]
    pub members: Vec<String>,
    /// `Replicated` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
