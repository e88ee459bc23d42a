//! A provider's request budget, shared by every step and every concurrent
//! request of a run: requests are spaced evenly, one every `per / requests`,
//! so the rate never goes over the limit even in a burst.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    pub fn new(requests: u32, per: Duration) -> Self {
        RateLimiter {
            interval: per / requests.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this request's slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spaces_requests_evenly() {
        let l = std::sync::Arc::new(RateLimiter::new(20, Duration::from_secs(1)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move { l.acquire().await }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Ten slots 50 ms apart: the last starts 450 ms after the first.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(440) && took < Duration::from_millis(700),
            "{took:?}"
        );
    }
}
