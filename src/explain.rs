//! `certgate explain`: runs an app's policy (`tls::policy`, the code the handshake runs) on a
//! certificate file and says why it passes or not: the verdict, the leaf as certgate reads it,
//! the trust decision per CA, pin and CRL, the allow-list decision, the XFCC it would get and
//! how the request would reach the app.

mod sections;
mod target;
mod text;

use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{Value, json};

use crate::cli::{ExplainArgs, ExplainFormat};
use crate::identity::LeafNames;
use crate::tls::policy::Presented;

use self::sections::{
    allow_section, certificate_section, rfc3339, trust_section, upstream_section,
};
pub use self::target::{ExplainError, Target};
use self::target::{parse_time, target};

/// The result: the verdict and everything that led to it, as JSON (the text form is rendered
/// from it).
#[derive(Debug)]
pub struct Explanation {
    /// True when the certificate passes.
    pub accepted: bool,
    /// The whole explanation.
    pub json: Value,
}

/// Resolves the arguments into a target, a chain and a time, and explains.
pub async fn run(args: &ExplainArgs) -> Result<Explanation, ExplainError> {
    let target = target(args).await?;
    let mut chain = crate::config::pem_certificates(&args.certificate)?;
    if let Some(path) = &args.chain {
        chain.extend(crate::config::pem_certificates(path)?);
    }
    if chain.is_empty() {
        return Err(ExplainError::NoCertificate {
            path: args.certificate.clone(),
        });
    }
    let at = match &args.at {
        Some(value) => parse_time(value)?,
        None => UnixTime::now(),
    };
    Ok(explain(&target, &chain, at).await)
}

/// Prints an explanation in the chosen format.
pub fn render(explanation: &Explanation, format: ExplainFormat) -> String {
    match format {
        ExplainFormat::Json => {
            let mut text = serde_json::to_string_pretty(&explanation.json).unwrap_or_default();
            text.push('\n');
            text
        }
        ExplainFormat::Text => text::text(&explanation.json),
    }
}

/// Judges `chain` (leaf first) under `target` at `at`.
pub async fn explain(
    target: &Target,
    chain: &[CertificateDer<'static>],
    at: UnixTime,
) -> Explanation {
    let Some((leaf_der, intermediates)) = chain.split_first() else {
        return Explanation {
            accepted: false,
            json: json!({ "verdict": "refused", "reason": "no_certificate" }),
        };
    };
    let mut verdict = target.policy.evaluate(leaf_der, intermediates, at);
    // Revocation beyond crlFiles, asked now (CRLs as held, OCSP over the network) exactly as
    // a connection would be after its handshake.
    let revocation = match (&target.revocation, &verdict) {
        (Some(revocation), Ok(_)) => match revocation.decide(chain).await {
            Ok(allowed_unknown) => json!({
                "decision": if allowed_unknown { "unknown, allowed by onUnknown" } else { "good" },
                "checks": revocation.describe(),
            }),
            Err(refused) => {
                let json = json!({
                    "decision": refused.reason.as_str(),
                    "detail": refused.detail,
                    "checks": revocation.describe(),
                });
                verdict = Err(Box::new(refused.to_policy(leaf_der)));
                json
            }
        },
        (Some(revocation), Err(_)) => json!({
            "decision": "not checked (refused before)",
            "checks": revocation.describe(),
        }),
        (None, _) => json!({ "decision": "crlFiles only, checked with trust" }),
    };
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
        Ok(_) => (Value::Null, Value::Null),
        Err(refusal) => (json!(refusal.reason.as_str()), json!(refusal.detail)),
    };
    let trust = trust_section(target, leaf_der, intermediates, at, &presented, &verdict);
    let allow = allow_section(target.policy.allow(), &names);
    let xfcc = match &verdict {
        Ok(_) => json!(crate::proxy::xfcc::build(
            chain,
            &presented.hash,
            &names,
            target.fields
        )),
        Err(_) => Value::Null,
    };
    let json = json!({
        "verdict": if accepted { "accepted" } else { "refused" },
        "reason": reason,
        "detail": detail,
        "app": target.name,
        "mode": target.mode.as_str(),
        "at": rfc3339(i64::try_from(at.as_secs()).unwrap_or(i64::MAX)),
        "certificate": certificate_section(parsed.as_ref(), &presented, &names),
        "trust": trust,
        "allow": allow,
        "revocation": revocation,
        "xfcc": xfcc,
        "upstream": target.upstream.as_ref().map(upstream_section),
    });
    Explanation { accepted, json }
}
