//! What `certgate explain` reports, as typed structs: `--format json` prints them as they
//! serialize and the text form renders them field by field, so both say the same.

use serde::Serialize;

/// The result: the verdict and everything that led to it; `--format json` prints it as it
/// serializes, the text form is rendered from the same fields.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// True when the certificate passes.
    #[serde(skip)]
    pub accepted: bool,
    /// `accepted` or `refused`.
    pub verdict: &'static str,
    /// Why it is refused, as in logs and metrics.
    pub reason: Option<&'static str>,
    /// What is wrong, in words.
    pub detail: Option<String>,
    /// The app judged.
    pub app: String,
    /// Its mode.
    pub mode: &'static str,
    /// The time judged at, RFC 3339.
    pub at: String,
    /// The leaf as certgate reads it.
    pub certificate: CertificateSection,
    /// The trust decision per CA, pin and CRL.
    pub trust: TrustSection,
    /// The allow-list decision.
    pub allow: AllowSection,
    /// Revocation beyond `crlFiles`.
    pub revocation: RevocationSection,
    /// The X-Forwarded-Client-Cert value the app would get, when accepted.
    pub xfcc: Option<String>,
    /// How the request would reach the app (from a config file).
    pub upstream: Option<UpstreamSection>,
    /// The app's upstream groups, their weights and endpoints (from a config file): live from
    /// the certgate that runs it, or as their names resolve now (`endpoint_states` says which).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream_groups: Vec<GroupSection>,
    /// Where the endpoints' states in `upstream_groups` come from (from a config file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_states: Option<EndpointStatesSection>,
    /// How many times a request that did not reach the app is sent again to another
    /// endpoint (`retries`; from a config file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The app's active health check (`healthCheck`), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSection>,
    /// Sticky sessions (`ingress.stickySessions.affinity: sticky`), when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky_sessions: Option<StickySessionsSection>,
    /// The app's `ingress.corsPolicy`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSection>,
    /// Which client addresses may connect at all (`ingress.ipSecurityRestrictions`), when
    /// the app restricts them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_restrictions: Option<IpRestrictionsSection>,
    /// The app's `ingress.customDomains` and the certificate served for each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub custom_domains: Vec<CustomDomainEntry>,
}

/// One of an app's `ingress.customDomains`.
#[derive(Debug, Clone, Serialize)]
pub struct CustomDomainEntry {
    /// The host name.
    pub name: String,
    /// `certificates.<entry>` for a domain with a certificate of its own, else
    /// `serverCertificate`.
    pub certificate: String,
    /// When that certificate expires (RFC 3339).
    pub not_after: Option<String>,
}

/// An app's `ingress.corsPolicy` and how its preflights are answered.
#[derive(Debug, Clone, Serialize)]
pub struct CorsSection {
    /// `*`, or the origins, comma-separated.
    pub allowed_origins: String,
    /// `*`, `none`, or the methods.
    pub allowed_methods: String,
    /// `*`, `none`, or the request headers.
    pub allowed_headers: String,
    /// `*`, `none`, or the response headers a page may read.
    pub expose_headers: String,
    /// Seconds a preflight's answer may be cached, when set.
    pub max_age: Option<u64>,
    /// Whether credentialed requests may read the answer.
    pub allow_credentials: bool,
    /// Who can get a preflight answered, given the app's mode.
    pub preflights: &'static str,
}

/// The app's `ipSecurityRestrictions`, judged before any certificate is asked for.
#[derive(Debug, Serialize)]
pub struct IpRestrictionsSection {
    /// `Allow` (only matching addresses connect) or `Deny` (matching addresses are refused).
    pub action: &'static str,
    /// The rules, in file order.
    pub rules: Vec<IpRuleEntry>,
}

/// One rule of `ipSecurityRestrictions`.
#[derive(Debug, Serialize)]
pub struct IpRuleEntry {
    /// Its name.
    pub name: String,
    /// Its range, normalized.
    pub range: String,
    /// Its description.
    pub description: String,
}

/// What revocation checking said.
#[derive(Debug, Serialize)]
pub struct RevocationSection {
    /// The decision, or why there was none.
    pub decision: &'static str,
    /// What is wrong, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What the checker checks, when the app has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<String>,
}

