//! Provisioning interrupted after each step (as a crash there would leave it), then retried:
//! in between nobody has access that the records do not show, and the retry ends with exactly
//! one grant and a role that works. Two instances provisioning at once do it once.

use approvals::provision::{self, Outcome, Step, STEPS};
use secret_store::DbCredentials;

use crate::common::{Options, Stack};

/// A stack whose scheduler has made its first pass and makes no other during the test.
async fn quiet_stack() -> Stack {
    let stack = Stack::with(Options {
        scheduler_ms: 3_600_000,
        ..Options::default()
    })
    .await;
    stack.scheduler_settled().await;
    stack
}

/// A request for `email` approved by dana and sam, not provisioned yet.
pub async fn approved_request(
    stack: &Stack,
    email: &str,
    role_level: (&str, &str),
    secs: i64,
) -> i64 {
    let control = stack.control().await;
    let (level, role) = role_level;
    let id: i64 = control
        .query_one(
            "INSERT INTO access_requests (email, subject, database, level, role, approvals_needed, \
             justification, duration_secs, status, decided_at) \
             VALUES ($1, 'sub', 'rates', $2, $3, 1, 'test', $4, 'approved', now()) RETURNING id",
            &[&email, &level, &role, &secs],
        )
        .await
        .unwrap()
        .get(0);
    control
        .execute(
            "INSERT INTO decisions (request_id, approver, decision) VALUES ($1, 'dana@example.com', 'approve')",
            &[&id],
        )
        .await
        .unwrap();
    id
}

/// What the secret store holds for the login role of request `id`'s grant.
async fn stored_login(stack: &Stack, email: &str, id: i64) -> Option<DbCredentials> {
    stack
        .store
        .db_credentials(&grants::person_secret(&grants::request_role(email, id)))
        .await
        .ok()
}

/// Whether `email` can log in to rates directly with what the secret store holds.
async fn can_connect(stack: &Stack, email: &str, id: i64) -> bool {
    match stored_login(stack, email, id).await {
        None => false,
        Some(creds) => stack
            .cluster
            .server()
            .connect_as("rates", &creds)
            .await
            .is_ok(),
    }
}

async fn grant_rows(stack: &Stack, request: i64) -> i64 {
    stack
        .control()
        .await
        .query_one(
            "SELECT count(*) FROM grants WHERE request_id = $1",
            &[&request],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn provisioning_interrupted_after_each_step_then_retried_ends_consistent() {
    let stack = quiet_stack().await;
    for (n, stop) in STEPS.iter().enumerate() {
        let email = format!("crash{n}@example.com");
        let id = approved_request(&stack, &email, ("read-only", "rates_reader"), 3600).await;
        let out = provision::provision_until(&stack.app, id, Some(*stop))
            .await
            .unwrap();
        assert_eq!(out, Outcome::Interrupted, "{stop:?}");

        // In between: access exists only once the grant row says so and LOGIN is the last
        // server step; before that, nothing the stored password could use.
        let reachable = can_connect(&stack, &email, id).await;
        let recorded = grant_rows(&stack, id).await;
        if *stop < Step::Login {
            assert!(!reachable, "after {stop:?} the role can log in");
        } else {
            assert!(
                reachable && recorded == 1,
                "after {stop:?}: {reachable} {recorded}"
            );
        }
        if *stop < Step::Grant {
            assert_eq!(recorded, 0, "after {stop:?}");
        }
        let expected_status = if *stop == Step::Active {
            "active"
        } else {
            "approved"
        };
        assert_eq!(stack.status(id).await, expected_status, "{stop:?}");

        // The retry (the scheduler's, after a restart) finishes.
        let again = provision::provision(&stack.app, id).await.unwrap();
        let want = if *stop == Step::Active {
            Outcome::NotDue
        } else {
            Outcome::Done
        };
        assert_eq!(again, want, "{stop:?}");
        assert_eq!(stack.status(id).await, "active", "{stop:?}");
        assert_eq!(grant_rows(&stack, id).await, 1, "{stop:?}");
        assert_eq!(
            stack.memberships(&email).await,
            ["rates_reader"],
            "{stop:?}"
        );
        assert!(can_connect(&stack, &email, id).await, "{stop:?}");
        let kinds = stack.event_kinds(id).await;
        for step in [
            "provision.role",
            "provision.password",
            "provision.membership",
            "provision.grant",
            "provision.login",
            "access.active",
        ] {
            assert!(
                kinds.iter().any(|k| k == step),
                "{stop:?}: {step} in {kinds:?}"
            );
        }
        assert_eq!(
            kinds.iter().filter(|k| *k == "access.active").count(),
            1,
            "{kinds:?}"
        );
    }
    stack.stop().await;
}

#[tokio::test]
async fn two_instances_provision_once_and_an_interrupted_ending_is_finished() {
    let stack = quiet_stack().await;
    let id = approved_request(
        &stack,
        "twice@example.com",
        ("read-only", "rates_reader"),
        3600,
    )
    .await;
    let (a, b) = tokio::join!(
        provision::provision(&stack.app, id),
        provision::provision(&stack.app, id)
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    assert!(outcomes.contains(&Outcome::Done), "{outcomes:?}");
    assert_eq!(grant_rows(&stack, id).await, 1);
    assert_eq!(
        stack
            .event_kinds(id)
            .await
            .iter()
            .filter(|k| *k == "access.active")
            .count(),
        1
    );

    // Ending starts (the grant is marked for ending) and the process dies before the
    // server steps: the scheduler's next pass finishes them.
    assert!(
        provision::begin_end(&stack.app, id, "revoked: test", "dana@example.com")
            .await
            .unwrap()
    );
    assert_eq!(stack.status(id).await, "ending");
    approvals::scheduler::tick(&stack.app).await.unwrap();
    assert_eq!(stack.status(id).await, "ended");
    assert!(stack.memberships("twice@example.com").await.is_empty());
    assert!(stored_login(&stack, "twice@example.com", id)
        .await
        .is_none());
    let kinds = stack.event_kinds(id).await;
    for k in [
        "access.ending",
        "access.grant_revoked",
        "access.membership_removed",
        "access.login_removed",
        "access.sessions_terminated",
        "access.secret_deleted",
        "access.ended",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    stack.stop().await;
}
