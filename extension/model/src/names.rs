//! Validation of user-supplied names. Names are only ever bound as values, never spliced into SQL,
//! so quotes and semicolons are harmless; the rules keep names printable and within NAMEDATALEN.

use crate::error::{ModelError, Result};

pub const MAX_NAME_BYTES: usize = 63;

pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(ModelError::InvalidName {
            what,
            reason: "it is empty".into(),
        });
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(ModelError::NameTooLong {
            what,
            bytes: name.len(),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(ModelError::InvalidName {
            what,
            reason: "it contains control characters".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_quotes_unicode_and_63_bytes() {
        assert!(check_name("group", "a'b\";c -- d").is_ok());
        assert!(check_name("group", "grüße").is_ok());
        assert!(check_name("group", &"x".repeat(63)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_control() {
        assert!(matches!(
            check_name("group", ""),
            Err(ModelError::InvalidName { .. })
        ));
        assert!(matches!(
            check_name("group", &"é".repeat(32)),
            Err(ModelError::NameTooLong { bytes: 64, .. })
        ));
        assert!(matches!(
            check_name("group", "a\nb"),
            Err(ModelError::InvalidName { .. })
        ));
    }
}
