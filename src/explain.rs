//! `certgate explain`: runs an app's policy (`tls::policy`, the code the handshake runs) on a
//! certificate file and says why it passes or not: the verdict, the leaf as certgate reads it,
//! the trust decision per CA, pin and CRL, the allow-list decision, and the XFCC it would get.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{Value, json};
use x509_parser::certificate::X509Certificate;
use x509_parser::public_key::PublicKey;

use crate::cli::{ExplainArgs, ExplainFormat};
use crate::config::{AppError, Config, ConfigError, FLAG_KEYS};
use crate::identity::{LeafNames, rfc4514};
use crate::settings::AllowList;
use crate::settings::{ClientCertMode, XfccFields};
use crate::tls::policy::{Policy, Presented, describe};
use crate::tls::sni::{HostMatcher, normalize};

/// Why `explain` could not judge the certificate (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--config needs --app NAME or --host HOST to pick the app")]
    NoAppChosen,
    #[error("{path} has no app named {name:?} (its apps: {apps})")]
    NoSuchApp {
        path: PathBuf,
        name: String,
        apps: String,
    },
    #[error("{path} has no app for host {host:?} and no catch-all app")]
    NoAppForHost { path: PathBuf, host: String },
    #[error(
        "app {app:?} is in ignore mode: it never asks for a client certificate, so there is nothing to explain"
    )]
    IgnoreMode { app: String },
    #[error("--at {value:?} is not an RFC 3339 time (e.g. 2030-01-01T00:00:00Z)")]
    BadTime { value: String },
    #[error("{path} holds no client certificate")]
    NoCertificate { path: PathBuf },
}

/// What is judged: one app's policy and what it forwards.
#[derive(Debug)]
pub struct Target {
    /// The app's name (`app` for the sidecar).
    pub name: String,
    /// Its mode.
    pub mode: ClientCertMode,
    /// Its policy, shared with the handshake.
    pub policy: Arc<Policy>,
    /// The XFCC fields it forwards.
    pub fields: XfccFields,
    /// Its revocation checker beyond `crlFiles`, when configured (README "Revocation").
    pub revocation: Option<Arc<crate::revocation::Revocation>>,
}

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
pub fn run(args: &ExplainArgs) -> Result<Explanation, ExplainError> {
    let target = target(args)?;
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
    Ok(explain(&target, &chain, at))
}

/// Prints an explanation in the chosen format.
pub fn render(explanation: &Explanation, format: ExplainFormat) -> String {
    match format {
        ExplainFormat::Json => {
            let mut text = serde_json::to_string_pretty(&explanation.json).unwrap_or_default();
            text.push('\n');
            text
        }
        ExplainFormat::Text => text(&explanation.json),
    }
}

