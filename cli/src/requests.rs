//! `dbgw request`, `dbgw extend` and the approvals part of `dbgw status`: asking for access
//! and for more time without leaving the terminal.

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use crate::approvals::Approvals;

/// `90s`, `45m`, `2h`, `3d` or plain seconds, as seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: i64 = digits
        .parse()
        .with_context(|| format!("`{text}` is not a duration (e.g. 90m, 2h, 1d)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("unknown unit `{other}` in `{text}` (s, m, h or d)"),
    };
    Ok(n.saturating_mul(unit))
}

fn time(v: &Value) -> String {
    v.as_str()
        .and_then(|s| s.parse::<DateTime<Utc>>().ok())
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

pub async fn request(
    api: &mut Approvals,
    database: &str,
    level: &str,
    duration: &str,
    why: &str,
) -> anyhow::Result<()> {
    let body = json!({"database": database, "level": level, "justification": why,
                      "duration_secs": parse_duration(duration)?});
    let r = api
        .call(Method::POST, "/api/v1/requests", Some(&body))
        .await?;
    println!(
        "request {} sent: {} {} for {}; {} approval(s) needed",
        r["id"],
        r["database"].as_str().unwrap_or_default(),
        r["level"].as_str().unwrap_or_default(),
        duration,
        r["approvals_needed"]
    );
    Ok(())
}

/// The request named, or the person's only active one.
async fn active_request(api: &mut Approvals, request: Option<i64>) -> anyhow::Result<i64> {
    if let Some(id) = request {
        return Ok(id);
    }
    let mine = api.call(Method::GET, "/api/v1/requests", None).await?;
    let active: Vec<i64> = list(&mine)
        .filter(|r| r["status"] == "active")
        .filter_map(|r| r["id"].as_i64())
        .collect();
    match active[..] {
        [one] => Ok(one),
        [] => bail!("you have no active access to extend"),
        _ => bail!("you have several active accesses ({active:?}); name one"),
    }
}

pub async fn extend(
    api: &mut Approvals,
    request: Option<i64>,
    by: Option<&str>,
    until: Option<&str>,
    why: &str,
) -> anyhow::Result<()> {
    let id = active_request(api, request).await?;
    let mut body = json!({"justification": why});
    match (by, until) {
        (Some(by), None) => body["extra_secs"] = json!(parse_duration(by)?),
        (None, Some(until)) => {
            let t: DateTime<Utc> = until
                .parse()
                .with_context(|| format!("`{until}` is not an RFC 3339 time"))?;
            body["extend_to"] = json!(t);
        }
        _ => bail!("give --by <duration> or --until <time>"),
    }
    let e = api
        .call(
            Method::POST,
            &format!("/api/v1/requests/{id}/extend"),
            Some(&body),
        )
        .await?;
    println!(
        "extension {} of request {id} sent: to {} (now {}); {} approval(s) needed",
        e["id"],
        time(&e["extend_to"]),
        time(&e["previous_end"]),
        e["approvals_needed"]
    );
    Ok(())
}

/// `dbgw extend --withdraw`: the pending extension of the request is withdrawn.
pub async fn withdraw_extension(api: &mut Approvals, request: Option<i64>) -> anyhow::Result<()> {
    let id = active_request(api, request).await?;
    let detail = api
        .call(Method::GET, &format!("/api/v1/requests/{id}"), None)
        .await?;
    let Some(ext) = detail["extensions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["state"] == "pending")
    else {
        bail!("request {id} has no pending extension to withdraw");
    };
    let e = api
        .call(
            Method::POST,
            &format!("/api/v1/extensions/{}/withdraw", ext["id"]),
            None,
        )
        .await?;
    println!(
        "extension {} of request {id} withdrawn: access still ends {}",
        e["id"],
        time(&e["previous_end"])
    );
    Ok(())
}

fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v["requests"].as_array().into_iter().flatten()
}

/// Pending requests, active access with its end, and pending extensions.
pub async fn status(api: &mut Approvals) -> anyhow::Result<()> {
    let mine = api.call(Method::GET, "/api/v1/requests", None).await?;
    let mut shown = 0;
    for r in list(&mine) {
        let what = format!(
            "request {} {} {}",
            r["id"],
            r["database"].as_str().unwrap_or_default(),
            r["level"].as_str().unwrap_or_default()
        );
        match r["status"].as_str().unwrap_or_default() {
            "pending" => println!("pending: {what}, asked {}", time(&r["created_at"])),
            "approved" => println!("approved: {what}, starts {}", time(&r["starts_at"])),
            "active" => {
                println!("active: {what}, ends {}", time(&r["expires_at"]));
                let detail = api
                    .call(Method::GET, &format!("/api/v1/requests/{}", r["id"]), None)
                    .await?;
                for e in detail["extensions"].as_array().into_iter().flatten() {
                    if e["state"] == "pending" {
                        println!(
                            "  pending: extension {} to {}",
                            e["id"],
                            time(&e["extend_to"])
                        );
                    }
                }
            }
            _ => continue,
        }
        shown += 1;
    }
    if shown == 0 {
        println!("no pending requests and no active access: `dbgw request <level>` asks");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("45m").unwrap(), 2700);
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert_eq!(parse_duration("1d").unwrap(), 86_400);
        assert!(parse_duration("2w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
