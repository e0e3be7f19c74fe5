//! `ingress.ipSecurityRestrictions`, validated: an app's rules as one table built at load
//! (every range split into disjoint intervals, each with the first rule that covers it), so
//! that judging a client address is one binary search. Plain data; it uses nothing of
//! certgate's but `settings`.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::settings::ByName;

/// What every rule of an app does: in Container Apps all rules of an app share one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpAction {
    /// Only clients a rule matches are admitted.
    Allow,
    /// Clients a rule matches are refused; all others are admitted.
    Deny,
}

impl ByName for IpAction {
    const NAMES: &'static [(&'static str, Self)] = &[("allow", Self::Allow), ("deny", Self::Deny)];
}

impl IpAction {
    /// The action as Azure writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Deny => "Deny",
        }
    }
}

/// One rule as written (the range normalized: no host bits, IPv4-mapped IPv6 as IPv4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRule {
    /// `name`, unique within the app; logs name it.
    pub name: String,
    /// `description`, for people.
    pub description: String,
    /// `ipAddressRange`: a CIDR range or a single address.
    pub range: IpNet,
}

/// An app's rules, ready to judge client addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRestrictions {
    action: IpAction,
    rules: Vec<IpRule>,
    /// Disjoint IPv4 intervals, sorted: (first, last, index of the first rule covering it).
    v4: Vec<(u128, u128, usize)>,
    /// The same for IPv6.
    v6: Vec<(u128, u128, usize)>,
}

/// Why a client address is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRefusal {
    /// The Deny rule the address matched; `None` under Allow rules (it matched none).
    pub rule: Option<String>,
    /// What happened, in words, for the log line and the 403 page.
    pub detail: String,
}

impl IpRestrictions {
    /// The rules of one app, all with `action`; `None` when there are none (everyone is
    /// admitted).
    pub fn new(action: IpAction, rules: Vec<IpRule>) -> Option<Self> {
        if rules.is_empty() {
            return None;
        }
        let ranges = |v4: bool| -> Vec<(u128, u128, usize)> {
            let bounds: Vec<(usize, u128, u128)> = rules
                .iter()
                .enumerate()
                .filter(|(_, rule)| rule.range.addr().is_ipv4() == v4)
                .map(|(index, rule)| {
                    let (first, last) = bounds(rule.range);
                    (index, first, last)
                })
                .collect();
            disjoint(&bounds)
        };
        Some(Self {
            v4: ranges(true),
            v6: ranges(false),
            action,
            rules,
        })
    }

