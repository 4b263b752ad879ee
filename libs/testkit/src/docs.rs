//! Checks that the documentation and the deployment name what the code has: every
//! configuration key and metric documented, every deployed variable a key.

use std::path::PathBuf;

/// The workspace's root (this crate is `libs/testkit`), where the docs and the deployment are.
pub fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every configuration key of `settings` (its defaults, serialised) as a dotted path, e.g.
/// `upstream.connect_timeout_secs`. A list, and each table named in `maps` (keys chosen by
/// the operator, like the proxy's `services`), is one key.
pub fn config_keys(settings: &impl serde::Serialize, maps: &[&str]) -> Vec<String> {
    fn walk(value: &serde_json::Value, path: &str, maps: &[&str], out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(fields) if !maps.contains(&path) => {
                for (key, inner) in fields {
                    let full = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(inner, &full, maps, out);
                }
            }
            _ => out.push(path.to_string()),
        }
    }
    let value = serde_json::to_value(settings).expect("settings serialise");
    let mut out = Vec::new();
    walk(&value, "", maps, &mut out);
    out
}

/// The metric names (from the `# TYPE` lines, so that families without samples count too;
/// a counter's name with its `_total`) and the label names of a Prometheus text exposition.
pub fn metric_names(exposition: &str) -> (Vec<String>, Vec<String>) {
    let (mut names, mut labels) = (Vec::new(), Vec::new());
    for line in exposition.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                names.push(match kind {
                    "counter" if !name.ends_with("_total") => format!("{name}_total"),
                    _ => name.to_string(),
                });
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some(set) = line
            .split_once('{')
            .and_then(|(_, rest)| rest.split('}').next())
        {
            for pair in set.split(',') {
                if let Some((label, _)) = pair.split_once('=') {
                    // Histogram buckets' `le` is the format's, not ours.
                    if label != "le" {
                        labels.push(label.to_string());
                    }
                }
            }
        }
    }
    names.sort();
    names.dedup();
    labels.sort();
    labels.dedup();
    (names, labels)
}

/// Fails naming every `word` that `doc` (a path from the workspace root) does not contain in
/// backticks, so that a key or metric added to the code without its documentation fails.
pub fn assert_documented(doc: &str, what: &str, words: &[String]) {
    let root = workspace_root();
    let text =
        std::fs::read_to_string(root.join(doc)).unwrap_or_else(|e| panic!("reading {doc}: {e}"));
    let missing: Vec<&String> = words
        .iter()
        .filter(|w| !text.contains(&format!("`{w}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "{doc} does not document these {what} (write each in backticks): {missing:?}"
    );
}

/// Every environment variable named `<prefix><SECTION>__<KEY>` in the deployment (Terraform,
/// `deploy/`, `compose.yaml`) is one of `keys` (from [`config_keys`]) or an entry of one
/// of the `maps`: a misspelt name would stop the service at start-up, since configuration
/// refuses unknown keys, and only in AWS. `<prefix>CONFIG` (the file) is not a key.
pub fn assert_deployed_keys(prefix: &str, keys: &[String], maps: &[&str]) {
    let root = workspace_root();
    let mut files = vec![root.join("compose.yaml")];
    let mut dirs = vec![root.join("terraform"), root.join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() && !name.starts_with('.') {
                dirs.push(path);
            } else if path.is_file() {
                files.push(path);
            }
        }
    }
    let mut seen = 0;
    let mut unknown = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue; // binary files
        };
        for (at, _) in text.match_indices(prefix) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let rest = &name[prefix.len()..];
            if rest.is_empty() || rest == "CONFIG" {
                continue;
            }
            seen += 1;
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let known = keys.contains(&key)
                || maps
                    .iter()
                    .any(|m| key.strip_prefix(m).is_some_and(|k| k.starts_with('.')));
            if !known {
                unknown.push(format!("{name} ({})", file.display()));
            }
        }
    }
    assert!(seen > 0, "no {prefix}* variable in the deployment");
    unknown.sort();
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "the deployment sets variables that are no configuration key: {unknown:?}"
    );
}
