//! Shared session ticket keys: the key file (`sessionTickets.keyFile`) every replica reads, and
//! the rustls ticketer made from it for one app. The first key encrypts, every key decrypts;
//! each app derives its own keys from the shared ones, its name and its trust fingerprint, so
//! a ticket never resumes under another app or under a changed trust policy.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::server::ProducesTickets;
use sha2::{Digest as _, Sha256};

use crate::settings::{AllowList, ClientCertMode, RejectWith, Trust};

/// Bytes of secret in one shared key (a line of the key file, base64-decoded).
pub(crate) const KEY_BYTES: usize = 32;
/// Keys a file may hold: the current one and the previous ones still accepted.
pub(crate) const MAX_KEYS: usize = 16;
/// Keys `certgate pki ticket-keys --rotate` keeps: the new one and two before it.
pub(crate) const ROTATE_KEEP: usize = 3;
/// The lifetime clients are told a ticket has (6 hours, as rustls' own ticketer); the real
/// bound is the operator's rotation: a ticket stops resuming when its key leaves the file.
pub(crate) const TICKET_LIFETIME_SECS: u32 = 6 * 60 * 60;

/// The first line of files written by `certgate pki ticket-keys`.
const FILE_HEADER: &str = "# certgate session ticket keys: one base64 key (32 bytes) a line; the first encrypts, all decrypt\n";
/// HKDF salt: a version label, so a future ticket format never accepts these keys.
const HKDF_SALT: &[u8] = b"certgate session ticket keys v1";
const NAME_BYTES: usize = 16;
const TAG_BYTES: usize = 16;

/// The keys of a key file, in file order (the first encrypts).
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKeys {
    keys: Vec<[u8; KEY_BYTES]>,
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TicketKeyError {
    #[error("holds no key (expected one base64 key of {KEY_BYTES} bytes a line)")]
    NoKeys,
    #[error("line {line} is not base64")]
    Base64 {
        line: usize,
        source: base64::DecodeError,
    },
    #[error(
        "line {line} holds {len} bytes, a key is {KEY_BYTES} (make one with `certgate pki ticket-keys`)"
    )]
    Length { line: usize, len: usize },
    #[error("holds more than {MAX_KEYS} keys; drop the oldest (last) ones")]
    TooMany,
    #[error("cannot derive the per-app ticket key")]
    Derive,
    #[error("cannot read random bytes for a new key")]
    Random,
}

impl TicketKeys {
    /// Parses a key file: one base64 key a line; blank lines and lines starting with `#` are
    /// ignored.
    pub fn parse(text: &[u8]) -> Result<Self, TicketKeyError> {
        let text = String::from_utf8_lossy(text);
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = index + 1;
            let bytes = BASE64
                .decode(line)
                .map_err(|source| TicketKeyError::Base64 {
                    line: number,
                    source,
                })?;
            let key: [u8; KEY_BYTES] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| TicketKeyError::Length {
                        line: number,
                        len: bytes.len(),
                    })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(TicketKeyError::NoKeys);
        }
        if keys.len() > MAX_KEYS {
            return Err(TicketKeyError::TooMany);
        }
        Ok(Self { keys })
    }

    /// How many keys the file holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a parsed file holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ticketer of one app: keys derived from each shared key, the app's name and its
    /// trust fingerprint.
    pub fn ticketer(
        &self,
        app: &str,
        fingerprint: &[u8; 32],
    ) -> Result<Arc<SharedTicketer>, TicketKeyError> {
        let keys = self
            .keys
            .iter()
            .map(|secret| DerivedKey::new(secret, app, fingerprint))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(SharedTicketer { keys }))
    }
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys themselves.
        f.debug_struct("TicketKeys")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// The text of a new key file holding one fresh key.
pub fn new_key_file() -> Result<String, TicketKeyError> {
    Ok(format!("{FILE_HEADER}{}\n", fresh_key()?))
}

/// `existing` with a fresh key prepended (it encrypts from now on) and only the newest
/// `ROTATE_KEEP` keys kept; comments are dropped.
pub(crate) fn rotate_key_file(existing: &[u8]) -> Result<String, TicketKeyError> {
    let current = TicketKeys::parse(existing)?;
    let mut text = format!("{FILE_HEADER}{}\n", fresh_key()?);
    for key in current.keys.iter().take(ROTATE_KEEP - 1) {
        text.push_str(&BASE64.encode(key));
        text.push('\n');
    }
    Ok(text)
}

/// What an app's handshake decides, all of which a session must not outlive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandshakePolicy<'a> {
    /// The client certificate mode.
    pub mode: ClientCertMode,
    /// The trust sources, with the CRLs webpki checks.
    pub trust: &'a Trust,
    /// The allow-lists.
    pub allow: &'a AllowList,
    /// How a refused certificate is answered.
    pub reject_with: RejectWith,
    /// The paths a `require` app serves without a certificate.
    pub exclusion_paths: &'a [String],
}

