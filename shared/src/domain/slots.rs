//! A sliding-window budget kept as a fixed set of slots (CONTRACT §3b: the per-IP and
//! the global send budgets; how the global one is sharded and decided is
//! `global_budget`).
//!
//! A budget of `limit` sends per window is `limit` slots, each holding the time of the
//! send that last claimed it. A send claims a slot whose send has left the window (or
//! that was never used), with a write conditioned on exactly that, so no more than
//! `limit` sends are ever inside any window, whatever runs concurrently; and while fewer
//! than `limit` are, some slot is free. Concurrent senders pick different free slots at
//! random, so they rarely contend for one.

use ring::rand::SecureRandom;

use super::time::UnixMillis;

/// The slots of one budget item: index → time of the send holding it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slots(pub Vec<Option<UnixMillis>>);

impl Slots {
    /// No slot used yet (an item not read, or not there).
    pub fn empty(limit: u32) -> Self {
        Self(vec![None; limit as usize])
    }

    /// Slots free at `now`.
    pub fn free(&self, now: UnixMillis, window_secs: u64) -> Vec<u32> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, at)| at.is_none_or(|at| at.plus_secs(window_secs) <= now))
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect()
    }

    /// A free slot chosen at random, if any.
    pub fn pick(&self, now: UnixMillis, window_secs: u64, rng: &dyn SecureRandom) -> Option<u32> {
        let free = self.free(now, window_secs);
        let mut bytes = [0u8; 4];
        rng.fill(&mut bytes).ok()?;
        let len = u32::try_from(free.len()).ok().filter(|l| *l > 0)?;
        free.get((u32::from_le_bytes(bytes) % len) as usize)
            .copied()
    }

    /// Whole seconds until the first slot frees (≥ 1).
    pub fn retry_after(&self, now: UnixMillis, window_secs: u64) -> u64 {
        let first = self
            .0
            .iter()
            .flatten()
            .map(|at| at.plus_secs(window_secs))
            .min()
            .unwrap_or(now);
        now.secs_until_ceil(first).max(1)
    }
}

/// A random index below `n` (0 if `n` is 0 or the random source fails).
/// A random index below `n` (0 if `n` is 0 or the random source fails).
pub fn random_below(n: u32, rng: &dyn SecureRandom) -> u32 {
    let mut bytes = [0u8; 4];
    if n == 0 || rng.fill(&mut bytes).is_err() {
        return 0;
    }
    u32::from_le_bytes(bytes) % n
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn a_slot_frees_when_its_send_leaves_the_window() {
        let t0 = UnixMillis::from_secs(1_000);
        let slots = Slots(vec![Some(t0), None, Some(t0.plus_secs(10))]);
        assert_eq!(slots.free(t0.plus_secs(1), 60), vec![1]);
        assert_eq!(slots.free(t0.plus_secs(60), 60), vec![0, 1]);
        let full = Slots(vec![Some(t0), Some(t0.plus_secs(10))]);
        assert_eq!(full.free(t0.plus_secs(30), 60), Vec::<u32>::new());
        assert_eq!(full.pick(t0.plus_secs(30), 60, &SystemRandom::new()), None);
        assert_eq!(full.retry_after(t0.plus_secs(30), 60), 30);
        assert!(
            Slots::empty(5)
                .pick(t0, 60, &SystemRandom::new())
                .is_some_and(|i| i < 5)
        );
    }
}
