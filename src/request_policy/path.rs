//! The path normalizer that exclusion paths and authorization rules match on (docs/policy.md "Paths
//! without a certificate"): unreserved percent-escapes decoded, `.`/`..` resolved, repeated
//! `/` collapsed, `;` parameters set aside; encoded `/`, `\` and NUL refused.

/// A request path in the one form policy matches on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NormalizedPath {
    /// What is forwarded: the normalized path, `;` parameters kept on ordinary segments.
    pub forward: String,
    /// What prefixes are matched against: the same path with every `;` parameter removed.
    pub matched: String,
}

/// Why a path cannot be normalized (the request is answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    #[error("the path does not start with /")]
    NotAbsolute,
    #[error("the path holds a malformed percent-escape")]
    BadEscape,
    #[error("the path holds an encoded /, \\ or NUL")]
    EncodedSeparator,
    #[error("the path holds a backslash")]
    Backslash,
}

/// Normalizes an origin-form path (no query).
///
/// Rules, in order: the path must start with `/`; in each segment a `%XX` of an unreserved
/// character (RFC 3986 section 2.3) is decoded, any other escape keeps its bytes with uppercase
/// hex, and `%2F`, `%5C` and `%00` are refused (an app that decodes them would see another
/// path than the one matched); a segment's `;` parameters are set aside; empty segments are
/// dropped (`//a` is `/a`); `.` and `..` segments, with or without parameters, are resolved
/// as RFC 3986 section 5.2.4 does, never above the root. Letter case is kept: paths are
/// case-sensitive.
pub(crate) fn normalize(path: &str) -> Result<NormalizedPath, PathError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    // (name, parameters) of each kept segment.
    let mut segments: Vec<(String, String)> = Vec::new();
    let mut trailing_slash = false;
    for raw in rest.split('/') {
        let decoded = decode_segment(raw)?;
        let (name, parameters) = match decoded.find(';') {
            Some(at) => (decoded[..at].to_owned(), decoded[at..].to_owned()),
            None => (decoded, String::new()),
        };
        match name.as_str() {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => {
                segments.push((name, parameters));
                trailing_slash = false;
            }
        }
    }
    let mut forward = String::with_capacity(path.len());
    let mut matched = String::with_capacity(path.len());
    for (name, parameters) in &segments {
        forward.push('/');
        forward.push_str(name);
        forward.push_str(parameters);
        matched.push('/');
        matched.push_str(name);
    }
    if segments.is_empty() || trailing_slash {
        forward.push('/');
        matched.push('/');
    }
    Ok(NormalizedPath { forward, matched })
}

/// Whether a normalized path lies under a prefix, on segment boundaries: `/admin` covers
/// `/admin` and `/admin/x`, never `/administrator`; `/` covers everything.
pub(crate) fn under(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix)
            || path.len() + 1 == prefix.len() && prefix.starts_with(path);
    }
    path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// Why a configured path prefix is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("it must start with /")]
    NotAbsolute,
    #[error("it is a plain path prefix, not a pattern: *, ?, #, ; and spaces are not allowed")]
    Pattern,
    #[error(
        "it is not in normalized form (no . or .. segments, no //, escapes of unreserved characters decoded)"
    )]
    NotNormalized,
    #[error("it holds a malformed or refused percent-escape")]
    BadEscape,
}

