//! The history as JSON lines, one event per line, oldest first: the export of the pages
//! (`/history.jsonl`, `/requests/{id}/history.jsonl`) and of the API (`/api/v1/events`).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::model::Event;

/// Events as a JSON-lines download.
pub fn jsonl(events: &[Event]) -> Response {
    let mut body = String::new();
    for e in events {
        body.push_str(&serde_json::to_string(e).expect("event serializes"));
        body.push('\n');
    }
    (
        [
            (header::CONTENT_TYPE, "application/jsonl; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"approvals-history.jsonl\"",
            ),
        ],
        body,
    )
        .into_response()
}

/// The export's cursor: events with an id above `after` (`?after=<event id>`).
#[derive(Deserialize)]
pub struct After {
    #[serde(default)]
    pub after: i64,
}
