//! Limits a client cannot talk its way past: connection counts (total and per client address),
//! the per-connection message rate ([`TokenBucket`], kept in `ws::rate` where the connection
//! takes it), the backend API's request budget ([`Budget`]), and the real client address behind
//! trusted proxies.
//!
//! Admission hands out an [`Admission`] guard that the socket's task owns from `accept()` on; its
//! `Drop` gives the slot back, so counts follow live sockets whatever way a connection ends.
//!
//! The process's open-files limit caps the socket count too: a socket is a descriptor, and a
//! server that runs out of them can no longer even accept the client it should refuse. So the
//! soft `RLIMIT_NOFILE` is raised to the hard one at start, and [`Gate`] admits at most that many
//! sockets minus a [`reserve`] for listeners, refusals in flight, reloads and logs: the socket
//! beyond is closed at once, never left to hang in the listen queue.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hyper::HeaderMap;
use ipnet::IpNet;

pub use crate::ws::rate::TokenBucket;

/// Why a socket or an upgrade was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` (or the descriptor cap) reached.
    ServerFull,
    /// `limits.max_connections_per_ip` reached for this client.
    AddressFull,
}

/// Socket counts, total and per client address. Cheap to clone.
///
/// Every accepted socket takes a slot from `accept()` to its close, whatever it is doing (TLS
/// handshake, HTTP keep-alive, WebSocket): [`Gate::admit_socket`], before any TLS work. A socket
/// from a trusted proxy counts in the total only, since its peer address is the proxy's and the
/// real client is known only from the request head; such a socket's upgrade then takes a slot
/// under the real client's address ([`Gate::admit_client`]), so the per-address limit holds for
/// one client whether it connects directly or through the proxy.
#[derive(Clone)]
pub struct Gate {
    /// (all sockets, slots per client key); one short lock per admission and release.
    counts: Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>,
    /// The most sockets the descriptor limit allows, whatever `max_connections` says.
    cap: Arc<AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            counts: Default::default(),
            cap: Arc::new(AtomicUsize::new(usize::MAX)),
        }
    }
}

/// One slot (in the total, under an address, or both); dropping it frees the slot.
pub struct Admission {
    gate: Gate,
    /// Counted in the total.
    total: bool,
    /// Counted under this client key.
    key: Option<IpAddr>,
}

impl Gate {
    /// Caps the total below any configured `max_connections` (see [`connection_cap`]).
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// The cap from the descriptor limit (`usize::MAX` when none was set).
    pub fn cap(&self) -> usize {
        self.cap.load(Ordering::Relaxed)
    }

