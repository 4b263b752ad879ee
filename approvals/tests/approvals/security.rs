//! A hostile user against each promise: every attempt is refused with a clear message, and
//! nothing changes (no decision, no event, no status change).

use std::time::Duration;

use crate::common::{Browser, Options, Stack};

/// The counts that must not move when something is refused.
async fn snapshot(stack: &Stack) -> (i64, i64, String) {
    (
        stack.count("decisions").await,
        stack.count("events").await,
        stack.count("grants").await.to_string(),
    )
}

#[tokio::test]
async fn refusals_are_clear_and_change_nothing() {
    let stack = Stack::start().await;
    let alice = stack.browser();
    alice.sign_in("alice@example.com").await;
    let id = alice.request("read-only", 60).await;
    let bob = stack.browser();
    bob.sign_in("bob@example.com").await;
    let dana = stack.browser();
    dana.sign_in("dana@example.com").await;
    let before = snapshot(&stack).await;

    // Approval by a non-member of the group (bob crafts the form the page never shows him;
    // he can read neither the request nor its page, but sends his own valid CSRF token).
    let bob_home = bob.get("/").await;
    let refused = bob
        .post(
            &format!("/requests/{id}/decide"),
            &[("csrf", &bob_home.csrf()), ("decision", "approve")],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("Only members of the data-security group"),
        "{}",
        refused.body
    );

    // Another user's request id: read or act.
    let read = bob.get(&format!("/requests/{id}")).await;
    assert_eq!(read.status, 404);
    assert!(read
        .body
        .contains(&format!("There is no request {id} that you can see")));
    let export = bob.get(&format!("/requests/{id}/history.jsonl")).await;
    assert_eq!(export.status, 404);
    let withdraw = bob
        .post(
            &format!("/requests/{id}/withdraw"),
            &[("csrf", &bob_home.csrf())],
        )
        .await;
    assert_eq!(withdraw.status, 404, "{}", withdraw.body);

    // Forged or missing CSRF token, on a valid session of an approver.
    let forged = dana
        .post(
            &format!("/requests/{id}/decide"),
            &[("csrf", "forged"), ("decision", "approve")],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(
        forged.body.contains("security token does not match"),
        "{}",
        forged.body
    );
    let missing = dana
        .post(
            &format!("/requests/{id}/decide"),
            &[("decision", "approve")],
        )
        .await;
    assert_eq!(missing.status, 422, "{}", missing.body);
    assert!(
        missing.body.contains("Nothing was changed"),
        "{}",
        missing.body
    );
    // A form posted from another site carries no session cookie of ours at all.
    let stranger = Browser::new(&stack.base);
    let csrf_from_elsewhere = stranger
        .post(
            &format!("/requests/{id}/decide"),
            &[("csrf", &bob_home.csrf()), ("decision", "approve")],
        )
        .await;
    assert_eq!(csrf_from_elsewhere.status, 401);

    // Self-approval: alice joins the approvers, signs in again, and tries her own request.
    stack.set_groups("alice@example.com", &["engineering", "data-security"]);
    alice.sign_in("alice@example.com").await;
    let own = alice.decide(id, "approve", "").await;
    assert_eq!(own.status, 403);
    assert!(
        own.body.contains("Nobody decides on their own request"),
        "{}",
        own.body
    );
    stack.set_groups("alice@example.com", &["engineering"]);

    // A member removed from the group after signing in: sam signed in as an approver ...
    let sam = stack.browser();
    sam.sign_in("sam@example.com").await;
    let page = sam.get(&format!("/requests/{id}")).await;
    assert!(page.body.contains("Approve"), "{}", page.body);
    // ... and is removed at the provider; his session still says approver, the decision
    // asks the provider again.
    stack.set_groups("sam@example.com", &[]);
    let removed = sam
        .post(
            &format!("/requests/{id}/decide"),
            &[("csrf", &page.csrf()), ("decision", "approve")],
        )
        .await;
    assert_eq!(removed.status, 403, "{}", removed.body);
    assert!(
        removed.body.contains("does not list you in it"),
        "{}",
        removed.body
    );

    // A 1 MB justification, and a duration over the level's maximum.
    let form = alice.get("/requests/new").await;
    let huge = "x".repeat(1024 * 1024);
    let big = alice
        .post(
            "/requests",
            &[
                ("csrf", &form.csrf()),
                ("access", "rates/read-only"),
                ("justification", &huge),
                ("duration", "1"),
                ("unit", "hours"),
            ],
        )
        .await;
    assert_eq!(big.status, 422);
    assert!(big.body.contains("The form is too large"), "{}", big.body);
    let long = "y".repeat(2001);
    let wordy = alice
        .post(
            "/requests",
            &[
                ("csrf", &form.csrf()),
                ("access", "rates/read-only"),
                ("justification", &long),
                ("duration", "1"),
                ("unit", "hours"),
            ],
        )
        .await;
    assert_eq!(wordy.status, 422);
    assert!(
        wordy.body.contains("at most 2000 are allowed"),
        "{}",
        wordy.body
    );
    let too_long = alice
        .post(
            "/requests",
            &[
                ("csrf", &form.csrf()),
                ("access", "rates/read-only"),
                ("justification", "need it"),
                ("duration", "8"),
                ("unit", "days"),
            ],
        )
        .await;
    assert_eq!(too_long.status, 422);
    assert!(
        too_long
            .body
            .contains("limited to 7 days; you asked for 8 days"),
        "{}",
        too_long.body
    );
    assert_eq!(stack.count("access_requests").await, 1);
    assert_eq!(
        snapshot(&stack).await,
        before,
        "a refusal changed something"
    );
    assert_eq!(stack.status(id).await, "pending");

    // A second approval by the same approver, on a level that needs two.
    let two = alice.request("read-write", 60).await;
    let first = dana.decide(two, "approve", "ok").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(
        first.body.contains("it needs another approver"),
        "{}",
        first.body
    );
    let counted = snapshot(&stack).await;
    let again = dana
        .post(
            &format!("/requests/{two}/decide"),
            &[("csrf", &first.csrf()), ("decision", "approve")],
        )
        .await;
    assert_eq!(again.status, 409);
    assert!(
        again.body.contains("You have already approved"),
        "{}",
        again.body
    );
    assert_eq!(snapshot(&stack).await, counted);
    assert_eq!(stack.status(two).await, "pending");

    // A decision on an already-decided request: dana denies the first, sam (back in the
    // group) then tries to approve it.
    let denied = dana.decide(id, "deny", "not needed").await;
    assert_eq!(denied.status, 200, "{}", denied.body);
    stack.set_groups("sam@example.com", &["data-security"]);
    sam.sign_in("sam@example.com").await;
    let decided = snapshot(&stack).await;
    let late = sam
        .post(
            &format!("/requests/{id}/decide"),
            &[("csrf", &denied.csrf()), ("decision", "approve")],
        )
        .await;
    // sam's new session has a new CSRF token: the old one is refused first...
    assert_eq!(late.status, 403);
    let late = sam.decide(id, "approve", "").await;
    // ... and with his own, the request is already decided.
    assert_eq!(late.status, 409, "{}", late.body);
    assert!(
        late.body.contains("already decided (it is denied)"),
        "{}",
        late.body
    );
    assert_eq!(snapshot(&stack).await, decided);
    assert_eq!(stack.status(id).await, "denied");
    stack.stop().await;
}

/// The event table is append-only for the app's own login, enforced by the database.
#[tokio::test]
async fn the_app_login_cannot_change_or_delete_events() {
    let stack = Stack::start().await;
    let alice = stack.browser();
    alice.sign_in("alice@example.com").await;
    alice.request("read-only", 60).await;
    let n = stack.count("events").await;
    assert!(n >= 1);
    let app_db = stack.as_app("dbgw").await;
    for sql in [
        "UPDATE events SET actor = 'mallory@example.com'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let e = app_db.batch_execute(sql).await.unwrap_err();
        let db = e.as_db_error().expect("a server error");
        assert!(
            db.message().contains("permission denied"),
            "{sql}: {}",
            db.message()
        );
    }
    // Even the owner cannot: the trigger refuses.
    let owner = stack.control().await;
    let e = owner
        .batch_execute("UPDATE events SET actor = 'x'")
        .await
        .unwrap_err();
    assert!(
        e.as_db_error().unwrap().message().contains("append-only"),
        "{e:?}"
    );
    let e = owner.batch_execute("DELETE FROM events").await.unwrap_err();
    assert!(e.as_db_error().unwrap().message().contains("append-only"));
    assert_eq!(stack.count("events").await, n);
    // It can append (that is how the app works) and read.
    app_db
        .batch_execute("INSERT INTO events (actor, kind) VALUES ('test', 'test.append')")
        .await
        .unwrap();
    assert_eq!(stack.count("events").await, n + 1);
    stack.stop().await;
}

/// The app's login is least-privilege: not a superuser, no CREATEROLE, no role, cannot read
/// the data it hands out access to; the app refuses to start with a login that has
/// CREATEROLE, ADMIN OPTION on a role, membership in a predefined role or the provisioner,
/// or is a superuser.
#[tokio::test]
async fn the_app_login_is_least_privilege() {
    let stack = Stack::start().await;
    let rates = stack.as_app("postgres").await;
    let row = rates
        .query_one(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "superuser");
    assert!(!row.get::<_, bool>(1), "CREATEROLE");
    assert!(!row.get::<_, bool>(2) && !row.get::<_, bool>(3) && !row.get::<_, bool>(4));
    let memberships: i64 = rates
        .query_one(
            "SELECT count(*) FROM pg_auth_members WHERE member = \
             (SELECT oid FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(memberships, 0, "the app's login is a member of a role");
    let refused = stack
        .cluster
        .server()
        .connect_as("rates", &stack.app_login)
        .await;
    match refused {
        Err(_) => {}
        Ok(c) => {
            let e = c.query_one("SELECT count(*) FROM prices", &[]).await;
            assert!(e.is_err(), "the app's login can read the rates data");
        }
    }

    let settings_with = |secret: &str| {
        let mut settings = approvals::Settings {
            listen: "127.0.0.1:0".into(),
            ..approvals::Settings::default()
        };
        settings.secrets.dir = stack.dir.path().join("secrets");
        settings.oidc.issuer = stack.idp.issuer().to_string();
        for db in [&mut settings.control, &mut settings.target] {
            db.port = stack.cluster.port();
            db.ca_file = stack.cluster.ca_cert();
            db.secret = secret.into();
        }
        settings
    };
    // The start-up check (issue 17, item 4): a login that could grant itself a role is
    // refused, whatever gave it the power.
    let admin = stack.cluster.connect("postgres").await.unwrap();
    for (give, take, said) in [
        (
            "ALTER ROLE dbgw_approvals CREATEROLE",
            "ALTER ROLE dbgw_approvals NOCREATEROLE",
            "has CREATEROLE",
        ),
        (
            "GRANT rates_writer TO dbgw_approvals WITH ADMIN OPTION",
            "REVOKE rates_writer FROM dbgw_approvals",
            "ADMIN OPTION on rates_writer",
        ),
        (
            "GRANT pg_execute_server_program TO dbgw_approvals",
            "REVOKE pg_execute_server_program FROM dbgw_approvals",
            "member of pg_execute_server_program",
        ),
        (
            "GRANT dbgw_provisioner TO dbgw_approvals",
            "REVOKE dbgw_provisioner FROM dbgw_approvals",
            "member of dbgw_provisioner",
        ),
        // Not the login's power, the server's set-up: without the marker, pg_hba would let
        // people's passwords in from anywhere.
        (
            "ALTER ROLE dbgw_people RENAME TO dbgw_people_gone",
            "ALTER ROLE dbgw_people_gone RENAME TO dbgw_people",
            "has no role dbgw_people",
        ),
    ] {
        admin.batch_execute(give).await.unwrap();
        let err = approvals::Application::build(settings_with("dbgw/approvals-db"))
            .await
            .err()
            .unwrap_or_else(|| panic!("started after {give}"));
        // On PostgreSQL 16+ the provisioner is a member of dbgw_people (it holds ADMIN OPTION
        // on the marker), so a login made a member of the provisioner matches pg_hba's
        // people's rule and the server itself refuses it without the proxy's certificate,
        // before the app's own check can speak: refused either way.
        let err = format!("{err:#}");
        let refused_by_server = said == "member of dbgw_provisioner"
            && err.contains("connection requires a valid client certificate");
        assert!(err.contains(said) || refused_by_server, "{give}: {err}");
        admin.batch_execute(take).await.unwrap();
    }
    let settings = settings_with("dbgw/postgres-admin");
    stack
        .store
        .put_db_credentials("dbgw/postgres-admin", stack.cluster.admin())
        .await
        .unwrap();
    let err = approvals::Application::build(settings)
        .await
        .err()
        .expect("a superuser login is refused");
    assert!(format!("{err:#}").contains("is a superuser"), "{err:#}");
    stack.stop().await;
}

/// Sessions end when unused for the idle timeout, at the absolute timeout however busy,
/// and at sign-out; an ended session's cookie is worth nothing and the page says why.
#[tokio::test]
async fn sessions_time_out_and_sign_out_ends_them() {
    let stack = Stack::with(Options {
        sessions: (2, 6),
        ..Options::default()
    })
    .await;
    let idle = stack.browser();
    idle.sign_in("alice@example.com").await;
    let busy = stack.browser();
    busy.sign_in("bob@example.com").await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(busy.get("/requests/new").await.status, 200);
    }
    let expired = idle.get("/requests/new").await;
    assert_eq!(expired.status, 401);
    assert!(expired.body.contains("Session expired"), "{}", expired.body);
    assert!(expired.body.contains("sign in again"), "{}", expired.body);
    testkit::eventually(
        "a busy session ends at the absolute timeout",
        Duration::from_secs(12),
        async || match busy.get("/requests/new").await.status {
            401 => Ok(()),
            status => Err(status),
        },
    )
    .await;

    let leaving = stack.browser();
    leaving.sign_in("dana@example.com").await;
    let page = leaving.get("/queue").await;
    assert_eq!(page.status, 200);
    let out = leaving
        .post("/auth/logout", &[("csrf", &page.csrf())])
        .await;
    assert_eq!(out.status, 200);
    assert!(
        out.body.contains("Sign in with your company account"),
        "{}",
        out.body
    );
    assert_eq!(leaving.get("/queue").await.status, 401);
    assert_eq!(stack.count("web_sessions").await, 0, "sessions left behind");
    stack.stop().await;
}

/// An approver whose sign-in is older than the provider's access token cannot decide until
/// they sign in again: the group check needs the provider's answer now.
#[tokio::test]
async fn a_decision_needs_a_sign_in_the_provider_still_honours() {
    let stack = Stack::with(Options {
        token_ttl: 12,
        ..Options::default()
    })
    .await;
    let alice = stack.browser();
    alice.sign_in("alice@example.com").await;
    let id = alice.request("read-only", 60).await;
    let dana = stack.browser();
    dana.sign_in("dana@example.com").await;
    let page = dana.get(&format!("/requests/{id}")).await;
    // Less than the app's 5 s margin left on the 12 s access token.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let before = snapshot(&stack).await;
    let stale = dana
        .post(
            &format!("/requests/{id}/decide"),
            &[("csrf", &page.csrf()), ("decision", "approve")],
        )
        .await;
    assert_eq!(stale.status, 401, "{}", stale.body);
    assert!(
        stale.body.contains("sign in again, then decide"),
        "{}",
        stale.body
    );
    assert_eq!(snapshot(&stack).await, before);
    dana.sign_in("dana@example.com").await;
    let done = dana.decide(id, "approve", "").await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(stack.status(id).await, "active");
    stack.stop().await;
}
