//! The caller's address as the per-IP send budget counts it (CONTRACT §3b).

use std::fmt;
use std::net::IpAddr;

/// An IPv4 address, or an IPv6 /64 (a mobile carrier gives a device a /64, so one
/// device is one /64, not 2^64 budgets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceIp(String);

impl SourceIp {
    /// From the gateway's `sourceIp` (a `/32` or `/128` suffix, as SAM's generated events
    /// carry, is ignored). `None` for anything that is not an address: the budget then
    /// does not apply, and the request is never failed for it.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let address = raw
            .strip_suffix("/32")
            .or_else(|| raw.strip_suffix("/128"))
            .unwrap_or(raw);
        match address.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) => Some(Self(v4.to_string())),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Some(Self(v4.to_string())),
                None => {
                    let [a, b, c, d, ..] = v6.segments();
                    Some(Self(format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")))
                }
            },
        }
    }

    /// The last address of an `X-Forwarded-For` list (the one the load balancer saw).
    pub fn from_forwarded_for(header: &str) -> Option<Self> {
        header.rsplit(',').next().and_then(Self::parse)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_and_ipv6_counts_per_64() {
        let parse = |raw| SourceIp::parse(raw).map(|ip| ip.to_string());
        assert_eq!(parse("192.168.0.1/32").as_deref(), Some("192.168.0.1"));
        assert_eq!(parse(" 203.0.113.7 ").as_deref(), Some("203.0.113.7"));
        assert_eq!(
            parse("2001:db8:1:2:aaaa::1").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            parse("2001:db8:1:2:bbbb::9/128").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            parse("::ffff:198.51.100.4").as_deref(),
            Some("198.51.100.4")
        );
        for bad in [
            "",
            "test-invoke-source-ip",
            "10.0.0.1/24",
            "300.1.1.1",
            "::/0",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            SourceIp::from_forwarded_for("198.51.100.1, 203.0.113.9")
                .map(|ip| ip.to_string())
                .as_deref(),
            Some("203.0.113.9")
        );
    }
}
