//! The pages: server-rendered HTML (askama templates in `approvals/templates/`, checked at
//! compile time) that work without JavaScript. Every state-changing request is a POST form
//! carrying the session's CSRF token; answers to them redirect (303) to a page.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::CookieJar;
use chrono::{NaiveDateTime, Utc};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::body::form;
use crate::error::{Error, Result};
use crate::export::{jsonl, After};
use crate::model::{self, ApproverDecision, Event, Request};
use crate::oidc::User;
use crate::session::{self, Data, Loaded, Session};
use crate::settings::Level;
use crate::status::{Action, Decision, Status};
use crate::workflow::{self, Actor, NewRequest};
use crate::App;

/// The pages (the app's whole router is [`crate::routes::router`]).
pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(home))
        .route("/requests/new", get(new_form))
        .route("/requests", post(create))
        .route("/requests/{id}", get(show))
        .route("/requests/{id}/history.jsonl", get(request_export))
        .route("/requests/{id}/activity/{file}/{seq}", get(activity_record))
        .route("/requests/{id}/withdraw", post(withdraw))
        .route("/requests/{id}/give-up", post(give_up))
        .route("/requests/{id}/decide", post(decide))
        .route("/requests/{id}/revoke", post(revoke))
        .route("/requests/{id}/extend", post(extend))
        .route("/extensions/{id}/decide", post(decide_extension))
        .route("/extensions/{id}/withdraw", post(withdraw_extension))
        .route("/queue", get(queue))
        .route("/grants", get(active_grants))
        .route("/history", get(history))
        .route("/history.jsonl", get(export))
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/static/app.css", get(css))
}

pub(crate) async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    set(h, "cache-control", "no-store");
    response
}

// ---- layout -----------------------------------------------------------------------------

/// What every page shows around its content.
pub struct Chrome {
    pub me: Option<User>,
    pub approver: bool,
    pub csrf: String,
    pub flash: Option<String>,
    pub title: String,
}

impl Chrome {
    fn new(title: &str, session: Option<&Session>, approvers_group: &str) -> Chrome {
        let me = session.and_then(|s| s.data.user.clone());
        let approver = me
            .as_ref()
            .is_some_and(|u| u.groups.iter().any(|g| g == approvers_group));
        Chrome {
            me,
            approver,
            csrf: session.map(|s| s.data.csrf.clone()).unwrap_or_default(),
            flash: None,
            title: title.to_string(),
        }
    }
}

/// Renders an error as a page, with a way forward.
pub struct Page(pub Error);

