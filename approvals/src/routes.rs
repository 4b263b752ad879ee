//! The app's router: the pages, the JSON API and the CLI's sign-in hand-off, with the
//! layers every response gets. The composition root of the HTTP side: the modules it joins
//! do not import one another's routes.

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

use crate::{api, cli_handoff, health, scim, web, App};

pub fn router(app: App) -> Router {
    let mut router = Router::new();
    if app.scim.is_some() {
        router = router.merge(scim::router(app.clone()));
    }
    router
        .merge(web::routes())
        .merge(api::router())
        .route("/auth/cli", get(cli_handoff::start))
        .route("/auth/cli/finish", get(cli_handoff::finish))
        .route("/api/v1/cli/token", post(cli_handoff::redeem))
        .merge(service::health::routes(
            get(health::ready),
            get(health::metrics),
        ))
        .fallback(web::not_found)
        .layer(DefaultBodyLimit::max(crate::body::LIMIT))
        .layer(middleware::map_response(web::security_headers))
        .layer(middleware::from_fn_with_state(
            app.metrics.http.clone(),
            service::metrics::track,
        ))
        .with_state(app)
}
