//! The pg_paxos Kubernetes operator. Its reconciler is not written yet; this crate holds the pieces
//! that do not depend on Kubernetes, starting with the SQL it sends to PostgreSQL, built with
//! identifiers quoted and values bound as parameters.

/// Quotes a PostgreSQL identifier: wraps it in double quotes and doubles embedded ones.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("t"), "\"t\"");
        assert_eq!(quote_ident("a\"; drop"), "\"a\"\"; drop\"");
    }
}