impl From<Error> for Page {
    fn from(e: Error) -> Self {
        Page(e)
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
struct ErrorPage {
    page: Chrome,
    message: String,
    sign_in: bool,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let sign_in = matches!(
            self.0,
            Error::NotSignedIn | Error::SessionExpired | Error::SignInAgain(_)
        );
        let title = match &self.0 {
            Error::NotSignedIn => "Please sign in",
            Error::SessionExpired => "Session expired",
            Error::SignInAgain(_) => "Please sign in again",
            Error::Forbidden(_) => "Not allowed",
            Error::NotFound(_) => "Not found",
            Error::Conflict(_) => "Already done",
            Error::BadInput(_) => "Please check the form",
            Error::Unavailable(_) => "Unavailable",
            Error::Internal(_) => "Something went wrong",
        };
        let page = ErrorPage {
            page: Chrome::new(title, None, ""),
            message: self.0.public_message(),
            sign_in,
        };
        (status, page).into_response()
    }
}

type PageResult = std::result::Result<Response, Page>;

// ---- sessions -----------------------------------------------------------------------------

async fn load(app: &App, jar: &CookieJar) -> Result<Loaded> {
    let cookie = jar.get(app.sessions.cookie_name()).map(|c| c.value());
    app.sessions.load(cookie).await
}

/// The signed-in person of this request, from their session (sign-in time groups: enough
/// for reading; decisions ask the provider again).
async fn signed_in(app: &App, jar: &CookieJar) -> Result<(Session, Actor)> {
    match load(app, jar).await? {
        Loaded::None => Err(Error::NotSignedIn),
        Loaded::Expired => Err(Error::SessionExpired),
        Loaded::Active(s) => match s.data.user.clone() {
            Some(user) => {
                let actor = Actor::new(user, &app.settings.oidc.approvers_group);
                Ok((*s, actor))
            }
            None => Err(Error::NotSignedIn),
        },
    }
}

/// Like [`signed_in`], for a POST: the form's CSRF token must be the session's.
async fn posted(app: &App, jar: &CookieJar, csrf: &str) -> Result<(Session, Actor)> {
    let (session, actor) = signed_in(app, jar).await?;
    if !session::csrf_ok(&session, csrf) {
        return Err(Error::Forbidden(
            "This form is out of date or did not come from this app (its security token does \
             not match your session). Nothing was changed; reload the page and try again."
                .into(),
        ));
    }
    Ok((session, actor))
}

/// The actor with the groups the provider gives *now* (userinfo with the session's access
/// token). An expired or refused token means signing in again.
async fn fresh_actor(app: &App, session: &mut Session) -> Result<Actor> {
    let again = || {
        Error::SignInAgain(
            "Approver rights are checked with the identity provider at each decision, and \
             your sign-in is too old for that. Nothing was changed: sign in again, then \
             decide."
                .into(),
        )
    };
    let (Some(token), Some(expires), Some(user)) = (
        session.data.access_token.clone(),
        session.data.access_expires_at,
        session.data.user.clone(),
    ) else {
        return Err(again());
    };
    if expires <= Utc::now() + chrono::Duration::seconds(5) {
        return Err(again());
    }
    let now = app
        .oidc
        .userinfo(&token, &user.subject)
        .await
        .map_err(|e| {
            tracing::info!(error = %e, "userinfo refused; asking to sign in again");
            again()
        })?;
    let fresh = User {
        groups: now.groups,
        ..user
    };
    session.data.user = Some(fresh.clone());
    app.sessions.save(session).await?;
    Ok(Actor::new(fresh, &app.settings.oidc.approvers_group))
}

async fn flash(app: &App, session: &mut Session, text: String) -> Result<()> {
    session.data.flash = Some(text);
    app.sessions.save(session).await
}

async fn take_flash(app: &App, session: &mut Session) -> Result<Option<String>> {
    let flash = session.data.flash.take();
    if flash.is_some() {
        app.sessions.save(session).await?;
    }
    Ok(flash)
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

// ---- pages ------------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
struct Home {
    page: Chrome,
    requests: Vec<Request>,
}

async fn home(State(app): State<App>, jar: CookieJar) -> PageResult {
    let (mut session, actor) = match signed_in(&app, &jar).await {
        Ok(x) => x,
        Err(Error::NotSignedIn | Error::SessionExpired) => {
            return Ok(Home {
                page: Chrome::new("Database access", None, ""),
                requests: Vec::new(),
            }
            .into_response())
        }
        Err(e) => return Err(e.into()),
    };
    let control = app.control.get().await.map_err(Error::from)?;
    let requests = model::requests_where(&**control, "r.email = $1", &[&actor.email()]).await?;
    let mut page = Chrome::new(
        "My requests and access",
        Some(&session),
        &app.settings.oidc.approvers_group,
    );
    page.flash = take_flash(&app, &mut session).await?;
    Ok(Home { page, requests }.into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "new.html")]
struct NewPage {
    page: Chrome,
    levels: Vec<Level>,
}

impl NewPage {
    fn max_text(&self, level: &Level) -> String {
        model::duration_text(level.max_duration_secs as i64)
    }
}

/// A policy's controls in words, one per line; empty when none is on.
pub fn policy_lines(p: &grants::SessionPolicy) -> Vec<String> {
    let secs = |n: u32| model::duration_text(i64::from(n));
    let mut lines = Vec::new();
    if let Some(n) = p.idle_timeout_secs {
        lines.push(format!("Idle sessions close after {}", secs(n)));
    }
    if let Some(n) = p.idle_in_transaction_timeout_secs {
        lines.push(format!("Idle in a transaction: closed after {}", secs(n)));
    }
    if let Some(n) = p.max_session_secs {
        lines.push(format!("Each session lasts at most {}", secs(n)));
    }
    if p.read_only {
        lines.push("Read-only at the gateway (no writes, whatever the role allows)".into());
    }
    if !p.require_amr.is_empty() {
        lines.push(format!("Sign-in must use: {}", p.require_amr.join(", ")));
    }
    if let Some(n) = p.max_auth_age_secs {
        lines.push(format!("Sign-in at most {} old at login", secs(n)));
    }
    lines
}

async fn new_form(State(app): State<App>, jar: CookieJar) -> PageResult {
    let (session, _) = signed_in(&app, &jar).await?;
    Ok(NewPage {
        page: Chrome::new(
            "Request access",
            Some(&session),
            &app.settings.oidc.approvers_group,
        ),
        levels: app.settings.catalogue.clone(),
    }
    .into_response())
}

#[derive(Deserialize)]
struct NewForm {
    csrf: String,
    /// `database/level`
    access: String,
    justification: String,
    duration: String,
    unit: String,
    #[serde(default)]
    starts_at: String,
}

async fn create(
    State(app): State<App>,
    jar: CookieJar,
    f: std::result::Result<Form<NewForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    let (mut session, actor) = posted(&app, &jar, &f.csrf).await?;
    let (database, level) = f
        .access
        .split_once('/')
        .ok_or_else(|| Error::BadInput("Choose an access level.".into()))?;
    let n: i64 = f.duration.trim().parse().map_err(|_| {
        Error::BadInput(format!(
            "The duration `{}` is not a whole number.",
            f.duration
        ))
    })?;
    let unit = match f.unit.as_str() {
        "minutes" => 60,
        "hours" => 3600,
        "days" => 86_400,
        other => return Err(Error::BadInput(format!("Unknown unit `{other}`.")).into()),
    };
    let starts_at = match f.starts_at.trim() {
        "" => None,
        text => Some(
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
                .map_err(|_| {
                    Error::BadInput(format!(
                        "The start `{text}` is not a date and time (YYYY-MM-DDTHH:MM, UTC)."
                    ))
                })?
                .and_utc(),
        ),
    };
    let req = workflow::create(
        &app,
        &actor,
        NewRequest {
            database: database.into(),
            level: level.into(),
            justification: f.justification,
            duration_secs: n.saturating_mul(unit),
            starts_at,
        },
    )
    .await?;
    flash(
        &app,
        &mut session,
        format!(
            "Request {} sent; the data-security team decides on it.",
            req.id
        ),
    )
    .await?;
    Ok(see_other(&format!("/requests/{}", req.id)))
}

#[derive(Template, WebTemplate)]
#[template(path = "request.html")]
struct RequestPage {
    page: Chrome,
    req: Request,
    decisions: Vec<ApproverDecision>,
    events: Vec<Event>,
    can_decide: bool,
    can_revoke: bool,
    can_withdraw: bool,
    can_give_up: bool,
    /// The session controls the grant carries (the request's snapshot, else the level's).
    policy: Vec<String>,
    extensions: Vec<crate::extension::Extension>,
    can_extend: bool,
    /// Pending extensions this approver may decide on.
    can_decide_extension: bool,
    /// The requester's own pending extension may be withdrawn.
    can_withdraw_extension: bool,
    /// "Activity under this access"; `None`: this person may not see it (no section).
    activity: Option<ActivityView>,
}

/// The activity section: the audit's records of this request, or why there are none.
enum ActivityView {
    NotConfigured,
    Unreadable(String),
    Read(crate::activity::Activity),
}

async fn show(State(app): State<App>, jar: CookieJar, Path(id): Path<i64>) -> PageResult {
    let (mut session, actor) = signed_in(&app, &jar).await?;
    let req = workflow::get(&app, &actor, id).await?;
    let control = app.control.get().await.map_err(Error::from)?;
    let decisions = model::decisions(&**control, id).await?;
    let events = model::events_of(&**control, id).await?;
    let extensions = crate::extension::of_request(&**control, id).await?;
    let mine = req.email == actor.email();
    let policy = req
        .policy
        .clone()
        .or_else(|| {
            app.settings
                .level(&req.database, &req.level)
                .map(|l| l.policy.clone())
        })
        .map(|p| policy_lines(&p))
        .unwrap_or_default();
    let decided_by_me = decisions.iter().any(|d| d.approver == actor.email());
    let activity = if may_see_activity(&req, &actor, &decisions) {
        Some(read_activity(&app, &actor, &req).await?)
    } else {
        None
    };
    let mut page = Chrome::new(
        &format!("Request {id}"),
        Some(&session),
        &app.settings.oidc.approvers_group,
    );
    page.flash = take_flash(&app, &mut session).await?;
    Ok(RequestPage {
        page,
        can_decide: actor.approver && !mine && req.status.decidable() && !decided_by_me,
        can_revoke: actor.approver && req.status.allows(Action::End),
        can_withdraw: mine && req.status.allows(Action::Withdraw),
        can_give_up: mine && req.status == Status::Active,
        can_extend: mine && req.status == Status::Active && !extensions.iter().any(|e| e.pending()),
        can_decide_extension: actor.approver && !mine,
        can_withdraw_extension: mine,
        policy,
        extensions,
        req,
        decisions,
        events,
        activity,
    }
    .into_response())
}

/// Who sees what was done under an access: the requester, those who decided on it, and the
/// data-security group. (The page itself is the requester's and the group's; this check
/// stands on its own so the activity never follows a wider page rule by accident.)
fn may_see_activity(req: &Request, actor: &Actor, decisions: &[ApproverDecision]) -> bool {
    req.email == actor.email()
        || actor.approver
        || decisions.iter().any(|d| d.approver == actor.email())
}

/// Reads the request's activity from the audit (off the async threads) and records the
/// read as an `audit.read` event.
async fn read_activity(app: &App, actor: &Actor, req: &Request) -> Result<ActivityView> {
    let settings = app.settings.audit.clone();
    if settings.location.is_none() {
        return Ok(ActivityView::NotConfigured);
    }
    let id = req.id;
    let read = tokio::task::spawn_blocking(move || crate::activity::read(&settings, id))
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("reading the audit: {e}")))?;
    let (view, data) = match read {
        Ok(Some(a)) => {
            let data = a.event_data();
            (ActivityView::Read(a), data)
        }
        Ok(None) => return Ok(ActivityView::NotConfigured),
        Err(e) => {
            tracing::warn!(request = id, error = %e, "reading the audit failed");
            (
                ActivityView::Unreadable(format!("{e:#}")),
                serde_json::json!({"what": "activity", "error": format!("{e:#}")}),
            )
        }
    };
    let control = app.control.get().await.map_err(Error::from)?;
    model::record(
        &**control,
        Some(id),
        req.grant_id,
        actor.email(),
        "audit.read",
        data,
    )
    .await?;
    Ok(view)
}

