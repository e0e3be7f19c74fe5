//! The text form of an explanation, rendered from its JSON.

use serde_json::Value;

/// The text form: the verdict first, then one section per decision.
pub(super) fn text(json: &Value) -> String {
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
    let upstream = &json["upstream"];
    if !upstream.is_null() {
        out.push_str("\nupstream\n");
        out.push_str(&format!(
            "  address:    {} ({})\n",
            s(&upstream["address"]),
            if upstream["transport"] == "http2" {
                "HTTP/2"
            } else {
                "HTTP/1.1"
            }
        ));
        let tls = &upstream["tls"];
        if !tls.is_null() {
            let verified = match tls["verify"].as_str() {
                Some("ca_files") => {
                    format!("against {} CA(s) of upstreamTls.caFiles", s(&tls["cas"]))
                }
                Some("system") => format!("against the system's {} CA(s)", s(&tls["cas"])),
                _ => "NOT VERIFIED (upstreamTls.insecureSkipVerify)".to_owned(),
            };
            out.push_str(&format!("  verified:   {verified}\n"));
            out.push_str(&format!("  name:       {}\n", s(&tls["server_name"])));
            let client = &tls["client_certificate"];
            if client.is_null() {
                out.push_str("  client certificate: none\n");
            } else {
                out.push_str(&format!(
                    "  client certificate: {}, valid to {}\n",
                    s(&client["subject"]),
                    s(&client["not_after"])
                ));
            }
        }
    }
    out
}
