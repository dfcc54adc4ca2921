//! The egress guard: every outbound request of a step goes through an HTTP client built here, which refuses
//! loopback, private, link-local, CGNAT, multicast and reserved destinations (IPv4, IPv6, IPv4-mapped and NAT64
//! forms), non-http(s) schemes, and redirects to any of those; the check runs on the addresses actually dialed.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// Whether requests may reach private and loopback addresses (`--allow-private-network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    PublicOnly,
    AllowPrivate,
}

/// Why a destination is refused, in words a user can act on.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refusal_v4(v4).map(|_| "an IPv4-mapped private or loopback address");
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) and IPv4-compatible (::/96) forms carry an IPv4 address in the low bits.
            if (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4])
                || (s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified())
            {
                let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return refusal_v4(v4).map(|_| "an IPv6 form of a private or loopback IPv4 address");
            }
            refusal_v6(v6)
        }
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address (cloud metadata lives at 169.254.169.254)")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some("a carrier-grade NAT address")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("an unspecified address")
    } else if ip.is_multicast() || ip.is_broadcast() || o[0] >= 240 {
        Some("a multicast, broadcast or reserved address")
    } else if (o[0] == 192 && o[1] == 0 && (o[2] == 0 || o[2] == 2))
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
    {
        Some("a reserved or documentation address")
    } else {
        None
    }
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if s[0] & 0xfe00 == 0xfc00 {
        Some("a private (unique local) address")
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if s[0] & 0xff00 == 0xff00 {
        Some("a multicast address")
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("a documentation address")
    } else {
        None
    }
}

/// The message of every refusal: what, why, and how to allow it.
pub fn refusal_message(what: &str, why: &str) -> String {
    format!(
        "refused to connect to {what}: it is {why}; outbound requests may only reach public addresses \
         (start Sluice with --allow-private-network to allow private and loopback addresses, e.g. for local tests)"
    )
}

/// Checks a URL before sending: scheme, and the host when it is an IP literal (names are checked by the resolver).
pub fn check_url(url: &reqwest::Url, egress: Egress) -> Result<(), String> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("refused the URL scheme `{other}:`; only http and https are allowed")),
    }
    if egress == Egress::AllowPrivate {
        return Ok(());
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(d))
            if d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost") =>
        {
            return Err(refusal_message(d, "a loopback name"));
        }
        _ => None,
    };
    match ip.and_then(|ip| refusal(ip).map(|why| (ip, why))) {
        Some((ip, why)) => Err(refusal_message(&ip.to_string(), why)),
        None => Ok(()),
    }
}

/// A DNS resolver that drops refused addresses, so the connection can only go to an allowed one.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let lookup = host.clone();
            let addrs: Vec<SocketAddr> =
                tokio::task::spawn_blocking(move || (lookup.as_str(), 0).to_socket_addrs().map(|a| a.collect()))
                    .await
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })??;
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| refusal(a.ip()).is_none()).collect();
            if allowed.is_empty() {
                let why = addrs.first().and_then(|a| refusal(a.ip())).unwrap_or("not resolvable");
                let e: Box<dyn std::error::Error + Send + Sync> = refusal_message(&host, why).into();
                return Err(e);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Builds the HTTP client of steps: guarded resolver, checked redirects (at most 5), no proxy from the environment.
pub fn client(egress: Egress, follow_redirects: bool) -> Result<reqwest::Client, String> {
    let policy = if follow_redirects {
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                return attempt.error("too many redirects (more than 5)");
            }
            match check_url(attempt.url(), egress) {
                Ok(()) => attempt.follow(),
                Err(e) => {
                    let to = attempt.url().to_string();
                    attempt.error(format!("redirect to {to}: {e}"))
                }
            }
        })
    } else {
        reqwest::redirect::Policy::none()
    };
    let mut b = reqwest::Client::builder()
        .redirect(policy)
        .no_proxy()
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")));
    if egress == Egress::PublicOnly {
        b = b.dns_resolver(Arc::new(GuardedResolver));
    }
    b.build().map_err(|e| format!("cannot build the HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        s.parse::<IpAddr>().map(|ip| refusal(ip).is_some()).unwrap_or(false)
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "198.18.0.1",
            "2001:db8::1",
        ] {
            assert!(refused(s), "{s} should be refused");
        }
        for s in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "100.128.0.1"] {
            assert!(!refused(s), "{s} should be allowed");
        }
    }

    #[test]
    fn urls_are_checked_before_sending() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert!(check_url(&u("http://127.0.0.1:8080/x"), Egress::PublicOnly).is_err());
        assert!(check_url(&u("http://[::ffff:7f00:1]/x"), Egress::PublicOnly).is_err());
        assert!(check_url(&u("http://localhost/x"), Egress::PublicOnly).is_err());
        assert!(check_url(&u("file:///etc/passwd"), Egress::AllowPrivate).is_err());
        assert!(check_url(&u("https://example.com/x"), Egress::PublicOnly).is_ok());
        assert!(check_url(&u("http://127.0.0.1/x"), Egress::AllowPrivate).is_ok());
        let e = check_url(&u("http://169.254.169.254/latest"), Egress::PublicOnly).err().unwrap_or_default();
        assert!(e.contains("--allow-private-network") && e.contains("link-local"), "{e}");
    }
}
