//! The User resource as this app keeps it (RFC 7643 4.1: `id`, `userName`, `externalId`,
//! `active`, `meta`) and what Okta and Microsoft Entra ID send to change it: full bodies
//! (POST, PUT), PATCH operations in both providers' forms, and the one filter they use to
//! find a person. Pure parsing: no database, tested below.
//!
//! Attributes this app does not keep (`name`, `emails`, `displayName`, the enterprise
//! extension, ...) are accepted and ignored: a provider pushes whole profiles, and refusing
//! them would stop its deprovisioning too.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::error::ScimError;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// A person as stored (`scim_users`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl User {
    /// The resource as the provider reads it back.
    pub fn to_json(&self, base: &str) -> Value {
        let mut v = json!({
            "schemas": [USER_SCHEMA],
            "id": self.id,
            "userName": self.user_name,
            "active": self.active,
            "meta": {
                "resourceType": "User",
                "created": self.created_at.to_rfc3339(),
                "lastModified": self.updated_at.to_rfc3339(),
                "location": format!("{base}/scim/v2/Users/{}", self.id),
            },
        });
        if let Some(e) = &self.external_id {
            v["externalId"] = json!(e);
        }
        v
    }
}

/// What a call asks to change; `None`: leave as is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub user_name: Option<String>,
    /// `Some(None)` removes it.
    pub external_id: Option<Option<String>>,
    pub active: Option<bool>,
}

/// A POST or PUT body: `userName` required; `active` absent leaves it as is (new: active).
pub fn full(body: &Value) -> Result<Change, ScimError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::bad("invalidSyntax", "The body must be a JSON object."))?;
    let mut change = attributes(obj)?;
    if change.user_name.is_none() {
        return Err(ScimError::bad("invalidValue", "userName is required."));
    }
    if change.external_id.is_none() {
        change.external_id = Some(None);
    }
    Ok(change)
}

/// A PATCH body (RFC 7644 3.5.2): `Operations` of `add`, `replace` or `remove` (any case:
/// Entra sends `Replace`), each with a `path` and a `value`, or (Okta) no path and an object
/// of attributes as the value.
pub fn patch(body: &Value) -> Result<Change, ScimError> {
    let ops = body
        .get("Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::bad("invalidSyntax", "A PATCH needs an Operations array."))?;
    if ops.is_empty() {
        return Err(ScimError::bad("invalidSyntax", "Operations is empty."));
    }
    let mut change = Change::default();
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::bad("invalidSyntax", "Each operation needs an op."))?
            .to_ascii_lowercase();
        let path = op.get("path").and_then(Value::as_str);
        let value = op.get("value");
        match (name.as_str(), path, value) {
            ("add" | "replace", None, Some(Value::Object(attrs))) => {
                merge(&mut change, attributes(attrs)?)
            }
            ("add" | "replace", None, _) => {
                return Err(ScimError::bad(
                    "invalidValue",
                    "An operation without a path needs an object of attributes as its value.",
                ))
            }
            ("add" | "replace", Some(path), Some(value)) => {
                let mut one = Map::new();
                one.insert(path.to_string(), value.clone());
                merge(&mut change, attributes(&one)?)
            }
            ("add" | "replace", Some(_), None) => {
                return Err(ScimError::bad(
                    "invalidValue",
                    format!("The {name} has no value."),
                ))
            }
            ("remove", None, _) => {
                return Err(ScimError::bad("noTarget", "A remove needs a path."))
            }
            ("remove", Some(path), _) => match attribute(path) {
                Some(Attr::ExternalId) => change.external_id = Some(None),
                Some(Attr::Active | Attr::UserName) => {
                    return Err(ScimError::bad(
                        "mutability",
                        format!("{path} cannot be removed."),
                    ))
                }
                None => {}
            },
            (other, _, _) => {
                return Err(ScimError::bad(
                    "invalidSyntax",
                    format!("Unknown op `{other}`: add, replace or remove."),
                ))
            }
        }
    }
    Ok(change)
}

fn merge(into: &mut Change, from: Change) {
    if from.user_name.is_some() {
        into.user_name = from.user_name;
    }
    if from.external_id.is_some() {
        into.external_id = from.external_id;
    }
    if from.active.is_some() {
        into.active = from.active;
    }
}

enum Attr {
    UserName,
    ExternalId,
    Active,
}

/// The attribute a name or path means (case-insensitive, with or without the core schema's
/// URN); `None` for one this app does not keep.
fn attribute(name: &str) -> Option<Attr> {
    let lower = name.to_ascii_lowercase();
    let bare = lower
        .strip_prefix(&format!("{}:", USER_SCHEMA.to_ascii_lowercase()))
        .unwrap_or(&lower);
    match bare {
        "username" => Some(Attr::UserName),
        "externalid" => Some(Attr::ExternalId),
        "active" => Some(Attr::Active),
        _ => None,
    }
}