/// A digest of the app's effective handshake policy: any change gives new per-app ticket
/// keys, so sessions from before it get a full handshake. (Revocation beyond `crlFiles` is
/// checked on every connection, resumed or not, and a resumed session is judged again under
/// the policy in force: this keeps the two from ever meeting.)
pub(crate) fn trust_fingerprint(policy: &HandshakePolicy<'_>) -> [u8; 32] {
    let HandshakePolicy {
        mode,
        trust,
        allow,
        reject_with,
        exclusion_paths,
    } = *policy;
    let mut hash = Sha256::new();
    let mut field = |label: &str, value: &[u8]| {
        hash.update(label.as_bytes());
        hash.update((value.len() as u64).to_be_bytes());
        hash.update(value);
    };
    field("mode", mode.as_str().as_bytes());
    for root in &trust.roots {
        field("root", root);
    }
    for crl in &trust.crls {
        field("crl", crl);
    }
    for pin in &trust.pins {
        field("pin", pin);
    }
    field("untrusted", &[u8::from(trust.allow_untrusted)]);
    for name in &trust.checked_issuers {
        field("checked_issuer", name);
    }
    for subject in &allow.subjects {
        field("subject", subject.as_bytes());
    }
    for dns in &allow.dns_sans {
        field("dns", dns.as_bytes());
    }
    for uri in &allow.uri_sans {
        field("uri", uri.as_bytes());
    }
    field("reject_with", reject_with.as_str().as_bytes());
    for path in exclusion_paths {
        field("exclusion_path", path.as_bytes());
    }
    hash.finalize().into()
}

/// A rustls ticketer over one app's derived keys: tickets are `name ‖ nonce ‖ AES-256-GCM
/// ciphertext ‖ tag`, the key name (also derived) picks the key to decrypt with.
pub struct SharedTicketer {
    keys: Vec<DerivedKey>,
}

impl fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTicketer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.name),
                &mut sealed,
            )
            .ok()?;
        let mut ticket = Vec::with_capacity(NAME_BYTES + NONCE_LEN + sealed.len());
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        // Attacker-controlled input: every slice is checked, nothing panics.
        if cipher.len() < NAME_BYTES + NONCE_LEN + TAG_BYTES {
            return None;
        }
        let (name, rest) = cipher.split_at(NAME_BYTES);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let key = self.keys.iter().find(|key| key.name == name)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let mut buffer = sealed.to_vec();
        let plain_len = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.name),
                &mut buffer,
            )
            .ok()?
            .len();
        buffer.truncate(plain_len);
        Some(buffer)
    }
}

/// One shared key as one app uses it.
struct DerivedKey {
    name: [u8; NAME_BYTES],
    aead: LessSafeKey,
}

impl DerivedKey {
    fn new(
        secret: &[u8; KEY_BYTES],
        app: &str,
        fingerprint: &[u8; 32],
    ) -> Result<Self, TicketKeyError> {
        let app_len = (app.len() as u64).to_be_bytes();
        let info: [&[u8]; 4] = [
            b"certgate ticket key",
            &app_len,
            app.as_bytes(),
            fingerprint,
        ];
        let mut okm = [0u8; KEY_BYTES + NAME_BYTES];
        hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT)
            .extract(secret)
            .expand(&info, OkmLength(okm.len()))
            .and_then(|okm_ref| okm_ref.fill(&mut okm))
            .map_err(|_| TicketKeyError::Derive)?;
        let (key, name) = okm.split_at(KEY_BYTES);
        let aead = UnboundKey::new(&AES_256_GCM, key).map_err(|_| TicketKeyError::Derive)?;
        let mut key_name = [0u8; NAME_BYTES];
        key_name.copy_from_slice(name);
        Ok(Self {
            name: key_name,
            aead: LessSafeKey::new(aead),
        })
    }
}

struct OkmLength(usize);

impl hkdf::KeyType for OkmLength {
    fn len(&self) -> usize {
        self.0
    }
}

