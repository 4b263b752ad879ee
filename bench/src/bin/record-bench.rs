//! What the audit's own work costs per `pgbench -S` transaction, on one core, away from
//! any socket: the two records the proxy writes for it (the statement before it is
//! forwarded, its outcome after), built the way a session builds them (its head and the
//! prepared statement's middle part kept), then chained (`line::append_after`: SHA-256
//! of the line, its hash in hex). This is work pgbouncer does not do at all: it is the
//! floor under the proxy's user-space time per statement that no relay can remove.
//! Prints a markdown table (median of 5 runs). Run: `make bench-record`.

use dbgw_bench::ns_per_call;
use proxy::audit::line;
use proxy::audit::params;
use proxy::audit::record::{self, Identity, KeptOk, Outcome, SessionInfo, Text, Via};
use proxy::protocol::frontend::Param;
use sha2::{Digest, Sha256};

const TEXT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
const INT4: u32 = 23;

fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "record-bench: nanoseconds per pgbench -S transaction for building and chaining \
             its two audit records; prints a markdown table."
        );
        return;
    }
    let mut session = SessionInfo::new("48e961f343745450518a3796".into(), "127.0.0.1:51860".into());
    session.logged_in(
        &Identity::Service {
            name: "bench".into(),
        },
        "bench",
        "bench",
        "a408e67a4ca95119",
        "pgbench",
    );
    let via = Via::Extended {
        steps: "[\"bind\",\"execute\"]",
        statement: "P_0",
        portal: "",
    };
    let text = Text {
        text: TEXT,
        plain: record::is_plain(TEXT),
    };
    // What a session keeps for a prepared statement it runs again the same way.
    let mut middle = String::new();
    record::statement_middle_into(&mut middle, via, Some(text), false);
    let value = b"743424";
    let cap = 64 * 1024;

    let (mut body, mut json, mut outcome, mut out) =
        (String::new(), String::new(), String::new(), Vec::new());
    let mut kept = KeptOk::default();
    let statement_body = |body: &mut String, json: &mut String| {
        body.clear();
        json.clear();
        record::statement_head_into(body, &session);
        body.push_str(&middle);
        params::to_json_into(json, &[Param::Text(value)], &[INT4], cap);
        record::params_into(body, Some(json));
    };
    let ok = Outcome::Ok {
        tag: "SELECT 1",
        rows: Some(1),
    };
    let build_statement = ns_per_call(|| statement_body(&mut body, &mut json));
    let build_outcome = ns_per_call(|| {
        outcome.clear();
        record::outcome_into(&mut outcome, &session, 665, None, &ok, 82, &mut kept);
    });
    statement_body(&mut body, &mut json);
    let prev = line::hash_hex(&[7; 32]);
    let chain = ns_per_call(|| {
        out.clear();
        let (_, hex) = line::append_after(&mut out, 665, &prev, &body);
        std::hint::black_box(line::append_after(&mut out, 666, &hex, &outcome));
    });
    let lines = out.len();
    // SHA-256 alone, over the bytes `append_after` hashes (each line up to its hash).
    let hashed: Vec<Vec<u8>> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| l.as_bytes()[..l.find(",\"hash\":").expect("a line has a hash")].to_vec())
        .collect();
    let sha = ns_per_call(|| {
        for h in &hashed {
            std::hint::black_box(Sha256::digest(std::hint::black_box(h)));
        }
    });
    let hashed_bytes: usize = hashed.iter().map(Vec::len).sum();

    println!("| the audit's work per `-S` transaction | bytes | ns |");
    println!("|---|---:|---:|");
    println!("| statement record's body (time, session, kept middle, parameters) | {} | {build_statement:.0} |", body.len());
    println!(
        "| outcome record's body | {} | {build_outcome:.0} |",
        outcome.len()
    );
    println!(
        "| chaining both (`line::append_after`: seq, prev, SHA-256, hex) | {lines} | {chain:.0} |"
    );
    println!("| of which SHA-256 alone | {hashed_bytes} | {sha:.0} |");
    println!(
        "| **total** | | **{:.0}** |",
        build_statement + build_outcome + chain
    );
}
