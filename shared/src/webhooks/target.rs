//! No SSRF through webhooks: which URLs and addresses a delivery may go to.
//!
//! A URL's host is checked here when the config is loaded (literal addresses in every form an
//! HTTP client would accept: `127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`, `[::1]`,
//! `[::ffff:10.0.0.1]`). A host *name* can still resolve to an internal address, so runtimes
//! that resolve names themselves check every resolved address with [`is_forbidden_ip`] before
//! they connect (`berth serve` does), and no runtime follows redirects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Checks a webhook URL: http or https, a host, no credentials, and (unless `allow_private`)
/// no loopback, private, link-local or otherwise internal address.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    let host = host_of(url)?;
    if allow_private {
        return Ok(());
    }
    match host {
        Host::Ip(ip) if is_forbidden_ip(ip) => Err(format!(
            "{ip} is a loopback, private, link-local or reserved address; webhooks may not call \
             internal services (set allow_private = true for this endpoint if the receiver is yours)"
        )),
        Host::Name(name) if is_local_name(&name) => Err(format!(
            "{name} names this machine; webhooks may not call internal services (set allow_private = true \
             for this endpoint if the receiver is yours)"
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Host {
    Ip(IpAddr),
    Name(String),
}

/// The host of an http(s) URL, as a client would connect to it.
pub(crate) fn host_of(url: &str) -> Result<Host, String> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or("only http:// and https:// URLs are allowed")?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL contains spaces or control characters".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') || authority.contains('\\') {
        return Err("credentials in the URL are not allowed (the secret signs deliveries)".into());
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        let (inside, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
        check_port(after)?;
        let ip: Ipv6Addr = inside.parse().map_err(|_| format!("{inside:?} is not an IPv6 address"))?;
        return Ok(Host::Ip(IpAddr::V6(ip)));
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => {
                check_port(&format!(":{port}"))?;
                host
            }
            None => authority,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if let Some(ip) = parse_ipv4_loose(host) {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    // A name whose last label is a number is read as an IPv4 address by URL parsers (WHATWG):
    // one that is not a valid address is refused rather than guessed at.
    let last = host.rsplit('.').next().unwrap_or(host);
    if last.starts_with(|c: char| c.is_ascii_digit()) && !last.contains(|c: char| c.is_ascii_alphabetic() && !"xabcdef".contains(c)) {
        return Err(format!("{host:?} looks like an IP address but is not a valid one"));
    }
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') {
        return Err(format!("{host:?} is not a valid host name"));
    }
    Ok(Host::Name(host.to_owned()))
}

fn check_port(after_host: &str) -> Result<(), String> {
    match after_host {
        "" => Ok(()),
        p => match p.strip_prefix(':').map(str::parse::<u16>) {
            Some(Ok(port)) if port != 0 => Ok(()),
            _ => Err(format!("{p:?} is not a valid port")),
        },
    }
}

/// An IPv4 address in any form `inet_aton` and URL parsers accept: one to four parts, each
/// decimal, `0x` hex or `0` octal, the last filling the remaining bytes (`127.1`, `2130706433`).
pub(crate) fn parse_ipv4_loose(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) = if let Some(hex) = part.strip_prefix("0x") {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (*part, 10)
        };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        let value = if digits.is_empty() { 0 } else { u64::from_str_radix(digits, radix).ok()? };
        values.push(value);
    }
    let (last, head) = values.split_last()?;
    if head.iter().any(|v| *v > 255) {
        return None;
    }
    let last_bytes = 4 - head.len();
    if *last >= 1u64 << (8 * last_bytes) {
        return None;
    }
    let mut n: u64 = 0;
    for (i, v) in head.iter().enumerate() {
        n |= v << (8 * (3 - i));
    }
    Some(Ipv4Addr::from((n | last) as u32))
}

fn is_local_name(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// Whether a delivery must not go to `ip`: anything that is not a public unicast address.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden_v4(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0) // IPv4-compatible ::a.b.c.d
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 64:ff9b::/96 reaches IPv4 space
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[0] == 0x2002 // 6to4 embeds an IPv4 address
        }
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()          // 127/8
        || ip.is_private()    // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16 (cloud metadata services)
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0             // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64/10
        || (a == 192 && b == 0 && c == 0)       // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19))   // benchmarking
        || a >= 240 // reserved
}
