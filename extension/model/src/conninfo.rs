//! Connection strings of members. The string a member was added with is its identity in the group;
//! the settings used to reach it are parsed into a `tokio_postgres::Config` field by field, and only
//! a credential-free description of it is ever shown.

use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::Config;

use crate::error::{ModelError, Result};

/// Defaults a connection string may leave out, filled from the local server like libpq would.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub user: String,
    pub dbname: String,
}

/// Parses `conninfo` (libpq key=value syntax) into connection settings for a member.
pub fn parse(conninfo: &str, defaults: &Defaults, connect_timeout: Duration) -> Result<Config> {
    if conninfo.trim().is_empty() {
        return Err(ModelError::BadConnectionString {
            reason: "it is empty".into(),
        });
    }
    if conninfo.contains('\0') {
        return Err(ModelError::BadConnectionString {
            reason: "it contains a NUL byte".into(),
        });
    }
    let mut config: Config =
        conninfo
            .parse()
            .map_err(|e: tokio_postgres::Error| ModelError::BadConnectionString {
                reason: e.to_string(),
            })?;
    if config.get_hosts().is_empty() {
        return Err(ModelError::BadConnectionString {
            reason: "it names no host".into(),
        });
    }
    if config.get_user().is_none() {
        config.user(&defaults.user);
    }
    if config.get_dbname().is_none() {
        config.dbname(&defaults.dbname);
    }
    config
        .application_name("pg_paxos")
        .connect_timeout(connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        // Acceptor replies must be durable before they are sent, and nothing a member runs for us
        // may resolve names through a schema its users can write to.
        .options("-c synchronous_commit=on -c search_path=pg_catalog");
    Ok(config)
}

/// A description of a member for messages and status: host, port, database and user, never a
/// password.
pub fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let mut out = format!("host={}", hosts.join(","));
    if !ports.is_empty() {
        out.push_str(&format!(" port={}", ports.join(",")));
    }
    if let Some(db) = config.get_dbname() {
        out.push_str(&format!(" dbname={db}"));
    }
    if let Some(user) = config.get_user() {
        out.push_str(&format!(" user={user}"));
    }
    out
}

/// Removes any password from a connection string that is about to be shown, keeping its shape.
pub fn redact(conninfo: &str) -> String {
    let mut out = String::with_capacity(conninfo.len());
    let mut rest = conninfo;
    while let Some(pos) = rest.find("password") {
        let (before, after) = rest.split_at(pos);
        out.push_str(before);
        let tail = after["password".len()..].trim_start();
        if let Some(value) = tail.strip_prefix('=') {
            out.push_str("password=********");
            rest = skip_value(value.trim_start());
        } else {
            out.push_str("password");
            rest = &after["password".len()..];
        }
    }
    out.push_str(rest);
    out
}

/// Skips one libpq value: quoted with backslash escapes, or up to the next whitespace.
fn skip_value(s: &str) -> &str {
    if let Some(quoted) = s.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '\'' if !escaped => return &quoted[i + 1..],
                _ => escaped = false,
            }
        }
        ""
    } else {
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        &s[end..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            user: "postgres".into(),
            dbname: "app".into(),
        }
    }

    #[test]
    fn fills_defaults_and_describes_without_password() {
        let c = parse(
            "host=127.0.0.1 port=5433 password=secret",
            &defaults(),
            Duration::from_secs(1),
        )
        .unwrap();
        let d = describe(&c);
        assert_eq!(d, "host=127.0.0.1 port=5433 dbname=app user=postgres");
        assert!(!d.contains("secret"));
    }

    #[test]
    fn rejects_garbage_and_missing_host() {
        for bad in [
            "",
            "   ",
            "port=5432",
            "host=a bogus_key=1",
            "host='unterminated",
        ] {
            assert!(
                matches!(
                    parse(bad, &defaults(), Duration::from_secs(1)),
                    Err(ModelError::BadConnectionString { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("host=a password=s3cr3t port=1"),
            "host=a password=******** port=1"
        );
        assert_eq!(
            redact("host=a password = 'a b\\' c' port=1"),
            "host=a password=******** port=1"
        );
        assert_eq!(redact("host=a"), "host=a");
    }
}
