//! The PostgreSQL configuration of a group's members: what pg_paxos needs, then the spec's extra
//! parameters (which may not override those).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{owned_meta, Names};
use crate::crd::PaxosGroup;
use crate::error::{Error, Result};

/// The file name of the configuration in the ConfigMap and in the pod.
pub const CONFIG_FILE: &str = "postgresql.conf";

/// Parameters the operator sets itself.
const MANAGED: [&str; 4] = [
    "listen_addresses",
    "port",
    "shared_preload_libraries",
    "pg_paxos.node_id",
];

pub fn config_map(group: &PaxosGroup, names: &Names) -> Result<ConfigMap> {
    Ok(ConfigMap {
        metadata: owned_meta(group, names, names.config_map()),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            postgresql_conf(&group.spec.postgres_parameters)?,
        )])),
        ..ConfigMap::default()
    })
}

/// `postgresql.conf`: every value quoted, names checked.
pub fn postgresql_conf(extra: &BTreeMap<String, String>) -> Result<String> {
    let mut conf = String::from(
        "# Managed by pg-paxos-operator.\n\
         listen_addresses = '*'\n\
         shared_preload_libraries = 'pg_paxos'\n",
    );
    for (name, value) in extra {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
        if !valid {
            return Err(Error::InvalidSpec(format!(
                "postgresParameters: {name:?} is not a parameter name (lower-case letters, digits, '_' and '.')"
            )));
        }
        if MANAGED.contains(&name.as_str()) {
            return Err(Error::InvalidSpec(format!(
                "postgresParameters: {name} is set by the operator"
            )));
        }
        if value.contains(['\n', '\r', '\0']) {
            return Err(Error::InvalidSpec(format!(
                "postgresParameters: the value of {name} has a line break"
            )));
        }
        let quoted = value.replace('\\', "\\\\").replace('\'', "''");
        conf.push_str(&format!("{name} = '{quoted}'\n"));
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn values_are_quoted_and_managed_names_refused() {
        let conf = postgresql_conf(&params(&[
            ("work_mem", "64MB"),
            ("pg_paxos.round_timeout", "5s"),
            ("application_name", "it's"),
        ]))
        .unwrap();
        assert!(conf.contains("shared_preload_libraries = 'pg_paxos'\n"));
        assert!(conf.contains("work_mem = '64MB'\n"));
        assert!(conf.contains("application_name = 'it''s'\n"));
        for bad in [
            ("shared_preload_libraries", "x"),
            ("pg_paxos.node_id", "n"),
            ("work_mem = '1'\nfsync", "off"),
            ("Work_Mem", "1"),
            ("work_mem", "1'\nfsync = 'off"),
        ] {
            assert!(postgresql_conf(&params(&[bad])).is_err(), "{bad:?}");
        }
    }
}