#[derive(Template, WebTemplate)]
#[template(path = "activity_record.html")]
struct ActivityRecordPage {
    page: Chrome,
    req: Request,
    place: crate::activity::Place,
}

/// One audit record of the request's activity and its place in the chain. Anyone who may
/// not see the activity, and any record that is not this request's, gets the same 404.
async fn activity_record(
    State(app): State<App>,
    jar: CookieJar,
    Path((id, file, seq)): Path<(i64, String, u64)>,
) -> PageResult {
    let (session, actor) = signed_in(&app, &jar).await?;
    let req = workflow::get(&app, &actor, id).await?;
    let control = app.control.get().await.map_err(Error::from)?;
    let decisions = model::decisions(&**control, id).await?;
    let missing = || {
        Error::NotFound(format!(
            "Request {id} has no such audit record that you can see."
        ))
    };
    if !may_see_activity(&req, &actor, &decisions) {
        return Err(missing().into());
    }
    let settings = app.settings.audit.clone();
    let wanted = file.clone();
    let place =
        tokio::task::spawn_blocking(move || crate::activity::record(&settings, id, &wanted, seq))
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("reading the audit: {e}")))?
            .map_err(Error::Internal)?;
    model::record(
        &**control,
        Some(id),
        req.grant_id,
        actor.email(),
        "audit.read",
        serde_json::json!({"what": "record", "file": file, "seq": seq, "found": place.is_some()}),
    )
    .await?;
    let place = place.ok_or_else(missing)?;
    Ok(ActivityRecordPage {
        page: Chrome::new(
            &format!("Request {id}: audit record {seq}"),
            Some(&session),
            &app.settings.oidc.approvers_group,
        ),
        req,
        place,
    }
    .into_response())
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn withdraw(
    State(app): State<App>,
    jar: CookieJar,
    Path(id): Path<i64>,
    f: std::result::Result<Form<CsrfForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    let (mut session, actor) = posted(&app, &jar, &f.csrf).await?;
    workflow::withdraw(&app, &actor, id).await?;
    flash(&app, &mut session, format!("Request {id} withdrawn.")).await?;
    Ok(see_other(&format!("/requests/{id}")))
}

