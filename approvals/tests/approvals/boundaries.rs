//! Trust boundaries (issue 17), each from the attacker's side: where sign-in may send a
//! browser back to, what a person's words can do in Slack, what an anonymous client can make
//! the app store or count.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::common::{eventually, Options, Stack};

/// A browser that follows redirects (through the provider's login) but stops at the app's
/// answer to `/auth/callback`, so a test sees where sign-in sends it.
fn stopping_browser() -> reqwest::Client {
    tls_config::install_provider();
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let from_callback = attempt
                .previous()
                .last()
                .is_some_and(|u| u.path() == "/auth/callback");
            if from_callback {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .build()
        .unwrap()
}

/// Where a browser goes with this `Location`, the way browsers read it: tabs and newlines
/// dropped, `\` as `/`.
fn lands_on(base: &reqwest::Url, location: &str) -> reqwest::Url {
    let cleaned: String = location
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .map(|c| if c == '\\' { '/' } else { c })
        .collect();
    base.join(&cleaned).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sends_the_browser_back_only_to_a_path_of_this_app() {
    let stack = Stack::start().await;
    let base = reqwest::Url::parse(&stack.base).unwrap();
    let http = stopping_browser();

    // First sign-in: through the provider's form (then the provider remembers the person).
    let form = http
        .get(format!("{}/auth/login", stack.base))
        .send()
        .await
        .unwrap();
    let action = form.url().to_string() + "/login";
    let back = http
        .post(action)
        .form(&[("email", "alice@example.com"), ("password", "dev")])
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 303, "{:?}", back.url());

    // `next` as it appears in the query string (already percent-encoded).
    let attacks = [
        "//evil.example/",
        "/%2F/evil.example/",
        "/%5Cevil.example/",
        "/%5C/evil.example/",
        "%5C%5Cevil.example/",
        "/%09/evil.example/",
        "/%0A/evil.example/",
        "/%0D%0A/evil.example/",
        "/%255Cevil.example/",
        "/%252F/evil.example/",
        "/%2509/evil.example/",
        "https://evil.example/",
        "https:%2F%2Fevil.example/",
        "http:evil.example",
        "%2F%2Fevil.example",
        "/%20/evil.example/",
        "javascript:alert(1)",
        "%E2%80%8B//evil.example",
    ];
    for next in attacks {
        let r = http
            .get(format!("{}/auth/login?next={next}", stack.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "next={next}: {}", r.url());
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let to = lands_on(&base, &location);
        assert_eq!(
            to.origin(),
            base.origin(),
            "next={next} sent the browser to {to} (Location {location:?})"
        );
        assert_eq!(location, "/", "next={next}");
    }

    // A path of the app still works, query included.
    for (next, expected) in [
        ("/requests/new", "/requests/new"),
        ("/history.jsonl%3Fafter%3D3", "/history.jsonl?after=3"),
    ] {
        let r = http
            .get(format!("{}/auth/login?next={next}", stack.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["location"], expected, "next={next}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sign_in_starts_store_nothing() {
    let stack = Stack::start().await;
    let before = stack.count("web_sessions").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for _ in 0..50 {
        let r = http
            .get(format!("{}/auth/login", stack.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
    }
    assert_eq!(stack.count("web_sessions").await, before);

    // Signing in still works, and makes exactly one session.
    let browser = stack.browser();
    browser.sign_in("alice@example.com").await;
    assert_eq!(stack.count("web_sessions").await, before + 1);

    // A sign-in cookie that was tampered with is refused.
    let r = http
        .get(format!("{}/auth/callback?code=x&state=y", stack.base))
        .header("cookie", "dbgw_approvals_login=e30.AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(stack.count("web_sessions").await, before + 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_http_methods_do_not_grow_the_metrics() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    for i in 0..40 {
        let method = reqwest::Method::from_bytes(format!("ATTACK{i}").as_bytes()).unwrap();
        let _ = http
            .request(method, format!("{}/", stack.base))
            .send()
            .await
            .unwrap();
    }
    let metrics = stack.browser().get("/metrics").await.body;
    assert!(!metrics.contains("ATTACK"), "{metrics}");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    stack.stop().await;
}

/// A webhook receiver that records what it gets.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let got = got.clone();
            move |axum::Json(v): axum::Json<Value>| async move {
                got.lock().unwrap().push(v);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_justification_cannot_mention_or_link_in_slack() {
    let (hook, got) = receiver().await;
    let stack = Stack::with(Options {
        scheduler_ms: 200,
        webhook: hook,
        ..Options::default()
    })
    .await;
    let alice = stack.browser();
    alice.sign_in("alice@example.com").await;
    let form = alice.get("/requests/new").await;
    let evil =
        "<!channel> urgent: <https://evil.example/login|https://sso.example.com> & <@U0ADMIN>";
    let answer = alice
        .post(
            "/requests",
            &[
                ("csrf", &form.csrf()),
                ("access", "rates/read-only"),
                ("justification", evil),
                ("duration", "30"),
                ("unit", "minutes"),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    eventually("the webhook message", Duration::from_secs(20), async || {
        !got.lock().unwrap().is_empty()
    })
    .await;
    let messages: Vec<Value> = got.lock().unwrap().clone();
    let text = messages[0]["text"].as_str().unwrap();
    assert!(
        text.ends_with(
            "&lt;!channel&gt; urgent: &lt;https://evil.example/login|https://sso.example.com&gt; \
             &amp; &lt;@U0ADMIN&gt;"
        ),
        "{text}"
    );
    assert!(!text.contains('<') && !text.contains('>'), "{text}");
    stack.stop().await;
}
