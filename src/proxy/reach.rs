//! How far into the network an upstream may send the proxy: a redirect or a token realm goes no
//! further in than the upstream itself stands.
//!
//! Addresses fall into classes: public, private (RFC 1918, carrier-grade NAT, IPv6 unique local),
//! loopback, and never (unspecified, link-local, where cloud metadata services answer, multicast,
//! broadcast). The upstream's own host may be anywhere: an administrator named it. Every other
//! host an upstream names is held to public addresses, plus private ones when the upstream is on
//! a private address and loopback ones when it is on loopback. Docker Hub cannot point the proxy
//! at `https://10.0.0.5/` or `https://169.254.169.254/`; a partner registry on the VPN may send it
//! to its object store on the VPN.
//!
//! IP literals are checked where the URL is (`Reach::check_url`); names are checked when they
//! are resolved (`Reach` is the HTTP client's resolver), so a name that resolves inwards is
//! refused too, at the address actually connected to.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// A host the upstream may not send the proxy to, as the resolver refuses it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct OutOfReach(String);

impl OutOfReach {
    /// Whether `err` was caused by an [`OutOfReach`] refusal.
    pub(super) fn caused(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut source = Some(err);
        while let Some(cause) = source {
            if cause.is::<OutOfReach>() {
                return true;
            }
            source = cause.source();
        }
        false
    }
}

/// Where an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(super) enum Class {
    /// The internet.
    Public = 0,
    /// A private network.
    Private = 1,
    /// This machine.
    Loopback = 2,
    /// Nowhere a registry is: link-local (cloud metadata), unspecified, multicast, broadcast.
    Never = 3,
}

impl Class {
    /// The class of `ip` (an IPv4-mapped IPv6 address is its IPv4 address).
    pub(super) fn of(ip: IpAddr) -> Class {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                if v4.is_loopback() {
                    Class::Loopback
                } else if v4.is_unspecified() || v4.is_link_local() || v4.is_multicast() || v4.is_broadcast() || a == 0 {
                    Class::Never
                } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                    Class::Private
                } else {
                    Class::Public
                }
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                if v6.is_loopback() {
                    Class::Loopback
                } else if v6.is_unspecified() || v6.is_multicast() || (first & 0xffc0) == 0xfe80 {
                    Class::Never
                } else if (first & 0xfe00) == 0xfc00 {
                    Class::Private
                } else {
                    Class::Public
                }
            }
        }
    }

    fn from_u8(value: u8) -> Class {
        match value {
            0 => Class::Public,
            1 => Class::Private,
            2 => Class::Loopback,
            _ => Class::Never,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Class::Public => "a public address",
            Class::Private => "a private address",
            Class::Loopback => "a loopback address",
            Class::Never => "a link-local, unspecified or multicast address",
        }
    }
}

/// The reach of one upstream: its host, and the class of address it was found at.
#[derive(Debug)]
pub(super) struct Reach {
    /// The upstream's host as its URL spells it (lowercase; IPv6 in brackets).
    host: String,
    /// The innermost class the upstream's own host has been found at (a [`Class`]).
    upstream_class: AtomicU8,
}

impl Reach {
    /// The reach of an upstream at `url`: an IP literal or `localhost` is known now, a name when
    /// it is resolved.
    pub(super) fn new(url: &reqwest::Url) -> Arc<Reach> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let class = match ip_literal(url) {
            Some(ip) => Class::of(ip),
            None if host == "localhost" => Class::Loopback,
            None => Class::Public,
        };
        Arc::new(Reach { host, upstream_class: AtomicU8::new(class as u8) })
    }

    /// Whether another host of the upstream's may be at an address of `class`.
    fn allows(&self, class: Class) -> bool {
        let upstream = Class::from_u8(self.upstream_class.load(Ordering::Relaxed));
        class == Class::Public || (class != Class::Never && class == upstream)
    }

    fn refusal(&self, host: &str, ip: IpAddr) -> String {
        format!(
            "{host} is at {ip}, {}, where upstream {} (at {}) may not send the proxy",
            Class::of(ip).describe(),
            self.host,
            Class::from_u8(self.upstream_class.load(Ordering::Relaxed)).describe()
        )
    }

    /// Refuses a URL (a redirect's target, a token realm) whose host is an IP literal of a class
    /// the upstream may not send the proxy to. Names are checked as they resolve.
    pub(super) fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        let Some(ip) = ip_literal(url) else { return Ok(()) };
        let host = url.host_str().unwrap_or_default();
        if host.eq_ignore_ascii_case(&self.host) || self.allows(Class::of(ip)) {
            Ok(())
        } else {
            Err(self.refusal(host, ip))
        }
    }

    /// The addresses of `name` the proxy may connect to: all of the upstream's own (which sets
    /// how far in it stands), and those of other hosts that [`Reach::allows`]; an error naming
    /// the first refused address when none is left.
    fn filter(&self, name: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
        if name.eq_ignore_ascii_case(&self.host) {
            if let Some(inner) = addrs.iter().map(|addr| Class::of(addr.ip())).filter(|class| *class != Class::Never).max() {
                self.upstream_class.fetch_max(inner as u8, Ordering::Relaxed);
            }
            return Ok(addrs);
        }
        let refused = addrs.iter().find(|addr| !self.allows(Class::of(addr.ip()))).map(|addr| addr.ip());
        let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|addr| self.allows(Class::of(addr.ip()))).collect();
        match (allowed.is_empty(), refused) {
            (true, Some(ip)) => Err(self.refusal(name, ip)),
            _ => Ok(allowed),
        }
    }
}

