//! The sections of an explanation, worked out: the leaf as certgate reads it, the trust
//! decision per CA, pin and CRL, the allow-list decision, the way to the app and which client
//! addresses may reach it.

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::public_key::PublicKey;

use crate::identity::TrustSource;
use crate::identity::{LeafNames, rfc4514};
use crate::ip_restrictions::IpRestrictions;
use crate::settings::{
    AllowList, MIN_DNS_REFRESH, Transport, Trust, Upstream, UpstreamDns, UpstreamVerify,
};
use crate::tls::FailureReason;
use crate::tls::client_policy::{Presented, Refusal, crl_entry, describe};
use crate::tls::rfc3339;
use crate::tls::sni::normalize;

use super::report::{
    AllowEntry, AllowSection, CaResult, Certificate, CertificateSection, ClientCertificate,
    Closest, CrlFacts, IpRestrictionsSection, IpRuleEntry, Protocol, TrustSection,
    UpstreamDnsSection, UpstreamSection, UpstreamTlsSection, VerifiedAgainst,
};
use super::target::Target;

pub(super) fn certificate_section(
    leaf: Option<&X509Certificate<'_>>,
    presented: &Presented,
    names: &LeafNames,
) -> CertificateSection {
    let Some(leaf) = leaf else {
        return CertificateSection::Unparsed {
            sha256: presented.hash.clone(),
            parsed: false,
        };
    };
    let validity = leaf.validity();
    CertificateSection::Parsed(Box::new(Certificate {
        subject: presented.subject.clone(),
        issuer: presented.issuer.clone(),
        serial: presented.serial.clone(),
        not_before: rfc3339(validity.not_before.timestamp()),
        not_after: rfc3339(validity.not_after.timestamp()),
        key_type: key_type(leaf),
        ekus: ekus(leaf),
        dns_sans: names.dns.clone(),
        uri_sans: names.uris.clone(),
        version: leaf.version().0 + 1,
        sha256: presented.hash.clone(),
    }))
}

fn key_type(leaf: &X509Certificate<'_>) -> String {
    let key = leaf.public_key();
    match key.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(_)) => {
            let curve = crate::tls::client_policy::curve_oid(key);
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => "ECDSA P-256".to_owned(),
                "1.3.132.0.34" => "ECDSA P-384".to_owned(),
                "1.3.132.0.35" => "ECDSA P-521".to_owned(),
                other => format!("ECDSA {other}"),
            }
        }
        _ => match key.algorithm.algorithm.to_id_string().as_str() {
            "1.3.101.112" => "Ed25519".to_owned(),
            "1.3.101.113" => "Ed448".to_owned(),
            other => other.to_owned(),
        },
    }
}

fn ekus(leaf: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(extension)) = leaf.extended_key_usage() else {
        return Vec::new();
    };
    let eku = &extension.value;
    let mut out: Vec<String> = [
        (eku.any, "any"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| name.to_owned())
    .collect();
    out.extend(eku.other.iter().map(|oid| oid.to_id_string()));
    out
}

pub(super) fn trust_section(
    target: &Target,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    at: UnixTime,
    presented: &Presented,
    verdict: &Result<crate::tls::client_policy::Passed, Box<crate::tls::client_policy::Refusal>>,
) -> TrustSection {
    let trust = target.policy.trust();
    let hash = presented.hash.as_str();
    let pinned = trust.pins.iter().any(|pin| hex::encode(pin) == hash);
    let cas = ca_results(target, leaf, intermediates, at, presented);
    let now = i64::try_from(at.as_secs()).unwrap_or(i64::MAX);
    let parsed_leaf = x509_parser::parse_x509_certificate(leaf)
        .ok()
        .map(|(_, leaf)| leaf);
    let crls = crl_facts(trust, parsed_leaf.as_ref(), now);
    let summary = match verdict {
        Ok(passed) => passed.trust.as_str().to_owned(),
        Err(refusal) => refused_trust(
            target,
            leaf,
            intermediates,
            at,
            parsed_leaf.as_ref(),
            refusal,
        ),
    };
    TrustSection {
        decision: verdict.as_ref().ok().map(|passed| passed.trust.as_str()),
        summary,
        pinned,
        pins: trust.pins.len(),
        allow_untrusted: trust.allow_untrusted,
        cas,
        crls,
    }
}