async fn give_up(
    State(app): State<App>,
    jar: CookieJar,
    Path(id): Path<i64>,
    f: std::result::Result<Form<CsrfForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    let (mut session, actor) = posted(&app, &jar, &f.csrf).await?;
    workflow::give_up(&app, &actor, id).await?;
    flash(
        &app,
        &mut session,
        format!("You gave up the access of request {id}."),
    )
    .await?;
    Ok(see_other(&format!("/requests/{id}")))
}

#[derive(Deserialize)]
struct DecideForm {
    csrf: String,
    decision: String,
    #[serde(default)]
    comment: String,
}

impl DecideForm {
    fn decision(&self) -> Result<Decision, Error> {
        self.decision
            .parse()
            .map_err(|_| Error::BadInput("Choose approve or deny.".into()))
    }
}

async fn decide(
    State(app): State<App>,
    jar: CookieJar,
    Path(id): Path<i64>,
    f: std::result::Result<Form<DecideForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    let (mut session, _) = posted(&app, &jar, &f.csrf).await?;
    let decision = f.decision()?;
    let actor = fresh_actor(&app, &mut session).await?;
    let req = workflow::decide(&app, &actor, id, decision, &f.comment).await?;
    let said = match (decision, req.status) {
        (Decision::Deny, _) => format!("You denied request {id}."),
        (Decision::Approve, Status::Pending) => {
            format!("You approved request {id}; it needs another approver.")
        }
        (Decision::Approve, Status::Active) => {
            format!("You approved request {id}; the access is in place.")
        }
        (Decision::Approve, _) => format!("You approved request {id}."),
    };
    flash(&app, &mut session, said).await?;
    Ok(see_other(&format!("/requests/{id}")))
}

