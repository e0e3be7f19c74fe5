//! Host matching shared by SNI routing and the per-request authority check, so that a name
//! picks the same app in both places: exact host, then `*.` wildcard, then the catch-all app.

use std::collections::HashMap;
use std::fmt;

/// A configured host: an exact name or `*.` plus a domain (matching exactly one extra label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `payments.example.com`.
    Exact(String),
    /// `*.pay.example.com`, stored as `pay.example.com`.
    Wildcard(String),
}

/// Why a configured host was refused.
#[derive(Debug, thiserror::Error)]
#[error("host {host:?} is not a host name or a *.domain wildcard")]
pub struct InvalidHost {
    host: String,
}

impl HostPattern {
    /// Parses a configured host, normalized like every name it is compared with.
    pub fn parse(host: &str) -> Result<Self, InvalidHost> {
        let invalid = || InvalidHost {
            host: host.to_owned(),
        };
        let name = normalize(host);
        let (pattern, domain) = match name.strip_prefix("*.") {
            Some(domain) => (Self::Wildcard(domain.to_owned()), domain),
            None => (Self::Exact(name.clone()), name.as_str()),
        };
        // `domain` has lost its one trailing dot already: a second one is an empty label.
        let valid = !domain.ends_with('.') && is_dns_name(domain.as_bytes());
        if valid { Ok(pattern) } else { Err(invalid()) }
    }
}

impl HostPattern {
    /// Whether `name` (a server name as sent, any letter case) is this host, or one label
    /// under this wildcard's domain.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        match self {
            Self::Exact(host) => host.eq_ignore_ascii_case(name),
            Self::Wildcard(domain) => name.split_once('.').is_some_and(|(label, rest)| {
                !label.is_empty() && domain.eq_ignore_ascii_case(rest)
            }),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(domain) => write!(f, "*.{domain}"),
        }
    }
}

/// Lowercases a host name and removes one trailing dot.
pub(crate) fn normalize(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// Maps names to app indices.
#[derive(Debug, Default)]
pub(crate) struct HostMatcher {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    catch_all: Option<usize>,
}

impl HostMatcher {
    /// Builds a matcher from each app's host patterns (already checked to be unique).
    pub(crate) fn new<'a>(apps: impl IntoIterator<Item = &'a [HostPattern]>) -> Self {
        let mut matcher = Self::default();
        for (index, hosts) in apps.into_iter().enumerate() {
            if hosts.is_empty() {
                matcher.catch_all = Some(index);
            }
            for host in hosts {
                match host {
                    HostPattern::Exact(name) => matcher.exact.insert(name.clone(), index),
                    HostPattern::Wildcard(domain) => matcher.wildcard.insert(domain.clone(), index),
                };
            }
        }
        matcher
    }

    /// The app for a name that is already normalized, or for no name at all.
    pub(crate) fn resolve(&self, name: Option<&str>) -> Option<usize> {
        let Some(name) = name else {
            return self.catch_all;
        };
        if let Some(&index) = self.exact.get(name) {
            return Some(index);
        }
        let wildcard = name
            .split_once('.')
            .filter(|(label, _)| !label.is_empty())
            .and_then(|(_, domain)| self.wildcard.get(domain));
        wildcard.copied().or(self.catch_all)
    }
}

/// The host of a request authority (`Host` or `:authority`), without its port and without
/// the brackets of an IPv6 literal, not yet normalized. `None` when the value is not
/// `host[:port]`: the host is DNS labels (`is_dns_name`, which IPv4 literals are too) or a
/// bracketed IPv6 literal, and the port is 1 to 5 ASCII digits with a value from 1 to 65535.
/// Anything else (a comma, `;`, `%`, `!`, userinfo, an empty label) is refused: an app that
/// picks its site from the forwarded host must see the very name that was routed.
pub(crate) fn authority_host(authority: &[u8]) -> Option<&str> {
    let authority = std::str::from_utf8(authority).ok()?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (literal, after) = rest.split_once(']')?;
            literal.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':')?),
            };
            (literal, port)
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if let Some(port) = port {
        let digits = (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit());
        if !digits || !port.parse::<u16>().is_ok_and(|port| port > 0) {
            return None;
        }
    }
    let valid = authority.starts_with('[') || is_dns_name(host.as_bytes());
    valid.then_some(host)
}