fn attributes(obj: &Map<String, Value>) -> Result<Change, ScimError> {
    let mut change = Change::default();
    for (name, value) in obj {
        match attribute(name) {
            Some(Attr::UserName) => change.user_name = Some(user_name(value)?),
            Some(Attr::ExternalId) => {
                change.external_id = Some(match value {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    _ => return Err(ScimError::bad("invalidValue", "externalId is a string.")),
                })
            }
            Some(Attr::Active) => change.active = Some(active(value)?),
            None => {}
        }
    }
    Ok(change)
}

/// `active` as a boolean, or as the string Entra sends (`"False"`, `"True"`).
fn active(value: &Value) -> Result<bool, ScimError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ScimError::bad(
            "invalidValue",
            format!("active must be true or false, not {other}."),
        )),
    }
}

/// The person's email, as grants store it: people are matched to their requests by it.
fn user_name(value: &Value) -> Result<String, ScimError> {
    let raw = value
        .as_str()
        .ok_or_else(|| ScimError::bad("invalidValue", "userName is a string."))?;
    grants::check_email(raw).map_err(|_| {
        ScimError::bad(
            "invalidValue",
            "userName must be the person's email address (map it to the email people sign in with).",
        )
    })
}

/// What a list call looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    All,
    UserName(String),
    ExternalId(String),
}

/// `userName eq "x"` or `externalId eq "x"` (what Okta and Entra send before creating);
/// anything else is refused with `invalidFilter`.
pub fn filter(text: Option<&str>) -> Result<Filter, ScimError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Filter::All);
    };
    let refuse = || {
        ScimError::bad(
            "invalidFilter",
            format!("Only `userName eq \"...\"` and `externalId eq \"...\"` are supported, not `{text}`."),
        )
    };
    let mut parts = text.splitn(3, char::is_whitespace);
    let (Some(attr), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(refuse());
    };
    if !op.eq_ignore_ascii_case("eq") {
        return Err(refuse());
    }
    let value: String = serde_json::from_str(value.trim()).map_err(|_| refuse())?;
    match attribute(attr) {
        Some(Attr::UserName) => Ok(Filter::UserName(grants::normalize_email(&value))),
        Some(Attr::ExternalId) => Ok(Filter::ExternalId(value)),
        _ => Err(refuse()),
    }
}

/// A ListResponse (RFC 7644 3.4.2).
pub fn list(users: &[User], total: i64, start_index: i64, base: &str) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": users.len(),
        "Resources": users.iter().map(|u| u.to_json(base)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn okta_and_entra_deactivations_read_the_same() {
        let okta = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": false}}]});
        let entra = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
        for body in [okta, entra] {
            assert_eq!(patch(&body).unwrap().active, Some(false), "{body}");
        }
        let entra_on = json!({"Operations": [{"op": "Replace", "path": "active", "value": "True"},
            {"op": "Add", "path": "name.givenName", "value": "Alice"}]});
        assert_eq!(patch(&entra_on).unwrap().active, Some(true));
    }

    #[test]
    fn bad_patches_are_refused_with_a_scim_type() {
        for (body, kind) in [
            (
                json!({"Operations": [{"op": "frobnicate", "path": "active", "value": false}]}),
                "invalidSyntax",
            ),
            (json!({"Operations": []}), "invalidSyntax"),
            (json!({"op": "replace"}), "invalidSyntax"),
            (
                json!({"Operations": [{"op": "replace", "path": "active", "value": "maybe"}]}),
                "invalidValue",
            ),
            (
                json!({"Operations": [{"op": "remove", "path": "active"}]}),
                "mutability",
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "userName", "value": "nobody"}]}),
                "invalidValue",
            ),
        ] {
            let e = patch(&body).unwrap_err();
            assert_eq!(e.scim_type, Some(kind), "{body}");
        }
    }

    #[test]
    fn filters_and_full_bodies() {
        assert_eq!(
            filter(Some("userName eq \"Alice@Example.com\"")).unwrap(),
            Filter::UserName("alice@example.com".into())
        );
        assert_eq!(filter(None).unwrap(), Filter::All);
        assert!(filter(Some("userName sw \"a\"")).is_err());
        assert!(filter(Some("emails eq \"a\"")).is_err());
        let c =
            full(&json!({"userName": "bob@example.com", "name": {"givenName": "Bob"}})).unwrap();
        assert_eq!(c.user_name.as_deref(), Some("bob@example.com"));
        assert_eq!((c.active, c.external_id), (None, Some(None)));
        assert!(full(&json!({"active": true})).is_err());
    }
}
