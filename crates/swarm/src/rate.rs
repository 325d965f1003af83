use std::time::Duration;

/// A token bucket: `take` says how long to wait before sending `n` bytes so the
/// long-run rate stays under the cap. It may run into debt, so a chunk larger than
/// the burst still goes out, after the wait it has earned.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Bytes per second; 0 means unlimited.
    rate: u64,
    burst: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    pub fn new(rate: u64, burst: u64) -> Self {
        TokenBucket {
            rate,
            burst: burst as f64,
            tokens: burst as f64,
            last: Duration::ZERO,
        }
    }

    pub fn unlimited() -> Self {
        TokenBucket::new(0, 0)
    }

    /// Spends `n` bytes at time `now`; returns how long to wait before sending them.
    pub fn take(&mut self, now: Duration, n: u64) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate() {
        let mut b = TokenBucket::new(1_000_000, 100_000);
        // The burst goes at once; 1 MB more takes about one second.
        assert_eq!(b.take(Duration::ZERO, 100_000), Duration::ZERO);
        let mut wait = Duration::ZERO;
        for _ in 0..10 {
            wait = b.take(Duration::ZERO, 100_000);
        }
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
        // After that second has passed, the debt is paid.
        assert_eq!(b.take(Duration::from_secs(1), 0), Duration::ZERO);
        assert_eq!(
            TokenBucket::unlimited().take(Duration::ZERO, u64::MAX),
            Duration::ZERO
        );
    }
}
