//! The HTTP surface: `/rates`, `/`, and the health checks and metrics of
//! `service::health` (the readiness and metrics handlers are here).
//!
//! The query string of `/rates` is parsed here rather than with axum's `Query` extractor,
//! whose rejections are plain text: every bad input must answer `400` with JSON.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::json;

use crate::cache::Cache;
use crate::db::{self, Pool, Rate};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// How long readiness waits for `SELECT 1` through the pool.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    /// Answers kept until the data changes; `None` when `api.cache` is off.
    pub cache: Option<Arc<Cache>>,
    pub max_range_days: u32,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(hello))
        .route("/rates", get(rates))
        .merge(service::health::routes(get(ready), get(metrics)))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.metrics.http.clone(),
            service::metrics::track,
        ))
        .with_state(state)
}

async fn hello() -> Json<serde_json::Value> {
    Json(json!({"message": "Hello world!"}))
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The service can answer `/rates`: a query through the pool works within a second.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(READY_TIMEOUT, db::ping(&state.pool)).await {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        outcome => {
            let reason = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {READY_TIMEOUT:?}"),
            };
            tracing::warn!(%reason, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "error": "the database is unavailable"})),
            )
        }
    }
}

async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    let status = state.pool.status();
    service::health::openmetrics(state.metrics.render(status.size, status.available))
}

#[derive(Serialize)]
struct RatesBody {
    rates: Vec<Rate>,
}

async fn rates(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<axum::response::Response, ApiError> {
    let q = RatesQuery::parse(query.as_deref(), state.max_range_days)?;
    if q.date_from > q.date_to {
        return Ok(Json(RatesBody { rates: Vec::new() }).into_response());
    }
    let key = (q.date_from, q.date_to, q.orig_code, q.dest_code);
    let cache = state.cache.as_deref();
    if let Some(answer) = cache.and_then(|c| c.get(&key)) {
        state.metrics.cache_hits.inc();
        return Ok(json_bytes(answer));
    }
    let generation = cache.map(Cache::generation);
    let totals = db::rates_totals(&state.pool, key.0, key.1, &key.2, &key.3).await?;
    let body = RatesBody {
        rates: db::fill_days(key.0, key.1, &totals),
    };
    let answer = bytes::Bytes::from(serde_json::to_vec(&body).expect("rates serialize"));
    if let (Some(cache), Some(generation)) = (cache, generation) {
        cache.put(key, answer.clone(), generation);
    }
    Ok(json_bytes(answer))
}

fn json_bytes(body: bytes::Bytes) -> axum::response::Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A validated `/rates` request.
#[derive(Debug, PartialEq)]
pub struct RatesQuery {
    pub date_from: NaiveDate,
    pub date_to: NaiveDate,
    pub orig_code: String,
    pub dest_code: String,
}

impl RatesQuery {
    /// Parses and checks the query string. The first occurrence of a parameter counts, as in
    /// the old service; unknown parameters are ignored.
    pub fn parse(query: Option<&str>, max_range_days: u32) -> Result<RatesQuery, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let date = |name: &str| -> Result<NaiveDate, ApiError> {
            let raw = get(name).ok_or_else(|| bad(format!("missing {name}")))?;
            parse_date(raw).ok_or_else(|| {
                bad(format!(
                    "invalid {name}: {} is not a calendar date YYYY-MM-DD",
                    quote(raw)
                ))
            })
        };
        let code = |name: &str| -> Result<String, ApiError> {
            match get(name) {
                None => Err(bad(format!("missing {name}"))),
                Some("") => Err(bad(format!("{name} must not be empty"))),
                Some(code) => Ok(code.to_string()),
            }
        };
        let q = RatesQuery {
            date_from: date("date_from")?,
            date_to: date("date_to")?,
            orig_code: code("orig_code")?,
            dest_code: code("dest_code")?,
        };
        if q.date_from <= q.date_to {
            let days = (q.date_to - q.date_from).num_days() + 1;
            if days > i64::from(max_range_days) {
                return Err(bad(format!(
                    "date range too long: {days} days from date_from to date_to, \
                     at most {max_range_days}"
                )));
            }
        }
        Ok(q)
    }
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest(message)
}

/// Echoes client input in an error message: quoted, and cut short so a huge parameter does
/// not make a huge answer.
fn quote(raw: &str) -> String {
    const MAX: usize = 40;
    match raw.char_indices().nth(MAX) {
        Some((cut, _)) => format!("`{}...`", &raw[..cut]),
        None => format!("`{raw}`"),
    }
}

