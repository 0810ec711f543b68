//! Bodies of the log entries that carry two fields. Each is `<bytes of the first field>:<first
//! field><second field>`, so no separator inside a name or statement can be mistaken for a field
//! boundary.

use crate::error::{ModelError, Result};

fn encode_pair(first: &str, second: &str) -> String {
    format!("{}:{first}{second}", first.len())
}

fn decode_pair<'a>(what: &str, body: &'a str) -> Result<(&'a str, &'a str)> {
    let bad = || ModelError::MalformedEntry(what.to_string());
    let (len, rest) = body.split_once(':').ok_or_else(bad)?;
    let len: usize = len.parse().map_err(|_| bad())?;
    if !rest.is_char_boundary(len.min(rest.len())) || len > rest.len() {
        return Err(bad());
    }
    Ok(rest.split_at(len))
}

/// A write to replicated tables: the statement, and the role it ran as on the proposing node (it
/// runs as that role on every node, so the log cannot be used to gain privileges).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedStatement {
    pub role: String,
    pub sql: String,
}

impl LoggedStatement {
    pub fn encode(&self) -> String {
        encode_pair(&self.role, &self.sql)
    }

    pub fn decode(body: &str) -> Result<Self> {
        let (role, sql) = decode_pair("statement", body)?;
        Ok(LoggedStatement {
            role: role.to_string(),
            sql: sql.to_string(),
        })
    }
}

/// A table that becomes replicated: its schema-qualified, quoted name and its column signature
/// (names and types in order), which must match on every member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDefinition {
    pub name: String,
    pub columns: String,
}

impl TableDefinition {
    pub fn encode(&self) -> String {
        encode_pair(&self.name, &self.columns)
    }

    pub fn decode(body: &str) -> Result<Self> {
        let (name, columns) = decode_pair("replicate_table", body)?;
        Ok(TableDefinition {
            name: name.to_string(),
            columns: columns.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_hostile_content() {
        let s = LoggedStatement {
            role: "a:b\"; 12:".into(),
            sql: "INSERT INTO \"x:y\" VALUES ('5:z')".into(),
        };
        assert_eq!(LoggedStatement::decode(&s.encode()).unwrap(), s);
        let t = TableDefinition {
            name: "\"grüße\".\"t\"\"1\"".into(),
            columns: "a integer, b text".into(),
        };
        assert_eq!(TableDefinition::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn rejects_malformed_bodies() {
        for bad in ["", "x", "5:ab", "-1:a", "1:é"] {
            assert!(LoggedStatement::decode(bad).is_err(), "{bad:?}");
        }
    }
}
