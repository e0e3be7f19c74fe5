//! The CORS stage (`ingress.corsPolicy`, docs/cors.md): a preflight (`OPTIONS` with `Origin`
//! and `Access-Control-Request-Method`) is answered here, 204 with the allow headers or 204
//! without them, and never reaches the app; any other request goes on, and the headers that
//! let the calling page read the answer are added to the response that comes back (`Exposure`),
//! whoever made it, the app or certgate. CORS refuses nothing: it only tells the browser what
//! the page may read.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, HeaderMap, HeaderValue, ORIGIN,
    VARY,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};

use super::body::ProxyBody;
use crate::apps::App;
use crate::request_policy::cors::{CorsPolicy, Origins};

/// What the stage made of a request.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and taken apart at once, never stored; boxing would allocate"
)]
pub(crate) enum Cors {
    /// A preflight: certgate's answer, sent as it is.
    Answer(Response<ProxyBody>),
    /// Any other request: forward it, and add these headers to its response.
    Expose(Exposure),
}

/// The CORS headers a response gets; none for an app without `corsPolicy`.
#[derive(Debug, Default)]
pub(crate) struct Exposure {
    /// `Access-Control-Allow-Origin`, when the request's origin is allowed.
    allow_origin: Option<HeaderValue>,
    /// `Access-Control-Allow-Credentials: true` with it.
    credentials: bool,
    /// `Access-Control-Expose-Headers` with it.
    expose_headers: Option<HeaderValue>,
    /// `Vary: Origin`, on every response of an app whose answer depends on the origin.
    vary: bool,
}

const TRUE: HeaderValue = HeaderValue::from_static("true");
const ANY: HeaderValue = HeaderValue::from_static("*");
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

/// Answers a preflight for `app`, or says what the response to any other request gets.
pub(crate) fn request<B>(app: &App, request: &Request<B>) -> Cors {
    let Some(policy) = app.config.request_policy.cors.as_deref() else {
        return Cors::Expose(Exposure::default());
    };
    let headers = request.headers();
    let origin = headers.get(ORIGIN);
    let requested_method = headers.get(ACCESS_CONTROL_REQUEST_METHOD);
    match (origin, requested_method) {
        (Some(origin), Some(method)) if request.method() == Method::OPTIONS => {
            let answer = preflight(policy, origin, method, headers);
            app.metrics
                .cors_preflight(answer.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
            Cors::Answer(answer)
        }
        _ => Cors::Expose(exposure(policy, origin)),
    }
}

impl Exposure {
    /// Adds the headers to a response. Like Envoy's CORS filter, certgate's values replace
    /// the app's own `Access-Control-Allow-Origin` (and `-Allow-Credentials`,
    /// `-Expose-Headers` when the policy sets them) for an allowed origin, and leave the
    /// response as the app made it otherwise; `Origin` joins the app's `Vary`.
    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        if let Some(origin) = self.allow_origin {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            if self.credentials {
                headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
            }
            if let Some(expose) = self.expose_headers {
                headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose);
            }
        }
        if self.vary {
            vary_on_origin(headers);
        }
    }
}

/// The headers for a request that is not a preflight: with `*`, every response says any
/// origin may read it (the Fetch standard's advice for a resource open to all: the same answer
/// whatever the `Origin`, so no `Vary`); with a list, only an allowed origin is named, and
/// every response varies on `Origin`, whether or not the request sent one.
fn exposure(policy: &CorsPolicy, origin: Option<&HeaderValue>) -> Exposure {
    let allow_origin = match &policy.origins {
        Origins::Any => Some(ANY),
        Origins::Exact(_) => origin
            .filter(|origin| policy.admits_origin(origin.as_bytes()))
            .cloned(),
    };
    Exposure {
        credentials: policy.credentials,
        expose_headers: allow_origin
            .as_ref()
            .and(policy.values.expose_headers.clone()),
        allow_origin,
        vary: policy.varies_by_origin(),
    }
}

/// 204 with the allow headers when the origin, the method and every requested header are
/// allowed; 204 without any of them otherwise, which the browser reads as a refusal.
fn preflight(
    policy: &CorsPolicy,
    origin: &HeaderValue,
    method: &HeaderValue,
    headers: &HeaderMap,
) -> Response<ProxyBody> {
    let requested_headers = headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
    let mut response = Response::new(Either::Right(Full::default()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let out = response.headers_mut();
    if policy.varies_by_origin() {
        out.insert(VARY, VARY_ORIGIN);
    }
    let allowed = policy.admits_origin(origin.as_bytes())
        && policy.admits_method(method.as_bytes())
        && requested_headers.is_none_or(|requested| policy.admits_headers(requested.as_bytes()));
    if !allowed {
        return response;
    }
    let values = &policy.values;
    out.insert(
        ACCESS_CONTROL_ALLOW_ORIGIN,
        match policy.origins {
            Origins::Any if !policy.credentials => ANY,
            Origins::Any | Origins::Exact(_) => origin.clone(),
        },
    );
    // For `*`, the method and headers asked for are named: a credentialed preflight reads a
    // `*` as a name, and `*` never covers `Authorization`.
    out.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        values
            .allow_methods
            .clone()
            .unwrap_or_else(|| method.clone()),
    );
    if let Some(allow_headers) = values.allow_headers.clone().or(requested_headers.cloned()) {
        out.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    }
    if let Some(max_age) = &values.max_age {
        out.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
    }
    if policy.credentials {
        out.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
    }
    response
}

/// Adds `Origin` to the response's `Vary` unless it is there already (or `Vary: *` says the
/// answer varies on everything): a lone `Vary` field gets `, Origin` appended, several get one
/// more field line, which means the same (RFC 9110 section 5.3).
fn vary_on_origin(headers: &mut HeaderMap) {
    let mut fields = 0;
    for value in headers.get_all(VARY) {
        fields += 1;
        let covered = value
            .as_bytes()
            .split(|&byte| byte == b',')
            .map(<[u8]>::trim_ascii)
            .any(|name| name == b"*" || name.eq_ignore_ascii_case(b"origin"));
        if covered {
            return;
        }
    }
    if fields == 1
        && let Some(existing) = headers.get(VARY)
    {
        let mut joined = Vec::with_capacity(existing.len() + 8);
        joined.extend_from_slice(existing.as_bytes());
        joined.extend_from_slice(b", Origin");
        if let Ok(joined) = HeaderValue::from_bytes(&joined) {
            headers.insert(VARY, joined);
            return;
        }
    }
    headers.append(VARY, VARY_ORIGIN);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn vary(existing: &[&str]) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for value in existing {
            headers.append(VARY, HeaderValue::from_str(value).unwrap());
        }
        vary_on_origin(&mut headers);
        headers
            .get_all(VARY)
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn origin_joins_the_vary_the_app_set_once() {
        assert_eq!(vary(&[]), ["Origin"]);
        assert_eq!(vary(&["Accept-Encoding"]), ["Accept-Encoding, Origin"]);
        assert_eq!(
            vary(&["accept-encoding, origin"]),
            ["accept-encoding, origin"]
        );
        assert_eq!(vary(&["*"]), ["*"]);
        assert_eq!(
            vary(&["Accept-Encoding", "Accept-Language"]),
            ["Accept-Encoding", "Accept-Language", "Origin"]
        );
    }
}