#[derive(Deserialize)]
struct ExtendForm {
    csrf: String,
    justification: String,
    hours: String,
}

async fn extend(
    State(app): State<App>,
    jar: CookieJar,
    Path(id): Path<i64>,
    f: std::result::Result<Form<ExtendForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    let (mut session, actor) = posted(&app, &jar, &f.csrf).await?;
    let hours: i64 = f.hours.trim().parse().map_err(|_| {
        Error::BadInput(format!(
            "The extra time `{}` is not a whole number of hours.",
            f.hours
        ))
    })?;
    let ext = crate::extension::create(
        &app,
        &actor,
        id,
        crate::extension::NewExtension {
            justification: f.justification,
            extend_to: None,
            extra_secs: Some(hours.saturating_mul(3600)),
        },
    )
    .await?;
    flash(
        &app,
        &mut session,
        format!(
            "Extension {} sent; the data-security team decides on it.",
            ext.id
        ),
    )
    .await?;
    Ok(see_other(&format!("/requests/{id}")))
}

async fn decide_extension(
    State(app): State<App>,
    jar: CookieJar,
    Path(id): Path<i64>,
    f: std::result::Result<Form<DecideForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    let (mut session, _) = posted(&app, &jar, &f.csrf).await?;
    let decision = f.decision()?;
    let actor = fresh_actor(&app, &mut session).await?;
    let ext = crate::extension::decide(&app, &actor, id, decision, &f.comment).await?;
    flash(
        &app,
        &mut session,
        format!("Extension {id} is {}.", ext.state),
    )
    .await?;
    Ok(see_other(&format!("/requests/{}", ext.request_id)))
}

