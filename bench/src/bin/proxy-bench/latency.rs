//! Latency percentiles from pgbench's transaction log (`-l --sampling-rate`): pgbench prints
//! only the mean, and a durable audit shows in the tail first.

use std::path::Path;

/// The share of transactions pgbench logs: enough for a stable p99 (over 10,000 samples in
/// a 10-second run at 8 clients here) at a cost to pgbench that every row pays alike.
pub const SAMPLING_RATE: &str = "0.1";

/// The transaction latencies (µs) in the logs whose names start with `prefix` in `dir`
/// (pgbench writes one per thread: `PREFIX.PID` and `PREFIX.PID.N`), removing the files.
pub fn take_logged(dir: &Path, prefix: &str) -> anyhow::Result<Vec<u64>> {
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("{prefix}.")));
        if !named {
            continue;
        }
        latencies.extend(parse(&std::fs::read_to_string(&path)?)?);
        std::fs::remove_file(&path)?;
    }
    Ok(latencies)
}

/// One log's latencies: each line is `client_id transaction_no time_us script_no
/// time_epoch time_us_fraction [schedule_lag]`; `time_us` is the transaction's latency.
fn parse(log: &str) -> anyhow::Result<Vec<u64>> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let field = l.split_whitespace().nth(2);
            field
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("not a pgbench transaction log line: {l:?}"))
        })
        .collect()
}

/// The nearest-rank percentile `q` (0 < q ≤ 1) of `values`; `None` when there are none.
pub fn percentile(values: &mut [u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (q * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_rank_is_taken() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut v, 0.99), Some(99));
        assert_eq!(percentile(&mut v, 0.5), Some(50));
        assert_eq!(percentile(&mut v, 1.0), Some(100));
        assert_eq!(percentile(&mut [7], 0.99), Some(7));
        assert_eq!(percentile(&mut [], 0.99), None);
        // 1,000 values: the 990th.
        let mut v: Vec<u64> = (0..1000).collect();
        assert_eq!(percentile(&mut v, 0.99), Some(989));
    }

    #[test]
    fn logs_of_every_thread_are_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tx.123"),
            "0 1 250 0 1700000000 1\n1 4 900 0 1700000000 7\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("tx.123.1"), "2 9 40 0 1700000001 3 12\n").unwrap();
        std::fs::write(dir.path().join("other.5"), "0 1 99999 0 1 1\n").unwrap();
        let mut got = take_logged(dir.path(), "tx").unwrap();
        got.sort_unstable();
        assert_eq!(got, vec![40, 250, 900]);
        assert!(!dir.path().join("tx.123").exists());
        assert!(dir.path().join("other.5").exists());
        std::fs::write(dir.path().join("tx.9"), "0 1 x 0 1 1\n").unwrap();
        assert!(take_logged(dir.path(), "tx").is_err());
    }
}
