//! Real clients through the proxy: each test checks that the audit log holds exactly the
//! statements the client ran, with parameters and outcomes, and that the chain verifies.

mod common;

use common::{assert_chain_verifies, executions, Stack};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_simple_extended_and_errors() {
    let stack = Stack::start().await;
    let db = stack.connect(&stack.writer).await;

    // Extended protocol with parameters of several types, NULL among them.
    let row = db
        .query_one("SELECT $1::int + 1, $2::text, $3::text IS NULL", &[&41i32, &"héllo", &None::<String>])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);

    db.execute("INSERT INTO notes (body, n) VALUES ($1, $2)", &[&"first", &7i32]).await.unwrap();
    let err = db.execute("INSERT INTO nope VALUES (1)", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    db.batch_execute("SELECT 1; SELECT 2").await.unwrap();

    let records = stack.records();
    let runs = executions(&records, "proxy-test");
    let texts: Vec<&str> = runs.iter().map(|(s, _)| s["statement"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        vec![
            "SELECT $1::int + 1, $2::text, $3::text IS NULL",
            "INSERT INTO notes (body, n) VALUES ($1, $2)",
            "SELECT 1",
            "SELECT 2"
        ],
        "one record per execution; the failed Parse is not an execution"
    );
    // tokio-postgres sends int4 in binary and text in binary too.
    let (first, first_out) = &runs[0];
    assert_eq!(first["protocol"], "extended");
    assert_eq!(first["params"][0], json!({"base64": "AAAAKQ=="}));
    assert_eq!(first["params"][1], json!({"base64": "aMOpbGxv"}));
    assert!(first["params"][2].is_null());
    assert_eq!(first_out.as_ref().unwrap()["tag"], "SELECT 1");
    assert_eq!(first_out.as_ref().unwrap()["rows"], 1);
    assert_eq!(runs[1].1.as_ref().unwrap()["tag"], "INSERT 0 1");
    assert_eq!(runs[2].0["protocol"], "simple");
    assert_eq!((runs[3].0["index"].as_u64(), runs[3].0["of"].as_u64()), (Some(1), Some(2)));
    for (s, o) in &runs {
        assert_eq!(s["identity"], json!({"kind": "service", "name": "app_writer"}));
        assert_eq!(s["db_user"], "app_writer");
        assert_eq!(s["database"], "rates");
        assert_eq!(o.as_ref().expect("every execution has an outcome")["status"], "ok");
    }
    drop(db);
    assert_chain_verifies(&stack.audit_dir());
    stack.stop().await;
}