/// The leaf as certgate reads it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum CertificateSection {
    /// A leaf that parses as X.509.
    Parsed(Box<Certificate>),
    /// A leaf that does not.
    Unparsed {
        /// SHA-256 of its DER, lowercase hex.
        sha256: String,
        /// Always `false`.
        parsed: bool,
    },
}

/// What a parsed leaf says.
#[derive(Debug, Serialize)]
pub struct Certificate {
    /// Subject, RFC 4514, as `allowedSubjects` compares it.
    pub subject: String,
    /// Issuer, RFC 4514.
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Key algorithm and size or curve.
    pub key_type: String,
    /// Extended key usages.
    pub ekus: Vec<String>,
    /// DNS SANs.
    pub dns_sans: Vec<String>,
    /// URI SANs.
    pub uri_sans: Vec<String>,
    /// X.509 version (3 for v3).
    pub version: u32,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
}

/// The trust decision per CA, pin and CRL.
#[derive(Debug, Serialize)]
pub struct TrustSection {
    /// How the certificate is trusted, when it passes.
    pub decision: Option<&'static str>,
    /// What is true of its trust, in words: the decision when it passes; when it is refused,
    /// whether it still chains to a trusted CA (or is pinned, or allowed untrusted) and what
    /// refuses it (e.g. "chains to a trusted CA, but expired at 2026-01-01T00:00:00Z"), or
    /// "not trusted".
    pub summary: String,
    /// Whether its hash is pinned.
    pub pinned: bool,
    /// How many pins the app has.
    pub pins: usize,
    /// Whether the app allows untrusted certificates.
    pub allow_untrusted: bool,
    /// What each trusted CA says.
    pub cas: Vec<CaResult>,
    /// The CRLs checked during the handshake.
    pub crls: Vec<CrlFacts>,
}

/// What one trusted CA says about the chain.
#[derive(Debug, Serialize)]
pub struct CaResult {
    /// The CA's subject, RFC 4514.
    pub subject: String,
    /// `vouches` or `refuses`.
    pub result: &'static str,
    /// Why.
    pub detail: String,
}

/// One CRL and what it says about the certificate.
#[derive(Debug, Serialize)]
pub struct CrlFacts {
    /// The CRL's issuer, RFC 4514.
    pub issuer: String,
    /// The file it was read from (`#n` after the file's first CRL).
    pub source: Option<String>,
    /// Its nextUpdate, RFC 3339, when it has one.
    pub next_update: Option<String>,
    /// Whether its nextUpdate has passed.
    pub expired: bool,
    /// Whether it lists the certificate.
    pub revokes_certificate: bool,
    /// When it lists the certificate: its entry's revocationDate, RFC 3339.
    pub revocation_time: Option<String>,
    /// When it lists the certificate: its entry's reasonCode as RFC 5280 names it
    /// (`keyCompromise`), or `no reason given`.
    pub revocation_reason: Option<&'static str>,
}

/// The allow-list decision.
#[derive(Debug, Serialize)]
pub struct AllowSection {
    /// Whether the app has any allow-list.
    pub configured: bool,
    /// The entry the certificate matched.
    pub matched: Option<AllowEntry>,
    /// When none matched, the entries closest to the certificate, with what differs.
    pub closest: Vec<Closest>,
}

/// One allow-list entry.
#[derive(Debug, Serialize)]
pub struct AllowEntry {
    /// The list (`allowedSubjects`, `allowedDnsSans`, `allowedUriSans`).
    pub list: &'static str,
    /// The entry.
    pub entry: String,
}

/// An entry the certificate did not match, and why.
#[derive(Debug, Serialize)]
pub struct Closest {
    /// The list.
    pub list: &'static str,
    /// The entry.
    pub entry: String,
    /// What differs.
    pub why: String,
}

/// How a request the certificate passes for reaches the app.
#[derive(Debug, Serialize)]
pub struct UpstreamSection {
    /// `http://host:port` or `https://host:port`.
    pub address: String,
    /// The protocol spoken to the app.
    pub transport: Protocol,
    /// TLS to an `https://` app.
    pub tls: Option<UpstreamTlsSection>,
    /// How its host name is resolved, for an upstream named by DNS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<UpstreamDnsSection>,
}