/// Exactly `YYYY-MM-DD`, a real calendar date, year 1 to 9999.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return None;
    }
    let year: i32 = s[0..4].parse().ok()?;
    let month: u32 = s[5..7].parse().ok()?;
    let day: u32 = s[8..10].parse().ok()?;
    if year == 0 {
        return None;
    }
    NaiveDate::from_ymd_opt(year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<RatesQuery, String> {
        RatesQuery::parse(Some(q), 1096).map_err(|e| e.to_string())
    }

    const OK: &str = "date_from=2021-01-01&date_to=2021-01-31&orig_code=CNGGZ&dest_code=EETLL";

    #[test]
    fn a_valid_query_parses() {
        let q = parse(OK).unwrap();
        assert_eq!(q.date_from.to_string(), "2021-01-01");
        assert_eq!(q.date_to.to_string(), "2021-01-31");
        assert_eq!(
            (q.orig_code.as_str(), q.dest_code.as_str()),
            ("CNGGZ", "EETLL")
        );
        // Percent-encoding is decoded; codes are kept as given (case-sensitive).
        let q = parse(
            "date_from=2021-01-01&date_to=2021-01-01&orig_code=north%5Feurope&dest_code=cnggz",
        )
        .unwrap();
        assert_eq!(
            (q.orig_code.as_str(), q.dest_code.as_str()),
            ("north_europe", "cnggz")
        );
    }

    #[test]
    fn dates_must_be_real_calendar_dates() {
        for good in ["2021-01-01", "2020-02-29", "0001-01-01", "9999-12-31"] {
            assert!(parse_date(good).is_some(), "{good}");
        }
        for bad in [
            "2021-02-30",
            "2021-02-29",
            "2021-13-01",
            "2021-00-10",
            "2021-01-00",
            "0000-01-01",
            "yesterday",
            "",
            "2021-1-5",
            "2021/01/05",
            "20210105",
            " 2021-01-05",
            "2021-01-05T00",
            "+202-01-05",
            "２０２１-01-05",
        ] {
            assert!(parse_date(bad).is_none(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn every_bad_input_is_a_bad_request_naming_the_parameter() {
        let cases = [
            (
                "date_to=2021-01-31&orig_code=A&dest_code=B",
                "missing date_from",
            ),
            (
                "date_from=2021-01-01&orig_code=A&dest_code=B",
                "missing date_to",
            ),
            (
                "date_from=2021-01-01&date_to=2021-01-31&dest_code=B",
                "missing orig_code",
            ),
            (
                "date_from=2021-01-01&date_to=2021-01-31&orig_code=A",
                "missing dest_code",
            ),
            (
                "date_from=2021-02-30&date_to=2021-03-01&orig_code=A&dest_code=B",
                "invalid date_from",
            ),
            (
                "date_from=2021-01-01&date_to=yesterday&orig_code=A&dest_code=B",
                "invalid date_to",
            ),
            (
                "date_from=2021-01-01&date_to=2021-01-31&orig_code=&dest_code=B",
                "orig_code must not be empty",
            ),
            (
                "date_from=2021-01-01&date_to=2021-01-31&orig_code=A&dest_code=",
                "dest_code must not be empty",
            ),
            (
                "date_from=0001-01-01&date_to=9999-12-31&orig_code=A&dest_code=B",
                "date range too long",
            ),
        ];
        for (query, expected) in cases {
            let err = RatesQuery::parse(Some(query), 1096).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{query}");
            assert!(err.to_string().contains(expected), "{query}: {err}");
        }
        assert!(RatesQuery::parse(None, 1096).is_err());
    }

    #[test]
    fn the_maximum_range_is_inclusive_and_reversed_ranges_are_not_checked() {
        let q = |from: &str, to: &str, max| {
            RatesQuery::parse(
                Some(&format!(
                    "date_from={from}&date_to={to}&orig_code=A&dest_code=B"
                )),
                max,
            )
        };
        assert!(q("2021-01-01", "2021-01-31", 31).is_ok());
        assert!(q("2021-01-01", "2021-02-01", 31).is_err());
        assert!(q("2021-01-01", "2021-01-01", 1).is_ok());
        // Reversed: an empty answer, however far apart.
        assert!(q("9999-12-31", "0001-01-01", 31).is_ok());
    }

    #[test]
    fn echoed_input_is_cut_short() {
        let long = "x".repeat(10_000);
        let err = parse(&format!(
            "date_from={long}&date_to=2021-01-31&orig_code=A&dest_code=B"
        ))
        .unwrap_err();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn rates_serialize_as_the_old_service_did() {
        let day: NaiveDate = "2021-01-31".parse().unwrap();
        let body = RatesBody {
            rates: vec![
                Rate::from_totals(day, 3, 3463),
                Rate::from_totals(day, 3, 3462),
                Rate::from_totals(day, 2, 2000),
                Rate::empty(day),
            ],
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"rates":[{"count":3,"day":"2021-01-31","price":1154.3333333333333},{"count":3,"day":"2021-01-31","price":1154.0},{"count":2,"day":"2021-01-31","price":null},{"count":null,"day":"2021-01-31","price":null}]}"#
        );
        // The shortest text that reads back as the same double.
        for x in [1154.3333333333333_f64, 0.1 + 0.2, 1e-7, 123456789.125] {
            let text = serde_json::to_string(&x).unwrap();
            assert_eq!(
                text.parse::<f64>().unwrap().to_bits(),
                x.to_bits(),
                "{text}"
            );
        }
        assert_eq!(
            serde_json::to_string(&(0.1_f64 + 0.2)).unwrap(),
            "0.30000000000000004"
        );
        // Region means from the data (2681098/1833, 17083/17): the correctly rounded
        // quotient, in its shortest form.
        let text = |x: f64| serde_json::to_string(&x).unwrap();
        assert_eq!(text(2681098.0 / 1833.0), "1462.6830332787779");
        assert_eq!(text(17083.0 / 17.0), "1004.8823529411765");
    }
}
