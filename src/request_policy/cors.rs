//! An app's cross-origin policy, validated (`ingress.corsPolicy`, docs/cors.md): which origins'
//! pages may read its answers, what a preflight may ask for, and the header values certgate
//! sends, made once when the config is loaded. Pure: the proxy's `cors` stage asks it.

use http::HeaderValue;

/// `ingress.corsPolicy` of one app.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    /// Origins whose pages may read the app's answers.
    pub origins: Origins,
    /// Methods a preflight may ask for (upper case as configured, compared as sent).
    pub methods: Listed,
    /// Request headers a preflight may ask for (lower case, compared in any case).
    pub headers: Listed,
    /// Response headers a page's script may read (lower case).
    pub expose: Listed,
    /// Seconds a browser may cache a preflight's answer, when set.
    pub max_age: Option<u64>,
    /// Whether credentialed requests (cookies, client certificates) may read the answer.
    pub credentials: bool,
    /// The header values, made once.
    pub values: CorsValues,
}

/// The origins a policy admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// `*`: every origin; answered `Access-Control-Allow-Origin: *`.
    Any,
    /// These origins exactly (`scheme://host[:port]`, lower case, default port left out);
    /// the request's `Origin` is sent back when it is one of them.
    Exact(Vec<String>),
}

/// A list that may be `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// `*`: anything.
    Any,
    /// These entries only (possibly none).
    Only(Vec<String>),
}

/// The response header values of a policy, made when the config is loaded.
#[derive(Debug, Clone)]
pub struct CorsValues {
    /// `Access-Control-Allow-Methods` for `Listed::Only` (for `*`, the requested method is sent
    /// back: a credentialed preflight reads a `*` as a method named `*`).
    pub allow_methods: Option<HeaderValue>,
    /// `Access-Control-Allow-Headers` for a non-empty `Listed::Only` (for `*`, the requested
    /// headers are sent back, for the same reason and because `*` never covers
    /// `Authorization`).
    pub allow_headers: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers`, unless the list is empty.
    pub expose_headers: Option<HeaderValue>,
    /// `Access-Control-Max-Age`, when `maxAge` is set.
    pub max_age: Option<HeaderValue>,
}

impl CorsPolicy {
    /// Whether a request's `Origin` is one the policy admits (`*` admits every origin).
    pub fn admits_origin(&self, origin: &[u8]) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::Exact(origins) => origins
                .iter()
                .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin)),
        }
    }

    /// Whether a preflight's `Access-Control-Request-Method` is allowed. Methods are
    /// case-sensitive (RFC 9110 section 9.1): browsers send the standard ones upper case.
    pub fn admits_method(&self, method: &[u8]) -> bool {
        match &self.methods {
            Listed::Any => !method.is_empty(),
            Listed::Only(methods) => methods.iter().any(|allowed| allowed.as_bytes() == method),
        }
    }

    /// Whether every header of a preflight's `Access-Control-Request-Headers` (a
    /// comma-separated list) is allowed; names are compared in any letter case.
    pub fn admits_headers(&self, requested: &[u8]) -> bool {
        let Listed::Only(allowed) = &self.headers else {
            return true;
        };
        requested
            .split(|&byte| byte == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|name| !name.is_empty())
            .all(|name| {
                allowed
                    .iter()
                    .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(name))
            })
    }

    /// Whether the answer depends on the request's `Origin`, so every response says
    /// `Vary: Origin` (an explicit list; a `*` answers every origin alike).
    pub fn varies_by_origin(&self) -> bool {
        matches!(self.origins, Origins::Exact(_))
    }

    /// What `certgate check` prints of the policy.
    pub fn describe(&self) -> String {
        let origins = match &self.origins {
            Origins::Any => "*".to_owned(),
            Origins::Exact(origins) => origins.join(","),
        };
        let max_age = self
            .max_age
            .map_or_else(|| "unset".to_owned(), |seconds| format!("{seconds}s"));
        format!(
            "origins {origins}, methods {}, headers {}, expose {}, max-age {max_age}, credentials {}",
            self.methods.describe(),
            self.headers.describe(),
            self.expose.describe(),
            if self.credentials { "yes" } else { "no" },
        )
    }
}

impl Listed {
    /// The list as `check` prints it: `*`, `none`, or the entries joined by commas.
    pub fn describe(&self) -> String {
        match self {
            Self::Any => "*".to_owned(),
            Self::Only(entries) if entries.is_empty() => "none".to_owned(),
            Self::Only(entries) => entries.join(","),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: Origins, methods: Listed, headers: Listed) -> CorsPolicy {
        CorsPolicy {
            origins,
            methods,
            headers,
            expose: Listed::Only(Vec::new()),
            max_age: None,
            credentials: false,
            values: CorsValues {
                allow_methods: None,
                allow_headers: None,
                expose_headers: None,
                max_age: None,
            },
        }
    }

    #[test]
    fn an_origin_matches_exactly_in_any_letter_case() {
        let policy = policy(
            Origins::Exact(vec!["https://portal.example.com".to_owned()]),
            Listed::Any,
            Listed::Any,
        );
        assert!(policy.admits_origin(b"https://portal.example.com"));
        assert!(policy.admits_origin(b"https://PORTAL.example.com"));
        assert!(!policy.admits_origin(b"https://portal.example.com:8443"));
        assert!(!policy.admits_origin(b"http://portal.example.com"));
        assert!(!policy.admits_origin(b"https://portal.example.com.evil.test"));
        assert!(!policy.admits_origin(b"null"));
    }

    #[test]
    fn methods_are_compared_as_sent() {
        let policy = policy(
            Origins::Any,
            Listed::Only(vec!["GET".to_owned(), "PATCH".to_owned()]),
            Listed::Any,
        );
        assert!(policy.admits_method(b"PATCH"));
        assert!(!policy.admits_method(b"patch"));
        assert!(!policy.admits_method(b"DELETE"));
    }

    #[test]
    fn every_requested_header_must_be_allowed() {
        let policy = policy(
            Origins::Any,
            Listed::Any,
            Listed::Only(vec!["content-type".to_owned(), "x-trace".to_owned()]),
        );
        assert!(policy.admits_headers(b""));
        assert!(policy.admits_headers(b"Content-Type"));
        assert!(policy.admits_headers(b"content-type, x-trace"));
        assert!(policy.admits_headers(b"content-type,,x-trace"));
        assert!(!policy.admits_headers(b"content-type,authorization"));
    }
}
