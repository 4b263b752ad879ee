//! What the proxy's SQL lexing costs per text, for the texts it sees: a driver's prepared
//! statement, pgbench's simple-protocol statements, a psql script, psql's `\password`.
//! `sql::inspect` is all the work the relay does on a Query or Parse text before recording
//! it (redaction, split, first words); `split` is the statement split alone. Prints a
//! markdown table (median of 5 runs). Run: `make bench-lexer`.

use std::time::Instant;

use proxy::sql::{self, Caller, Mode};

fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("lexer-bench: nanoseconds per text for the proxy's SQL inspection; prints a markdown table.");
        return;
    }
    let script = {
        let mut s = String::new();
        for i in 0..40 {
            s.push_str(&format!(
                "-- step {i}\nINSERT INTO notes (body) VALUES ('it''s; step {i}', $$a;b$$); /* done */\n"
            ));
        }
        s
    };
    let texts: Vec<(&str, String)> = vec![
        (
            "prepared statement (pgbench -M prepared)",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;".into(),
        ),
        ("BEGIN; (pgbench simple)", "BEGIN;".into()),
        (
            "UPDATE (pgbench simple)",
            "UPDATE pgbench_accounts SET abalance = abalance + -4234 WHERE aid = 45171;".into(),
        ),
        ("psql script, 40 statements", script),
        (
            "\\password (redacted)",
            "ALTER USER alice PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy'".into(),
        ),
    ];
    println!("| text | bytes | inspect (ns) | split only (ns) | inspect MB/s |");
    println!("|---|---:|---:|---:|---:|");
    for (name, text) in &texts {
        let inspect = median(|| {
            std::hint::black_box(sql::inspect(std::hint::black_box(text), Caller::Person));
        });
        let split = median(|| {
            std::hint::black_box(sql::split::statements(
                std::hint::black_box(text),
                Mode::PINNED,
            ));
        });
        println!(
            "| {name} | {} | {inspect:.0} | {split:.0} | {:.0} |",
            text.len(),
            text.len() as f64 / inspect * 1e3
        );
    }
}

/// Nanoseconds per call: the median of 5 runs of enough calls to take ~50 ms.
fn median(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_millis() < 10 {
        f();
        n += 1;
    }
    let calls = (n * 5).max(1);
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            t.elapsed().as_nanos() as f64 / calls as f64
        })
        .collect();
    runs.sort_by(|a, b| a.total_cmp(b));
    runs[2]
}