/// How an upstream's host name is resolved (`upstreamDns`).
#[derive(Debug, Serialize)]
pub struct UpstreamDnsSection {
    /// The name resolved.
    pub name: String,
    /// `upstreamDns.refreshMs`: the longest wait between two resolutions.
    pub refresh_ms: u64,
    /// The shortest wait, whatever the answer's TTL.
    pub min_refresh_ms: u64,
    /// The nameservers asked: `system (/etc/resolv.conf)`, or those of `upstreamDns.nameservers`.
    pub nameservers: String,
}

/// What an `https://` app's certificate is verified against and what certgate presents.
#[derive(Debug, Serialize)]
pub struct UpstreamTlsSection {
    /// What the app's certificate is verified against.
    pub verify: VerifiedAgainst,
    /// How many CAs it is verified against.
    pub cas: usize,
    /// The name the app's certificate must hold.
    pub server_name: String,
    /// The client certificate certgate presents, if any.
    pub client_certificate: Option<ClientCertificate>,
}

/// The protocol spoken to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
}

/// What an `https://` app's certificate is verified against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifiedAgainst {
    /// The CAs of `upstreamTls.caFiles`.
    CaFiles,
    /// The system's CAs.
    System,
    /// Nothing (`upstreamTls.insecureSkipVerify`).
    InsecureSkipVerify,
}

/// The client certificate certgate presents to an app.
#[derive(Debug, Serialize)]
pub struct ClientCertificate {
    /// Its subject, RFC 4514 (`None` when it does not parse).
    pub subject: Option<String>,
    /// Its end of validity, RFC 3339.
    pub not_after: Option<String>,
}

/// An app's `healthCheck`: how each endpoint is probed.
#[derive(Debug, Clone, Serialize)]
pub struct HealthCheckSection {
    /// The path (and query) probed with `GET`.
    pub path: String,
    /// Milliseconds between two probes of an endpoint.
    pub interval_ms: u64,
    /// Milliseconds a probe may take, connection included.
    pub timeout_ms: u64,
    /// Failures in a row that take an endpoint out.
    pub unhealthy_threshold: u32,
    /// Successes in a row that bring it back.
    pub healthy_threshold: u32,
    /// The status a healthy endpoint answers.
    pub expected_status: u16,
}

/// Sticky sessions: a cookie pins each client to an endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct StickySessionsSection {
    /// The cookie's name.
    pub cookie: &'static str,
}

/// Where the states of an app's endpoints come from.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatesSection {
    /// `live`: the certgate that runs the config told them (its admin listener's
    /// `GET /upstreams`); otherwise the endpoints are as their names resolve now, in state
    /// `unknown`: `not_running` (nothing answered on the admin listener), `unreadable`
    /// (something answered, but not with the states), `not_asked` (the config has no admin
    /// listener, or one on port 0) or `not_served` (the certgate that answered serves no app
    /// of this name).
    pub source: &'static str,
    /// The admin address asked (loopback for an unspecified one), when there is one.
    pub admin: Option<String>,
    /// What `source` means here, in words.
    pub detail: String,
}

/// One upstream group of an app and its endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSection {
    /// `latest`, or the revision's name.
    pub name: String,
    /// Its share of the app's requests.
    pub weight: u32,
    /// Its upstream URL.
    pub upstream: String,
    /// Each endpoint: the address the host resolves to (or the `host:port` dialed by name,
    /// when it does not), and its state.
    pub endpoints: Vec<EndpointSection>,
}

/// One endpoint of a group.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSection {
    /// The address, or `host:port` when dialed by name.
    pub address: String,
    /// Live: `healthy`, `ejected` or `draining` (the states of
    /// `certgate_upstream_endpoints`); `unknown` when no running certgate told it.
    pub state: String,
    /// Live: requests sent to it whose response has not ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
    /// Live, for an ejected endpoint: `failures`, `health_check` or both.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ejected_by: Vec<String>,
    /// Live: when its ejection by its failures ends (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_until: Option<String>,
}
