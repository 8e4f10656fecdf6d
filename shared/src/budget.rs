//! The time one invocation has left (CONTRACT §1: every request is answered with a
//! contract body inside the function's timeout, whatever its dependencies do).
//!
//! Lambda hands each invocation its deadline (`Lambda-Runtime-Deadline-Ms`); every
//! dependency call, retry and back-off of the request is cut at that deadline minus
//! [`Budget::RESERVE`], so a stalled DynamoDB, SNS or Secrets Manager becomes a 503 with
//! `Retry-After` rather than a platform timeout and API Gateway's bare 5xx. The SDK's own
//! connect and per-attempt timeouts (`adapters::sdk_timeouts`) are shorter still, so a
//! single stuck attempt is retried while there is time.

use std::future::Future;
use std::time::Duration;

use lambda_http::{Request, RequestExt};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::time::Instant;

use crate::clock::SystemClock;
use crate::ports::Clock;

/// When a request must be answered by.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    answer_by: Instant,
}

/// The budget ran out before a dependency answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no answer within the invocation's time budget")]
pub struct OutOfTime;

impl Budget {
    /// Kept back from the deadline to build and send the answer once a call is cut off.
    pub const RESERVE: Duration = Duration::from_millis(500);
    /// The function timeout in `template.yaml`, for requests that carry no Lambda context
    /// (a handler called directly, the local gateway of `make dev`).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// From the invocation's deadline (epoch milliseconds in the Lambda context).
    pub fn from_request(req: &Request) -> Self {
        let left = req
            .lambda_context_ref()
            .map_or(Self::DEFAULT_TIMEOUT, |ctx| {
                Duration::from_millis(ctx.deadline.saturating_sub(SystemClock.now().as_millis()))
            });
        Self::within(left)
    }

    /// From an invocation's deadline (epoch milliseconds) of an event that is not a
    /// request.
    pub fn from_deadline(deadline_ms: u64) -> Self {
        Self::within(Duration::from_millis(
            deadline_ms.saturating_sub(SystemClock.now().as_millis()),
        ))
    }

    /// A budget for a call that has `left` before its deadline.
    pub fn within(left: Duration) -> Self {
        Self {
            answer_by: Instant::now() + left.saturating_sub(Self::RESERVE),
        }
    }

    /// Time left for dependency calls.
    pub fn remaining(&self) -> Duration {
        self.answer_by.saturating_duration_since(Instant::now())
    }

    /// Run `call`, giving up when the budget runs out.
    pub async fn bound<T>(&self, call: impl Future<Output = T>) -> Result<T, OutOfTime> {
        tokio::time::timeout_at(self.answer_by, call)
            .await
            .map_err(|_| OutOfTime)
    }

    /// Sleep a jittered back-off before retry number `attempt` (0-based; see
    /// [`back_off`]). `false`, without sleeping, when the budget could not cover the
    /// longest such sleep and another try.
    pub async fn back_off(&self, attempt: u32) -> bool {
        if self.remaining() <= back_off_ceiling(attempt).saturating_mul(2) {
            return false;
        }
        back_off(attempt).await;
        true
    }
}

fn back_off_ceiling(attempt: u32) -> Duration {
    Duration::from_millis(5u64.saturating_mul(1 << attempt.min(5)).min(100))
}

/// A random sleep up to `min(100 ms, 5 ms · 2^attempt)` ("full jitter", as the AWS
/// SDKs back off), so that writers who lost a race to one item do not collide again.
pub async fn back_off(attempt: u32) {
    let mut bytes = [0u8; 4];
    let fraction = match SystemRandom::new().fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    };
    tokio::time::sleep(back_off_ceiling(attempt).mul_f64(fraction)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_past_the_budget_is_cut_off() {
        let budget = Budget::within(Duration::from_secs(2));
        assert!(budget.remaining() <= Duration::from_millis(1500));
        let stalled = budget
            .bound(tokio::time::sleep(Duration::from_secs(60)))
            .await;
        assert_eq!(stalled, Err(OutOfTime));
        assert_eq!(budget.remaining(), Duration::ZERO);
        assert!(!budget.back_off(0).await);
    }

    #[tokio::test(start_paused = true)]
    async fn back_off_sleeps_at_most_its_ceiling() {
        let budget = Budget::within(Duration::from_secs(5));
        for attempt in 0..8 {
            let before = Instant::now();
            assert!(budget.back_off(attempt).await);
            assert!(Instant::now() - before <= Duration::from_millis(100));
        }
        let quick = budget.bound(async { 7 }).await;
        assert_eq!(quick, Ok(7));
    }
}
