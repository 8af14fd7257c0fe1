//! The copy's rate limit: records/s shared by every scope a wave copies at once.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Paces chunks so that, over time, no more than `rate` records/s are taken. Each chunk reserves
/// the next slot of `n / rate` seconds and waits for its start, so concurrent copies share the
/// rate fairly and a burst is at most one chunk.
pub struct Throttle {
    rate: Option<u64>,
    next: Mutex<Option<Instant>>,
}

impl Throttle {
    /// `None`: no limit.
    pub fn new(rate: Option<u64>) -> Self {
        Self {
            rate: rate.filter(|r| *r > 0),
            next: Mutex::new(None),
        }
    }

    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Waits until `n` records may go.
    pub async fn take(&self, n: u64) {
        let Some(rate) = self.rate else { return };
        let start = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let start = next.map_or(now, |t| t.max(now));
            *next = Some(start + Duration::from_secs_f64(n as f64 / rate as f64));
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn chunks_are_paced_at_the_rate() {
        let t = Throttle::new(Some(1000));
        let begun = tokio::time::Instant::now();
        for _ in 0..5 {
            t.take(500).await;
        }
        // Five slots of 0.5 s: the fifth starts at 2 s (the clock is virtual: no real waiting).
        assert_eq!(begun.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_never_waits() {
        let t = Throttle::new(None);
        let begun = tokio::time::Instant::now();
        t.take(1_000_000).await;
        assert_eq!(begun.elapsed(), Duration::ZERO);
    }
}