/// The address a URL's host spells, when it is an IP literal (`[::1]` without its brackets).
fn ip_literal(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// The HTTP client's resolver: names resolve only to addresses the upstream may reach.
pub(super) struct Resolver(pub(super) Arc<Reach>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_owned();
        let reach = self.0.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed = reach.filter(&name, addrs).map_err(OutOfReach)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        for (ip, class) in [
            ("8.8.8.8", Class::Public),
            ("2606:4700::1111", Class::Public),
            ("10.0.0.1", Class::Private),
            ("172.16.5.4", Class::Private),
            ("192.168.1.1", Class::Private),
            ("100.64.0.1", Class::Private),
            ("fd00::1", Class::Private),
            ("127.0.0.1", Class::Loopback),
            ("127.9.9.9", Class::Loopback),
            ("::1", Class::Loopback),
            ("::ffff:127.0.0.1", Class::Loopback),
            ("169.254.169.254", Class::Never),
            ("::ffff:169.254.169.254", Class::Never),
            ("fe80::1", Class::Never),
            ("0.0.0.0", Class::Never),
            ("0.1.2.3", Class::Never),
            ("::", Class::Never),
            ("224.0.0.1", Class::Never),
            ("255.255.255.255", Class::Never),
        ] {
            assert_eq!(Class::of(ip.parse().unwrap()), class, "{ip}");
        }
    }

    /// Whether an upstream at `upstream` may send the proxy to `target`.
    fn may(upstream: &str, target: &str) -> bool {
        let reach = Reach::new(&reqwest::Url::parse(upstream).unwrap());
        reach.check_url(&reqwest::Url::parse(target).unwrap()).is_ok()
    }

    #[test]
    fn ip_literals_no_further_in_than_the_upstream() {
        assert!(may("https://registry-1.docker.io", "https://8.8.8.8/token"));
        assert!(!may("https://registry-1.docker.io", "https://10.0.0.5/token"));
        assert!(!may("https://registry-1.docker.io", "https://127.0.0.1/token"));
        assert!(!may("https://registry-1.docker.io", "https://169.254.169.254/latest/meta-data/"));
        assert!(!may("https://registry-1.docker.io", "https://[::ffff:a9fe:a9fe]/"));
        // Other spellings of an address are parsed to it (WHATWG URL rules), then checked.
        assert!(!may("https://registry-1.docker.io", "https://2130706433/"));
        assert!(!may("https://registry-1.docker.io", "https://0x7f.1/"));
        assert!(!may("https://registry-1.docker.io", "https://0251.0376.0251.0376/"));
        assert!(may("https://10.1.1.1:5000", "https://10.2.2.2:9000/bucket"));
        assert!(!may("https://10.1.1.1:5000", "https://127.0.0.1:9000/bucket"));
        assert!(!may("https://10.1.1.1:5000", "https://169.254.169.254/"));
        assert!(may("http://127.0.0.1:5000", "http://127.0.0.1:9000/storage"));
        assert!(may("http://localhost:5000", "http://127.0.0.1:9000/storage"));
        assert!(!may("http://127.0.0.1:5000", "https://10.0.0.1/token"));
        assert!(!may("http://127.0.0.1:5000", "https://169.254.169.254/token"));
        assert!(may("https://registry.example.com", "https://auth.example.com/token"), "names are checked as they resolve");
    }

    #[tokio::test]
    async fn names_are_held_to_the_same_rule_as_they_resolve() {
        let public = Resolver(Reach::new(&reqwest::Url::parse("https://registry.example.com").unwrap()));
        let err = reqwest::dns::Resolve::resolve(&public, "localhost".parse().unwrap()).await.err().expect("localhost refused");
        assert!(err.to_string().contains("may not send the proxy"), "{err}");
        // The upstream's own name is resolved as it is, and sets how far in it stands.
        let named = Reach::new(&reqwest::Url::parse("http://localhost:5000").unwrap());
        assert!(named.filter("localhost", vec!["127.0.0.1:0".parse().unwrap()]).is_ok());
        let internal = Reach::new(&reqwest::Url::parse("https://harbor.corp").unwrap());
        assert!(internal.filter("minio.corp", vec!["10.0.0.9:0".parse().unwrap()]).is_err(), "before the upstream is found inside");
        internal.filter("harbor.corp", vec!["10.0.0.8:0".parse().unwrap()]).unwrap();
        assert!(internal.filter("minio.corp", vec!["10.0.0.9:0".parse().unwrap()]).is_ok(), "its object store beside it");
        assert!(internal.filter("meta.corp", vec!["169.254.169.254:0".parse().unwrap()]).is_err());
        let mixed = public.0.filter("cdn.example", vec!["10.0.0.1:0".parse().unwrap(), "8.8.4.4:0".parse().unwrap()]).unwrap();
        assert_eq!(mixed, vec!["8.8.4.4:0".parse::<SocketAddr>().unwrap()], "only the allowed addresses are tried");
    }
}