    /// The rules' action.
    pub fn action(&self) -> IpAction {
        self.action
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[IpRule] {
        &self.rules
    }

    /// The rule that matches `addr` (an IPv4-mapped IPv6 address is matched as IPv4), the
    /// first in file order when several do.
    pub fn matching(&self, addr: IpAddr) -> Option<&IpRule> {
        let (table, key) = match addr.to_canonical() {
            IpAddr::V4(v4) => (&self.v4, u128::from(u32::from(v4))),
            IpAddr::V6(v6) => (&self.v6, u128::from(v6)),
        };
        let at = table.partition_point(|&(first, _, _)| first <= key);
        let &(_, last, index) = table.get(at.checked_sub(1)?)?;
        (key <= last).then(|| &self.rules[index])
    }

    /// Whether `addr` may connect: `Err` says why not.
    pub fn judge(&self, addr: IpAddr) -> Result<(), IpRefusal> {
        let addr = addr.to_canonical();
        match (self.action, self.matching(addr)) {
            (IpAction::Allow, Some(_)) | (IpAction::Deny, None) => Ok(()),
            (IpAction::Deny, Some(rule)) => Err(IpRefusal {
                rule: Some(rule.name.clone()),
                detail: format!(
                    "client address {addr} matches Deny rule {:?} ({}) of ipSecurityRestrictions",
                    rule.name, rule.range
                ),
            }),
            (IpAction::Allow, None) => Err(IpRefusal {
                rule: None,
                detail: format!(
                    "client address {addr} matches none of the Allow rules of ipSecurityRestrictions ({})",
                    self.rules
                        .iter()
                        .map(|rule| rule.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }
}

impl fmt::Display for IpRestrictions {
    /// `Allow[office 203.0.113.0/24 | lab 2001:db8::/32]`, as `certgate check` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules: Vec<String> = self
            .rules
            .iter()
            .map(|rule| format!("{} {}", rule.name, rule.range))
            .collect();
        write!(f, "{}[{}]", self.action.as_str(), rules.join(" | "))
    }
}

/// Why an `ipAddressRange` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is neither a CIDR range (203.0.113.0/24, 2001:db8::/32) nor an IP address")]
pub struct BadRange;

/// A range as written: a CIDR range or a single address. Returns the range with its host bits
/// cleared (IPv4-mapped IPv6 ranges as IPv4), and whether there were host bits to clear.
pub(crate) fn parse_range(text: &str) -> Result<(IpNet, bool), BadRange> {
    let text = text.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(text.parse::<IpAddr>().map_err(|_| BadRange)?),
    };
    let trunc = net.trunc();
    let had_host_bits = trunc != net;
    Ok((unmapped(trunc), had_host_bits))
}

/// `::ffff:a.b.c.d/n` (n at least 96) as `a.b.c.d/(n - 96)`: clients are matched by their
/// IPv4 form, so a rule in the mapped form must be too.
fn unmapped(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// The first and last address of a range, as numbers.
fn bounds(net: IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(v4) => (
            u128::from(u32::from(v4.network())),
            u128::from(u32::from(v4.broadcast())),
        ),
        IpNet::V6(v6) => (u128::from(v6.network()), u128::from(v6.broadcast())),
    }
}

/// Disjoint, sorted intervals covering what `ranges` (rule index, first, last) cover, each
/// with the lowest rule index covering it.
fn disjoint(ranges: &[(usize, u128, u128)]) -> Vec<(u128, u128, usize)> {
    // Every point where the covering set may change: each range's first address, and the
    // address after its last.
    let mut cuts: Vec<u128> = ranges
        .iter()
        .flat_map(|&(_, first, last)| [Some(first), last.checked_add(1)])
        .flatten()
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<(u128, u128, usize)> = Vec::new();
    for (at, &start) in cuts.iter().enumerate() {
        let end = cuts.get(at + 1).map_or(u128::MAX, |next| next - 1);
        let covering = ranges
            .iter()
            .filter(|&&(_, first, last)| first <= start && start <= last)
            .map(|&(index, _, _)| index)
            .min();
        let Some(index) = covering else {
            continue;
        };
        match out.last_mut() {
            Some(previous) if previous.2 == index && previous.1.checked_add(1) == Some(start) => {
                previous.1 = end;
            }
            _ => out.push((start, end, index)),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn rules(action: IpAction, ranges: &[(&str, &str)]) -> IpRestrictions {
        let rules = ranges
            .iter()
            .map(|(name, range)| IpRule {
                name: (*name).to_owned(),
                description: String::new(),
                range: parse_range(range).unwrap().0,
            })
            .collect();
        IpRestrictions::new(action, rules).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn allow_rules_admit_only_matching_addresses() {
        let allow = rules(
            IpAction::Allow,
            &[("office", "203.0.113.0/24"), ("lab", "2001:db8::/32")],
        );
        assert!(allow.judge(ip("203.0.113.9")).is_ok());
        assert!(allow.judge(ip("2001:db8:1::5")).is_ok());
        let refused = allow.judge(ip("198.51.100.1")).unwrap_err();
        assert_eq!(refused.rule, None);
        assert!(refused.detail.contains("office, lab"), "{}", refused.detail);
        assert!(allow.judge(ip("2001:db9::1")).is_err());
    }

    #[test]
    fn deny_rules_refuse_matching_addresses_and_name_the_rule() {
        let deny = rules(IpAction::Deny, &[("bad", "198.51.100.7"), ("v6", "::1")]);
        assert_eq!(
            deny.judge(ip("198.51.100.7")).unwrap_err().rule.as_deref(),
            Some("bad")
        );
        assert_eq!(
            deny.judge(ip("::1")).unwrap_err().rule.as_deref(),
            Some("v6")
        );
        assert!(deny.judge(ip("198.51.100.8")).is_ok());
        assert!(deny.judge(ip("127.0.0.1")).is_ok());
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_rules_both_ways() {
        let allow = rules(IpAction::Allow, &[("office", "203.0.113.0/24")]);
        assert!(allow.judge(ip("::ffff:203.0.113.9")).is_ok());
        let mapped_rule = rules(IpAction::Allow, &[("mapped", "::ffff:203.0.113.0/120")]);
        assert_eq!(mapped_rule.rules()[0].range.to_string(), "203.0.113.0/24");
        assert!(mapped_rule.judge(ip("203.0.113.200")).is_ok());
        assert!(mapped_rule.judge(ip("203.0.114.1")).is_err());
    }

    #[test]
    fn nested_and_overlapping_ranges_name_the_first_rule_in_file_order() {
        let deny = rules(
            IpAction::Deny,
            &[
                ("host", "10.1.2.3"),
                ("wide", "10.0.0.0/8"),
                ("narrow", "10.1.0.0/16"),
            ],
        );
        let rule = |addr: &str| deny.matching(ip(addr)).map(|rule| rule.name.as_str());
        assert_eq!(rule("10.1.2.3"), Some("host"));
        assert_eq!(rule("10.1.2.4"), Some("wide"));
        assert_eq!(rule("10.255.255.255"), Some("wide"));
        assert_eq!(rule("10.0.0.0"), Some("wide"));
        assert_eq!(rule("11.0.0.0"), None);
        assert_eq!(rule("9.255.255.255"), None);
    }

    #[test]
    fn whole_address_spaces_and_their_edges_match() {
        let all = rules(IpAction::Allow, &[("v4", "0.0.0.0/0"), ("v6", "::/0")]);
        for addr in [
            "0.0.0.0",
            "255.255.255.255",
            "::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            assert!(all.judge(ip(addr)).is_ok(), "{addr}");
        }
    }

    #[test]
    fn ranges_with_host_bits_are_cleared_and_said_so() {
        let (net, had_host_bits) = parse_range("203.0.113.9/24").unwrap();
        assert_eq!(net.to_string(), "203.0.113.0/24");
        assert!(had_host_bits);
        assert!(!parse_range("203.0.113.0/24").unwrap().1);
        assert_eq!(parse_range("::1").unwrap().0.to_string(), "::1/128");
        assert_eq!(
            parse_range(" 10.0.0.1 ").unwrap().0.to_string(),
            "10.0.0.1/32"
        );
        for bad in ["", "10.0.0.0/33", "office", "10.0.0/8", "2001:db8::/129"] {
            assert_eq!(parse_range(bad), Err(BadRange), "{bad:?}");
        }
    }

    #[test]
    fn action_names_are_read_in_any_letter_case() {
        assert_eq!(IpAction::from_name("ALLOW"), Some(IpAction::Allow));
        assert_eq!(IpAction::from_name("deny"), Some(IpAction::Deny));
        assert_eq!(IpAction::from_name("block"), None);
    }
}
