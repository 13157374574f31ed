//! Limits a client cannot talk its way past: connection counts (total and per client address),
//! the per-connection message rate, and the real client address behind trusted proxies.
//!
//! Admission hands out an [`Admission`] guard that the connection task owns; its `Drop` gives the
//! slot back, so counts follow live connections whatever way a connection ends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hyper::HeaderMap;
use ipnet::IpNet;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` reached: 503.
    ServerFull,
    /// `limits.max_connections_per_ip` reached for this client: 429.
    AddressFull,
}

/// Connection counts, total and per client address. Cheap to clone.
#[derive(Clone, Default)]
pub struct Gate {
    /// (all connections, connections per client key); one short lock per admission and release.
    counts: Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>,
}

/// One admitted connection's slot; dropping it frees the slot.
pub struct Admission {
    gate: Gate,
    key: IpAddr,
}

impl Gate {
    /// Takes a slot for `client`, or says which limit is reached.
    pub fn admit(
        &self,
        client: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<Admission, Refusal> {
        let key = client_key(client);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *counts;
        if *total >= max_total {
            return Err(Refusal::ServerFull);
        }
        let mine = per_ip.entry(key).or_insert(0);
        if *mine >= max_per_ip {
            return Err(Refusal::AddressFull);
        }
        *mine += 1;
        *total += 1;
        Ok(Admission {
            gate: self.clone(),
            key,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = self.gate.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *counts;
        *total -= 1;
        if let Some(n) = per_ip.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.key);
            }
        }
    }
}

/// The key a client is counted under: its IPv4 address, or its IPv6 /64 (one subscriber's
/// network, whose addresses it can change at will).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest untrusted
/// address in `X-Forwarded-For` (read from the right, since each proxy appends), else `X-Real-IP`.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer_ip) {
        return peer_ip;
    }
    let forwarded: Option<Vec<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<Vec<&str>>>()
        .and_then(|values| {
            values
                .iter()
                .flat_map(|v| v.split(','))
                .map(|a| a.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical()))
                .collect()
        });
    if let Some(chain) = forwarded.filter(|c| !c.is_empty()) {
        return chain
            .iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .or(chain.first())
            .copied()
            .unwrap_or(peer_ip);
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .map_or(peer_ip, |ip| ip.to_canonical())
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up; a message takes one.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes a token at `now`; `false` when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn loopback() -> Vec<IpNet> {
        vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()]
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_peer() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &loopback()),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(stranger, &h, &loopback()), stranger.ip());
    }

    #[test]
    fn a_spoofed_left_entry_does_not_win() {
        // The client sent "1.2.3.4"; nginx appended the real address.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9")]);
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &loopback()),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn x_real_ip_and_garbage() {
        let proxy: SocketAddr = "[::1]:5000".parse().unwrap();
        let h = headers(&[("x-real-ip", "2001:db8::5")]);
        assert_eq!(
            client_ip(proxy, &h, &loopback()),
            "2001:db8::5".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[("x-forwarded-for", "not an address")]);
        assert_eq!(client_ip(proxy, &h, &loopback()), proxy.ip());
    }

    #[test]
    fn gate_counts_total_and_per_address_and_frees_on_drop() {
        let gate = Gate::default();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let first = gate.admit(a, 3, 2).unwrap();
        let _second = gate.admit(a, 3, 2).unwrap();
        assert_eq!(gate.admit(a, 3, 2).err(), Some(Refusal::AddressFull));
        let _third = gate.admit(b, 3, 2).unwrap();
        assert_eq!(gate.admit(b, 3, 2).err(), Some(Refusal::ServerFull));
        drop(first);
        assert!(gate.admit(a, 3, 2).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let gate = Gate::default();
        let _one = gate
            .admit("2001:db8:1:2::1".parse().unwrap(), 10, 1)
            .unwrap();
        let other = gate.admit("2001:db8:1:2::ffff".parse().unwrap(), 10, 1);
        assert_eq!(other.err(), Some(Refusal::AddressFull));
        assert!(
            gate.admit("2001:db8:1:3::1".parse().unwrap(), 10, 1)
                .is_ok()
        );
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 5);
        bucket.last = start;
        assert!((0..5).all(|_| bucket.take(start)));
        assert!(!bucket.take(start));
        assert!(
            bucket.take(start + Duration::from_millis(100)),
            "one token per 100 ms"
        );
        assert!(!bucket.take(start + Duration::from_millis(100)));
    }
}
