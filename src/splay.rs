//! `ftl sync --splay SECS`: a random start delay, so that a fleet whose
//! timers fire in the same second does not hit the bucket in the same second;
//! [`below`] also spreads the fleet's periodic full checks (`sync`).
//!
//! The randomness needs only to differ between nodes and runs, not to be
//! unpredictable: std's `RandomState` (seeded per process by the OS) hashed
//! with the pid, the time and the host name is plenty, and needs no crate.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A delay in [0, `max`), in whole milliseconds; zero when `max` is zero.
pub fn delay(max: Duration) -> Duration {
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(below(max_ms))
}

/// A number in [0, `n`), different on every node and run; 0 when `n` is 0.
pub fn below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    seed() % n
}

fn seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    std::process::id().hash(&mut h);
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
        .hash(&mut h);
    // Missing on some systems; the other inputs suffice then.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

/// Sleep for a random part of `max`, saying so.
pub async fn wait(max: Duration) {
    if max.is_zero() {
        return;
    }
    let secs = max.as_secs();
    let d = delay(max);
    tracing::info!(
        "waiting {:.3}s before starting (--splay {secs})",
        d.as_secs_f64()
    );
    tokio::time::sleep(d).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_in_range_and_spread() {
        assert_eq!(delay(Duration::ZERO), Duration::ZERO);
        let max = Duration::from_secs(10);
        let samples: Vec<Duration> = (0..200).map(|_| delay(max)).collect();
        assert!(samples.iter().all(|d| *d < max), "{samples:?}");
        // 200 draws over 10,000 ms: a constant or badly biased source would
        // fall in few buckets; an even one fills all ten seconds.
        let mut seconds: Vec<u64> = samples.iter().map(|d| d.as_secs()).collect();
        seconds.sort();
        seconds.dedup();
        assert_eq!(seconds.len(), 10, "{samples:?}");
        // A bound of one millisecond leaves only zero.
        assert_eq!(delay(Duration::from_millis(1)), Duration::ZERO);
    }
}
