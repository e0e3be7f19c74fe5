//! Authorization by identity per route (docs/policy.md "Authorization"): an ordered list of rules,
//! each a path prefix, optional methods and who may pass; the first rule that matches the
//! request's path decides (a method the rule does not list is refused, unless the rule passes
//! it on with `otherMethods: "next"`). Who passes each rule is worked out once per connection
//! (`grants`), so a request only matches its path and method and reads one flag.

use http::Method;

use super::path;
use crate::settings::ByName;

/// The ordered rules of an app and what happens when none matches.
#[derive(Debug, Clone, Default)]
pub struct Authorization {
    /// Rules in config order.
    pub rules: Vec<Rule>,
    /// Deny requests no rule matches (`defaultDeny`); allow them otherwise.
    pub default_deny: bool,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Normalized path prefix, matched on segment boundaries.
    pub path_prefix: String,
    /// Methods the rule lets through; empty for every method. `GET` also covers `HEAD`.
    pub methods: Vec<Method>,
    /// What a request under the prefix with a method not in `methods` gets.
    pub other_methods: OtherMethods,
    /// Who may pass.
    pub who: Principals,
    /// The label used in metrics and logs: the rule's index in the list.
    pub label: String,
    /// The one-line body of the 403 this rule answers.
    pub denial: String,
}

/// `otherMethods`: what a rule does with a request under its prefix whose method it does not
/// list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OtherMethods {
    /// Refuse it, naming the rule (the default: listing methods never opens the others).
    #[default]
    Deny,
    /// Pass it on to the next rules, as if this rule were not there.
    Next,
}

impl ByName for OtherMethods {
    const NAMES: &'static [(&'static str, Self)] = &[("deny", Self::Deny), ("next", Self::Next)];
}

/// Who may pass a rule; each list means what it means in `clientAuth`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principals {
    /// RFC 4514 subjects, matched exactly.
    pub subjects: Vec<String>,
    /// DNS SANs, normalized (lowercase, no trailing dot).
    pub dns_sans: Vec<String>,
    /// URI SANs, exact or with a trailing `*` as a prefix.
    pub uri_sans: Vec<UriPattern>,
    /// SHA-256 hashes of pinned leaves.
    pub hashes: Vec<[u8; 32]>,
    /// Any client whose certificate passed the app's policy.
    pub any_verified: bool,
}

/// A URI SAN entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriPattern {
    /// The whole SAN.
    Exact(String),
    /// The SAN starts with this (the entry ended in `*`, e.g. `spiffe://corp/ops/*`).
    Prefix(String),
}

impl UriPattern {
    /// Parses an entry: a trailing `*` makes it a prefix; `*` anywhere else is refused.
    pub fn parse(value: &str) -> Option<Self> {
        let stem = value.strip_suffix('*');
        let body = stem.unwrap_or(value);
        if body.is_empty() || body.contains('*') {
            return None;
        }
        Some(match stem {
            Some(prefix) => Self::Prefix(prefix.to_owned()),
            None => Self::Exact(value.to_owned()),
        })
    }

    fn matches(&self, uri: &str) -> bool {
        match self {
            Self::Exact(exact) => uri == exact,
            Self::Prefix(prefix) => uri.starts_with(prefix.as_str()),
        }
    }
}

/// The verified client of a connection as authorization sees it.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// SHA-256 of the leaf.
    pub hash: &'a [u8; 32],
    /// Whether a CA or a pin vouches for the certificate; without (`allowUntrusted` alone)
    /// only a pin of its hash admits it, since anyone can make one with any names.
    pub vouched_for: bool,
    /// RFC 4514 subject.
    pub subject: &'a str,
    /// DNS SANs as in the certificate.
    pub dns_sans: &'a [String],
    /// URI SANs as in the certificate.
    pub uri_sans: &'a [String],
}

/// Which rules a connection's client passes, one flag per rule.
#[derive(Debug, Clone, Default)]
pub struct Grants(Box<[bool]>);

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Forward the request.
    Allow,
    /// Answer 403, naming the rule (or `None`: no rule matched and `defaultDeny` is set).
    Deny(Option<&'a Rule>),
}

