//! `PaxosGroup`: a group of PostgreSQL servers with pg_paxos, one pod per member.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of a group.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "pgpaxos.io",
    version = "v1alpha1",
    kind = "PaxosGroup",
    namespaced,
    shortname = "pxg",
    status = "PaxosGroupStatus",
    scale = r#"{"specReplicasPath":".spec.members","statusReplicasPath":".status.readyMembers","labelSelectorPath":".status.selector"}"#,
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".spec.members"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyMembers"}"#,
    printcolumn = r#"{"name":"Max Round","type":"integer","jsonPath":".status.maxRound"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PaxosGroupSpec {
    /// Number of members. A group of N tolerates (N-1)/2 members down, so odd counts are best.
    #[serde(default = "default_members")]
    #[schemars(range(min = 1, max = 15))]
    pub members: i32,
    /// PostgreSQL 15 image with pg_paxos installed.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Persistent storage of each member.
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory of each member's PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The database the group lives in (the extension is created there).
    #[serde(default = "default_database")]
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
    /// Name of a Secret with keys `username` and `password` for the superuser the members and the
    /// operator connect as. When absent the operator creates `<group>-credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Extra `postgresql.conf` parameters. Those pg_paxos needs (`shared_preload_libraries`,
    /// `pg_paxos.node_id`, `listen_addresses`) are set by the operator.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub postgres_parameters: BTreeMap<String, String>,
    /// Compacts the group's log (`paxos_compact_log`) this often while the group is Ready: every
    /// member drops the values and votes of the rounds all members applied. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_compaction: Option<LogCompaction>,
}

/// When the operator compacts a group's log.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogCompaction {
    /// Seconds between two compactions.
    #[schemars(range(min = 60))]
    pub interval_seconds: i64,
}

/// Persistent volume of one member.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of the volume, e.g. `10Gi`.
    #[serde(default = "default_storage_size")]
    pub size: String,
    /// Storage class; the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_members() -> i32 {
    3
}

pub fn default_image() -> String {
    "ghcr.io/pg-paxos/postgres-pg-paxos:0.1.0".into()
}

fn default_database() -> String {
    "postgres".into()
}

fn default_storage_size() -> String {
    "1Gi".into()
}

/// Where a group is in its life.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Phase {
    /// Objects are being created or pods are starting.
    #[default]
    Pending,
    /// Members are creating or joining the group.
    Forming,
    /// Every member joined and answers.
    Ready,
    /// Something failed, or a member does not answer (the Ready condition stays True while a
    /// majority does); the conditions and events say what.
    Degraded,
    /// Departing members are leaving the group (scale down).
    Scaling,
    /// The resource is being deleted.
    Deleting,
}

/// The observed state of a group.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaxosGroupStatus {
    #[serde(default)]
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Highest round accepted in the group, as reported by a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_round: Option<i64>,
    /// Members whose pod is ready and that joined the group.
    #[serde(default)]
    pub ready_members: i32,
    /// Label selector of the member pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// `Ready`, `MembersJoined` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The round the log was last compacted through (see `spec.logCompaction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted_through_round: Option<i64>,
    /// When the operator last compacted the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_compaction_time: Option<Time>,
    /// When a pass first found the group created. From then on the operator never creates it
    /// again: with no member that holds it answering (member 0 lost its data while the others
    /// are down), a pass waits instead of starting a second group under the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<Time>,
}

/// One member as last seen.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub pod: String,
    pub node_id: String,
    pub reachable: bool,
    pub joined: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_round: Option<i64>,
}
