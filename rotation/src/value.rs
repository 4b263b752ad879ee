//! A secret's value as the rotation handles it: the JSON object, kept whole so fields we do
//! not know survive rotation, and the login it holds. A leaf: the steps read values, the
//! strategies make the next one.

use secret_store::DbCredentials;
use serde_json::{Map, Value};

use crate::Error;

/// A secret's value: the JSON object, every field kept.
pub type SecretValue = Map<String, Value>;

/// The login in a secret's value; the error names the secret, never the value.
pub fn credentials(id: &str, value: &SecretValue) -> Result<DbCredentials, Error> {
    let text = secrecy::SecretString::from(Value::Object(value.clone()).to_string());
    Ok(secret_store::parse_credentials(id, &text)?)
}
