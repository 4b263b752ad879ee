//! Notifications: a Slack-compatible incoming webhook (`{"text": ...}` plus the event) for
//! new requests, decisions, access starting and ending. Messages are written to an outbox
//! in the same transaction as their event, so a decision never waits for the webhook and no
//! message is lost in a restart. The scheduler delivers them, retrying with exponential
//! backoff; failures and given-up messages show in the metrics.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};
use crate::App;

/// The webhook URL from `{"url": "..."}` in the secret store.
async fn url(app: &App, id: &str) -> Result<SecretString> {
    let raw = app
        .secrets
        .get(id)
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    #[derive(serde::Deserialize)]
    struct Hook {
        url: SecretString,
    }
    serde_json::from_str::<Hook>(raw.expose_secret())
        .map(|h| h.url)
        .map_err(|_| {
            Error::Internal(anyhow::anyhow!(
                "secret `{id}` must be {{\"url\": \"...\"}}"
            ))
        })
}

/// Escapes text for Slack's `mrkdwn` (<https://api.slack.com/reference/surfaces/formatting#escaping>):
/// `&`, `<` and `>` become `&amp;`, `&lt;` and `&gt;`, so that text people typed (a
/// justification, a comment) cannot make a mention (`<!channel>`, `<@U123>`) or a link
/// with a label of its choosing (`<https://evil|harmless>`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The message line for an event, escaped for Slack (every part of it may come from a
/// person: justification, comment, reason, even the email).
pub fn text(request_id: Option<i64>, actor: &str, kind: &str, data: &serde_json::Value) -> String {
    escape(&raw_text(request_id, actor, kind, data))
}

fn raw_text(request_id: Option<i64>, actor: &str, kind: &str, data: &serde_json::Value) -> String {
    let req = request_id
        .map(|id| format!("request {id}"))
        .unwrap_or_default();
    let field = |k: &str| {
        data.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    match kind {
        "request.created" => format!(
            "{actor} asks for {} access to {} ({req}): {}",
            field("level"),
            field("database"),
            field("justification")
        ),
        "decision.approve" => format!("{actor} approved {req}"),
        "request.approved" => format!("{req} is approved"),
        "request.denied" => format!("{actor} denied {req}: {}", field("comment")),
        "request.withdrawn" => format!("{actor} withdrew {req}"),
        "access.active" => format!(
            "{} now has {} on {} until {} ({req})",
            field("email"),
            field("role"),
            field("database"),
            field("expires_at")
        ),
        "access.ending" => format!(
            "access of {} to {} ends ({req}): {}",
            field("email"),
            field("database"),
            field("reason")
        ),
        other => format!("{other} ({req}) by {actor}"),
    }
}

/// Sends the messages that are due, each claimed so that two instances never send one twice
/// at the same time.
pub async fn deliver_due(app: &App) -> Result<()> {
    let settings = &app.settings.webhook;
    if settings.secret.is_empty() {
        return Ok(());
    }
    // Read at each pass: a rotated URL is used without a restart.
    let url = url(app, &settings.secret).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(settings.timeout_secs))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Internal(e.into()))?;
    loop {
        let mut control = app.control.get().await?;
        let tx = control.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT id, payload, attempts FROM webhook_outbox \
                 WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now() \
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[],
            )
            .await?
        else {
            return Ok(());
        };
        let id: i64 = row.get(0);
        let payload: serde_json::Value = row.get(1);
        let attempts: i32 = row.get::<_, i32>(2) + 1;
        let sent = http.post(url.expose_secret()).json(&payload).send().await;
        let error = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
            Err(e) => Some(format!("{}", e.without_url())),
        };
        match error {
            None => {
                tx.execute(
                    "UPDATE webhook_outbox SET delivered_at = now(), attempts = $2 WHERE id = $1",
                    &[&id, &attempts],
                )
                .await?;
                app.metrics.webhook("delivered");
            }
            Some(why) => {
                let give_up = attempts >= settings.max_attempts;
                let backoff_ms = (settings
                    .backoff_ms
                    .saturating_mul(1 << (attempts - 1).clamp(0, 20)))
                .min(3_600_000) as f64;
                tx.execute(
                    "UPDATE webhook_outbox SET attempts = $2, last_error = $3, \
                     next_attempt_at = now() + make_interval(secs => $4::float8 / 1000), \
                     failed_at = CASE WHEN $5::bool THEN now() END WHERE id = $1",
                    &[&id, &attempts, &why, &backoff_ms, &give_up],
                )
                .await?;
                app.metrics
                    .webhook(if give_up { "given_up" } else { "failed" });
                tracing::warn!(message = id, attempts, error = %why, give_up, "webhook delivery failed");
            }
        }
        tx.commit().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_cannot_mention_or_link_in_slack() {
        let data = serde_json::json!({
            "level": "read-only",
            "database": "rates",
            "justification": "<!channel> see <https://evil.example|the runbook> & <@U1>",
        });
        let line = text(Some(3), "alice@example.com", "request.created", &data);
        assert_eq!(
            line,
            "alice@example.com asks for read-only access to rates (request 3): \
             &lt;!channel&gt; see &lt;https://evil.example|the runbook&gt; &amp; &lt;@U1&gt;"
        );
        let denied = text(
            Some(3),
            "dana@example.com",
            "request.denied",
            &serde_json::json!({"comment": "no <!here>"}),
        );
        assert_eq!(
            denied,
            "dana@example.com denied request 3: no &lt;!here&gt;"
        );
    }
}
