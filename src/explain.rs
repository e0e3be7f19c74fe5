//! `certgate explain`: runs an app's policy (`tls::policy`, the code the handshake runs) on a
//! certificate file and says why it passes or not: the verdict, the leaf as certgate reads it,
//! the trust decision per CA, pin and CRL, the allow-list decision, the XFCC it would get and
//! how the request would reach the app: its upstream groups, with their endpoints' states live
//! from the certgate that runs the config (`live`).

mod live;
pub mod report;
mod sections;
mod target;
mod text;

use rustls_pki_types::{CertificateDer, UnixTime};

use crate::cli::{ExplainArgs, ExplainFormat};
use crate::identity::LeafNames;
use crate::tls::client_policy::{Passed, Presented, Refusal};

pub use self::report::Explanation;
use self::report::RevocationSection;
use self::sections::{
    allow_section, certificate_section, ip_restrictions_section, trust_section, upstream_section,
};
pub use self::target::{ExplainError, Target};
use self::target::{parse_time, target};
use crate::tls::rfc3339;

/// Resolves the arguments into a target, a chain and a time, and explains.
pub async fn run(args: &ExplainArgs) -> Result<Explanation, ExplainError> {
    let target = target(args).await?;
    let mut chain = crate::config::pem_certificates(&args.certificate)?;
    if let Some(path) = &args.chain {
        chain.extend(crate::config::pem_certificates(path)?);
    }
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(ExplainError::NoCertificate {
            path: args.certificate.clone(),
        });
    };
    let at = match &args.at {
        Some(value) => parse_time(value)?,
        None => UnixTime::now(),
    };
    Ok(explain(&target, leaf, intermediates, at).await)
}

/// Prints an explanation in the chosen format.
pub fn render(explanation: &Explanation, format: ExplainFormat) -> String {
    match format {
        ExplainFormat::Json => {
            // Through a `Value`, whose objects keep their keys sorted.
            let mut text = serde_json::to_value(explanation)
                .and_then(|json| serde_json::to_string_pretty(&json))
                .unwrap_or_default();
            text.push('\n');
            text
        }
        ExplainFormat::Text => text::text(explanation),
    }
}

/// Revocation beyond crlFiles, asked now (CRLs as held, OCSP over the network) exactly as a
/// connection would be after its handshake; a revoked chain turns `verdict` into a refusal.
async fn revocation_section(
    target: &Target,
    leaf_der: &CertificateDer<'static>,
    chain: &[CertificateDer<'static>],
    verdict: &mut Result<Passed, Box<Refusal>>,
) -> RevocationSection {
    let Some(revocation) = &target.revocation else {
        return RevocationSection {
            decision: "crlFiles only, checked with trust",
            detail: None,
            checks: None,
        };
    };
    if verdict.is_err() {
        return RevocationSection {
            decision: "not checked (refused before)",
            detail: None,
            checks: Some(revocation.describe()),
        };
    }
    match revocation.decide(chain).await {
        Ok(allowed_unknown) => RevocationSection {
            decision: if allowed_unknown {
                "unknown, allowed by onUnknown"
            } else {
                "good"
            },
            detail: None,
            checks: Some(revocation.describe()),
        },
        Err(refused) => {
            let section = RevocationSection {
                decision: refused.reason.as_str(),
                detail: Some(refused.detail.clone()),
                checks: Some(revocation.describe()),
            };
            *verdict = Err(Box::new(refused.to_policy(leaf_der)));
            section
        }
    }
}

/// Judges `leaf` with the `intermediates` the client sends after it under `target` at `at`.
pub async fn explain(
    target: &Target,
    leaf_der: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
    at: UnixTime,
) -> Explanation {
    let chain: Vec<CertificateDer<'static>> = std::iter::once(leaf_der)
        .chain(intermediates)
        .cloned()
        .collect();
    let mut verdict = target.policy.evaluate(leaf_der, intermediates, at);
    let revocation = revocation_section(target, leaf_der, &chain, &mut verdict).await;
    let accepted = verdict.is_ok();
    let parsed = x509_parser::parse_x509_certificate(leaf_der)
        .ok()
        .map(|(_, leaf)| leaf);
    let presented = match &parsed {
        Some(leaf) => Presented::of(leaf_der, leaf),
        None => Presented::unparsable(leaf_der),
    };
    let names = parsed.as_ref().map(LeafNames::of).unwrap_or_default();
    let (reason, detail) = match &verdict {
        Ok(_) => (None, None),
        Err(refusal) => (Some(refusal.reason.as_str()), Some(refusal.detail.clone())),
    };
    let trust = trust_section(target, leaf_der, intermediates, at, &presented, &verdict);
    let allow = allow_section(target.policy.allow(), &names);
    let xfcc = verdict
        .is_ok()
        .then(|| crate::proxy::xfcc::build(&chain, &presented.hash, &names, target.fields));
    Explanation {
        accepted,
        verdict: if accepted { "accepted" } else { "refused" },
        reason,
        detail,
        app: target.name.clone(),
        mode: target.mode.as_str(),
        at: rfc3339(i64::try_from(at.as_secs()).unwrap_or(i64::MAX)),
        certificate: certificate_section(parsed.as_ref(), &presented, &names),
        trust,
        allow,
        revocation,
        xfcc,
        upstream: target
            .upstream
            .as_ref()
            .map(|upstream| upstream_section(upstream, target.upstream_dns.as_ref())),
        upstream_groups: target.groups.clone(),
        endpoint_states: target.endpoint_states.clone(),
        retries: target.retries,
        health_check: target.health_check.clone(),
        sticky_sessions: target.sticky_sessions.clone(),
        cors: target.cors.clone(),
        custom_domains: target.custom_domains.clone(),
        ip_restrictions: target
            .ip_restrictions
            .as_deref()
            .map(ip_restrictions_section),
    }
}
