//! Points in time as Unix epoch milliseconds: the resolution of the refresh-reuse grace.

use std::fmt;

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds, rounded down (JWT NumericDate, DynamoDB TTL).
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    pub const fn plus_secs(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    pub const fn plus_millis(self, millis: u64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    /// Whole seconds from `self` until `later`, rounded up; 0 if `later` has passed.
    pub const fn secs_until_ceil(self, later: Self) -> u64 {
        later.0.saturating_sub(self.0).div_ceil(1000)
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_round_up_to_whole_seconds() {
        let now = UnixMillis(10_000);
        assert_eq!(now.secs_until_ceil(UnixMillis(10_001)), 1);
        assert_eq!(now.secs_until_ceil(UnixMillis(11_000)), 1);
        assert_eq!(now.secs_until_ceil(UnixMillis(11_001)), 2);
        assert_eq!(now.secs_until_ceil(UnixMillis(9_000)), 0);
    }
}
