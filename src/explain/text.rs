//! The text form of an explanation, rendered field by field from the same structs `--format
//! json` prints.

use std::fmt::Write as _;

use super::report::{
    CertificateSection, CorsSection, EndpointStatesSection, Explanation, GroupSection,
    IpRestrictionsSection, Protocol, TrustSection, UpstreamSection, UpstreamTlsSection,
    VerifiedAgainst,
};

/// The text form: the verdict first, then one section per decision.
pub(super) fn text(explanation: &Explanation) -> String {
    let mut out = String::new();
    if explanation.accepted {
        out.push_str("verdict: accepted\n");
    } else {
        let _ = writeln!(
            out,
            "verdict: refused: {}",
            explanation.reason.unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "detail:  {}",
            explanation.detail.as_deref().unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "app:     {} (mode {}), judged at {}",
        explanation.app, explanation.mode, explanation.at
    );
    certificate(&mut out, &explanation.certificate);
    let revocation = &explanation.revocation;
    out.push_str("\nrevocation\n");
    let _ = writeln!(out, "  decision:   {}", revocation.decision);
    if let Some(checks) = &revocation.checks {
        let _ = writeln!(out, "  checks:     {checks}");
    }
    if let Some(detail) = &revocation.detail {
        let _ = writeln!(out, "  detail:     {detail}");
    }
    trust(&mut out, &explanation.trust);
    let allow = &explanation.allow;
    out.push_str("\nallow-lists\n");
    if !allow.configured {
        out.push_str("  none configured: every trusted certificate is admitted\n");
    } else if let Some(matched) = &allow.matched {
        let _ = writeln!(out, "  matched {} entry {}", matched.list, matched.entry);
    } else {
        out.push_str("  no entry matches; the closest:\n");
        for entry in &allow.closest {
            let _ = writeln!(out, "  {} {:?}: {}", entry.list, entry.entry, entry.why);
        }
    }
    out.push_str("\nX-Forwarded-Client-Cert\n");
    match &explanation.xfcc {
        Some(value) => {
            let _ = writeln!(out, "  {value}");
        }
        None => out.push_str("  (none: the certificate is refused)\n"),
    }
    if let Some(upstream) = &explanation.upstream {
        self::upstream(&mut out, upstream);
    }
    if !explanation.upstream_groups.is_empty() {
        groups(
            &mut out,
            &explanation.upstream_groups,
            explanation.endpoint_states.as_ref(),
        );
    }
    if let Some(retries) = explanation.retries {
        balancing(&mut out, explanation, retries);
    }
    if let Some(cors) = &explanation.cors {
        self::cors(&mut out, cors);
    }
    if let Some(restrictions) = &explanation.ip_restrictions {
        ip_restrictions(&mut out, restrictions);
    }
    if !explanation.custom_domains.is_empty() {
        out.push_str(
            "
custom domains (ingress.customDomains)
",
        );
        for domain in &explanation.custom_domains {
            let _ = write!(out, "  {}: {}", domain.name, domain.certificate);
            if let Some(not_after) = &domain.not_after {
                let _ = write!(out, ", expires {not_after}");
            }
            out.push('\n');
        }
    }
    out
}

fn cors(out: &mut String, cors: &CorsSection) {
    out.push_str("\ncors (ingress.corsPolicy)\n");
    let _ = writeln!(out, "  origins:     {}", cors.allowed_origins);
    let _ = writeln!(out, "  methods:     {}", cors.allowed_methods);
    let _ = writeln!(out, "  headers:     {}", cors.allowed_headers);
    let _ = writeln!(out, "  expose:      {}", cors.expose_headers);
    match cors.max_age {
        Some(seconds) => {
            let _ = writeln!(out, "  max-age:     {seconds}s");
        }
        None => out.push_str("  max-age:     unset (the browser's default)\n"),
    }
    let _ = writeln!(
        out,
        "  credentials: {}",
        if cors.allow_credentials { "yes" } else { "no" }
    );
    let _ = writeln!(out, "  preflights:  {}", cors.preflights);
}

fn ip_restrictions(out: &mut String, restrictions: &IpRestrictionsSection) {
    let meaning = match restrictions.action {
        "Allow" => "only these client addresses may connect",
        _ => "these client addresses are refused",
    };
    let _ = writeln!(
        out,
        "\nipSecurityRestrictions ({}: {meaning}, before any certificate is asked for)",
        restrictions.action
    );
    for rule in &restrictions.rules {
        let _ = write!(out, "  {}: {}", rule.name, rule.range);
        if !rule.description.is_empty() {
            let _ = write!(out, " ({})", rule.description);
        }
        out.push('\n');
    }
}

fn certificate(out: &mut String, certificate: &CertificateSection) {
    out.push_str("\ncertificate\n");
    let leaf = match certificate {
        CertificateSection::Unparsed { sha256, .. } => {
            let _ = write!(out, "  (not readable as X.509)\n  sha256:     {sha256}\n");
            return;
        }
        CertificateSection::Parsed(leaf) => leaf,
    };
    let list = |items: &[String]| {
        if items.is_empty() {
            "(none)".to_owned()
        } else {
            items.join(", ")
        }
    };
    let _ = writeln!(
        out,
        "  subject:    {}   <- the string to put in allowedSubjects",
        leaf.subject
    );
    let _ = writeln!(out, "  issuer:     {}", leaf.issuer);
    let _ = writeln!(out, "  serial:     {}", leaf.serial);
    let _ = writeln!(
        out,
        "  valid:      {} to {}",
        leaf.not_before, leaf.not_after
    );
    let _ = writeln!(out, "  key:        {}", leaf.key_type);
    let _ = writeln!(out, "  EKUs:       {}", list(&leaf.ekus));
    let _ = writeln!(out, "  DNS SANs:   {}", list(&leaf.dns_sans));
    let _ = writeln!(out, "  URI SANs:   {}", list(&leaf.uri_sans));
    let _ = writeln!(out, "  version:    X.509 v{}", leaf.version);
    let _ = writeln!(out, "  sha256:     {}", leaf.sha256);
}

fn trust(out: &mut String, trust: &TrustSection) {
    out.push_str("\ntrust\n");
    let _ = writeln!(out, "  decision:   {}", trust.summary);
    let _ = writeln!(
        out,
        "  pinned:     {} ({} pin(s) configured)",
        if trust.pinned { "yes" } else { "no" },
        trust.pins
    );
    for ca in &trust.cas {
        let _ = writeln!(out, "  CA {}: {}: {}", ca.subject, ca.result, ca.detail);
    }
    for crl in &trust.crls {
        let source = crl
            .source
            .as_ref()
            .map(|source| format!(" ({source})"))
            .unwrap_or_default();
        let revokes = match (&crl.revocation_time, crl.revocation_reason) {
            (Some(time), Some(reason)) => {
                format!(", REVOKES this certificate since {time} ({reason})")
            }
            _ if crl.revokes_certificate => ", REVOKES this certificate".to_owned(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  CRL of {}{source}: next update {}{}{revokes}",
            crl.issuer,
            crl.next_update.as_deref().unwrap_or_default(),
            if crl.expired { ", EXPIRED" } else { "" },
        );
    }
    let _ = writeln!(
        out,
        "  allowUntrusted: {}",
        if trust.allow_untrusted { "on" } else { "off" }
    );
}

fn upstream(out: &mut String, upstream: &UpstreamSection) {
    out.push_str("\nupstream\n");
    let _ = writeln!(
        out,
        "  address:    {} ({})",
        upstream.address,
        match upstream.transport {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
        }
    );
    if let Some(tls) = &upstream.tls {
        upstream_tls(out, tls);
    }
    if let Some(dns) = &upstream.dns {
        let _ = writeln!(
            out,
            "  dns:        {} resolved every {} ms at most (sooner by TTL, not under {} ms) via {}",
            dns.name, dns.refresh_ms, dns.min_refresh_ms, dns.nameservers
        );
    }
}

fn upstream_tls(out: &mut String, tls: &UpstreamTlsSection) {
    let verified = match tls.verify {
        VerifiedAgainst::CaFiles => format!("against {} CA(s) of upstreamTls.caFiles", tls.cas),
        VerifiedAgainst::System => format!("against the system's {} CA(s)", tls.cas),
        VerifiedAgainst::InsecureSkipVerify => {
            "NOT VERIFIED (upstreamTls.insecureSkipVerify)".to_owned()
        }
    };
    let _ = writeln!(out, "  verified:   {verified}");
    let _ = writeln!(out, "  name:       {}", tls.server_name);
    match &tls.client_certificate {
        None => out.push_str("  client certificate: none\n"),
        Some(client) => {
            let _ = writeln!(
                out,
                "  client certificate: {}, valid to {}",
                client.subject.as_deref().unwrap_or_default(),
                client.not_after.as_deref().unwrap_or_default()
            );
        }
    }
}

fn groups(out: &mut String, groups: &[GroupSection], states: Option<&EndpointStatesSection>) {
    out.push_str("\nupstream groups (weight, endpoints and their states)\n");
    if let Some(states) = states {
        let _ = writeln!(out, "  states: {}", states.detail);
    }
    for group in groups {
        let _ = writeln!(out, "  {} {}% {}", group.name, group.weight, group.upstream);
        for endpoint in &group.endpoints {
            let _ = write!(out, "    {} {}", endpoint.address, endpoint.state);
            if !endpoint.ejected_by.is_empty() {
                let _ = write!(out, " by {}", endpoint.ejected_by.join(" and "));
            }
            if let Some(until) = &endpoint.ejected_until {
                let _ = write!(out, " until {until}");
            }
            if let Some(in_flight) = endpoint.in_flight {
                let _ = write!(out, ", {in_flight} in flight");
            }
            out.push('\n');
        }
    }
}

/// Retries, the health check and sticky sessions (`retries`, `healthCheck`,
/// `ingress.stickySessions`).
fn balancing(out: &mut String, explanation: &Explanation, retries: u32) {
    out.push_str("\nendpoints (retries, healthCheck, stickySessions)\n");
    let _ = writeln!(
        out,
        "  retries:         {retries} (a request that did not reach the app goes to another endpoint)"
    );
    match &explanation.health_check {
        Some(check) => {
            let _ = writeln!(
                out,
                "  health check:    GET {} every {} ms, timeout {} ms; out after {} failures in a row, back after {} successes; expects {}",
                check.path,
                check.interval_ms,
                check.timeout_ms,
                check.unhealthy_threshold,
                check.healthy_threshold,
                check.expected_status
            );
        }
        None => out.push_str("  health check:    off (only failures eject an endpoint)\n"),
    }
    match &explanation.sticky_sessions {
        Some(sticky) => {
            let _ = writeln!(out, "  sticky sessions: on (cookie {})", sticky.cookie);
        }
        None => out.push_str("  sticky sessions: off\n"),
    }
}
