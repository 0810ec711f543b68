//! How the operator and the other members reach one member. Connection settings are built field by
//! field; the connection string a member is known by in its group carries no password (members
//! authenticate with a password file the operator mounts).

use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};

use crate::error::{Error, Result};

/// A member's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The name shown in status and errors (the pod name).
    pub name: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
}

/// The password the operator connects with, kept out of `Debug` output.
#[derive(Clone, Default)]
pub struct Credentials {
    pub password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { password: <hidden> }")
    }
}

impl Member {
    /// The connection string the member is known by in its group: libpq syntax, every value
    /// quoted, no password.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} dbname={} user={}",
            conninfo_value(&self.host),
            self.port,
            conninfo_value(&self.database),
            conninfo_value(&self.user)
        )
    }

    fn config(&self, credentials: &Credentials, timeout: Duration) -> Config {
        let mut config = Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .dbname(&self.database)
            .user(&self.user)
            .application_name("pg-paxos-operator")
            .connect_timeout(timeout);
        if let Some(password) = &credentials.password {
            config.password(password);
        }
        config
    }

    /// Connects, within `timeout`.
    pub async fn connect(&self, credentials: &Credentials, timeout: Duration) -> Result<Client> {
        let config = self.config(credentials, timeout);
        let connecting = config.connect(NoTls);
        let (client, connection) = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| Error::Unreachable {
                member: self.name.clone(),
                reason: format!("no connection within {} ms", timeout.as_millis()),
            })?
            .map_err(|e| Error::Unreachable {
                member: self.name.clone(),
                reason: e.to_string(),
            })?;
        tokio::spawn(async move {
            // The connection ends when the client is dropped; its error is reported by the calls.
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// A libpq connection-string value: single-quoted, with backslashes and quotes escaped.
pub fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> Member {
        Member {
            name: "g-0".into(),
            host: "g-0.g-members.ns.svc".into(),
            port: 5432,
            database: "app's db".into(),
            user: "postgres".into(),
        }
    }

    #[test]
    fn conninfo_quotes_every_value_and_has_no_password() {
        let conninfo = member().conninfo();
        assert_eq!(
            conninfo,
            "host='g-0.g-members.ns.svc' port=5432 dbname='app\\'s db' user='postgres'"
        );
        // tokio-postgres reads it back as the same fields.
        let parsed: Config = conninfo.parse().unwrap();
        assert_eq!(parsed.get_dbname(), Some("app's db"));
        assert_eq!(parsed.get_password(), None);
    }

    #[test]
    fn credentials_never_print() {
        let c = Credentials {
            password: Some("s3cret".into()),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
        let config = member().config(&c, Duration::from_secs(1));
        assert_eq!(config.get_password(), Some(&b"s3cret"[..]));
    }
}