/// What each of the app's CAs says of the chain.
fn ca_results(
    target: &Target,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    at: UnixTime,
    presented: &Presented,
) -> Vec<CaResult> {
    target
        .policy
        .trust()
        .roots
        .iter()
        .zip(target.policy.per_ca(leaf, intermediates, at))
        .map(|(root, result)| {
            let subject = x509_parser::parse_x509_certificate(root)
                .map(|(_, ca)| rfc4514(ca.subject()))
                .unwrap_or_default();
            match result {
                Ok(()) => CaResult {
                    subject,
                    result: "vouches",
                    detail: "the chain verifies to this CA with the clientAuth EKU".to_owned(),
                },
                Err(error) => {
                    let detail = if intermediates.is_empty()
                        && !presented.issuer.is_empty()
                        && presented.issuer != subject
                        && matches!(error, rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
                    {
                        format!(
                            "different issuer: the certificate was issued by {}, this CA is {subject}",
                            presented.issuer
                        )
                    } else {
                        describe(&error, presented)
                    };
                    CaResult {
                        subject,
                        result: "refuses",
                        detail,
                    }
                }
            }
        })
        .collect()
}

/// The facts of each of the app's CRLs, and what it says of `leaf`.
fn crl_facts(trust: &Trust, leaf: Option<&X509Certificate<'_>>, now: i64) -> Vec<CrlFacts> {
    trust
        .crls
        .iter()
        .enumerate()
        .filter_map(|(index, crl)| {
            let (_, crl) = x509_parser::parse_x509_crl(crl).ok()?;
            let next_update = crl.next_update().map(|t| t.timestamp());
            let revoked = leaf.and_then(|leaf| crl_entry(&crl, leaf));
            Some(CrlFacts {
                issuer: rfc4514(crl.issuer()),
                source: trust.crl_names.get(index).cloned(),
                next_update: next_update.map(rfc3339),
                expired: next_update.is_some_and(|next| next < now),
                revokes_certificate: revoked.is_some(),
                revocation_time: revoked.map(|revoked| rfc3339(revoked.time)),
                revocation_reason: revoked.map(|revoked| revoked.reason_name()),
            })
        })
        .collect()
}

/// What is true of a refused certificate's trust: what still vouches for its chain (checked
/// at a moment inside its validity period when it is outside it) and what refuses it, or "not
/// trusted" when nothing vouches for it.
fn refused_trust(
    target: &Target,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    at: UnixTime,
    parsed: Option<&X509Certificate<'_>>,
    refusal: &Refusal,
) -> String {
    let validity = parsed.map(|leaf| {
        let validity = leaf.validity();
        (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        )
    });
    let now = i64::try_from(at.as_secs()).unwrap_or(i64::MAX);
    // An expired or not yet valid leaf is judged at the nearest moment it is valid, so that
    // its chain is judged rather than its dates again.
    let judged_at = match (refusal.reason, validity) {
        (FailureReason::Expired, Some((_, not_after))) => not_after.min(now),
        (FailureReason::NotYetValid, Some((not_before, _))) => not_before.max(now),
        _ => now,
    };
    let judged_at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(judged_at).unwrap_or_default(),
    ));
    let vouched = match target.policy.trusted_at(leaf, intermediates, judged_at) {
        Ok(TrustSource::Ca) => "chains to a trusted CA",
        Ok(TrustSource::Pin) => "pinned in allowedHashes",
        Ok(TrustSource::Untrusted) => "admitted by allowUntrusted (no CA vouches for it)",
        // webpki checks revocation once it has built a path to a trusted CA.
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) => {
            "chains to a trusted CA"
        }
        Err(_) => return "not trusted".to_owned(),
    };
    let but = match (refusal.reason, validity) {
        (FailureReason::Expired, Some((_, not_after))) => {
            format!("expired at {}", rfc3339(not_after))
        }
        (FailureReason::NotYetValid, Some((not_before, _))) => {
            format!("not valid before {}", rfc3339(not_before))
        }
        (FailureReason::Revoked, _) => format!("revoked: {}", refusal.detail),
        (FailureReason::RevocationUnknown, _) => {
            format!("its revocation status is unknown: {}", refusal.detail)
        }
        (FailureReason::NotAllowed, _) => "on no allow-list".to_owned(),
        (reason, _) => format!("refused ({}): {}", reason.as_str(), refusal.detail),
    };
    format!("{vouched}, but {but}")
}

pub(super) fn allow_section(allow: &AllowList, names: &LeafNames) -> AllowSection {
    if allow.is_empty() {
        return AllowSection {
            configured: false,
            matched: None,
            closest: Vec::new(),
        };
    }
    let entry = |list, entry: &str| AllowEntry {
        list,
        entry: entry.to_owned(),
    };
    let matched = if allow.subjects.contains(&names.subject) {
        Some(entry("allowedSubjects", &names.subject))
    } else if let Some(dns) = names
        .dns
        .iter()
        .find(|dns| allow.dns_sans.contains(&normalize(dns)))
    {
        Some(entry("allowedDnsSans", &normalize(dns)))
    } else {
        names
            .uris
            .iter()
            .find(|uri| allow.uri_sans.contains(uri))
            .map(|uri| entry("allowedUriSans", uri))
    };
    let mut closest = Vec::new();
    if matched.is_none() {
        closest = closest_subjects(&allow.subjects, &names.subject);
        for entry in &allow.dns_sans {
            closest.push(Closest {
                list: "allowedDnsSans",
                entry: entry.clone(),
                why: format!("the certificate's DNS SANs are [{}]", names.dns.join(", ")),
            });
        }
        for entry in &allow.uri_sans {
            closest.push(Closest {
                list: "allowedUriSans",
                entry: entry.clone(),
                why: format!("the certificate's URI SANs are [{}]", names.uris.join(", ")),
            });
        }
    }
    AllowSection {
        configured: true,
        matched,
        closest,
    }
}

