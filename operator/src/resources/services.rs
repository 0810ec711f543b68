//! The Services of a group: a headless one that gives each member a stable DNS name (published
//! before the pod is ready, since members must reach each other to become ready), and one for
//! clients, which reaches only pods that joined the group.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{client_selector, owned_meta, selector, Names, POSTGRES_PORT};
use crate::crd::PaxosGroup;

fn port() -> ServicePort {
    ServicePort {
        name: Some("postgres".into()),
        port: POSTGRES_PORT.into(),
        target_port: Some(IntOrString::String("postgres".into())),
        ..ServicePort::default()
    }
}

pub fn members_service(group: &PaxosGroup, names: &Names) -> Service {
    Service {
        metadata: owned_meta(group, names, names.members_service()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(names)),
            ports: Some(vec![port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub fn client_service(group: &PaxosGroup, names: &Names) -> Service {
    Service {
        metadata: owned_meta(group, names, names.client_service()),
        spec: Some(ServiceSpec {
            selector: Some(client_selector(names)),
            ports: Some(vec![port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
