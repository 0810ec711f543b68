//! What the reconcilers share: the Kubernetes client, the event recorder, metrics, and how to
//! reach a member (by its DNS name in a cluster; tests point it at local nodes).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};

use super::metrics::Metrics;
use crate::error::{Error, Result};
use crate::resources::Names;
use crate::sql::{Credentials, Member};

/// How the operator reaches member `ordinal` of a group, given the group's database.
pub type MemberAddresses = Arc<dyn Fn(&Names, i32, &str) -> Member + Send + Sync>;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub addresses: MemberAddresses,
    /// Bound on connecting to a member and on each call.
    pub sql_timeout: Duration,
}

impl Context {
    /// A context reaching members by their stable DNS names.
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Context {
        Context::with_addresses(
            client,
            metrics,
            Arc::new(|names: &Names, ordinal, database: &str| names.member(ordinal, database)),
        )
    }

    pub fn with_addresses(
        client: Client,
        metrics: Arc<Metrics>,
        addresses: MemberAddresses,
    ) -> Context {
        let reporter = Reporter {
            controller: super::MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            addresses,
            sql_timeout: Duration::from_secs(10),
        }
    }

    /// Publishes an event about `object`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.publish(object, None, warning, reason, action, note)
            .await
    }

    /// Publishes an event about `object` concerning one member's pod (events about different
    /// pods are kept apart instead of counted as one series).
    pub async fn member_event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        pod: &str,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let pod_ref = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: object.meta().namespace.clone(),
            ..ObjectReference::default()
        };
        self.publish(object, Some(pod_ref), false, reason, action, note)
            .await
    }

    async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        secondary: Option<ObjectReference>,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary,
        };
        if let Err(e) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish an event");
        }
    }

    /// The superuser password from a group's credentials Secret.
    pub async fn credentials(&self, namespace: &str, secret: &str) -> Result<Credentials> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let Some(found) = api.get_opt(secret).await? else {
            return Err(Error::NotReady(format!(
                "Secret {secret} does not exist yet"
            )));
        };
        let password = found
            .data
            .as_ref()
            .and_then(|d| d.get("password"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| {
                Error::InvalidSpec(format!("Secret {secret} has no key \"password\""))
            })?;
        Ok(Credentials {
            password: Some(password),
        })
    }
}
