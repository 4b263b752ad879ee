//! `index.html`: the bundle's summary for a person, in a browser, with no script and no
//! external resource: the verdict, the control table, then each part with links to its
//! files.

use std::fmt::Write as _;

use super::controls::Control;
use super::Contents;

/// HTML-escapes text.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn link(file: &str) -> String {
    if file.ends_with('/') {
        format!("<code>{}</code>", esc(file))
    } else {
        format!("<a href=\"{0}\"><code>{0}</code></a>", esc(file))
    }
}

fn status(ok: bool) -> &'static str {
    if ok {
        "<span class=ok>OK</span>"
    } else {
        "<span class=bad>PROBLEM</span>"
    }
}

const STYLE: &str = "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;\
color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #bbb;\
padding:.3em .6em;text-align:left;vertical-align:top}th{background:#eee}.ok{color:#060;\
font-weight:bold}.bad{color:#a00;font-weight:bold}code{font-size:90%}small{color:#555}";

pub fn index(c: &Contents, controls: &[Control]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\
         <title>Evidence {since} to {until}</title><style>{STYLE}</style></head><body>\n\
         <h1>Database access evidence</h1>\n<p>Period: <b>{since}</b> to <b>{until}</b>{gen}. \
         Overall: {verdict}. Every file is listed with its SHA-256 in {manifest}; \
         <code>proxy audit evidence --verify DIR</code> checks them.</p>\n",
        since = esc(&c.since),
        until = esc(&c.until),
        gen = c
            .generated_at
            .as_deref()
            .map(|g| format!(", generated {}", esc(g)))
            .unwrap_or_default(),
        verdict = status(super::clean(c)),
        manifest = link("MANIFEST"),
    );

    h.push_str(
        "<h2>Controls</h2>\n<table><tr><th>Control</th><th>Asks</th><th>Evidence</th></tr>\n",
    );
    for row in controls {
        let mut files: Vec<String> = row.files.iter().map(|f| link(f)).collect();
        files.extend(
            row.missing
                .iter()
                .map(|m| format!("<small>not in this bundle: {}</small>", esc(m))),
        );
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(row.control),
            esc(row.asks),
            files.join("<br>")
        );
    }
    h.push_str("</table>\n");

    let _ = writeln!(
        h,
        "<h2>Audit chains</h2>\n<p>Each replica's hash chain, verified record by record \
         ({}).</p>\n<table><tr><th>Replica</th><th>Status</th><th>Records</th><th>Head</th>\
         <th>Anchored to</th><th>Files</th></tr>",
        link("chains.json")
    );
    for ch in &c.chains.chains {
        let (records, head) = match &ch.verified {
            Some(r) => (
                format!("{} (seq {}..{})", r.records, r.first_seq, r.last_seq),
                format!("{}:{}", r.last_seq, r.head),
            ),
            None => (
                String::new(),
                ch.problem
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
            ),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&ch.replica),
            status(ch.status == "ok"),
            esc(ch.status),
            esc(&records),
            esc(&head),
            ch.anchor
                .as_ref()
                .map(|a| format!("<code>{}:{}</code>", a.seq, esc(&a.hash)))
                .unwrap_or_else(|| "<small>no published head given</small>".into()),
            ch.files.len()
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Crosscheck with the database server's log (pgaudit)</h2>\n");
    match &c.crosscheck {
        Some(r) => {
            let s = &r.summary;
            let _ = writeln!(
                h,
                "<p>{} {} difference(s) ({}): {} proxy session(s), {} execution(s) that \
                 reached the server; {} pgaudit statement(s), {} paired with the proxy's.</p>",
                status(r.clean()),
                r.differences.len(),
                link("crosscheck.json"),
                s.proxy_sessions,
                s.proxy_executions,
                s.pgaudit_statements,
                s.matched_statements
            );
        }
        None => h.push_str("<p><small>Not in this bundle (no --pgaudit given).</small></p>\n"),
    }

    let _ = writeln!(
        h,
        "<h2>Accesses used in the period</h2>\n<p>Each grant a person connected under, with \
         the request behind it and every session's verified transcript ({}).</p>",
        link("accesses.json")
    );
    if c.accesses.is_empty() {
        h.push_str("<p><small>No person connected in the period.</small></p>\n");
    }
    for a in &c.accesses {
        let request = a.request.as_ref();
        let _ = writeln!(
            h,
            "<h3>Grant {} &mdash; {}</h3>\n<table>\
             <tr><th>Request</th><td>{}</td></tr>\
             <tr><th>Asked by</th><td>{}</td></tr>\
             <tr><th>Why</th><td>{}</td></tr>\
             <tr><th>Approved by</th><td>{}</td></tr>\
             <tr><th>Database</th><td>{}</td></tr>\
             <tr><th>Used</th><td>{} to {}</td></tr>\
             <tr><th>Request history</th><td>{}</td></tr></table>",
            a.grant_id,
            esc(&a.email),
            a.request_id
                .map(|r| r.to_string())
                .unwrap_or_else(|| "none (an operator's grant)".into()),
            esc(request
                .and_then(|r| r.requested_by.as_deref())
                .unwrap_or("")),
            esc(request
                .and_then(|r| r.justification.as_deref())
                .unwrap_or("")),
            esc(&a.approved_by.join(", ")),
            esc(&a.databases.iter().cloned().collect::<Vec<_>>().join(", ")),
            esc(&a.first_session),
            esc(&a.last_session),
            request
                .map(|r| r
                    .history
                    .iter()
                    .map(|e| esc(e))
                    .collect::<Vec<_>>()
                    .join("<br>"))
                .unwrap_or_else(|| "<small>no approvals history given</small>".into()),
        );
        h.push_str("<table><tr><th>Session</th><th>From</th><th>To</th><th>Statements</th><th>Ended</th><th>Chain</th></tr>\n");
        for s in &a.sessions {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ({} error(s), {} refused)</td><td>{}</td><td>{}</td></tr>",
                link(&s.transcript_file),
                esc(&s.start),
                esc(&s.end),
                s.statements,
                s.errors,
                s.refused,
                esc(s.ended.as_deref().unwrap_or("(no end in the files)")),
                status(s.verified)
            );
        }
        h.push_str("</table>\n");
    }

    h.push_str("<h2>Approvals history</h2>\n");
    match &c.approvals {
        Some(a) => {
            let v = &a.verification;
            let _ = writeln!(
                h,
                "<p>{} the exported history's hash chain: {} event(s), head <code>{}</code>{}{} \
                 ({}). {} event(s) in the period ({}).</p>",
                status(v.ok),
                v.events,
                esc(v.head.as_deref().unwrap_or("none")),
                v.anchor
                    .as_deref()
                    .map(|a| format!(", checked against the kept head <code>{}</code>", esc(a)))
                    .unwrap_or_default(),
                v.error
                    .as_deref()
                    .map(|e| format!(": {}", esc(e)))
                    .unwrap_or_default(),
                link("approvals-verification.json"),
                a.events.len(),
                link("approvals-events.jsonl")
            );
        }
        None => {
            h.push_str("<p><small>Not in this bundle (no --approvals-events given).</small></p>\n")
        }
    }

    h.push_str("<h2>Secret rotation</h2>\n");
    match &c.secrets {
        Some(s) => {
            let _ = writeln!(
                h,
                "<p>From Secrets Manager ({}).</p>\n<table><tr><th>Secret</th><th>Rotation</th>\
                 <th>Last rotated</th><th>Versions</th></tr>",
                link("secrets.json")
            );
            for secret in &s.secrets {
                let _ = writeln!(
                    h,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&secret.name),
                    if secret.rotation_enabled { "on" } else { "off" },
                    esc(secret.last_rotated.as_deref().unwrap_or("never")),
                    secret.versions.len()
                );
            }
            h.push_str("</table>\n");
        }
        None => {
            h.push_str("<p><small>Not in this bundle (no --secrets-prefix given).</small></p>\n")
        }
    }
    h.push_str("</body></html>\n");
    h
}
