//! The Kubernetes objects a PaxosGroup owns, built by pure functions from the resource: names,
//! labels and owner references in one place, one module per kind.

mod config;
mod disruption;
mod secret;
mod services;
mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::PaxosGroup;
use crate::error::{Error, Result};
use crate::sql::Member;

pub use config::config_map;
pub use disruption::disruption_budget;
pub use secret::{credentials_secret, generated_password};
pub use services::{client_service, members_service};
pub use statefulset::stateful_set;

/// The port PostgreSQL listens on in every member pod.
pub const POSTGRES_PORT: u16 = 5432;
/// The superuser the official PostgreSQL image creates.
pub const SUPERUSER: &str = "postgres";
/// Where the credentials Secret's password file is mounted in member pods.
pub const PASSFILE_DIR: &str = "/etc/pg-paxos/credentials";

/// Names of everything one group owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub group: String,
    pub namespace: String,
}

impl Names {
    pub fn of(group: &PaxosGroup) -> Result<Names> {
        Ok(Names {
            group: group.name_any(),
            namespace: group
                .namespace()
                .ok_or_else(|| Error::NoNamespace(group.name_any()))?,
        })
    }

    pub fn stateful_set(&self) -> String {
        self.group.clone()
    }

    pub fn client_service(&self) -> String {
        self.group.clone()
    }

    pub fn members_service(&self) -> String {
        format!("{}-members", self.group)
    }

    pub fn config_map(&self) -> String {
        format!("{}-config", self.group)
    }

    pub fn generated_secret(&self) -> String {
        format!("{}-credentials", self.group)
    }

    /// The Secret with the credentials: the one the spec names, or the generated one.
    pub fn credentials_secret(&self, group: &PaxosGroup) -> String {
        group
            .spec
            .credentials_secret
            .clone()
            .unwrap_or_else(|| self.generated_secret())
    }

    pub fn disruption_budget(&self) -> String {
        self.group.clone()
    }

    /// The pod of member `ordinal` (0-based, as the StatefulSet numbers them).
    pub fn pod(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.group)
    }

    /// How members and the operator reach member `ordinal`: its stable DNS name through the
    /// headless service.
    pub fn member(&self, ordinal: i32, database: &str) -> Member {
        Member {
            name: self.pod(ordinal),
            host: format!(
                "{}.{}.{}.svc",
                self.pod(ordinal),
                self.members_service(),
                self.namespace
            ),
            port: POSTGRES_PORT,
            database: database.to_string(),
            user: SUPERUSER.to_string(),
        }
    }
}

/// Labels of every object of a group; the pod selector is a subset of them.
pub fn labels(names: &Names) -> BTreeMap<String, String> {
    let mut labels = selector(names);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "pg-paxos-operator".into(),
    );
    labels
}

/// The label the operator sets on a pod once its node belongs to the group ("true"), and clears
/// ("false") before it leaves or is replaced after losing its data.
pub const MEMBER_LABEL: &str = "pgpaxos.io/member";

/// The labels that select the pods clients reach: those of member pods that joined the group. A
/// pod that did not join yet, or lost its data, would take writes the group never sees on its
/// tables, and its join replaces those tables with the group's.
pub fn client_selector(names: &Names) -> BTreeMap<String, String> {
    let mut labels = selector(names);
    labels.insert(MEMBER_LABEL.into(), "true".into());
    labels
}

/// The labels that select a group's member pods.
pub fn selector(names: &Names) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "pg-paxos".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            names.group.clone(),
        ),
    ])
}

/// The selector as the string the scale subresource reports.
pub fn selector_string(names: &Names) -> String {
    selector(names)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Metadata of an owned object: name, namespace, labels, and the group as controlling owner (so
/// Kubernetes deletes it with the group).
pub fn owned_meta(group: &PaxosGroup, names: &Names, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels(names)),
        owner_references: owner_reference(group).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

fn owner_reference(group: &PaxosGroup) -> Option<OwnerReference> {
    group.controller_owner_ref(&())
}

#[cfg(test)]
pub(crate) mod fixtures {
    use kube::api::ObjectMeta;

    use crate::crd::{PaxosGroup, PaxosGroupSpec};

    /// A group as the API server returns it, parsed from YAML with defaults applied.
    pub fn group(yaml_spec: &str) -> PaxosGroup {
        let spec: PaxosGroupSpec = serde_yaml::from_str(yaml_spec).expect("spec");
        let mut group = PaxosGroup::new("shop", spec);
        group.metadata = ObjectMeta {
            name: Some("shop".into()),
            namespace: Some("prod".into()),
            uid: Some("0b5e4c5e-1111-4222-8333-444455556666".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_members_follow_the_group() {
        let group = fixtures::group("members: 3");
        let names = Names::of(&group).unwrap();
        assert_eq!(names.pod(2), "shop-2");
        let member = names.member(1, "app");
        assert_eq!(member.host, "shop-1.shop-members.prod.svc");
        assert_eq!(
            member.conninfo(),
            "host='shop-1.shop-members.prod.svc' port=5432 dbname='app' user='postgres'"
        );
        assert_eq!(names.credentials_secret(&group), "shop-credentials");
        let meta = owned_meta(&group, &names, names.config_map());
        let owner = &meta.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "PaxosGroup");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(
            selector_string(&names),
            "app.kubernetes.io/instance=shop,app.kubernetes.io/name=pg-paxos"
        );
    }
}
