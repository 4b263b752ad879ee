//! What the proxy's SQL lexing costs per text, for the texts it sees: a driver's prepared
//! statement, pgbench's simple-protocol statements, a psql script, psql's `\password`.
//! `sql::inspect` is all the work the relay does on a Query or Parse text before recording
//! it (redaction, split, first words); `split` is the statement split alone. Prints a
//! markdown table (median of 5 runs). Run: `make bench-lexer`.

use dbgw_bench::ns_per_call;
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
        let inspect = ns_per_call(|| {
            std::hint::black_box(sql::inspect(std::hint::black_box(text), Caller::Person));
        });
        let split = ns_per_call(|| {
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