/// The metric and log label of a `defaultDeny` refusal.
pub(crate) const DEFAULT_RULE_LABEL: &str = "default";
/// The 403 body of a `defaultDeny` refusal.
pub(crate) const DEFAULT_DENIAL: &str =
    "forbidden: no authorization rule matches and defaultDeny is set\n";

impl Authorization {
    /// Whether any rule or `defaultDeny` is configured.
    pub fn is_configured(&self) -> bool {
        !self.rules.is_empty() || self.default_deny
    }

    /// Works out once per connection which rules its client passes (`None`: no certificate).
    pub fn grants(&self, client: Option<Client<'_>>) -> Grants {
        Grants(
            self.rules
                .iter()
                .map(|rule| client.is_some_and(|client| rule.who.admits(client)))
                .collect(),
        )
    }

    /// The first rule whose prefix covers the path decides: a method it does not list is
    /// refused, or passed on to the next rules with `otherMethods: "next"`. No rule: the
    /// `defaultDeny` fallback. `path` is a normalized path's `matched` form.
    pub fn decide<'a>(&'a self, grants: &Grants, method: &Method, path: &str) -> Decision<'a> {
        for (index, rule) in self.rules.iter().enumerate() {
            if !path::under(path, &rule.path_prefix) {
                continue;
            }
            if !rule.lists(method) {
                match rule.other_methods {
                    OtherMethods::Deny => return Decision::Deny(Some(rule)),
                    OtherMethods::Next => continue,
                }
            }
            return if grants.0.get(index).copied().unwrap_or(false) {
                Decision::Allow
            } else {
                Decision::Deny(Some(rule))
            };
        }
        if self.default_deny {
            Decision::Deny(None)
        } else {
            Decision::Allow
        }
    }
}

impl Rule {
    /// Whether the rule's `methods` include `method`. Methods are case-sensitive (RFC 9110
    /// section 9.1): a request's `get` is an extension method, not `GET`. `GET` also covers
    /// `HEAD`, which asks for the same resource without its body (RFC 9110 section 9.3.2), as
    /// nginx's `limit_except GET` does.
    pub fn lists(&self, method: &Method) -> bool {
        self.methods.is_empty()
            || self.methods.contains(method)
            || (method == Method::HEAD && self.methods.contains(&Method::GET))
    }
}

impl Principals {
    /// True when the entry admits nobody (a config error).
    pub fn is_empty(&self) -> bool {
        !self.any_verified
            && self.subjects.is_empty()
            && self.dns_sans.is_empty()
            && self.uri_sans.is_empty()
            && self.hashes.is_empty()
    }