async fn withdraw_extension(
    State(app): State<App>,
    jar: CookieJar,
    Path(id): Path<i64>,
    f: std::result::Result<Form<CsrfForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    let (mut session, actor) = posted(&app, &jar, &f.csrf).await?;
    let ext = crate::extension::withdraw(&app, &actor, id).await?;
    flash(
        &app,
        &mut session,
        format!("Extension {id} withdrawn; the access ends at the time it had."),
    )
    .await?;
    Ok(see_other(&format!("/requests/{}", ext.request_id)))
}

#[derive(Deserialize)]
struct RevokeForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn revoke(
    State(app): State<App>,
    jar: CookieJar,
    Path(id): Path<i64>,
    f: std::result::Result<Form<RevokeForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    let (mut session, _) = posted(&app, &jar, &f.csrf).await?;
    let actor = fresh_actor(&app, &mut session).await?;
    workflow::revoke(&app, &actor, id, &f.reason).await?;
    flash(
        &app,
        &mut session,
        format!("Access of request {id} revoked; open sessions are being closed."),
    )
    .await?;
    Ok(see_other(&format!("/requests/{id}")))
}

#[derive(Template, WebTemplate)]
#[template(path = "list.html")]
struct ListPage {
    page: Chrome,
    intro: String,
    empty: String,
    requests: Vec<Request>,
}

async fn approver_page(app: &App, jar: &CookieJar, title: &str) -> Result<(Session, Chrome)> {
    let (session, actor) = signed_in(app, jar).await?;
    if !actor.approver {
        return Err(Error::Forbidden(format!(
            "The {} is for the data-security group only.",
            title.to_lowercase()
        )));
    }
    let page = Chrome::new(title, Some(&session), &app.settings.oidc.approvers_group);
    Ok((session, page))
}

async fn queue(State(app): State<App>, jar: CookieJar) -> PageResult {
    let (_, page) = approver_page(&app, &jar, "Approval queue").await?;
    let control = app.control.get().await.map_err(Error::from)?;
    let requests = model::requests_with_status(&**control, &[Status::Pending]).await?;
    Ok(ListPage {
        page,
        intro: "Requests waiting for a decision, newest first. Open one to approve or deny it."
            .into(),
        empty: "Nothing is waiting for a decision.".into(),
        requests,
    }
    .into_response())
}

async fn active_grants(State(app): State<App>, jar: CookieJar) -> PageResult {
    let (_, page) = approver_page(&app, &jar, "Active access").await?;
    let control = app.control.get().await.map_err(Error::from)?;
    let requests =
        model::requests_with_status(&**control, &[Status::Active, Status::Approved]).await?;
    Ok(ListPage {
        page,
        intro: "Everyone's access that is active now or approved to start later. Open one to revoke it."
            .into(),
        empty: "Nobody has access through this app right now.".into(),
        requests,
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "history.html")]
struct HistoryPage {
    page: Chrome,
    events: Vec<Event>,
}

async fn history(State(app): State<App>, jar: CookieJar) -> PageResult {
    let (_, page) = approver_page(&app, &jar, "History").await?;
    let control = app.control.get().await.map_err(Error::from)?;
    let events = model::recent_events(&**control, 500).await?;
    Ok(HistoryPage { page, events }.into_response())
}

async fn export(State(app): State<App>, jar: CookieJar, Query(q): Query<After>) -> PageResult {
    approver_page(&app, &jar, "History").await?;
    let control = app.control.get().await.map_err(Error::from)?;
    Ok(jsonl(
        &model::events_after(&**control, q.after, 100_000).await?,
    ))
}

async fn request_export(State(app): State<App>, jar: CookieJar, Path(id): Path<i64>) -> PageResult {
    let (_, actor) = signed_in(&app, &jar).await?;
    workflow::get(&app, &actor, id).await?;
    let control = app.control.get().await.map_err(Error::from)?;
    Ok(jsonl(&model::events_of(&**control, id).await?))
}

// ---- sign-in ----------------------------------------------------------------------------

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// A path of this app to return to after sign-in; anything else becomes `/`.
///
/// Only a plain same-site path passes: it starts with one `/`, and it is printable ASCII
/// without a backslash, whitespace or control character (browsers drop tabs and newlines
/// from a URL and read `\` as `/`, so `/<TAB>/evil.example` or `/\evil.example` would be
/// `//evil.example`, another site). The same holds once more percent-decoded, so that a
/// double-encoded form (`/%5Cevil.example`, `/%2F/evil.example`) cannot become one
/// further along.
pub fn local_path(next: &str) -> String {
    fn plain(p: &str) -> bool {
        p.starts_with('/')
            && !p.starts_with("//")
            && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
    }
    fn decoded(p: &str) -> Option<String> {
        let bytes = p.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = p.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).ok()
    }
    if plain(next) && decoded(next).is_some_and(|d| plain(&d)) {
        next.to_string()
    } else {
        "/".into()
    }
}