/// Whether `name` is DNS labels: letters, digits, `-` and `_`, no empty label, at most one
/// trailing dot. One pass, no allocation: it runs on every request.
fn is_dns_name(name: &[u8]) -> bool {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let mut label_empty = true;
    for &byte in name {
        if byte == b'.' {
            if label_empty {
                return false;
            }
            label_empty = true;
        } else if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            label_empty = false;
        } else {
            return false;
        }
    }
    !label_empty
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> HostMatcher {
        let apps = [
            vec![HostPattern::parse("a.example.com").ok()],
            vec![HostPattern::parse("*.pay.example.com").ok()],
        ]
        .map(|hosts| hosts.into_iter().flatten().collect::<Vec<_>>());
        HostMatcher::new(apps.iter().map(Vec::as_slice))
    }

    #[test]
    fn exact_then_wildcard_matching() {
        let m = matcher();
        assert_eq!(m.resolve(Some("a.example.com")), Some(0));
        assert_eq!(m.resolve(Some("x.pay.example.com")), Some(1));
        assert_eq!(m.resolve(Some("pay.example.com")), None);
        assert_eq!(m.resolve(Some("x.y.pay.example.com")), None);
        assert_eq!(m.resolve(Some(".pay.example.com")), None);
        assert_eq!(m.resolve(None), None);
    }

    #[test]
    fn catch_all_takes_what_nothing_else_matches() {
        let apps: [Vec<HostPattern>; 2] = [vec![HostPattern::Exact("a".into())], vec![]];
        let m = HostMatcher::new(apps.iter().map(Vec::as_slice));
        assert_eq!(m.resolve(Some("a")), Some(0));
        assert_eq!(m.resolve(Some("b")), Some(1));
        assert_eq!(m.resolve(None), Some(1));
    }

    #[test]
    fn authority_host_strips_the_port() {
        assert_eq!(
            authority_host(b"A.Example.COM.:8443"),
            Some("A.Example.COM.")
        );
        assert_eq!(authority_host(b"a.test"), Some("a.test"));
        assert_eq!(authority_host(b"a.test:65535"), Some("a.test"));
        assert_eq!(authority_host(b"[::1]:8443"), Some("::1"));
        assert_eq!(authority_host(b"[::1]"), Some("::1"));
    }

    /// The authority grammar (docs/modes.md "Routing"), one row per case: DNS labels or a bracketed
    /// IPv6 literal, an optional decimal port, nothing else.
    #[test]
    fn authority_grammar_table() {
        let table: &[(&str, Option<&str>)] = &[
            ("a.test", Some("a.test")),
            ("A.Test", Some("A.Test")),
            ("a.test.", Some("a.test.")),
            ("a.test.:8443", Some("a.test.")),
            ("localhost", Some("localhost")),
            ("x-1_y.a.test", Some("x-1_y.a.test")),
            ("127.0.0.1", Some("127.0.0.1")),
            ("127.0.0.1:8443", Some("127.0.0.1")),
            ("[::1]", Some("::1")),
            ("[2001:db8::7]:443", Some("2001:db8::7")),
            ("[::ffff:6.6.6.6]", Some("::ffff:6.6.6.6")),
            ("x,a.test", None),
            ("a.test,b.test", None),
            ("a.test, b.test", None),
            ("a.test..", None),
            ("a..test", None),
            (".a.test", None),
            (".", None),
            ("..", None),
            ("a.test%2e", None),
            ("a.test;x", None),
            ("a.test!", None),
            ("a.test~", None),
            ("a.test$", None),
            ("a.test&b", None),
            ("a.test'", None),
            ("a(b)", None),
            ("a*b", None),
            ("a+b", None),
            ("a=b", None),
            ("a/b", None),
            ("a\\b", None),
            ("é.test", None),
            ("a.test:8443,b.test", None),
            ("[fe80::1%25eth0]", None),
            ("[v1.x]", None),
            ("[::1]:443,b.test", None),
        ];
        for (authority, host) in table {
            assert_eq!(authority_host(authority.as_bytes()), *host, "{authority:?}");
        }
    }

    #[test]
    fn authority_host_refuses_malformed_authorities() {
        for bad in [
            "",
            "user@a.example.com",
            "a b",
            "a.test:99999",
            "a.test:65536",
            "a.test:0",
            "a.test:abc",
            "a.test:0x1bb",
            "a.test:+443",
            "a.test:",
            "a.test:443:1",
            "a.test:000443",
            "::1",
            "[::1",
            "[::1]x",
            "[not-ip]:443",
            ":443",
            "a\tb",
        ] {
            assert_eq!(authority_host(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn host_patterns_refuse_malformed_names() {
        assert!(HostPattern::parse("*").is_err());
        assert!(HostPattern::parse("*.").is_err());
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("a..com").is_err());
        assert_eq!(
            HostPattern::parse("*.Pay.Example.com.").ok(),
            Some(HostPattern::Wildcard("pay.example.com".into()))
        );
    }
}
