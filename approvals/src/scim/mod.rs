//! SCIM 2.0 provisioning (RFC 7643, RFC 7644), the subset Okta and Microsoft Entra ID use to
//! tell the app who may still work here: `/scim/v2/Users` (list with a `userName` or
//! `externalId` filter, create, read, replace, patch, delete). A person set `active: false`
//! or deleted loses all access at once ([`crate::deprovision`]). Off unless `scim.enabled`;
//! every call needs the provider's bearer token ([`auth`]). Bodies are
//! `application/scim+json`, errors SCIM errors ([`error`]).

pub mod auth;
pub mod error;
pub mod resource;
pub mod store;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::deprovision;
use crate::model;
use crate::App;
use error::{scim_json, ScimError};
use resource::{Change, User};

/// Most users one list call returns.
const MAX_PAGE: i64 = 200;

pub fn router(app: App) -> Router<App> {
    Router::new()
        .route("/scim/v2/Users", get(list).post(create))
        .route(
            "/scim/v2/Users/{id}",
            get(show).put(replace).patch(patch).delete(delete),
        )
        .route_layer(middleware::from_fn_with_state(app, auth::require))
}

type ScimResult = Result<Response, ScimError>;

fn body(bytes: &Bytes) -> Result<Value, ScimError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ScimError::bad("invalidSyntax", format!("The body is not JSON: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    filter: Option<String>,
    start_index: Option<i64>,
    count: Option<i64>,
}

async fn list(
    State(app): State<App>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ScimResult {
    let Query(q) = query.map_err(|e| ScimError::bad("invalidValue", e.body_text()))?;
    let filter = resource::filter(q.filter.as_deref())?;
    let start = q.start_index.unwrap_or(1).max(1);
    let count = q.count.unwrap_or(MAX_PAGE).clamp(0, MAX_PAGE);
    let control = app.control.get().await?;
    let (users, total) = store::find(&**control, &filter, start, count).await?;
    Ok(scim_json(
        StatusCode::OK,
        &resource::list(&users, total, start, &app.settings.public_url),
    ))
}

async fn show(State(app): State<App>, Path(id): Path<String>) -> ScimResult {
    let control = app.control.get().await?;
    let user = store::get(&**control, &id, false).await?;
    Ok(scim_json(
        StatusCode::OK,
        &user.to_json(&app.settings.public_url),
    ))
}

async fn create(State(app): State<App>, bytes: Bytes) -> ScimResult {
    let change = resource::full(&body(&bytes)?)?;
    let user = write(&app, None, &change, false).await?;
    let mut response = scim_json(StatusCode::CREATED, &user.to_json(&app.settings.public_url));
    if let Ok(location) = HeaderValue::from_str(&format!(
        "{}/scim/v2/Users/{}",
        app.settings.public_url, user.id
    )) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn replace(State(app): State<App>, Path(id): Path<String>, bytes: Bytes) -> ScimResult {
    let change = resource::full(&body(&bytes)?)?;
    let user = write(&app, Some(&id), &change, false).await?;
    Ok(scim_json(
        StatusCode::OK,
        &user.to_json(&app.settings.public_url),
    ))
}

async fn patch(State(app): State<App>, Path(id): Path<String>, bytes: Bytes) -> ScimResult {
    let change = resource::patch(&body(&bytes)?)?;
    let user = write(&app, Some(&id), &change, false).await?;
    Ok(scim_json(
        StatusCode::OK,
        &user.to_json(&app.settings.public_url),
    ))
}

async fn delete(State(app): State<App>, Path(id): Path<String>) -> ScimResult {
    write(&app, Some(&id), &Change::default(), true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Records what the provider says in one transaction, with `person.deprovisioned` or
/// `person.reactivated` when `active` changes; then, if the person is inactive, ends all
/// their access before answering (so the provider's success means it is done).
async fn write(
    app: &App,
    id: Option<&str>,
    change: &Change,
    delete: bool,
) -> Result<User, ScimError> {
    let mut control = app.control.get().await?;
    let tx = control.transaction().await?;
    let (was_active, after) = match id {
        None => {
            let (was, after) = store::create(&tx, change).await?;
            (was.unwrap_or(true), after)
        }
        Some(id) => {
            let before = store::get(&tx, id, true).await?;
            let after = store::update(&tx, &before, change, delete).await?;
            (before.active, after)
        }
    };
    let how = match (delete, id) {
        (true, _) => "DELETE",
        (false, None) => "POST",
        (false, Some(_)) => "PATCH/PUT",
    };
    let data = json!({"email": after.user_name, "scim_id": after.id,
                      "external_id": after.external_id, "via": how});
    if was_active && !after.active {
        model::record(
            &tx,
            None,
            None,
            deprovision::ACTOR,
            "person.deprovisioned",
            {
                let mut d = data.clone();
                d["reason"] = json!(deprovision::REASON);
                d
            },
        )
        .await?;
    } else if !was_active && after.active {
        model::record(
            &tx,
            None,
            None,
            deprovision::ACTOR,
            "person.reactivated",
            data,
        )
        .await?;
    }
    tx.commit().await?;
    drop(control);
    if !after.active {
        if was_active {
            app.metrics.people_deprovisioned.inc();
        }
        let swept = deprovision::end_all(app, &after.user_name).await?;
        tracing::info!(
            scim_id = %after.id,
            withdrawn = ?swept.withdrawn,
            ended = ?swept.ended,
            operator_grants = ?swept.operator_grants,
            "person deprovisioned at the identity provider: access ended"
        );
    }
    Ok(after)
}
