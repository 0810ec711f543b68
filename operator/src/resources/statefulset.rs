//! The StatefulSet of a group's members: stable names and volumes per member, PostgreSQL 15 with
//! pg_paxos preloaded and the pod name as `pg_paxos.node_id`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::config::CONFIG_FILE;
use super::{labels, owned_meta, selector, Names, PASSFILE_DIR, POSTGRES_PORT, SUPERUSER};
use crate::crd::PaxosGroup;

const DATA_DIR: &str = "/var/lib/postgresql/data";
const CONFIG_DIR: &str = "/etc/pg-paxos/config";
/// The uid and gid of `postgres` in the official PostgreSQL images.
const POSTGRES_UID: i64 = 999;

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

pub fn stateful_set(group: &PaxosGroup, names: &Names) -> StatefulSet {
    let secret = names.credentials_secret(group);
    let container = Container {
        name: "postgres".into(),
        image: Some(group.spec.image.clone()),
        // `$(POD_NAME)` is expanded by Kubernetes: each member's node id is its pod name.
        args: Some(vec![
            "postgres".into(),
            "-c".into(),
            format!("config_file={CONFIG_DIR}/{CONFIG_FILE}"),
            "-c".into(),
            "pg_paxos.node_id=$(POD_NAME)".into(),
        ]),
        env: Some(vec![
            EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            EnvVar {
                name: "POSTGRES_PASSWORD".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: "password".into(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            env("POSTGRES_USER", SUPERUSER),
            env("POSTGRES_DB", &group.spec.database),
            env("PGDATA", &format!("{DATA_DIR}/pgdata")),
            // pg_paxos reads the members' password from here (libpq's variable and format).
            env("PGPASSFILE", &format!("{PASSFILE_DIR}/pgpass")),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".into()),
            container_port: POSTGRES_PORT.into(),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "pg_isready".into(),
                    "-h".into(),
                    "127.0.0.1".into(),
                    "-U".into(),
                    SUPERUSER.into(),
                ]),
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        resources: group.spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "credentials".into(),
                mount_path: PASSFILE_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                // Readable by the postgres group only (fsGroup below).
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(labels(names)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: group.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(group.spec.storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: owned_meta(group, names, names.stateful_set()),
        spec: Some(StatefulSetSpec {
            replicas: Some(group.spec.members),
            service_name: Some(names.members_service()),
            // Members start together: none of them can become ready alone.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector(names)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(names)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(POSTGRES_UID),
                        run_as_group: Some(POSTGRES_UID),
                        fs_group: Some(POSTGRES_UID),
                        run_as_non_root: Some(true),
                        ..PodSecurityContext::default()
                    }),
                    automount_service_account_token: Some(false),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    #[test]
    fn members_preload_pg_paxos_with_their_pod_name_as_node_id() {
        let group = fixtures::group("members: 5\nstorage: {size: 20Gi, storageClassName: fast}");
        let names = Names::of(&group).unwrap();
        let sts = stateful_set(&group, &names);
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(5));
        assert_eq!(spec.service_name.as_deref(), Some("shop-members"));
        let template_labels = spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in spec.selector.match_labels.unwrap() {
            assert_eq!(
                template_labels.get(&k),
                Some(&v),
                "selector {k} matches the pods"
            );
        }
        let pod = spec.template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        assert!(args.contains(&"pg_paxos.node_id=$(POD_NAME)".to_string()));
        let env = pod.containers[0].env.clone().unwrap();
        let password = env.iter().find(|e| e.name == "POSTGRES_PASSWORD").unwrap();
        assert!(
            password.value.is_none(),
            "the password comes from the Secret only"
        );
        assert_eq!(
            password
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "shop-credentials"
        );
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "20Gi"
        );
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    }
}
