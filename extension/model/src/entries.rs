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

/// A write to replicated tables: the role it ran as on the proposing node (it runs as that role on
/// every node, so the log cannot be used to gain privileges) and its steps in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedStatement {
    pub role: String,
    pub steps: Vec<Step>,
}

/// One step of a logged write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// SQL run as the statement's role.
    Sql(String),
    /// Sets a sequence (schema-qualified, quoted name) so that its next value is `next`, before
    /// the SQL that calls `nextval` on it: every node then draws the values the proposer drew.
    RestartSequence { sequence: String, next: i64 },
}

impl LoggedStatement {
    /// A write of plain SQL.
    pub fn sql(role: String, sql: impl Into<String>) -> Self {
        LoggedStatement {
            role,
            steps: vec![Step::Sql(sql.into())],
        }
    }

    pub fn encode(&self) -> String {
        let mut steps = String::new();
        for step in &self.steps {
            let item = match step {
                Step::Sql(sql) => format!("s{sql}"),
                Step::RestartSequence { sequence, next } => {
                    format!("q{}", encode_pair(sequence, &next.to_string()))
                }
            };
            steps.push_str(&encode_pair(&item, ""));
        }
        encode_pair(&self.role, &steps)
    }

    pub fn decode(body: &str) -> Result<Self> {
        let bad = || ModelError::MalformedEntry("statement".to_string());
        let (role, mut rest) = decode_pair("statement", body)?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            let (item, tail) = decode_pair("statement", rest)?;
            rest = tail;
            let step = match item.split_at_checked(1).ok_or_else(bad)? {
                ("s", sql) => Step::Sql(sql.to_string()),
                ("q", pair) => {
                    let (sequence, next) = decode_pair("statement", pair)?;
                    Step::RestartSequence {
                        sequence: sequence.to_string(),
                        next: next.parse().map_err(|_| bad())?,
                    }
                }
                _ => return Err(bad()),
            };
            steps.push(step);
        }
        if steps.is_empty() {
            return Err(bad());
        }
        Ok(LoggedStatement {
            role: role.to_string(),
            steps,
        })
    }
}

/// The writes of transactions that committed together in one round (group commit), in the order
/// every node replays them. They ran concurrently where they were proposed, so only writes whose
/// result does not depend on each other's are batched (see the extension's `batching` module).
///
/// A batch proposed while the batch before it was still undecided names that batch's origin in
/// `after`: it takes effect only if the round before it holds that value, and is void (replayed as
/// nothing) everywhere otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub statements: Vec<LoggedStatement>,
    pub after: Option<String>,
}

impl Batch {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Some(origin) = &self.after {
            // A statement's encoding starts with a digit (its role's length): `a` cannot be one.
            out.push_str(&encode_pair(&format!("a{origin}"), ""));
        }
        for statement in &self.statements {
            out.push_str(&encode_pair(&statement.encode(), ""));
        }
        out
    }

    pub fn decode(body: &str) -> Result<Self> {
        let mut statements = Vec::new();
        let mut after = None;
        let mut rest = body;
        while !rest.is_empty() {
            let (item, tail) = decode_pair("batch", rest)?;
            match item.strip_prefix('a') {
                Some(origin) if statements.is_empty() && after.is_none() => {
                    after = Some(origin.to_string())
                }
                _ => statements.push(LoggedStatement::decode(item)?),
            }
            rest = tail;
        }
        if statements.is_empty() {
            return Err(ModelError::MalformedEntry("batch".to_string()));
        }
        Ok(Batch { statements, after })
    }

    /// Whether this batch takes effect, given the origin of the value chosen in the round before
    /// it.
    pub fn takes_effect_after(&self, previous_origin: Option<&str>) -> bool {
        self.after
            .as_deref()
            .is_none_or(|after| previous_origin == Some(after))
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
            steps: vec![
                Step::RestartSequence {
                    sequence: "\"s:1\".\"q2:x\"".into(),
                    next: -42,
                },
                Step::Sql("INSERT INTO \"x:y\" VALUES ('5:z')".into()),
                Step::Sql("s3:q".into()),
            ],
        };
        assert_eq!(LoggedStatement::decode(&s.encode()).unwrap(), s);
        let b = Batch {
            statements: vec![s.clone(), LoggedStatement::sql("r:2".into(), "3:x")],
            after: None,
        };
        assert_eq!(Batch::decode(&b.encode()).unwrap(), b);
        let conditional = Batch {
            after: Some("batch@n1/5:a/7".into()),
            ..b.clone()
        };
        assert_eq!(Batch::decode(&conditional.encode()).unwrap(), conditional);
        assert_ne!(conditional.encode(), b.encode());
        let t = TableDefinition {
            name: "\"grüße\".\"t\"\"1\"".into(),
            columns: "a integer, b text".into(),
        };
        assert_eq!(TableDefinition::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn a_conditional_batch_takes_effect_only_after_the_batch_it_names() {
        let plain = Batch {
            statements: vec![LoggedStatement::sql("r".into(), "SELECT 1")],
            after: None,
        };
        assert!(plain.takes_effect_after(None));
        assert!(plain.takes_effect_after(Some("anything")));
        let conditional = Batch {
            after: Some("batch@x".into()),
            ..plain
        };
        assert!(conditional.takes_effect_after(Some("batch@x")));
        assert!(!conditional.takes_effect_after(Some("batch@y")));
        assert!(!conditional.takes_effect_after(None));
        // A condition alone, or twice, is no batch.
        let only = "8:abatch@x";
        assert!(Batch::decode(only).is_err());
        let encoded = conditional.encode();
        assert!(encoded.starts_with(only));
        assert!(Batch::decode(&encoded).is_ok());
        let twice = format!("{only}{encoded}");
        assert!(Batch::decode(&twice).is_err());
    }

    #[test]
    fn rejects_malformed_bodies() {
        for bad in ["", "x", "5:ab", "-1:a", "1:é", "1:a", "1:a2:xy", "1:a3:q1:"] {
            assert!(LoggedStatement::decode(bad).is_err(), "{bad:?}");
            assert!(Batch::decode(bad).is_err(), "{bad:?}");
        }
    }
}
