//! Every statement the operator sends: fixed text with bound values. The only text built from
//! input is a table name, each part quoted as an identifier, and column definitions from a
//! ReplicatedTable, which are checked to be one statement's worth of text and run alone over the
//! extended protocol (which refuses a second statement).

use crate::error::{Error, Result};

pub const CREATE_EXTENSION: &str = "CREATE EXTENSION IF NOT EXISTS pg_paxos";

pub const GROUP_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM paxos.groups WHERE group_id = $1::text)";

pub const CREATE_GROUP: &str = "SELECT paxos_create_group($1::text, $2::text)";

pub const JOIN_GROUP: &str = "SELECT paxos_join_group($1::text, $2::text, $3::text)";

pub const LEAVE_GROUP: &str = "SELECT paxos_leave_group($1::text)";

pub const REMOVE_HOST: &str = "SELECT paxos_remove_host($1::text, $2::text)";

pub const NODE_IDENTITY: &str = "SELECT paxos.node_identity()";

pub const ADMITTED_TOKEN: &str = "SELECT paxos.admitted_token($1::text, $2::text)";

pub const MAX_ROUND: &str = "SELECT paxos_max_group_round($1::text)";

pub const COMPACT_LOG: &str = "SELECT paxos_compact_log($1::text)";

pub const MEMBERS: &str =
    "SELECT member, is_self, reachable, node_id, applied_round, highest_learned_round \
     FROM paxos_status($1::text)";

pub const TABLE_EXISTS: &str = "SELECT pg_catalog.to_regclass($1::text) IS NOT NULL";

pub const TABLE_REPLICATED: &str = "SELECT EXISTS (SELECT 1 FROM paxos.replicated_tables \
     WHERE group_id = $1::text \
     AND pg_catalog.to_regclass(table_name) = pg_catalog.to_regclass($2::text))";

pub const REPLICATE_TABLE: &str = "SELECT paxos_replicate_table($1::text, $2::text::regclass)";

/// Quotes a PostgreSQL identifier: wraps it in double quotes and doubles embedded ones.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table named `schema.table` or `table` (schema `public`), as a quoted qualified name. Each part
/// must be 1 to 63 bytes without NUL; a name with a dot in it cannot be given this way.
pub fn qualified_table(name: &str) -> Result<String> {
    let (schema, table) = name.split_once('.').unwrap_or(("public", name));
    for part in [schema, table] {
        if part.is_empty() || part.len() > 63 || part.contains('\0') || part.contains('.') {
            return Err(Error::InvalidSpec(format!(
                "table {name:?}: each of schema and table must be 1 to 63 bytes, without dots or NUL"
            )));
        }
    }
    Ok(format!("{}.{}", quote_ident(schema), quote_ident(table)))
}

/// `CREATE TABLE IF NOT EXISTS` for a ReplicatedTable's column definitions. Refuses text that
/// would end the statement (a `;` outside quotes) or leave a quote or parenthesis open.
pub fn create_table(qualified: &str, columns: &str) -> Result<String> {
    if columns.trim().is_empty() || columns.contains('\0') || !one_clause(columns) {
        return Err(Error::InvalidSpec(format!(
            "columns of {qualified}: must be column definitions only (balanced parentheses and quotes, no ';' or comments)"
        )));
    }
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {qualified} ({columns})"
    ))
}

/// Whether text stays inside one parenthesised clause: parentheses balance and never close more
/// than they opened, quotes close, and there is no `;` or comment outside quotes.
fn one_clause(text: &str) -> bool {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' => depth += 1,
            ')' if depth == 0 => return false,
            ')' => depth -= 1,
            ';' => return false,
            '-' if chars.peek() == Some(&'-') => return false,
            '/' if chars.peek() == Some(&'*') => return false,
            _ => {}
        }
    }
    depth == 0 && quote.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("t"), "\"t\"");
        assert_eq!(quote_ident("a\"; drop"), "\"a\"\"; drop\"");
    }

    #[test]
    fn table_names_are_quoted_parts() {
        assert_eq!(qualified_table("t").unwrap(), "\"public\".\"t\"");
        assert_eq!(
            qualified_table("App.My \"T\"").unwrap(),
            "\"App\".\"My \"\"T\"\"\""
        );
        for bad in ["", ".t", "s.", "a.b.c", &"x".repeat(64)] {
            assert!(qualified_table(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn column_definitions_cannot_end_the_statement() {
        let t = "\"public\".\"t\"";
        assert_eq!(
            create_table(t, "id bigint PRIMARY KEY, v text DEFAULT 'a;b--'").unwrap(),
            "CREATE TABLE IF NOT EXISTS \"public\".\"t\" (id bigint PRIMARY KEY, v text DEFAULT 'a;b--')"
        );
        for bad in [
            "id int); DROP TABLE x; --",
            "id int) --",
            "id int /* x */",
            "id int, v text DEFAULT 'open",
            "v text DEFAULT 'a' -- x",
            "id numeric(3",
            "",
        ] {
            assert!(create_table(t, bad).is_err(), "{bad:?}");
        }
    }
}
