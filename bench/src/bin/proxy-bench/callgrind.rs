//! Reading callgrind's dumps: instructions per function (exclusive and inclusive), calls
//! received, and the difference between two runs per transaction, grouped by what the code
//! does.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;

/// One function's counts in a dump.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cost {
    /// Instructions executed in the function itself.
    pub exclusive: u64,
    /// Instructions executed in the calls it made (callees' inclusive costs).
    pub in_calls: u64,
    /// How many times it was called.
    pub calls: u64,
}

impl Cost {
    pub fn inclusive(&self) -> u64 {
        self.exclusive + self.in_calls
    }
}

/// A dump: its total and its functions by (demangled) name.
#[derive(Debug, Default)]
pub struct Profile {
    pub total: u64,
    pub functions: HashMap<String, Cost>,
}

impl Profile {
    pub fn read(path: &Path) -> anyhow::Result<Profile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Profile::parse(&text))
    }

    /// Parses callgrind's format (name compression, `calls=` lines followed by the call's
    /// inclusive cost, the first event being `Ir`).
    pub fn parse(text: &str) -> Profile {
        let mut names: HashMap<u64, String> = HashMap::new();
        let mut profile = Profile::default();
        let mut current = String::new();
        let mut callee = String::new();
        let mut pending: Option<u64> = None;
        let mut summed = 0u64;
        for line in text.lines() {
            let Some(first) = line.bytes().next() else {
                continue;
            };
            if first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'*') {
                let ir: u64 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                match pending.take() {
                    Some(calls) => {
                        profile
                            .functions
                            .entry(current.clone())
                            .or_default()
                            .in_calls += ir;
                        profile.functions.entry(callee.clone()).or_default().calls += calls;
                    }
                    None => {
                        profile
                            .functions
                            .entry(current.clone())
                            .or_default()
                            .exclusive += ir;
                        summed += ir;
                    }
                }
            } else if let Some(rest) = line.strip_prefix("fn=") {
                current = name(rest, &mut names);
            } else if let Some(rest) = line.strip_prefix("cfn=") {
                callee = name(rest, &mut names);
            } else if let Some(rest) = line.strip_prefix("calls=") {
                pending = rest
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse().ok())
                    .or(Some(0));
            } else if let Some(rest) = line
                .strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
            {
                if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
                    profile.total = profile.total.max(v);
                }
            }
        }
        if profile.total == 0 {
            profile.total = summed;
        }
        profile
    }

    /// Calls received by the functions `names` name (a name matches itself and
    /// `prefix::name`, as Rust's allocator shims are named).
    pub fn calls_to(&self, names: &[&str]) -> u64 {
        self.functions
            .iter()
            .filter(|(f, _)| {
                names.iter().any(|n| {
                    f.as_str() == *n || f.strip_suffix(*n).is_some_and(|p| p.ends_with("::"))
                })
            })
            .map(|(_, c)| c.calls)
            .sum()
    }

    /// Allocations made: through Rust's global allocator when the program has one (its
    /// `__rdl_*` shims; libc's malloc also counts its own internal calls), else libc's.
    pub fn allocations(&self) -> (u64, u64) {
        let rust = self.calls_to(RUST_ALLOCATE);
        if rust > 0 {
            (rust, self.calls_to(RUST_FREE))
        } else {
            (self.calls_to(ALLOCATE), self.calls_to(FREE))
        }
    }

    /// Instructions in the functions of a category.
    pub fn in_category(&self, what: &str) -> u64 {
        self.functions
            .iter()
            .filter(|(f, _)| category(f) == what)
            .map(|(_, c)| c.exclusive)
            .sum()
    }
}

/// `fn=(id) name` defines a compressed name, `fn=(id)` refers to it.
fn name(rest: &str, names: &mut HashMap<u64, String>) -> String {
    if let Some(r) = rest.strip_prefix('(') {
        if let Some(close) = r.find(')') {
            let id: u64 = r[..close].parse().unwrap_or(u64::MAX);
            let tail = r[close + 1..].trim();
            if !tail.is_empty() {
                names.insert(id, tail.to_string());
                return tail.to_string();
            }
            return names.get(&id).cloned().unwrap_or_default();
        }
    }
    rest.trim().to_string()
}

/// Per-transaction counts of one function: (long run - short run) / transactions.
#[derive(Debug, Default, Clone)]
pub struct PerTx {
    pub name: String,
    pub exclusive: f64,
    pub inclusive: f64,
    pub calls: f64,
}

/// The functions' counts per transaction, from a short and a long run.
pub fn per_transaction(short: &Profile, long: &Profile, transactions: u64) -> Vec<PerTx> {
    let n = transactions as f64;
    let zero = Cost::default();
    long.functions
        .iter()
        .map(|(name, l)| {
            let s = short.functions.get(name).unwrap_or(&zero);
            let d = |a: u64, b: u64| (a as f64 - b as f64) / n;
            PerTx {
                name: name.clone(),
                exclusive: d(l.exclusive, s.exclusive),
                inclusive: d(l.inclusive(), s.inclusive()),
                calls: d(l.calls, s.calls),
            }
        })
        .collect()
}

