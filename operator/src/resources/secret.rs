//! The credentials Secret the operator creates when the spec names none: the superuser's name and
//! password, and a password file (`pgpass`) members use to reach each other.

use std::collections::BTreeMap;
use std::io::Read;

use k8s_openapi::api::core::v1::Secret;

use super::{owned_meta, Names, SUPERUSER};
use crate::crd::PaxosGroup;

/// A new random password: 32 characters from `[A-Za-z0-9]`, drawn from the kernel's generator.
pub fn generated_password() -> std::io::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 64];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    // Rejection sampling keeps every character equally likely (248 = 4 * 62).
    let password: String = bytes
        .iter()
        .filter(|b| **b < 248)
        .take(32)
        .map(|b| ALPHABET[(*b % 62) as usize] as char)
        .collect();
    if password.len() < 32 {
        return generated_password();
    }
    Ok(password)
}

/// The generated credentials Secret of a group.
pub fn credentials_secret(group: &PaxosGroup, names: &Names, password: &str) -> Secret {
    Secret {
        metadata: owned_meta(group, names, names.generated_secret()),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            ("username".to_string(), SUPERUSER.to_string()),
            ("password".to_string(), password.to_string()),
            ("pgpass".to_string(), pgpass_line(SUPERUSER, password)),
        ])),
        ..Secret::default()
    }
}

/// A password-file line for `user` on every host, port and database.
fn pgpass_line(user: &str, password: &str) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    format!("*:*:*:{}:{}\n", escape(user), escape(password))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    #[test]
    fn passwords_are_long_and_differ() {
        let a = generated_password().unwrap();
        let b = generated_password().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn the_secret_holds_the_password_file() {
        let group = fixtures::group("{}");
        let names = Names::of(&group).unwrap();
        let secret = credentials_secret(&group, &names, "p:w\\d");
        let data = secret.string_data.unwrap();
        assert_eq!(data["pgpass"], "*:*:*:postgres:p\\:w\\\\d\n");
        assert_eq!(secret.metadata.name.as_deref(), Some("shop-credentials"));
    }
}