fn target(args: &ExplainArgs) -> Result<Target, ExplainError> {
    let Some(path) = &args.config else {
        let mode = match &args.client_auth.client_cert_mode {
            Some(value) => value.parse().map_err(|_| ConfigError::UnknownMode {
                key: "--client-cert-mode",
                value: value.clone(),
            })?,
            None => ClientCertMode::Require,
        };
        if mode == ClientCertMode::Ignore {
            return Err(ExplainError::IgnoreMode {
                app: "app".to_owned(),
            });
        }
        let file = args.client_auth.file_model();
        let (trust, allow) = crate::config::client_policy(&file, mode, Path::new(""), FLAG_KEYS)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let policy = Policy::new(trust, allow, &provider).map_err(|source| ConfigError::App {
            app: "app".to_owned(),
            source: AppError::Verifier { source },
        })?;
        let fields = crate::config::forward_fields(args.client_auth.forward_fields().as_deref())?;
        return Ok(Target {
            name: "app".to_owned(),
            mode,
            policy: Arc::new(policy),
            fields,
            revocation: None,
        });
    };
    let config = Config::load(path)?;
    let app = match (&args.app, &args.host) {
        (Some(name), _) => config
            .apps
            .iter()
            .find(|app| app.name == *name)
            .ok_or_else(|| ExplainError::NoSuchApp {
                path: path.clone(),
                name: name.clone(),
                apps: config
                    .apps
                    .iter()
                    .map(|app| app.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
        (None, Some(host)) => {
            let matcher = HostMatcher::new(config.apps.iter().map(|app| app.hosts.as_slice()));
            matcher
                .resolve(Some(&normalize(host)))
                .and_then(|index| config.apps.get(index))
                .ok_or_else(|| ExplainError::NoAppForHost {
                    path: path.clone(),
                    host: host.clone(),
                })?
        }
        (None, None) => return Err(ExplainError::NoAppChosen),
    };
    let Some(policy) = &app.policy else {
        return Err(ExplainError::IgnoreMode {
            app: app.name.clone(),
        });
    };
    Ok(Target {
        name: app.name.clone(),
        mode: app.mode,
        policy: policy.clone(),
        fields: app.xfcc_fields,
        revocation: app.revocation.clone(),
    })
}

fn parse_time(value: &str) -> Result<UnixTime, ExplainError> {
    let bad = || ExplainError::BadTime {
        value: value.to_owned(),
    };
    let time = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    let secs = u64::try_from(time.unix_timestamp()).map_err(|_| bad())?;
    Ok(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        secs,
    )))
}

/// Judges `chain` (leaf first) under `target` at `at`.
pub fn explain(target: &Target, chain: &[CertificateDer<'static>], at: UnixTime) -> Explanation {
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
        (Some(revocation), Ok(_)) => match revocation.decide_blocking(chain) {
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
    });
    Explanation { accepted, json }
}

fn certificate_section(
    leaf: Option<&X509Certificate<'_>>,
    presented: &Presented,
    names: &LeafNames,
) -> Value {
    let Some(leaf) = leaf else {
        return json!({ "sha256": presented.hash, "parsed": false });
    };
    let validity = leaf.validity();
    json!({
        "subject": presented.subject,
        "issuer": presented.issuer,
        "serial": presented.serial,
        "not_before": rfc3339(validity.not_before.timestamp()),
        "not_after": rfc3339(validity.not_after.timestamp()),
        "key_type": key_type(leaf),
        "ekus": ekus(leaf),
        "dns_sans": names.dns,
        "uri_sans": names.uris,
        "version": leaf.version().0 + 1,
        "sha256": presented.hash,
    })
}

fn key_type(leaf: &X509Certificate<'_>) -> String {
    let key = leaf.public_key();
    match key.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(_)) => {
            let curve = key
                .algorithm
                .parameters
                .as_ref()
                .and_then(|parameters| parameters.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
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

fn trust_section(
    target: &Target,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    at: UnixTime,
    presented: &Presented,
    verdict: &Result<crate::tls::policy::Passed, Box<crate::tls::policy::Refusal>>,
) -> Value {
    let trust = target.policy.trust();
    let hash = presented.hash.as_str();
    let pinned = trust.pins.iter().any(|pin| hex::encode(pin) == hash);
    let cas: Vec<Value> = trust
        .roots
        .iter()
        .zip(target.policy.per_ca(leaf, intermediates, at))
        .map(|(root, result)| {
            let subject = x509_parser::parse_x509_certificate(root)
                .map(|(_, ca)| rfc4514(ca.subject()))
                .unwrap_or_default();
            match result {
                Ok(()) => json!({ "subject": subject, "result": "vouches", "detail": "the chain verifies to this CA with the clientAuth EKU" }),
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
                    json!({ "subject": subject, "result": "refuses", "detail": detail })
                }
            }
        })
        .collect();
    let now = i64::try_from(at.as_secs()).unwrap_or(i64::MAX);
    let crls: Vec<Value> = trust
        .crls
        .iter()
        .filter_map(|crl| {
            let (_, crl) = x509_parser::parse_x509_crl(crl).ok()?;
            let next_update = crl.next_update().map(|t| t.timestamp());
            let revoked = rfc4514(crl.issuer()) == presented.issuer
                && crl
                    .iter_revoked_certificates()
                    .any(|entry| entry.raw_serial_as_string() == presented.serial);
            Some(json!({
                "issuer": rfc4514(crl.issuer()),
                "next_update": next_update.map(rfc3339),
                "expired": next_update.is_some_and(|next| next < now),
                "revokes_certificate": revoked,
            }))
        })
        .collect();
    let decision = match verdict {
        Ok(passed) => json!(passed.trust.as_str()),
        Err(_) => Value::Null,
    };
    json!({
        "decision": decision,
        "pinned": pinned,
        "pins": trust.pins.len(),
        "allow_untrusted": trust.allow_untrusted,
        "cas": cas,
        "crls": crls,
    })
}

fn allow_section(allow: &AllowList, names: &LeafNames) -> Value {
    if allow.is_empty() {
        return json!({ "configured": false, "matched": null, "closest": [] });
    }
    let matched = if allow.subjects.contains(&names.subject) {
        Some(json!({ "list": "allowedSubjects", "entry": names.subject }))
    } else if let Some(dns) = names
        .dns
        .iter()
        .find(|dns| allow.dns_sans.contains(&normalize(dns)))
    {
        Some(json!({ "list": "allowedDnsSans", "entry": normalize(dns) }))
    } else {
        names
            .uris
            .iter()
            .find(|uri| allow.uri_sans.contains(uri))
            .map(|uri| json!({ "list": "allowedUriSans", "entry": uri }))
    };
    let mut closest = Vec::new();
    if matched.is_none() {
        closest = closest_subjects(&allow.subjects, &names.subject);
        for entry in &allow.dns_sans {
            closest.push(json!({
                "list": "allowedDnsSans",
                "entry": entry,
                "why": format!("the certificate's DNS SANs are [{}]", names.dns.join(", ")),
            }));
        }
        for entry in &allow.uri_sans {
            closest.push(json!({
                "list": "allowedUriSans",
                "entry": entry,
                "why": format!("the certificate's URI SANs are [{}]", names.uris.join(", ")),
            }));
        }
    }
    json!({ "configured": true, "matched": matched, "closest": closest })
}

/// The subject entries sharing the most attributes with the certificate's subject, with what
/// differs; the RDN-order trap is named as such.
fn closest_subjects(entries: &[String], subject: &str) -> Vec<Value> {
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
            json!({ "list": "allowedSubjects", "entry": entry, "why": why })
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

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// The text form: the verdict first, then one section per decision.
fn text(json: &Value) -> String {
    let s = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let list = |value: &Value| {
        let items: Vec<String> = value
            .as_array()
            .map(|items| items.iter().map(s).collect())
            .unwrap_or_default();
        if items.is_empty() {
            "(none)".to_owned()
        } else {
            items.join(", ")
        }
    };
    let mut out = String::new();
    match json["verdict"].as_str() {
        Some("accepted") => out.push_str("verdict: accepted\n"),
        _ => {
            out.push_str(&format!("verdict: refused: {}\n", s(&json["reason"])));
            out.push_str(&format!("detail:  {}\n", s(&json["detail"])));
        }
    }
    out.push_str(&format!(
        "app:     {} (mode {}), judged at {}\n",
        s(&json["app"]),
        s(&json["mode"]),
        s(&json["at"])
    ));
    let cert = &json["certificate"];
    out.push_str("\ncertificate\n");
    if cert["subject"].is_null() {
        out.push_str(&format!(
            "  (not readable as X.509)\n  sha256:     {}\n",
            s(&cert["sha256"])
        ));
    } else {
        out.push_str(&format!(
            "  subject:    {}   <- the string to put in allowedSubjects\n",
            s(&cert["subject"])
        ));
        out.push_str(&format!("  issuer:     {}\n", s(&cert["issuer"])));
        out.push_str(&format!("  serial:     {}\n", s(&cert["serial"])));
        out.push_str(&format!(
            "  valid:      {} to {}\n",
            s(&cert["not_before"]),
            s(&cert["not_after"])
        ));
        out.push_str(&format!("  key:        {}\n", s(&cert["key_type"])));
        out.push_str(&format!("  EKUs:       {}\n", list(&cert["ekus"])));
        out.push_str(&format!("  DNS SANs:   {}\n", list(&cert["dns_sans"])));
        out.push_str(&format!("  URI SANs:   {}\n", list(&cert["uri_sans"])));
        out.push_str(&format!("  version:    X.509 v{}\n", s(&cert["version"])));
        out.push_str(&format!("  sha256:     {}\n", s(&cert["sha256"])));
    }
    let revocation = &json["revocation"];
    out.push_str("\nrevocation\n");
    out.push_str(&format!("  decision:   {}\n", s(&revocation["decision"])));
    if !revocation["checks"].is_null() {
        out.push_str(&format!("  checks:     {}\n", s(&revocation["checks"])));
    }
    if !revocation["detail"].is_null() {
        out.push_str(&format!("  detail:     {}\n", s(&revocation["detail"])));
    }
    let trust = &json["trust"];
    out.push_str("\ntrust\n");
    out.push_str(&format!(
        "  decision:   {}\n",
        trust["decision"].as_str().unwrap_or("not trusted")
    ));
    out.push_str(&format!(
        "  pinned:     {} ({} pin(s) configured)\n",
        if trust["pinned"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        },
        s(&trust["pins"])
    ));
    for ca in trust["cas"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  CA {}: {}: {}\n",
            s(&ca["subject"]),
            s(&ca["result"]),
            s(&ca["detail"])
        ));
    }
    for crl in trust["crls"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  CRL of {}: next update {}{}{}\n",
            s(&crl["issuer"]),
            s(&crl["next_update"]),
            if crl["expired"].as_bool() == Some(true) {
                ", EXPIRED"
            } else {
                ""
            },
            if crl["revokes_certificate"].as_bool() == Some(true) {
                ", REVOKES this certificate"
            } else {
                ""
            }
        ));
    }
    out.push_str(&format!(
        "  allowUntrusted: {}\n",
        if trust["allow_untrusted"].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        }
    ));
    let allow = &json["allow"];
    out.push_str("\nallow-lists\n");
    if allow["configured"].as_bool() != Some(true) {
        out.push_str("  none configured: every trusted certificate is admitted\n");
    } else if !allow["matched"].is_null() {
        out.push_str(&format!(
            "  matched {} entry {}\n",
            s(&allow["matched"]["list"]),
            s(&allow["matched"]["entry"])
        ));
    } else {
        out.push_str("  no entry matches; the closest:\n");
        for entry in allow["closest"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {} {:?}: {}\n",
                s(&entry["list"]),
                s(&entry["entry"]),
                s(&entry["why"])
            ));
        }
    }
    out.push_str("\nX-Forwarded-Client-Cert\n");
    match json["xfcc"].as_str() {
        Some(value) => out.push_str(&format!("  {value}\n")),
        None => out.push_str("  (none: the certificate is refused)\n"),
    }
    out
}