/// The subject entries sharing the most attributes with the certificate's subject, with what
/// differs; the RDN-order trap is named as such.
fn closest_subjects(entries: &[String], subject: &str) -> Vec<Closest> {
    let attributes = |text: &str| -> Vec<String> {
        let mut parts: Vec<String> = crate::config::checks::parse_rfc4514(text)
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .map(|(kind, value)| format!("{}={value}", kind.to_ascii_uppercase()))
            .collect();
        parts.sort();
        parts
    };
    let mine = attributes(subject);
    let mut scored: Vec<(usize, &String)> = entries
        .iter()
        .map(|entry| {
            let theirs = attributes(entry);
            (theirs.iter().filter(|a| mine.contains(a)).count(), entry)
        })
        .collect();
    scored.sort_by_key(|(shared, _)| std::cmp::Reverse(*shared));
    scored
        .into_iter()
        .take(3)
        .map(|(shared, entry)| {
            let theirs = attributes(entry);
            let why = if theirs == mine {
                format!(
                    "same attributes in a different order: RFC 4514 lists the certificate's RDNs last to first, so this certificate's subject reads {subject}; use that string"
                )
            } else if entry.eq_ignore_ascii_case(subject) {
                format!("differs only in letter case from the subject {subject}")
            } else {
                let missing: Vec<&String> = theirs.iter().filter(|a| !mine.contains(a)).collect();
                let extra: Vec<&String> = mine.iter().filter(|a| !theirs.contains(a)).collect();
                format!(
                    "{shared} attribute(s) in common; the entry has {} that the certificate lacks, the certificate has {} (subject {subject})",
                    list_or_none(&missing),
                    list_or_none(&extra)
                )
            };
            Closest {
                list: "allowedSubjects",
                entry: entry.clone(),
                why,
            }
        })
        .collect()
}

fn list_or_none(items: &[&String]) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How a request the certificate passes for reaches the app: its address and protocol, and for
/// an `https://` upstream what the app's certificate is verified against, the name it must
/// hold and the client certificate certgate presents.
pub(super) fn upstream_section(upstream: &Upstream, dns: Option<&UpstreamDns>) -> UpstreamSection {
    let tls = upstream.tls.as_ref().map(|tls| {
        let verify = match tls.verify {
            UpstreamVerify::CaFiles(_) => VerifiedAgainst::CaFiles,
            UpstreamVerify::System(_) => VerifiedAgainst::System,
            UpstreamVerify::Skip => VerifiedAgainst::InsecureSkipVerify,
        };
        let cas = tls.verify.count();
        let client =
            tls.client_chain()
                .first()
                .map(|der| match x509_parser::parse_x509_certificate(der) {
                    Ok((_, leaf)) => ClientCertificate {
                        subject: Some(rfc4514(leaf.subject())),
                        not_after: Some(rfc3339(leaf.validity().not_after.timestamp())),
                    },
                    Err(_) => ClientCertificate {
                        subject: None,
                        not_after: None,
                    },
                });
        UpstreamTlsSection {
            verify,
            cas,
            server_name: tls.server_name.to_str().into_owned(),
            client_certificate: client,
        }
    });
    UpstreamSection {
        address: upstream.to_string(),
        transport: match upstream.transport {
            Transport::Http1 => Protocol::Http1,
            Transport::Http2 => Protocol::Http2,
        },
        tls,
        dns: upstream
            .dns_name()
            .zip(dns)
            .map(|(name, dns)| UpstreamDnsSection {
                name: name.to_owned(),
                refresh_ms: u64::try_from(dns.refresh.as_millis()).unwrap_or(u64::MAX),
                min_refresh_ms: u64::try_from(MIN_DNS_REFRESH.min(dns.refresh).as_millis())
                    .unwrap_or(u64::MAX),
                nameservers: dns.describe_nameservers(),
            }),
    }
}

pub(super) fn ip_restrictions_section(restrictions: &IpRestrictions) -> IpRestrictionsSection {
    IpRestrictionsSection {
        action: restrictions.action().as_str(),
        rules: restrictions
            .rules()
            .iter()
            .map(|rule| IpRuleEntry {
                name: rule.name.clone(),
                range: rule.range.to_string(),
                description: rule.description.clone(),
            })
            .collect(),
    }
}
