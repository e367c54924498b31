//! The idle clock of a session: reads and writes touch it, and a session
//! whose clock runs past the idle timeout is closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct IdleClock {
    started: Instant,
    last_ms: AtomicU64,
}

impl Default for IdleClock {
    fn default() -> Self {
        Self::new()
    }
}

impl IdleClock {
    pub fn new() -> Self {
        IdleClock {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Resolves once nothing touched the clock for `limit`.
    pub async fn expired(&self, limit: Duration) {
        loop {
            let left = limit.saturating_sub(self.idle_for());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.max(Duration::from_millis(100))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expires_only_after_the_limit_since_the_last_touch() {
        let clock = IdleClock::new();
        let limit = Duration::from_millis(200);
        let started = Instant::now();
        clock.touch();
        tokio::time::timeout(Duration::from_secs(5), clock.expired(limit))
            .await
            .expect("an idle clock expires");
        assert!(started.elapsed() >= limit);
    }
}
