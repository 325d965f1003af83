//! How busy the CPU was. The scenario runner keeps virtual time, so this says
//! how long a run took to compute, not how it went; a network in real time
//! ([`crate::net::Network::new`]) would slow down with a saturated CPU.

use std::time::{Duration, Instant};

/// User plus system CPU time of this process so far (all threads).
pub fn process_time() -> Duration {
    // /proc/self/stat: fields 14 and 15 (utime, stime) in clock ticks. The
    // command name (field 2) may contain spaces, so count from its closing ')'.
    // Linux reports ticks at USER_HZ, fixed at 100 in its ABI.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 is at index 0, so utime (14) is at 11 and stime (15) at 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Share of `cores` busy since `cpu0`/`wall0` (0..1).
pub fn busy(cpu0: Duration, wall0: Instant, cores: usize) -> f64 {
    let wall = wall0.elapsed().as_secs_f64() * cores.max(1) as f64;
    if wall <= 0.0 {
        return 0.0;
    }
    ((process_time().saturating_sub(cpu0)).as_secs_f64() / wall).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spinning_shows_as_busy() {
        // Other tests and processes share the cores, so spin until this
        // process has been charged CPU time rather than for a fixed wall time.
        let (c0, w0) = (process_time(), Instant::now());
        let mut x = 0u64;
        while process_time().saturating_sub(c0) < Duration::from_millis(200) {
            assert!(
                w0.elapsed() < Duration::from_secs(30),
                "30 s of spinning charged no CPU time"
            );
            for _ in 0..10_000 {
                x = x.wrapping_mul(31).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let b = busy(c0, w0, 1);
        assert!(b > 0.0 && b <= 1.0, "one spinning thread on one core: {b}");
        assert!(
            busy(c0, w0, 1000) < b,
            "more cores make the same work a smaller share"
        );
    }
}
