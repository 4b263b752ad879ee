//! The JSON API: the same operations as the pages, for automation. A request authenticates
//! with `Authorization: Bearer <access token>` that the identity provider issued to this
//! app (`oidc.client_id`); no cookies, so no CSRF. Each call asks the provider whether the
//! token is active and this app's (introspection), then who the person is and which groups
//! they are in now (userinfo): the token's own claims are never trusted, and a person
//! removed from the approvers' group cannot decide from that moment. Errors are
//! `{"error", "message"}` with the HTTP status of [`Error::status`].

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body;
use crate::error::Error;
use crate::export::{jsonl, After};
use crate::extension::{self, NewExtension};
use crate::model;
use crate::status::{Decision, Status};
use crate::workflow::{self, Actor, NewRequest};
use crate::App;

pub fn router() -> Router<App> {
    Router::new()
        .route("/api/v1/catalogue", get(catalogue))
        .route("/api/v1/requests", get(mine).post(create))
        .route("/api/v1/requests/{id}", get(show))
        .route("/api/v1/requests/{id}/withdraw", post(withdraw))
        .route("/api/v1/requests/{id}/give-up", post(give_up))
        .route("/api/v1/requests/{id}/decide", post(decide))
        .route("/api/v1/requests/{id}/revoke", post(revoke))
        .route("/api/v1/requests/{id}/extend", post(extend))
        .route("/api/v1/extensions/{id}", get(show_extension))
        .route("/api/v1/extensions/{id}/decide", post(decide_extension))
        .route("/api/v1/extensions/{id}/withdraw", post(withdraw_extension))
        .route("/api/v1/queue", get(queue))
        .route("/api/v1/grants", get(active))
        .route("/api/v1/events", get(events))
}

/// An error as JSON.
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = json!({"error": self.0.code(), "message": self.0.public_message()});
        let mut response = (status, Json(body)).into_response();
        if status == axum::http::StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

async fn actor(app: &App, headers: &HeaderMap) -> Result<Actor, Error> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(Error::NotSignedIn)?;
    let user = app.oidc.api_user(token.trim()).await.map_err(|e| {
        tracing::info!(error = format!("{e:#}"), "API bearer token refused");
        Error::SignInAgain(format!("The bearer token was refused: {e}"))
    })?;
    Ok(Actor::new(user, &app.settings.oidc.approvers_group))
}

async fn catalogue(State(app): State<App>, headers: HeaderMap) -> ApiResult {
    actor(&app, &headers).await?;
    Ok(Json(json!({"levels": app.settings.catalogue})).into_response())
}

async fn mine(State(app): State<App>, headers: HeaderMap) -> ApiResult {
    let actor = actor(&app, &headers).await?;
    let control = app.control.get().await.map_err(Error::from)?;
    let requests = model::requests_where(&**control, "r.email = $1", &[&actor.email()]).await?;
    Ok(Json(json!({"requests": requests})).into_response())
}

async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    json: Result<Json<NewRequest>, JsonRejection>,
) -> ApiResult {
    let actor = actor(&app, &headers).await?;
    let new = body::json(json)?;
    let req = workflow::create(&app, &actor, new).await?;
    Ok((axum::http::StatusCode::CREATED, Json(req)).into_response())
}

async fn detail(app: &App, actor: &Actor, id: i64) -> Result<Value, Error> {
    let req = workflow::get(app, actor, id).await?;
    let control = app.control.get().await?;
    Ok(json!({
        "request": req,
        "decisions": model::decisions(&**control, id).await?,
        "extensions": extension::of_request(&**control, id).await?,
        "events": model::events_of(&**control, id).await?,
    }))
}

async fn show(State(app): State<App>, headers: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    let actor = actor(&app, &headers).await?;
    Ok(Json(detail(&app, &actor, id).await?).into_response())
}

async fn withdraw(State(app): State<App>, headers: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    let actor = actor(&app, &headers).await?;
    Ok(Json(workflow::withdraw(&app, &actor, id).await?).into_response())
}

async fn give_up(State(app): State<App>, headers: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    let actor = actor(&app, &headers).await?;
    Ok(Json(workflow::give_up(&app, &actor, id).await?).into_response())
}

#[derive(Deserialize)]
struct Decide {
    decision: String,
    #[serde(default)]
    comment: String,
}

impl Decide {
    fn decision(&self) -> Result<Decision, Error> {
        self.decision
            .parse()
            .map_err(|_| Error::BadInput("decision must be \"approve\" or \"deny\"".into()))
    }
}

async fn decide(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    json: Result<Json<Decide>, JsonRejection>,
) -> ApiResult {
    let actor = actor(&app, &headers).await?;
    let d = body::json(json)?;
    let decision = d.decision()?;
    Ok(Json(workflow::decide(&app, &actor, id, decision, &d.comment).await?).into_response())
}

#[derive(Deserialize)]
struct Revoke {
    reason: String,
}

async fn revoke(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    json: Result<Json<Revoke>, JsonRejection>,
) -> ApiResult {
    let actor = actor(&app, &headers).await?;
    let r = body::json(json)?;
    Ok(Json(workflow::revoke(&app, &actor, id, &r.reason).await?).into_response())
}

async fn extend(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    json: Result<Json<NewExtension>, JsonRejection>,
) -> ApiResult {
    let actor = actor(&app, &headers).await?;
    let new = body::json(json)?;
    let ext = extension::create(&app, &actor, id, new).await?;
    Ok((axum::http::StatusCode::CREATED, Json(ext)).into_response())
}

async fn show_extension(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult {
    let actor = actor(&app, &headers).await?;
    Ok(Json(extension::get(&app, &actor, id).await?).into_response())
}

async fn decide_extension(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    json: Result<Json<Decide>, JsonRejection>,
) -> ApiResult {
    let actor = actor(&app, &headers).await?;
    let d = body::json(json)?;
    let decision = d.decision()?;
    Ok(Json(extension::decide(&app, &actor, id, decision, &d.comment).await?).into_response())
}

async fn withdraw_extension(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult {
    let actor = actor(&app, &headers).await?;
    Ok(Json(extension::withdraw(&app, &actor, id).await?).into_response())
}

async fn approver(app: &App, headers: &HeaderMap) -> Result<Actor, Error> {
    let actor = actor(app, headers).await?;
    if !actor.approver {
        return Err(Error::Forbidden(
            "This is for the data-security group only.".into(),
        ));
    }
    Ok(actor)
}

async fn queue(State(app): State<App>, headers: HeaderMap) -> ApiResult {
    approver(&app, &headers).await?;
    let control = app.control.get().await.map_err(Error::from)?;
    let requests = model::requests_with_status(&**control, &[Status::Pending]).await?;
    let extensions = extension::pending(&**control).await?;
    Ok(Json(json!({"requests": requests, "extensions": extensions})).into_response())
}

async fn active(State(app): State<App>, headers: HeaderMap) -> ApiResult {
    approver(&app, &headers).await?;
    let control = app.control.get().await.map_err(Error::from)?;
    let requests =
        model::requests_with_status(&**control, &[Status::Active, Status::Approved]).await?;
    Ok(Json(json!({"requests": requests})).into_response())
}

/// The history as JSON lines, oldest first, from `?after=<event id>`.
async fn events(State(app): State<App>, headers: HeaderMap, Query(q): Query<After>) -> ApiResult {
    approver(&app, &headers).await?;
    let control = app.control.get().await.map_err(Error::from)?;
    Ok(jsonl(
        &model::events_after(&**control, q.after, 100_000).await?,
    ))
}
