//! Limits per client address: how many connections (the signal server) or requests (the
//! HTTP edge) it holds open, and how fast it opens new ones. An IPv6 client counts by its /64, the block one subscriber gets, or it could
//! use a fresh address for every connection.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use tokio::time::Instant;

use crate::token_bucket::TokenBucket;

/// Why a connection from an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRefusal {
    /// It has `max_connections_per_ip` open.
    TooMany,
    /// It opens connections faster than `opens_per_sec` after a burst of `max_open`;
    /// one may be opened again after `retry_after`. At the signal server a new connection
    /// joins and is introduced afresh at once, so closing and opening connections would
    /// otherwise bypass its per-connection limits on introductions; a viewer reconnects
    /// seldom (its back-off starts at 0.5 s and doubles, `swarm::node::backoff`).
    TooFast { retry_after: Duration },
}

/// Every address (IPv6: /64) with a connection open, or one opened recently enough to
/// count: entries outlive their connections until their burst is back (32 s by default).
pub struct IpLimits {
    max_open: usize,
    opens_per_sec: f64,
    ips: HashMap<IpAddr, IpUse>,
    /// `ips` is swept of idle addresses once it grows past this.
    sweep_at: usize,
}

/// One address's connections: how many are open, and how fast it opened them.
struct IpUse {
    open: usize,
    opens: TokenBucket,
}

/// `ips` is never swept below this size: sweeping a small map gains nothing.
const MIN_SWEEP_AT: usize = 1024;

impl IpLimits {
    pub fn new(max_open: usize, opens_per_sec: f64) -> IpLimits {
        IpLimits {
            max_open,
            opens_per_sec,
            ips: HashMap::new(),
            sweep_at: MIN_SWEEP_AT,
        }
    }

    /// Counts a new connection from `ip`, or says why it is refused.
    pub fn open(&mut self, ip: IpAddr, now: Instant) -> Result<(), IpRefusal> {
        if self.ips.len() >= self.sweep_at {
            // An address with nothing open whose opening rate has recovered holds nothing
            // worth keeping; sweeping at doubling sizes keeps this amortised O(1). The
            // memory goes back too, or a spray of addresses would hold its peak for good.
            self.ips
                .retain(|_, ip| ip.open > 0 || !ip.opens.is_full(now));
            self.ips.shrink_to(2 * self.ips.len());
            self.sweep_at = (2 * self.ips.len()).max(MIN_SWEEP_AT);
        }
        let ip = client(ip);
        let burst = u32::try_from(self.max_open).unwrap_or(u32::MAX);
        let per_sec = self.opens_per_sec;
        let entry = self.ips.entry(ip).or_insert_with(|| IpUse {
            open: 0,
            opens: TokenBucket::new(per_sec, burst, now),
        });
        if entry.open >= self.max_open {
            return Err(IpRefusal::TooMany);
        }
        if !entry.opens.try_take(now) {
            return Err(IpRefusal::TooFast {
                retry_after: entry.opens.next_token_in(now),
            });
        }
        entry.open += 1;
        Ok(())
    }

    /// A connection from `ip` closed.
    pub fn close(&mut self, ip: IpAddr) {
        if let Some(entry) = self.ips.get_mut(&client(ip)) {
            entry.open = entry.open.saturating_sub(1);
        }
    }
}

/// Who is counted for `ip`: an IPv4 address, or an IPv6 address's /64.
fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn caps_open_connections_per_address() {
        let now = Instant::now();
        let mut limits = IpLimits::new(2, 1.0);
        assert_eq!(limits.open(A, now), Ok(()));
        assert_eq!(limits.open(A, now), Ok(()));
        assert_eq!(limits.open(A, now), Err(IpRefusal::TooMany));
        assert_eq!(
            limits.open(B, now),
            Ok(()),
            "another address is not limited"
        );
        limits.close(A);
        assert_eq!(
            limits.open(A, now),
            Err(IpRefusal::TooFast {
                retry_after: Duration::from_secs(1)
            }),
            "burst spent"
        );
        assert_eq!(limits.open(A, now + Duration::from_secs(1)), Ok(()));
    }

    /// Closing a connection frees its slot but not its opening: cycling connections is
    /// paced at the sustained rate.
    #[test]
    fn reconnect_cycles_are_paced() {
        let start = Instant::now();
        let mut limits = IpLimits::new(4, 1.0);
        let mut opened = 0;
        for step in 0..100u64 {
            let now = start + Duration::from_millis(100 * step);
            if limits.open(A, now).is_ok() {
                opened += 1;
                limits.close(A);
            }
        }
        // 10 s: the burst of 4, then one a second.
        assert!((13..=15).contains(&opened), "opened {opened}");
    }

    /// One IPv6 subscriber holds a /64: its addresses share one allowance.
    #[test]
    fn ipv6_addresses_count_by_their_64_bit_prefix() {
        let now = Instant::now();
        let mut limits = IpLimits::new(2, 1.0);
        let host = |low: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, low));
        assert_eq!(limits.open(host(1), now), Ok(()));
        assert_eq!(limits.open(host(2), now), Ok(()));
        assert_eq!(limits.open(host(3), now), Err(IpRefusal::TooMany));
        let neighbour = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert_eq!(limits.open(neighbour, now), Ok(()), "another /64");
        limits.close(host(7));
        assert!(
            limits.open(host(3), now).is_err(),
            "burst spent, not a slot"
        );
    }

    #[test]
    fn idle_addresses_are_swept() {
        let start = Instant::now();
        let mut limits = IpLimits::new(4, 1.0);
        for i in 0..2000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            limits.open(ip, start).expect("a fresh address may connect");
            limits.close(ip);
        }
        let later = start + Duration::from_secs(60);
        for i in 0..1100u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            limits.open(ip, later).expect("a fresh address may connect");
        }
        assert!(
            limits.ips.len() < 2000,
            "{} addresses kept",
            limits.ips.len()
        );
    }
}