    /// Whether a client passes; names only ever match entries of their own type, and only
    /// a pin (`allowedHashes`) admits a certificate nobody vouches for.
    pub fn admits(&self, client: Client<'_>) -> bool {
        if self.hashes.contains(client.hash) {
            return true;
        }
        if !client.vouched_for {
            return false;
        }
        self.any_verified
            || self
                .subjects
                .iter()
                .any(|subject| subject == client.subject)
            || client.dns_sans.iter().any(|dns| {
                let dns = dns.trim_end_matches('.');
                self.dns_sans
                    .iter()
                    .any(|entry| entry.eq_ignore_ascii_case(dns))
            })
            || client
                .uri_sans
                .iter()
                .any(|uri| self.uri_sans.iter().any(|pattern| pattern.matches(uri)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn rule(index: usize, prefix: &str, methods: &[Method], who: Principals) -> Rule {
        Rule {
            path_prefix: prefix.to_owned(),
            methods: methods.to_vec(),
            other_methods: OtherMethods::Deny,
            who,
            label: index.to_string(),
            denial: format!("forbidden by authorization rule {index}\n"),
        }
    }

    fn uris(patterns: &[&str]) -> Principals {
        Principals {
            uri_sans: patterns
                .iter()
                .filter_map(|p| UriPattern::parse(p))
                .collect(),
            ..Principals::default()
        }
    }

    fn client<'a>(hash: &'a [u8; 32], uris: &'a [String], dns: &'a [String]) -> Client<'a> {
        Client {
            hash,
            vouched_for: true,
            subject: "CN=svc,O=corp",
            dns_sans: dns,
            uri_sans: uris,
        }
    }

    fn example() -> Authorization {
        Authorization {
            rules: vec![
                rule(
                    0,
                    "/admin",
                    &[Method::GET, Method::POST],
                    uris(&["spiffe://corp/ops/*"]),
                ),
                rule(
                    1,
                    "/billing",
                    &[],
                    Principals {
                        hashes: vec![[7; 32]],
                        ..Principals::default()
                    },
                ),
                rule(
                    2,
                    "/",
                    &[],
                    Principals {
                        any_verified: true,
                        ..Principals::default()
                    },
                ),
            ],
            default_deny: false,
        }
    }

    #[test]
    fn uri_patterns_take_a_star_only_at_the_end() {
        assert_eq!(
            UriPattern::parse("spiffe://corp/ops/*"),
            Some(UriPattern::Prefix("spiffe://corp/ops/".into()))
        );
        assert_eq!(
            UriPattern::parse("spiffe://corp/a"),
            Some(UriPattern::Exact("spiffe://corp/a".into()))
        );
        assert_eq!(UriPattern::parse("spiffe://*/a"), None);
        assert_eq!(UriPattern::parse("*"), None);
        assert_eq!(UriPattern::parse(""), None);
    }

    #[test]
    fn first_matching_rule_decides_with_prefix_spiffe_match_and_method_filter() {
        let authz = example();
        let ops = ["spiffe://corp/ops/deployer".to_owned()];
        let web = ["spiffe://corp/web/frontend".to_owned()];
        let hash = [1; 32];
        let ops_grants = authz.grants(Some(client(&hash, &ops, &[])));
        let web_grants = authz.grants(Some(client(&hash, &web, &[])));
        assert_eq!(
            authz.decide(&ops_grants, &Method::GET, "/admin/x"),
            Decision::Allow
        );
        assert!(matches!(
            authz.decide(&web_grants, &Method::GET, "/admin/x"),
            Decision::Deny(Some(rule)) if rule.label == "0"
        ));
        // DELETE is not in rule 0's methods: rule 0 refuses it, for everyone.
        for grants in [&web_grants, &ops_grants] {
            assert!(matches!(
                authz.decide(grants, &Method::DELETE, "/admin"),
                Decision::Deny(Some(rule)) if rule.label == "0"
            ));
        }
        // `spiffe://corp/ops` itself is not under `spiffe://corp/ops/`.
        let bare = ["spiffe://corp/ops".to_owned()];
        let bare_grants = authz.grants(Some(client(&hash, &bare, &[])));
        assert!(matches!(
            authz.decide(&bare_grants, &Method::GET, "/admin"),
            Decision::Deny(_)
        ));
        assert!(matches!(
            authz.decide(&ops_grants, &Method::GET, "/billing"),
            Decision::Deny(Some(rule)) if rule.label == "1"
        ));
        let pinned = [7; 32];
        let pinned_grants = authz.grants(Some(client(&pinned, &[], &[])));
        assert_eq!(
            authz.decide(&pinned_grants, &Method::PUT, "/billing/x"),
            Decision::Allow
        );
        assert_eq!(
            authz.decide(&web_grants, &Method::GET, "/billingx"),
            Decision::Allow
        );
    }

    #[test]
    fn methods_are_case_sensitive_and_get_covers_head() {
        let authz = example();
        let ops = ["spiffe://corp/ops/deployer".to_owned()];
        let hash = [1; 32];
        let grants = authz.grants(Some(client(&hash, &ops, &[])));
        let lowercase = Method::from_bytes(b"get").unwrap();
        let purge = Method::from_bytes(b"PURGE").unwrap();
        let cases = [
            (Method::GET, true),
            (Method::HEAD, true),
            (Method::POST, true),
            (Method::PUT, false),
            (Method::PATCH, false),
            (Method::DELETE, false),
            (Method::OPTIONS, false),
            (lowercase, false),
            (purge, false),
        ];
        for (method, allowed) in cases {
            let decision = authz.decide(&grants, &method, "/admin/users");
            assert_eq!(
                decision == Decision::Allow,
                allowed,
                "{method}: {decision:?}"
            );
        }
    }

    #[test]
    fn other_methods_next_passes_unlisted_methods_to_the_next_rule() {
        let mut authz = example();
        authz.rules[0].other_methods = OtherMethods::Next;
        let web = ["spiffe://corp/web/frontend".to_owned()];
        let hash = [1; 32];
        let grants = authz.grants(Some(client(&hash, &web, &[])));
        assert_eq!(
            authz.decide(&grants, &Method::DELETE, "/admin"),
            Decision::Allow
        );
        assert!(matches!(
            authz.decide(&grants, &Method::GET, "/admin"),
            Decision::Deny(Some(rule)) if rule.label == "0"
        ));
        // Passed on to nothing: defaultDeny decides.
        authz.rules.truncate(1);
        authz.default_deny = true;
        assert_eq!(
            authz.decide(&grants, &Method::DELETE, "/admin"),
            Decision::Deny(None)
        );
    }

    #[test]
    fn a_rule_that_needs_a_certificate_denies_a_client_without_one() {
        let authz = example();
        let none = authz.grants(None);
        assert!(matches!(
            authz.decide(&none, &Method::GET, "/anything"),
            Decision::Deny(Some(rule)) if rule.label == "2"
        ));
    }

    #[test]
    fn no_matching_rule_falls_back_to_default_deny() {
        let mut authz = Authorization {
            rules: vec![rule(0, "/admin", &[], uris(&["spiffe://corp/ops/*"]))],
            default_deny: false,
        };
        let none = authz.grants(None);
        assert_eq!(authz.decide(&none, &Method::GET, "/other"), Decision::Allow);
        authz.default_deny = true;
        assert_eq!(
            authz.decide(&none, &Method::GET, "/other"),
            Decision::Deny(None)
        );
    }

    #[test]
    fn names_match_only_entries_of_their_own_type() {
        let who = Principals {
            dns_sans: vec!["svc.corp.example".into()],
            subjects: vec!["CN=svc,O=corp".into()],
            ..Principals::default()
        };
        let hash = [0; 32];
        let dns = ["SVC.corp.example.".to_owned()];
        assert!(who.admits(client(&hash, &[], &dns)));
        let uri_only = Principals {
            dns_sans: vec!["spiffe://corp/a".into()],
            ..Principals::default()
        };
        let uris = ["spiffe://corp/a".to_owned()];
        let mut other = client(&hash, &uris, &[]);
        other.subject = "CN=other";
        assert!(!uri_only.admits(other));
    }

    #[test]
    fn a_certificate_nobody_vouches_for_passes_only_a_pin_of_its_hash() {
        let hash = [7u8; 32];
        let sans = ["spiffe://corp/ops/alice".to_owned()];
        let dns = ["svc.corp.example".to_owned()];
        let untrusted = Client {
            vouched_for: false,
            ..client(&hash, &sans, &dns)
        };
        for who in [
            Principals {
                any_verified: true,
                ..Principals::default()
            },
            Principals {
                subjects: vec!["CN=svc,O=corp".into()],
                ..Principals::default()
            },
            Principals {
                dns_sans: vec!["svc.corp.example".into()],
                ..Principals::default()
            },
            uris(&["spiffe://corp/ops/alice"]),
        ] {
            assert!(who.admits(client(&hash, &sans, &dns)), "{who:?}");
            assert!(!who.admits(untrusted), "{who:?}");
        }
        let pinned = Principals {
            hashes: vec![hash],
            ..Principals::default()
        };
        assert!(pinned.admits(untrusted));
    }
}