/// Rust's global allocator (the default, libc's malloc) behind these shims.
pub const RUST_ALLOCATE: &[&str] = &["__rdl_alloc", "__rdl_alloc_zeroed", "__rdl_realloc"];
pub const RUST_FREE: &[&str] = &["__rdl_dealloc"];

/// libc's allocation functions.
pub const ALLOCATE: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
];
pub const FREE: &[&str] = &["free", "cfree"];

pub const SHA256: &str = "SHA-256 of the chained records";

/// What a function's instructions are for, by its name. The order of the checks matters:
/// the first that matches wins.
pub fn category(name: &str) -> &'static str {
    let has = |p: &str| name.contains(p);
    let libc_alloc = [
        "malloc",
        "free",
        "cfree",
        "realloc",
        "calloc",
        "posix_memalign",
        "aligned_alloc",
        "_int_malloc",
        "_int_free",
        "_int_realloc",
        "malloc_consolidate",
        "unlink_chunk",
        "tcache_init",
        "sysmalloc",
    ];
    if has("sha2::") || has("sha256") || has("Sha256") {
        SHA256
    } else if libc_alloc.contains(&name)
        || name.starts_with("__libc_malloc")
        || name.starts_with("__libc_free")
        || name.starts_with("__rust_alloc")
        || name.starts_with("__rust_dealloc")
        || name.starts_with("__rust_realloc")
        || name.starts_with("__rdl_")
        || has("alloc::raw_vec::")
        || has("alloc::alloc::")
    {
        "allocation: malloc, free, realloc, vector growth"
    } else if name.starts_with("__mem")
        || name.starts_with("__str")
        || name.starts_with("mem")
        || name.starts_with("__nss_database_lookup")
    {
        "memcpy, memmove, memchr, strlen (libc)"
    } else if has("proxy::audit::record")
        || has("proxy::audit::params")
        || has("proxy::audit::line")
        || has("relay::client::body")
        || has("serde_json")
        || has("hex::")
        || has("core::fmt")
        || has("alloc::fmt")
        || has("<alloc::string::String as core::fmt::Write>")
    {
        "audit records: JSON building, hex, formatting"
    } else if has("proxy::audit::writer") || has("proxy::audit::AuditLog") {
        "audit writer: accept, chain, batch write"
    } else if has("proxy::relay::ledger") {
        "ledger bookkeeping (pairing)"
    } else if has("proxy::sql") {
        "SQL lexing and inspection"
    } else if has("proxy::protocol") {
        "message framing and decoding"
    } else if has("proxy::relay") || has("proxy::stream") || has("proxy::session") {
        "relay loops (client and server sides)"
    } else if has("tokio::") || has("mio::") {
        "tokio: tasks, wake-ups, I/O readiness, timers"
    } else if has("tracing") {
        "tracing spans"
    } else if has("prometheus") {
        "metrics"
    } else if has("chrono")
        || has("clock_gettime")
        || has("__vdso")
        || has("std::time")
        || has("time::")
    {
        "time: clock reads, timestamps"
    } else if has("std::sync")
        || has("futex")
        || has("std::thread")
        || has("pthread_")
        || has("parking")
        || has("std::sys::sync")
        || has("syscall")
    {
        "locks, thread park/unpark"
    } else if [
        "recv",
        "send",
        "recvfrom",
        "sendto",
        "__libc_recv",
        "__libc_send",
        "epoll_wait",
        "write",
        "__libc_write",
        "read",
        "__libc_read",
        "writev",
        "sendmsg",
        "recvmsg",
    ]
    .contains(&name)
    {
        "system call wrappers (libc)"
    } else {
        "other"
    }
}

/// The per-transaction functions grouped by [`category`], largest first, with the calls
/// of note: allocations and frees.
pub fn by_category(functions: &[PerTx]) -> Vec<(&'static str, f64)> {
    let mut sums: HashMap<&'static str, f64> = HashMap::new();
    for f in functions {
        *sums.entry(category(&f.name)).or_default() += f.exclusive;
    }
    let mut v: Vec<(&'static str, f64)> = sums.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exclusive_inclusive_and_calls() {
        let text = "version: 1\nevents: Ir\nfl=(1) a.c\nfn=(1) main\n16 3\ncfn=(2) foo\ncalls=2 20\n16 400\nfn=(2)\n20 400\nfn=(3) malloc\n+1 7\nsummary: 410\n";
        let p = Profile::parse(text);
        assert_eq!(p.total, 410);
        let main = p.functions["main"];
        assert_eq!((main.exclusive, main.inclusive()), (3, 403));
        assert_eq!(p.functions["foo"].calls, 2);
        assert_eq!(p.functions["foo"].exclusive, 400);
        assert_eq!(p.functions["malloc"].exclusive, 7);
        assert_eq!(category("sha2::sha256::soft::compress"), SHA256);
        assert_eq!(p.calls_to(&["foo"]), 2);
        assert_eq!(
            category("malloc"),
            "allocation: malloc, free, realloc, vector growth"
        );
    }
}