/// Checks a configured prefix and returns it as matched (a trailing `/` is kept).
pub(crate) fn prefix(value: &str) -> Result<String, PrefixError> {
    if !value.starts_with('/') {
        return Err(PrefixError::NotAbsolute);
    }
    if value.contains(['*', '?', '#', ';', ' ', '\t', '\\']) || value.chars().any(char::is_control)
    {
        return Err(PrefixError::Pattern);
    }
    let normalized = normalize(value).map_err(|_| PrefixError::BadEscape)?;
    if normalized.matched != value {
        return Err(PrefixError::NotNormalized);
    }
    Ok(normalized.matched)
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    if !raw.contains(['%', '\\']) {
        return Ok(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(high), Some(low)) = (
                    bytes.get(i + 1).and_then(|b| hex_value(*b)),
                    bytes.get(i + 2).and_then(|b| hex_value(*b)),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let byte = high << 4 | low;
                if matches!(byte, b'/' | b'\\' | 0) {
                    return Err(PathError::EncodedSeparator);
                }
                if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(byte));
                } else {
                    out.push('%');
                    out.push(char::from(HEX_UPPER[usize::from(high)]));
                    out.push(char::from(HEX_UPPER[usize::from(low)]));
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            _ => {
                // Copy a run of ordinary characters; `%` and `\` are ASCII, so the run ends on
                // a character boundary.
                let end = bytes[i..]
                    .iter()
                    .position(|b| matches!(b, b'%' | b'\\'))
                    .map_or(bytes.len(), |at| i + at);
                out.push_str(&raw[i..end]);
                i = end;
            }
        }
    }
    Ok(out)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(path: &str) -> Result<String, PathError> {
        normalize(path).map(|n| n.matched)
    }

    #[test]
    fn dot_segments_and_repeated_slashes_are_resolved() {
        assert_eq!(matched("/public/../admin").as_deref(), Ok("/admin"));
        assert_eq!(matched("/public/./x").as_deref(), Ok("/public/x"));
        assert_eq!(matched("//admin").as_deref(), Ok("/admin"));
        assert_eq!(matched("/a//b///c").as_deref(), Ok("/a/b/c"));
        assert_eq!(matched("/../../admin").as_deref(), Ok("/admin"));
        assert_eq!(matched("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(matched("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(matched("/").as_deref(), Ok("/"));
        assert_eq!(matched("/public/").as_deref(), Ok("/public/"));
        assert_eq!(matched("/..").as_deref(), Ok("/"));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_uppercase() {
        assert_eq!(matched("/public/%2e%2e/admin").as_deref(), Ok("/admin"));
        assert_eq!(matched("/public/%2E%2E/admin").as_deref(), Ok("/admin"));
        assert_eq!(matched("/public/.%2e/admin").as_deref(), Ok("/admin"));
        assert_eq!(matched("/%61dmin").as_deref(), Ok("/admin"));
        assert_eq!(matched("/a%7e%41").as_deref(), Ok("/a~A"));
        assert_eq!(matched("/a%20b%3f").as_deref(), Ok("/a%20b%3F"));
    }

    #[test]
    fn encoded_separators_and_bad_escapes_are_refused() {
        assert_eq!(matched("/public%2Fadmin"), Err(PathError::EncodedSeparator));
        assert_eq!(
            matched("/public%2f..%2fadmin"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(
            matched("/public/..%5Cadmin"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(matched("/a%00"), Err(PathError::EncodedSeparator));
        assert_eq!(matched("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(matched("/a%2"), Err(PathError::BadEscape));
        assert_eq!(matched("/a\\..\\admin"), Err(PathError::Backslash));
        assert_eq!(matched("*"), Err(PathError::NotAbsolute));
        assert_eq!(matched(""), Err(PathError::NotAbsolute));
    }

    #[test]
    fn path_parameters_are_set_aside_for_matching_and_dot_segments_with_them_resolve() {
        let path = normalize("/public/..;x=1/admin;jsessionid=2");
        assert_eq!(
            path,
            Ok(NormalizedPath {
                forward: "/admin;jsessionid=2".into(),
                matched: "/admin".into(),
            })
        );
        assert_eq!(matched("/admin;x").as_deref(), Ok("/admin"));
        assert_eq!(matched("/public;/../admin").as_deref(), Ok("/admin"));
        assert_eq!(matched("/;x/admin").as_deref(), Ok("/admin"));
        // An encoded `;` is data, not a parameter.
        assert_eq!(matched("/admin%3Bx").as_deref(), Ok("/admin%3Bx"));
    }

    #[test]
    fn letter_case_is_kept() {
        assert_eq!(matched("/PUBLIC/x").as_deref(), Ok("/PUBLIC/x"));
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(under("/admin", "/admin"));
        assert!(under("/admin/", "/admin"));
        assert!(under("/admin/x", "/admin"));
        assert!(!under("/administrator", "/admin"));
        assert!(!under("/", "/admin"));
        assert!(under("/anything", "/"));
        assert!(under("/", "/"));
        assert!(under("/admin/x", "/admin/"));
        assert!(under("/admin", "/admin/"));
        assert!(!under("/adminx", "/admin/"));
        assert!(!under("/PUBLIC/x", "/public"));
    }

    #[test]
    fn configured_prefixes_must_be_plain_and_normalized() {
        assert_eq!(prefix("/public").as_deref(), Ok("/public"));
        assert_eq!(prefix("/.well-known/").as_deref(), Ok("/.well-known/"));
        assert_eq!(prefix("/"), Ok("/".to_owned()));
        assert_eq!(prefix("public"), Err(PrefixError::NotAbsolute));
        assert_eq!(prefix("/admin/*"), Err(PrefixError::Pattern));
        assert_eq!(prefix("/admin?x"), Err(PrefixError::Pattern));
        assert_eq!(prefix("/a;b"), Err(PrefixError::Pattern));
        assert_eq!(prefix("/a/../b"), Err(PrefixError::NotNormalized));
        assert_eq!(prefix("//a"), Err(PrefixError::NotNormalized));
        assert_eq!(prefix("/%61"), Err(PrefixError::NotNormalized));
        assert_eq!(prefix("/a%2Fb"), Err(PrefixError::BadEscape));
    }
}
