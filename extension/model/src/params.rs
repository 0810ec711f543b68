//! Putting bound parameter values into deparsed SQL. A statement prepared with `$1`, `$2`, ... is
//! logged with its values written in as typed literals, so every node replays exactly what ran.

use crate::error::{ModelError, Result};

/// Replaces every `$n` outside string literals and quoted identifiers with `values[n - 1]` (a SQL
/// expression such as `'5'::integer` or `NULL::text`).
pub fn substitute(sql: &str, values: &[String]) -> Result<String> {
    substitute_with(sql, |n| {
        n.checked_sub(1).and_then(|k| values.get(k)).cloned()
    })
}

/// Replaces every `$n` outside string literals and quoted identifiers with `value(n)`; numbers
/// need not be dense (the extension numbers its own placeholders far above the user's).
pub fn substitute_with(sql: &str, value: impl Fn(usize) -> Option<String>) -> Result<String> {
    let bad = |why: &str| ModelError::MalformedEntry(format!("statement ({why})"));
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() * 2);
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                // A quoted run ends at the next lone quote; a doubled quote stays inside.
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(bad("unterminated quote")),
                        Some(&c) if c == quote => {
                            if bytes.get(i + 1) == Some(&quote) {
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                && (i == 0 || !is_identifier_byte(bytes[i - 1])) =>
            {
                let start = i;
                i += 1;
                while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                let n: usize = sql[start + 1..i]
                    .parse()
                    .map_err(|_| bad("parameter number"))?;
                let value = value(n).ok_or_else(|| bad("parameter without a value"))?;
                out.push_str(&sql[copied..start]);
                out.push('(');
                out.push_str(&value);
                out.push(')');
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// A typed SQL literal for a parameter value given in its text form.
pub fn literal(text: Option<&str>, type_name: &str) -> String {
    match text {
        None => format!("NULL::{type_name}"),
        Some(t) => format!("'{}'::{type_name}", t.replace('\'', "''")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_parameters_but_not_quoted_text() {
        let sql = "INSERT INTO public.t (a, \"b$1\") VALUES ($1, 'x$2''$1', $2) RETURNING $10";
        let values: Vec<String> = (1..=10).map(|n| format!("v{n}")).collect();
        assert_eq!(
            substitute(sql, &values).unwrap(),
            "INSERT INTO public.t (a, \"b$1\") VALUES ((v1), 'x$2''$1', (v2)) RETURNING (v10)"
        );
    }

    #[test]
    fn literals_are_quoted_and_typed() {
        assert_eq!(literal(Some("it's"), "text"), "'it''s'::text");
        assert_eq!(literal(None, "integer"), "NULL::integer");
        let sql = substitute(
            "SELECT $1",
            &[literal(Some("'); DROP TABLE x; --"), "text")],
        )
        .unwrap();
        assert_eq!(sql, "SELECT ('''); DROP TABLE x; --'::text)");
    }

    #[test]
    fn errors_on_missing_values_and_broken_quotes() {
        assert!(substitute("SELECT $2", &["1".into()]).is_err());
        assert!(substitute("SELECT $0", &["1".into()]).is_err());
        assert!(substitute("SELECT 'open", &[]).is_err());
        assert_eq!(substitute("SELECT a$1", &[]).unwrap(), "SELECT a$1");
    }
}