fn fresh_key() -> Result<String, TicketKeyError> {
    let mut key = [0u8; KEY_BYTES];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| TicketKeyError::Random)?;
    Ok(BASE64.encode(key))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn keys(lines: &[[u8; KEY_BYTES]]) -> TicketKeys {
        let text: String = lines
            .iter()
            .map(|key| format!("{}\n", BASE64.encode(key)))
            .collect();
        TicketKeys::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_ticket_decrypts_under_the_same_app_and_trust() {
        let ticketer = keys(&[[1; 32]]).ticketer("payments", &[9; 32]).unwrap();
        let ticket = ticketer.encrypt(b"session state").unwrap();
        assert_eq!(ticketer.decrypt(&ticket).unwrap(), b"session state");
        assert_ne!(&ticket[NAME_BYTES + NONCE_LEN..], b"session state");
    }

    #[test]
    fn another_app_or_trust_cannot_decrypt_a_ticket() {
        let shared = keys(&[[1; 32]]);
        let ticket = shared
            .ticketer("payments", &[9; 32])
            .unwrap()
            .encrypt(b"state")
            .unwrap();
        let other_app = shared.ticketer("orders", &[9; 32]).unwrap();
        let other_trust = shared.ticketer("payments", &[8; 32]).unwrap();
        assert_eq!(other_app.decrypt(&ticket), None);
        assert_eq!(other_trust.decrypt(&ticket), None);
    }

    #[test]
    fn the_first_key_encrypts_and_every_key_decrypts() {
        let old = keys(&[[1; 32]]).ticketer("a", &[0; 32]).unwrap();
        let rotated = keys(&[[2; 32], [1; 32]]).ticketer("a", &[0; 32]).unwrap();
        let dropped = keys(&[[2; 32]]).ticketer("a", &[0; 32]).unwrap();
        let old_ticket = old.encrypt(b"old").unwrap();
        let new_ticket = rotated.encrypt(b"new").unwrap();
        assert_eq!(rotated.decrypt(&old_ticket).unwrap(), b"old");
        assert_eq!(dropped.decrypt(&new_ticket).unwrap(), b"new");
        assert_eq!(dropped.decrypt(&old_ticket), None);
        assert_eq!(old.decrypt(&new_ticket), None);
    }

    #[test]
    fn tampered_short_and_empty_tickets_are_refused_without_panic() {
        let ticketer = keys(&[[1; 32]]).ticketer("a", &[0; 32]).unwrap();
        let mut ticket = ticketer.encrypt(b"state").unwrap();
        let last = ticket.len() - 1;
        ticket[last] ^= 1;
        assert_eq!(ticketer.decrypt(&ticket), None);
        for len in 0..NAME_BYTES + NONCE_LEN + TAG_BYTES + 2 {
            assert_eq!(ticketer.decrypt(&vec![0; len]), None);
        }
    }

    #[test]
    fn key_files_skip_comments_and_refuse_bad_lines() {
        let good = format!("# comment\n\n{}\n", BASE64.encode([7; 32]));
        assert_eq!(TicketKeys::parse(good.as_bytes()).unwrap().len(), 1);
        assert!(matches!(
            TicketKeys::parse(b"# only a comment\n"),
            Err(TicketKeyError::NoKeys)
        ));
        assert!(matches!(
            TicketKeys::parse(b"not base64!\n"),
            Err(TicketKeyError::Base64 { line: 1, .. })
        ));
        let short = format!("\n{}\n", BASE64.encode([7; 16]));
        assert!(matches!(
            TicketKeys::parse(short.as_bytes()),
            Err(TicketKeyError::Length { line: 2, len: 16 })
        ));
        let many: String = (0..=MAX_KEYS)
            .map(|_| format!("{}\n", BASE64.encode([7; 32])))
            .collect();
        assert!(matches!(
            TicketKeys::parse(many.as_bytes()),
            Err(TicketKeyError::TooMany)
        ));
    }

    #[test]
    fn rotation_prepends_a_fresh_key_and_keeps_three() {
        let mut text = new_key_file().unwrap();
        let first = TicketKeys::parse(text.as_bytes()).unwrap();
        for _ in 0..4 {
            text = rotate_key_file(text.as_bytes()).unwrap();
        }
        let rotated = TicketKeys::parse(text.as_bytes()).unwrap();
        assert_eq!(rotated.len(), ROTATE_KEEP);
        assert!(!rotated.keys.contains(&first.keys[0]));
        let once = TicketKeys::parse(rotate_key_file(text.as_bytes()).unwrap().as_bytes()).unwrap();
        assert_eq!(once.keys[1], rotated.keys[0]);
    }

    #[test]
    fn trust_fingerprint_changes_with_every_part_of_the_handshake_policy() {
        let trust = Trust::default();
        let allow = AllowList::default();
        let base = HandshakePolicy {
            mode: ClientCertMode::Require,
            trust: &trust,
            allow: &allow,
            reject_with: RejectWith::Tls,
            exclusion_paths: &[],
        };
        let require = trust_fingerprint(&base);
        assert_eq!(require, trust_fingerprint(&base));
        let pinned = Trust {
            pins: vec![[1; 32]],
            ..Trust::default()
        };
        let untrusted = Trust {
            allow_untrusted: true,
            ..Trust::default()
        };
        let subjects = AllowList {
            subjects: vec!["CN=ops".to_owned()],
            ..AllowList::default()
        };
        let exempt = ["/health".to_owned()];
        let changed = [
            HandshakePolicy {
                mode: ClientCertMode::Ignore,
                ..base
            },
            HandshakePolicy {
                trust: &pinned,
                ..base
            },
            HandshakePolicy {
                trust: &untrusted,
                ..base
            },
            HandshakePolicy {
                allow: &subjects,
                ..base
            },
            HandshakePolicy {
                reject_with: RejectWith::Http,
                ..base
            },
            HandshakePolicy {
                exclusion_paths: &exempt,
                ..base
            },
        ];
        for policy in changed {
            assert_ne!(require, trust_fingerprint(&policy), "{policy:?}");
        }
    }
}
