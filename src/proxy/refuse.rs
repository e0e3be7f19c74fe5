//! `rejectWith: "http"`: a connection whose certificate the policy refused (or that sent none
//! to a `require` app) answers every request itself, 495 or 496 as nginx does, with a small
//! HTML page for browsers and one text line otherwise; so does one whose client address the
//! app's `ipSecurityRestrictions` refuse, with 403. Nothing is forwarded to the app.

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};

use super::body::ProxyBody;
use crate::ip_restrictions::IpRefusal;
use crate::tls::FailureReason;
use crate::tls::client_policy::Refusal;

/// The answers of one refused connection, built once when the connection starts.
#[derive(Debug, Clone)]
pub(crate) struct RefusalPage {
    /// 495 or 496.
    pub status: StatusCode,
    text: Bytes,
    html: Bytes,
}

/// nginx's "SSL Certificate Error": a certificate was presented and refused.
const CERTIFICATE_ERROR: u16 = 495;
/// nginx's "SSL Certificate Required": none was presented.
const CERTIFICATE_REQUIRED: u16 = 496;

impl RefusalPage {
    /// The page for a refusal.
    pub(crate) fn new(refusal: Refusal) -> Self {
        let (code, title) = if refusal.reason == FailureReason::NoCertificate {
            (CERTIFICATE_REQUIRED, "Client certificate required")
        } else {
            (CERTIFICATE_ERROR, "Client certificate refused")
        };
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN);
        let mut line = format!("{code} {title}: {}: {}", refusal.reason, refusal.detail);
        if let Some(presented) = &refusal.presented {
            line.push_str(&format!(
                "; subject {}; sha256 {}",
                presented.subject, presented.hash
            ));
        }
        // One line, whatever a certificate's names hold.
        let line: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut facts = format!(
            "<p>Reason: <code>{}</code></p>\n<p>{}</p>\n",
            refusal.reason,
            escape(&refusal.detail)
        );
        if let Some(presented) = &refusal.presented {
            facts.push_str(&format!(
                "<p>Subject: <code>{}</code><br>Issuer: <code>{}</code><br>SHA-256: <code>{}</code></p>\n",
                escape(&presented.subject),
                escape(&presented.issuer),
                presented.hash
            ));
        }
        let html = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{code} {title}</title></head>\n\
             <body>\n<h1>{code} {title}</h1>\n{facts}</body></html>\n"
        );
        Self {
            status,
            text: Bytes::from(line + "\n"),
            html: Bytes::from(html),
        }
    }

    /// The page for a client address the app's `ipSecurityRestrictions` refuse: 403, as
    /// Container Apps answers such a client over HTTP.
    pub(crate) fn ip_restricted(refusal: &IpRefusal) -> Self {
        let title = "Forbidden: client address not allowed";
        let line: String = format!(
            "403 {title}: {}: {}",
            FailureReason::IpRestricted,
            refusal.detail
        )
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
        let html = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>403 {title}</title></head>\n\
             <body>\n<h1>403 {title}</h1>\n<p>Reason: <code>{}</code></p>\n<p>{}</p>\n</body></html>\n",
            FailureReason::IpRestricted,
            escape(&refusal.detail)
        );
        Self {
            status: StatusCode::FORBIDDEN,
            text: Bytes::from(line + "\n"),
            html: Bytes::from(html),
        }
    }

    /// The answer to one request: HTML when the client asks for it, else one text line.
    pub(crate) fn respond<B>(&self, request: &Request<B>) -> Response<ProxyBody> {
        let wants_html = request
            .headers()
            .get_all(ACCEPT)
            .iter()
            .any(|value| value.to_str().is_ok_and(|v| v.contains("text/html")));
        let (body, content_type) = if wants_html {
            (self.html.clone(), "text/html; charset=utf-8")
        } else {
            (self.text.clone(), "text/plain; charset=utf-8")
        };
        let mut response = Response::new(Either::Right(Full::new(body)));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}