/// Starts a sign-in. Nothing is stored on the server: the flow travels in its own
/// authenticated cookie (see [`session`]), so anonymous hits cost no rows.
async fn login(
    State(app): State<App>,
    jar: CookieJar,
    Query(q): Query<LoginQuery>,
) -> std::result::Result<(CookieJar, Response), Page> {
    let (url, flow) =
        app.oidc.begin(local_path(&q.next)).await.map_err(|e| {
            Error::Unavailable(format!("The identity provider cannot be reached: {e}"))
        })?;
    Ok((jar.add(app.sessions.login_cookie(flow)), see_other(&url)))
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(app): State<App>,
    jar: CookieJar,
    Query(q): Query<CallbackQuery>,
) -> std::result::Result<(CookieJar, Response), Page> {
    let cookie = jar.get(app.sessions.login_cookie_name()).map(|c| c.value());
    let Some(flow) = app.sessions.login_flow(cookie) else {
        return Err(Error::BadInput(
            "No sign-in is in progress here (or it took longer than 10 minutes); start again."
                .into(),
        )
        .into());
    };
    let state_ok = q
        .state
        .as_deref()
        .is_some_and(|s| bool::from(s.as_bytes().ct_eq(flow.state.as_bytes())));
    if !state_ok {
        return Err(Error::Forbidden(
            "This sign-in answer does not belong to your sign-in (state mismatch); start again."
                .into(),
        )
        .into());
    }
    if let Some(error) = q.error {
        return Err(Error::Forbidden(format!(
            "The identity provider refused the sign-in: {error} {}",
            q.error_description.unwrap_or_default()
        ))
        .into());
    }
    let code = q
        .code
        .ok_or_else(|| Error::BadInput("The identity provider sent no code.".into()))?;
    let signed = app.oidc.finish(code, &flow).await.map_err(|e| {
        tracing::warn!(error = format!("{e:#}"), "sign-in failed");
        Error::Forbidden(format!("The sign-in could not be completed: {e}"))
    })?;
    // A new session id at sign-in: an id planted before it is worth nothing after.
    if let Loaded::Active(old) = load(&app, &jar).await? {
        app.sessions.delete(&old.key).await?;
    }
    tracing::info!(email = %signed.user.email, "signed in");
    let (_, cookie) = app
        .sessions
        .create(Data {
            user: Some(signed.user),
            access_token: Some(signed.access_token),
            access_expires_at: Some(signed.access_expires_at),
            signed_in_at: Some(Utc::now()),
            ..Data::default()
        })
        .await?;
    let jar = jar
        .add(app.sessions.login_removal())
        .add(app.sessions.cookie(cookie));
    Ok((jar, see_other(&local_path(&flow.next))))
}

async fn logout(
    State(app): State<App>,
    jar: CookieJar,
    f: std::result::Result<Form<CsrfForm>, FormRejection>,
) -> std::result::Result<(CookieJar, Response), Page> {
    let f = form(f)?;
    let (session, _) = posted(&app, &jar, &f.csrf).await?;
    app.sessions.delete(&session.key).await?;
    Ok((jar.add(app.sessions.removal()), see_other("/")))
}

// ---- plumbing ---------------------------------------------------------------------------

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../templates/app.css"),
    )
        .into_response()
}

pub(crate) async fn not_found() -> Page {
    Page(Error::NotFound("There is no such page.".into()))
}

/// Used by templates: times as `2026-12-01 10:30 UTC`.
pub fn when(t: &chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}
