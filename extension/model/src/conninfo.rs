//! Connection strings of members. The string a member was added with is its identity in the group;
//! the settings used to reach it are parsed into a `tokio_postgres::Config` field by field, and only
//! a credential-free description of it is ever shown.

use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::Config;

use crate::error::{ModelError, Result};

/// Defaults a connection string may leave out, filled from the local server like libpq would.
#[derive(Clone)]
pub struct Defaults {
    pub user: String,
    pub dbname: String,
    /// The contents of the password file (`$PGPASSFILE`, else `~/.pgpass`), consulted like libpq
    /// does for a connection string without a password.
    pub passfile: Option<String>,
    /// This node's id: connections say `application_name = 'pg_paxos/<node id>'`, so a member
    /// (and a test's link proxy) can tell which node is calling.
    pub node_id: String,
}

impl std::fmt::Debug for Defaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Defaults")
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("passfile", &self.passfile.as_ref().map(|_| "<hidden>"))
            .field("node_id", &self.node_id)
            .finish()
    }
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
    if config.get_password().is_none() {
        if let (Some(passfile), [Host::Tcp(host), ..]) = (&defaults.passfile, config.get_hosts()) {
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let (dbname, user) = (
                config.get_dbname().unwrap_or_default().to_string(),
                config.get_user().unwrap_or_default().to_string(),
            );
            if let Some(password) = passfile_password(passfile, host, port, &dbname, &user) {
                config.password(password);
            }
        }
    }
    config
        .application_name(format!("pg_paxos/{}", defaults.node_id))
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

/// The password for a connection in a libpq password file: the first line
/// `host:port:database:user:password` whose first four fields match (`*` matches anything; `\`
/// escapes `:` and `\`); `#` starts a comment line.
pub fn passfile_password(
    contents: &str,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<String> {
    let port = port.to_string();
    let wanted = [host, port.as_str(), dbname, user];
    contents
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = passfile_fields(line);
            if fields.len() != 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|(field, value)| field == "*" || field == value);
            matches.then(|| fields[4].clone())
        })
}

fn passfile_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c)
                }
            }
        }
    }
    fields
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
            passfile: None,
            node_id: "n1".into(),
        }
    }

    #[test]
    fn a_password_file_supplies_missing_passwords() {
        let passfile = "# members\n\
            other:*:*:*:wrong\n\
            db-1.svc:5432:*:postgres:p\\:w\\\\d\n\
            *:*:*:*:fallback\n";
        let with_file = Defaults {
            passfile: Some(passfile.into()),
            ..defaults()
        };
        let timeout = Duration::from_secs(1);
        let config = parse("host=db-1.svc port=5432", &with_file, timeout).unwrap();
        assert_eq!(config.get_password(), Some(&b"p:w\\d"[..]));
        let config = parse("host=db-2.svc", &with_file, timeout).unwrap();
        assert_eq!(config.get_password(), Some(&b"fallback"[..]));
        // A password in the connection string wins; without a file there is none.
        let config = parse("host=db-1.svc password=given", &with_file, timeout).unwrap();
        assert_eq!(config.get_password(), Some(&b"given"[..]));
        let config = parse("host=db-1.svc", &defaults(), timeout).unwrap();
        assert_eq!(config.get_password(), None);
        assert!(!format!("{with_file:?}").contains("fallback"));
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
