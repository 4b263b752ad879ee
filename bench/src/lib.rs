//! What the benchmark binaries share.

use std::time::Instant;

/// Nanoseconds per call of `f`: the median of 5 runs of enough calls to take ~50 ms.
pub fn ns_per_call(mut f: impl FnMut()) -> f64 {
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