    /// Sockets open now.
    pub fn sockets(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Takes a slot in the total and one under `client`'s address, or says which limit is reached.
    pub fn admit(
        &self,
        client: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<Admission, Refusal> {
        self.take(Some(max_total), Some(client), max_per_ip)
    }

    /// A socket just accepted from `peer`: counted in the total and, unless the peer is a trusted
    /// proxy (`per_address` false), under its address.
    pub fn admit_socket(
        &self,
        peer: IpAddr,
        per_address: bool,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<Admission, Refusal> {
        self.take(Some(max_total), per_address.then_some(peer), max_per_ip)
    }

    /// An upgrade that came through a trusted proxy: a slot under the real client's address only
    /// (its socket is already in the total).
    pub fn admit_client(&self, client: IpAddr, max_per_ip: usize) -> Result<Admission, Refusal> {
        self.take(None, Some(client), max_per_ip)
    }

    fn take(
        &self,
        max_total: Option<usize>,
        client: Option<IpAddr>,
        max_per_ip: usize,
    ) -> Result<Admission, Refusal> {
        let key = client.map(client_key);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *counts;
        if let Some(max) = max_total
            && *total >= max.min(self.cap())
        {
            return Err(Refusal::ServerFull);
        }
        if let Some(key) = key {
            let mine = per_ip.entry(key).or_insert(0);
            if *mine >= max_per_ip {
                if *mine == 0 {
                    per_ip.remove(&key);
                }
                return Err(Refusal::AddressFull);
            }
            *mine += 1;
        }
        if max_total.is_some() {
            *total += 1;
        }
        Ok(Admission {
            gate: self.clone(),
            total: max_total.is_some(),
            key,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = self.gate.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *counts;
        if self.total {
            *total -= 1;
        }
        if let Some(key) = self.key
            && let Some(n) = per_ip.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&key);
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

/// Whether `peer` is one of `trusted` proxies (whose forwarded headers are believed).
pub fn is_trusted(peer: SocketAddr, trusted: &[IpNet]) -> bool {
    let ip = peer.ip().to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client's address as far as it can be known.
///
/// Not a trusted proxy: the peer itself. A trusted proxy: `X-Forwarded-For` walked from the right
/// (each proxy appends the address it saw), skipping trusted proxies; the first untrusted entry is
/// the client, and when every entry is trusted the left-most one is. Without `X-Forwarded-For`,
/// `X-Real-IP`; with neither, the peer. `None` (unknown) when an entry that cannot be parsed is
/// reached before an untrusted one: whatever stands left of it was not vouched for by anyone we
/// trust, and falling back to the proxy's own address would hand a stranger the proxy's rights.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer_ip) {
        return Some(peer_ip);
    }
    let forwarded: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    if !forwarded.is_empty() {
        // Header lines in order, entries in order: the right-most entry is the nearest hop.
        let mut entries = Vec::new();
        for value in forwarded {
            match value.to_str() {
                Ok(text) => entries.extend(text.split(',').map(parse_entry)),
                Err(_) => entries.push(None),
            }
        }
        let mut leftmost = None;
        for entry in entries.into_iter().rev() {
            let ip = entry?;
            if !is_trusted(&ip) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
        return leftmost;
    }
    match headers.get("x-real-ip") {
        Some(value) => value.to_str().ok().and_then(parse_entry),
        None => Some(peer_ip),
    }
}

/// One forwarded address: `203.0.113.9`, `2001:db8::1`, or with a port (`203.0.113.9:4711`,
/// `[2001:db8::1]:4711`), as some proxies write them. Anything else is unparsable.
fn parse_entry(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The process's open-files limit after [`raise_descriptor_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptors {
    /// The soft limit in force now.
    pub soft: u64,
    /// The hard limit (the most the soft one can be raised to without privileges).
    pub hard: u64,
    /// The soft limit before it was raised, when it was raised.
    pub raised_from: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and says where it stands.
pub fn raise_descriptor_limit() -> std::io::Result<Descriptors> {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE.get()?;
    if soft >= hard {
        return Ok(Descriptors {
            soft,
            hard,
            raised_from: None,
        });
    }
    Resource::NOFILE.set(hard, hard)?;
    let (now, hard) = Resource::NOFILE.get()?;
    Ok(Descriptors {
        soft: now,
        hard,
        raised_from: Some(soft).filter(|&before| before != now),
    })
}

/// Descriptors kept back from connections out of `limit`: the standard streams, the runtime's
/// epoll and wake-up descriptors, listeners, signal handling, the certificate and configuration
/// files a reload opens, and room to accept (and close at once) sockets beyond the cap.
pub fn reserve(limit: u64) -> u64 {
    64 + (limit / 16).min(4096)
}

/// The most WebSocket connections `limit` descriptors can hold: the limit minus [`reserve`].
pub fn connection_cap(limit: u64) -> usize {
    usize::try_from(limit.saturating_sub(reserve(limit)).max(1)).unwrap_or(usize::MAX)
}

/// The API's request budget (`api.requests_per_second`), shared by every caller.
#[derive(Default)]
pub struct Budget {
    /// The rate the bucket was made for, and the bucket; remade when a reload changes the rate.
    bucket: parking_lot::Mutex<Option<(u32, TokenBucket)>>,
}

impl Budget {
    /// Takes one request from the budget; `false` when it is spent.
    pub fn take(&self, rate: u32) -> bool {
        let mut bucket = self.bucket.lock();
        if bucket.as_ref().is_none_or(|(r, _)| *r != rate) {
            *bucket = Some((rate, TokenBucket::new(rate, rate)));
        }
        bucket
            .as_mut()
            .is_some_and(|(_, b)| b.take(std::time::Instant::now()))
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn the_budget_refuses_past_its_rate_and_follows_a_new_one() {
        let budget = Budget::default();
        assert!(budget.take(2));
        assert!(budget.take(2));
        assert!(!budget.take(2), "two a second, both spent");
        assert!(budget.take(5), "a new rate starts a full bucket");
    }

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
        assert_eq!(client_ip(proxy, &h, &loopback()), Some(ip("203.0.113.9")));
        assert_eq!(client_ip(stranger, &h, &loopback()), Some(stranger.ip()));
    }

    #[test]
    fn a_spoofed_left_entry_does_not_win() {
        // The client sent "1.2.3.4"; nginx appended the real address.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9")]);
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(client_ip(proxy, &h, &loopback()), Some(ip("203.0.113.9")));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn x_real_ip_and_garbage() {
        let proxy: SocketAddr = "[::1]:5000".parse().unwrap();
        let h = headers(&[("x-real-ip", "2001:db8::5")]);
        assert_eq!(client_ip(proxy, &h, &loopback()), Some(ip("2001:db8::5")));
        // Garbage from a trusted proxy: nobody vouches for any address, so the client is unknown.
        let h = headers(&[("x-forwarded-for", "not an address")]);
        assert_eq!(client_ip(proxy, &h, &loopback()), None);
        let h = headers(&[("x-real-ip", "unknown")]);
        assert_eq!(client_ip(proxy, &h, &loopback()), None);
        // No header at all: the peer is the client.
        assert_eq!(
            client_ip(proxy, &HeaderMap::new(), &loopback()),
            Some(proxy.ip())
        );
    }

    #[test]
    fn garbage_left_of_the_client_does_not_matter_but_garbage_right_of_it_does() {
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        // The case: "garbage, 203.0.113.9" used to fall back to the proxy's own address.
        let h = headers(&[("x-forwarded-for", "garbage, 203.0.113.9")]);
        assert_eq!(client_ip(proxy, &h, &loopback()), Some(ip("203.0.113.9")));
        let h = headers(&[("x-forwarded-for", "203.0.113.9, garbage")]);
        assert_eq!(client_ip(proxy, &h, &loopback()), None);
        let h = headers(&[("x-forwarded-for", "203.0.113.9, garbage, 127.0.0.1")]);
        assert_eq!(client_ip(proxy, &h, &loopback()), None);
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "203.0.113.9, 127.0.0.1"),
        ]);
        assert_eq!(client_ip(proxy, &h, &loopback()), Some(ip("203.0.113.9")));
        // Ports as some proxies write them.
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:4711, 203.0.113.9:80")]);
        assert_eq!(client_ip(proxy, &h, &loopback()), Some(ip("203.0.113.9")));
        // Every hop trusted: the left-most is the client.
        let h = headers(&[("x-forwarded-for", "::1, 127.0.0.1")]);
        assert_eq!(client_ip(proxy, &h, &loopback()), Some(ip("::1")));
        // An empty header is no address.
        let h = headers(&[("x-forwarded-for", "")]);
        assert_eq!(client_ip(proxy, &h, &loopback()), None);
    }

    /// Every chain of up to four entries drawn from {trusted, client A, client B, garbage},
    /// against the rule stated plainly: from the right, skip trusted entries; the first
    /// untrusted one is the client; garbage first means unknown; all trusted means the left-most.
    #[test]
    fn the_walk_matches_the_rule_for_every_short_chain() {
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let alphabet = ["127.0.0.1", "203.0.113.1", "198.51.100.2", "x"];
        let mut chains: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..4 {
            let longer: Vec<Vec<&str>> = chains
                .iter()
                .filter(|c| c.len() == chains.last().map_or(0, Vec::len))
                .flat_map(|c| {
                    alphabet.iter().map(move |a| {
                        let mut c = c.clone();
                        c.push(*a);
                        c
                    })
                })
                .collect();
            chains.extend(longer);
        }
        assert_eq!(chains.len(), 1 + 4 + 16 + 64 + 256);
        for chain in chains.iter().filter(|c| !c.is_empty()) {
            let mut expected = None;
            for entry in chain.iter().rev() {
                match *entry {
                    "x" => {
                        expected = None;
                        break;
                    }
                    "127.0.0.1" => expected = Some(ip("127.0.0.1")),
                    other => {
                        expected = Some(ip(other));
                        break;
                    }
                }
            }
            let h = headers(&[("x-forwarded-for", &chain.join(", "))]);
            assert_eq!(client_ip(proxy, &h, &loopback()), expected, "{chain:?}");
            // X-Real-IP is the same walk over one entry, only when X-Forwarded-For is absent.
            let h = headers(&[("x-real-ip", chain[0])]);
            let single = (chain[0] != "x").then(|| ip(chain[0]));
            assert_eq!(client_ip(proxy, &h, &loopback()), single, "{chain:?}");
        }
    }

    #[test]
    fn the_descriptor_reserve_leaves_room_and_scales() {
        assert_eq!(connection_cap(256), 256 - 80);
        assert_eq!(connection_cap(20_000), 20_000 - 64 - 1250);
        assert_eq!(connection_cap(1_048_576), 1_048_576 - 64 - 4096);
        assert_eq!(connection_cap(10), 1, "never zero");
        let gate = Gate::default();
        gate.set_cap(1);
        let _one = gate.admit(ip("203.0.113.1"), 100, 100).unwrap();
        assert_eq!(
            gate.admit(ip("203.0.113.2"), 100, 100).err(),
            Some(Refusal::ServerFull)
        );
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
    fn a_trusted_proxys_sockets_count_in_the_total_and_its_clients_per_address() {
        let gate = Gate::default();
        let proxy = ip("127.0.0.1");
        let client = ip("203.0.113.1");
        let sockets: Vec<_> = (0..3)
            .map(|_| gate.admit_socket(proxy, false, 4, 1).unwrap())
            .collect();
        assert_eq!(gate.sockets(), 3, "the proxy is not limited per address");
        let upgrade = gate.admit_client(client, 1).unwrap();
        assert_eq!(gate.sockets(), 3, "an upgrade is not a second socket");
        assert_eq!(
            gate.admit_client(client, 1).err(),
            Some(Refusal::AddressFull),
            "the real client's limit holds behind the proxy"
        );
        assert_eq!(
            gate.admit_socket(client, true, 4, 1).err(),
            Some(Refusal::AddressFull),
            "and counts its direct sockets too"
        );
        let _fourth = gate.admit_socket(proxy, false, 4, 1).unwrap();
        assert_eq!(
            gate.admit_socket(proxy, false, 4, 1).err(),
            Some(Refusal::ServerFull)
        );
        drop((sockets, upgrade));
        assert_eq!(gate.sockets(), 1);
        assert!(gate.admit_socket(client, true, 4, 1).is_ok());
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
}
