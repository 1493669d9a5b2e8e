//! The address allow-list of signer-http: IPv4 and IPv6 addresses, CIDR ranges, and host names that are
//! re-resolved periodically. Checked on the peer address of each connection before any byte of a request body
//! is read, so a disallowed peer costs no parsing and no signature verification.
//!
//! Invariant: an IPv4 peer that reaches a dual-stack listener as `::ffff:a.b.c.d` is matched as `a.b.c.d`
//! (the Go original compared bracketed strings and so refused every IPv6 peer).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

/// One allow-list entry as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// A single address.
    Addr(IpAddr),
    /// A CIDR range.
    Net {
        /// Network address (host bits zero).
        base: IpAddr,
        /// Prefix length.
        prefix: u8,
    },
    /// A DNS name, resolved at start and every re-resolve interval.
    Host(String),
}

/// Why an allow-list entry is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{entry:?}: {reason}")]
pub struct AllowError {
    entry: String,
    reason: &'static str,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl FromStr for AllowEntry {
    type Err = AllowError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| AllowError { entry: s.to_owned(), reason };
        let s = s.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        if let Some((addr, prefix)) = s.split_once('/') {
            let base: IpAddr =
                addr.trim_matches(['[', ']']).parse().map_err(|_| err("not an IP address before '/'"))?;
            let base = canonical(base);
            let max = if base.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix.parse().map_err(|_| err("prefix length is not a number"))?;
            if prefix > max {
                return Err(err("prefix length too long for the address family"));
            }
            if mask(base, prefix) != base {
                return Err(err("host bits set: write the network address"));
            }
            return Ok(AllowEntry::Net { base, prefix });
        }
        if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(AllowEntry::Addr(canonical(ip)));
        }
        // A fully qualified name may end with the root's dot.
        let host = s.strip_suffix('.').unwrap_or(s);
        let valid_host = host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid_host {
            return Err(err("not an IP address, a CIDR range or a host name"));
        }
        Ok(AllowEntry::Host(host.to_ascii_lowercase()))
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// The live allow-list: static entries plus the current resolution of the host names.
#[derive(Debug, Clone)]
pub struct AllowList {
    entries: Arc<Vec<AllowEntry>>,
    resolved: Arc<RwLock<HashMap<String, HashSet<IpAddr>>>>,
}

impl AllowList {
    /// Builds the list; host names resolve to nothing until [`AllowList::resolve`] runs.
    pub fn new(entries: Vec<AllowEntry>) -> AllowList {
        AllowList { entries: Arc::new(entries), resolved: Arc::new(RwLock::new(HashMap::new())) }
    }

    /// The host names to resolve.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|e| match e {
            AllowEntry::Host(h) => Some(h.as_str()),
            _ => None,
        })
    }

    /// True when `peer` matches an entry.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        let static_match = self.entries.iter().any(|e| match e {
            AllowEntry::Addr(a) => *a == peer,
            AllowEntry::Net { base, prefix } => base.is_ipv4() == peer.is_ipv4() && mask(peer, *prefix) == *base,
            AllowEntry::Host(_) => false,
        });
        static_match || common::sync::read(&self.resolved).values().any(|set| set.contains(&peer))
    }

    /// Re-resolves every host name. A name that fails keeps its previous addresses (a DNS hiccup must not lock
    /// out a co-signing peer); the failure is logged.
    pub async fn resolve(&self) {
        for host in self.hosts() {
            match tokio::net::lookup_host((host, 0)).await {
                Ok(addrs) => {
                    let ips: HashSet<IpAddr> = addrs.map(|a| canonical(a.ip())).collect();
                    tracing::debug!(host, ?ips, "allowed host resolved");
                    common::sync::write(&self.resolved).insert(host.to_owned(), ips);
                }
                Err(e) => {
                    tracing::warn!(host, error = %e, "cannot resolve allowed host; keeping its previous addresses")
                }
            }
        }
    }

    /// Replaces the resolved set (tests).
    #[cfg(test)]
    pub fn set_resolved(&self, host: &str, ips: &[IpAddr]) {
        common::sync::write(&self.resolved).insert(host.to_owned(), ips.iter().copied().collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::new(entries.iter().map(|e| e.parse().unwrap()).collect())
    }

    #[test]
    fn entry_parse_table() {
        let ok = [
            ("127.0.0.1", AllowEntry::Addr("127.0.0.1".parse().unwrap())),
            ("::1", AllowEntry::Addr("::1".parse().unwrap())),
            ("[::1]", AllowEntry::Addr("::1".parse().unwrap())),
            ("::ffff:10.0.0.1", AllowEntry::Addr("10.0.0.1".parse().unwrap())),
            ("10.0.0.0/8", AllowEntry::Net { base: "10.0.0.0".parse().unwrap(), prefix: 8 }),
            ("fd00::/8", AllowEntry::Net { base: "fd00::".parse().unwrap(), prefix: 8 }),
            ("Spire-Server.example.org", AllowEntry::Host("spire-server.example.org".into())),
            ("localhost", AllowEntry::Host("localhost".into())),
            ("spire.example.org.", AllowEntry::Host("spire.example.org".into())),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<AllowEntry>(), Ok(want), "{s}");
        }
        for bad in [
            "",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/x",
            "a b",
            "-x.org",
            "x..org",
            "1.2.3.4:80",
            "*.example.org",
        ] {
            assert!(bad.parse::<AllowEntry>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn match_table_with_cidr_edges() {
        let l = list(&["127.0.0.1", "::1", "192.168.10.0/24", "2001:db8::/126"]);
        let cases = [
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("::2", false),
            ("192.168.10.0", true),
            ("192.168.10.255", true),
            ("192.168.9.255", false),
            ("192.168.11.0", false),
            ("::ffff:192.168.10.7", true),
            ("2001:db8::3", true),
            ("2001:db8::4", false),
        ];
        for (ip, want) in cases {
            assert_eq!(l.allows(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn zero_prefix_matches_its_family_only() {
        let l = list(&["0.0.0.0/0"]);
        assert!(l.allows("8.8.8.8".parse().unwrap()));
        assert!(!l.allows("::2".parse().unwrap()));
    }

    #[tokio::test]
    async fn host_names_are_resolved_and_re_resolved() {
        let l = list(&["localhost"]);
        assert!(!l.allows("127.0.0.1".parse().unwrap()), "nothing allowed before resolution");
        l.resolve().await;
        assert!(l.allows("127.0.0.1".parse().unwrap()));
        // A later resolution replaces the set: an address the name no longer has is dropped.
        l.set_resolved("localhost", &["10.1.1.1".parse().unwrap()]);
        assert!(!l.allows("127.0.0.1".parse().unwrap()));
        assert!(l.allows("10.1.1.1".parse().unwrap()));
        l.resolve().await;
        assert!(l.allows("127.0.0.1".parse().unwrap()));
        assert!(!l.allows("10.1.1.1".parse().unwrap()));
    }
}
