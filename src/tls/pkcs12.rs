//! Loading a server certificate chain and private key from a PKCS#12 (`.p12`/`.pfx`) archive.
//!
//! Decoding and decryption are done by `p12-keystore`: PBES2 (PBKDF2 or scrypt, AES-CBC),
//! which OpenSSL 3 writes by default, and the legacy PBES1 schemes
//! pbeWithSHAAnd3-KeyTripleDES-CBC and pbeWithSHAAnd40BitRC2-CBC (`openssl pkcs12 -legacy`),
//! with SHA-1 or SHA-2 MACs. When `p12-keystore` rejects an algorithm, this module walks the
//! archive's DER itself to name the algorithm in the error.
//!
//! The private key must be one rustls can sign with (RSA, ECDSA P-256/P-384/P-521, Ed25519).
//! The leaf is the certificate sharing the key's localKeyId attribute or, failing that, its
//! SubjectPublicKeyInfo; the key/leaf pairing is then checked by rustls.

use p12_keystore::Pkcs12Archive;
use p12_keystore::error::Error as P12Error;
use rustls::crypto::aws_lc_rs;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;

/// Why a PKCS#12 archive could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    /// The integrity MAC did not verify, which almost always means a wrong password.
    #[error("wrong password (MAC check failed)")]
    WrongPassword,
    /// Decrypting the contents failed; for archives without a MAC this is how a wrong
    /// password shows up.
    #[error("cannot decrypt the archive (wrong password or corrupt data)")]
    DecryptionFailed {
        /// The underlying error.
        #[source]
        source: P12Error,
    },
    /// The archive uses an algorithm that cannot be processed.
    #[error("unsupported {purpose} {algorithm}")]
    UnsupportedAlgorithm {
        /// What the algorithm is used for, such as "cipher" or "MAC digest".
        purpose: &'static str,
        /// The algorithm's name and OID, such as "camellia-256-cbc (1.2.392.200011.61.1.1.1.4)",
        /// or just the dotted OID when the name is not known.
        algorithm: String,
    },
    /// The archive holds no private key.
    #[error("the archive holds no private key")]
    NoPrivateKey,
    /// The archive holds more than one private key, so which one to serve is ambiguous.
    #[error("the archive holds {count} private keys; expected exactly one")]
    MultiplePrivateKeys {
        /// Number of private keys found.
        count: usize,
    },
    /// The archive holds no certificate.
    #[error("the archive holds no certificate")]
    NoCertificate,
    /// No certificate in the archive has the private key's public key.
    #[error("no certificate in the archive matches the private key ({certificates} examined)")]
    NoMatchingCertificate {
        /// Number of (distinct) certificates examined.
        certificates: usize,
    },
    /// The certificate linked to the private key (by localKeyId) holds a different public key.
    #[error("the private key does not match its certificate {subject}")]
    KeyCertificateMismatch {
        /// Subject of the certificate linked to the key.
        subject: String,
    },
    /// A certificate in the archive is not valid X.509.
    #[error("certificate {index} in the archive cannot be parsed")]
    BadCertificate {
        /// Zero-based position among the archive's distinct certificates.
        index: usize,
        /// The underlying error.
        #[source]
        source: x509_parser::nom::Err<X509Error>,
    },
    /// rustls refused the key or the leaf certificate for a reason other than a mismatch.
    #[error("rustls rejected the key or certificate")]
    Rejected {
        /// The underlying error.
        #[source]
        source: rustls::Error,
    },
    /// The archive is not well-formed PKCS#12.
    #[error("malformed pkcs#12 archive")]
    Malformed {
        /// The underlying error.
        #[source]
        source: P12Error,
    },
}

/// The certificate chain (leaf first) and private key held in a PKCS#12 archive.
///
/// `der` is the binary archive; `password` protects both its MAC and its encrypted
/// contents. The chain is the leaf followed by its issuers (as far as the archive holds
/// them) and then any other certificates, in archive order, without duplicates.
pub fn load(
    der: &[u8],
    password: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Pkcs12Error> {
    let archive = Pkcs12Archive::from_pkcs12(der, password).map_err(|e| classify(der, e))?;

    let mut keys = archive.keys.into_iter();
    let key_bag = keys.next().ok_or(Pkcs12Error::NoPrivateKey)?;
    let extra_keys = keys.count();
    if extra_keys > 0 {
        return Err(Pkcs12Error::MultiplePrivateKeys {
            count: extra_keys + 1,
        });
    }

    // Distinct certificates, in archive order, each with its localKeyId.
    let mut bags: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
    for bag in &archive.certs {
        let der = bag.cert.as_der();
        let key_id = bag.local_key_id.as_deref();
        match bags.iter_mut().find(|(seen, _)| *seen == der) {
            Some((_, seen_id)) => *seen_id = seen_id.or(key_id),
            None => bags.push((der, key_id)),
        }
    }
    if bags.is_empty() {
        return Err(Pkcs12Error::NoCertificate);
    }
    let certs = bags
        .iter()
        .enumerate()
        .map(|(index, (der, _))| {
            x509_parser::parse_x509_certificate(der)
                .map(|(_, cert)| cert)
                .map_err(|source| Pkcs12Error::BadCertificate { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_bag.key.as_der().to_vec()));
    let provider = aws_lc_rs::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| Pkcs12Error::UnsupportedAlgorithm {
            purpose: "private key type",
            algorithm: describe(&key_bag.key.oid().to_string()),
        })?;

    let by_key_id = key_bag.local_key_id.as_ref().and_then(|id| {
        bags.iter()
            .position(|(_, cert_id)| *cert_id == Some(id.as_ref()))
    });
    let leaf = match by_key_id {
        Some(index) => index,
        None => signing_key
            .public_key()
            .and_then(|spki| {
                certs
                    .iter()
                    .position(|cert| cert.public_key().raw == spki.as_ref())
            })
            .ok_or(Pkcs12Error::NoMatchingCertificate {
                certificates: certs.len(),
            })?,
    };

    let chain: Vec<CertificateDer<'static>> = chain_order(&certs, leaf)
        .into_iter()
        .filter_map(|index| bags.get(index))
        .map(|(der, _)| CertificateDer::from(der.to_vec()))
        .collect();

    match CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider) {
        Ok(_) => Ok((chain, key)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(Pkcs12Error::KeyCertificateMismatch {
            subject: certs
                .get(leaf)
                .map(|cert| cert.subject().to_string())
                .unwrap_or_default(),
        }),
        Err(source) => Err(Pkcs12Error::Rejected { source }),
    }
}

/// Indices of `certs` starting at `leaf`, then each issuer found by subject name, then the rest.
fn chain_order(certs: &[X509Certificate<'_>], leaf: usize) -> Vec<usize> {
    let mut order = vec![leaf];
    let mut current = leaf;
    while let Some(cert) = certs.get(current) {
        if cert.issuer().as_raw() == cert.subject().as_raw() {
            break;
        }
        let issuer = certs.iter().enumerate().find_map(|(index, candidate)| {
            (!order.contains(&index) && candidate.subject().as_raw() == cert.issuer().as_raw())
                .then_some(index)
        });
        match issuer {
            Some(index) => {
                order.push(index);
                current = index;
            }
            None => break,
        }
    }
    let rest: Vec<usize> = (0..certs.len())
        .filter(|index| !order.contains(index))
        .collect();
    order.extend(rest);
    order
}

/// Maps a `p12-keystore` failure to a [`Pkcs12Error`], naming unsupported algorithms.
fn classify(der: &[u8], err: P12Error) -> Pkcs12Error {
    if matches!(err, P12Error::MacError(_)) {
        return Pkcs12Error::WrongPassword;
    }
    let Some(scan) = Scan::of(der) else {
        return Pkcs12Error::Malformed { source: err };
    };
    let may_be_unsupported = matches!(
        err,
        P12Error::UnsupportedEncryptionScheme
            | P12Error::UnsupportedMacAlgorithm
            | P12Error::DerError(_)
            | P12Error::Pkcs5Error(_)
    );
    if may_be_unsupported {
        if let Some((purpose, oid)) = scan.first_unsupported() {
            return Pkcs12Error::UnsupportedAlgorithm {
                purpose,
                algorithm: describe(oid),
            };
        }
    }
    let decryption = matches!(err, P12Error::UnpadError | P12Error::Pkcs5Error(_));
    // Without a MAC the password is only checked by decrypting, and a wrong one yields
    // bad padding or garbage that fails to decode.
    let garbage = !scan.has_mac
        && matches!(
            err,
            P12Error::DerError(_)
                | P12Error::X509Error(_)
                | P12Error::InvalidPrivateKey
                | P12Error::InvalidData
        );
    if decryption || garbage {
        Pkcs12Error::DecryptionFailed { source: err }
    } else {
        Pkcs12Error::Malformed { source: err }
    }
}

// ---------------------------------------------------------------------------------------
// A minimal DER walk over the PKCS#12 structure, used only to name algorithms in errors.
// ---------------------------------------------------------------------------------------

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_CONTEXT_0: u8 = 0xa0;

const OID_DATA: &str = "1.2.840.113549.1.7.1";
const OID_ENCRYPTED_DATA: &str = "1.2.840.113549.1.7.6";
const OID_SHROUDED_KEY_BAG: &str = "1.2.840.113549.1.12.10.1.2";
const OID_PBES2: &str = "1.2.840.113549.1.5.13";
const OID_PBKDF2: &str = "1.2.840.113549.1.5.12";

const PURPOSE_MAC: &str = "MAC digest";
const PURPOSE_SCHEME: &str = "encryption scheme";
const PURPOSE_KDF: &str = "key derivation function";
const PURPOSE_PRF: &str = "PBKDF2 pseudo-random function";
const PURPOSE_CIPHER: &str = "cipher";

/// Algorithms `p12-keystore` (with its `pbes1` feature) and `pkcs5` can process, by purpose.
const SUPPORTED: &[(&str, &[&str])] = &[
    (
        PURPOSE_MAC,
        &[
            "1.3.14.3.2.26",
            "2.16.840.1.101.3.4.2.4",
            "2.16.840.1.101.3.4.2.1",
            "2.16.840.1.101.3.4.2.2",
            "2.16.840.1.101.3.4.2.3",
            "2.16.840.1.101.3.4.2.5",
            "2.16.840.1.101.3.4.2.6",
        ],
    ),
    (
        PURPOSE_SCHEME,
        &[
            OID_PBES2,
            "1.2.840.113549.1.12.1.3",
            "1.2.840.113549.1.12.1.6",
        ],
    ),
    (PURPOSE_KDF, &[OID_PBKDF2, "1.3.6.1.4.1.11591.4.11"]),
    (
        PURPOSE_PRF,
        &[
            "1.2.840.113549.2.7",
            "1.2.840.113549.2.8",
            "1.2.840.113549.2.9",
            "1.2.840.113549.2.10",
            "1.2.840.113549.2.11",
        ],
    ),
    (
        PURPOSE_CIPHER,
        &[
            "2.16.840.1.101.3.4.1.2",
            "2.16.840.1.101.3.4.1.22",
            "2.16.840.1.101.3.4.1.42",
            "2.16.840.1.101.3.4.1.6",
            "2.16.840.1.101.3.4.1.46",
        ],
    ),
];

/// Names of algorithms that may appear in PKCS#12 archives, for error messages.
const NAMES: &[(&str, &str)] = &[
    ("1.3.14.3.2.26", "sha1"),
    ("2.16.840.1.101.3.4.2.4", "sha224"),
    ("2.16.840.1.101.3.4.2.1", "sha256"),
    ("2.16.840.1.101.3.4.2.2", "sha384"),
    ("2.16.840.1.101.3.4.2.3", "sha512"),
    ("2.16.840.1.101.3.4.2.5", "sha512-224"),
    ("2.16.840.1.101.3.4.2.6", "sha512-256"),
    ("1.2.840.113549.2.2", "md2"),
    ("1.2.840.113549.2.5", "md5"),
    ("1.2.840.113549.1.5.14", "PBMAC1"),
    ("1.2.643.7.1.1.2.2", "streebog256"),
    ("1.2.643.7.1.1.2.3", "streebog512"),
    ("1.2.156.10197.1.401", "sm3"),
    (OID_PBES2, "PBES2"),
    ("1.2.840.113549.1.12.1.1", "pbeWithSHAAnd128BitRC4"),
    ("1.2.840.113549.1.12.1.2", "pbeWithSHAAnd40BitRC4"),
    ("1.2.840.113549.1.12.1.3", "pbeWithSHAAnd3-KeyTripleDES-CBC"),
    ("1.2.840.113549.1.12.1.4", "pbeWithSHAAnd2-KeyTripleDES-CBC"),
    ("1.2.840.113549.1.12.1.5", "pbeWithSHAAnd128BitRC2-CBC"),
    ("1.2.840.113549.1.12.1.6", "pbeWithSHAAnd40BitRC2-CBC"),
    ("1.2.840.113549.1.5.3", "pbeWithMD5AndDES-CBC"),
    ("1.2.840.113549.1.5.6", "pbeWithMD5AndRC2-CBC"),
    ("1.2.840.113549.1.5.10", "pbeWithSHA1AndDES-CBC"),
    ("1.2.840.113549.1.5.11", "pbeWithSHA1AndRC2-CBC"),
    (OID_PBKDF2, "PBKDF2"),
    ("1.3.6.1.4.1.11591.4.11", "scrypt"),
    ("1.2.840.113549.2.7", "hmacWithSHA1"),
    ("1.2.840.113549.2.8", "hmacWithSHA224"),
    ("1.2.840.113549.2.9", "hmacWithSHA256"),
    ("1.2.840.113549.2.10", "hmacWithSHA384"),
    ("1.2.840.113549.2.11", "hmacWithSHA512"),
    ("1.2.840.113549.2.12", "hmacWithSHA512-224"),
    ("1.2.840.113549.2.13", "hmacWithSHA512-256"),
    ("2.16.840.1.101.3.4.1.2", "aes-128-cbc"),
    ("2.16.840.1.101.3.4.1.22", "aes-192-cbc"),
    ("2.16.840.1.101.3.4.1.42", "aes-256-cbc"),
    ("2.16.840.1.101.3.4.1.6", "aes-128-gcm"),
    ("2.16.840.1.101.3.4.1.26", "aes-192-gcm"),
    ("2.16.840.1.101.3.4.1.46", "aes-256-gcm"),
    ("1.3.14.3.2.7", "des-cbc"),
    ("1.2.840.113549.3.7", "des-ede3-cbc"),
    ("1.2.840.113549.3.2", "rc2-cbc"),
    ("1.2.392.200011.61.1.1.1.2", "camellia-128-cbc"),
    ("1.2.392.200011.61.1.1.1.3", "camellia-192-cbc"),
    ("1.2.392.200011.61.1.1.1.4", "camellia-256-cbc"),
    ("1.2.156.10197.1.104.2", "sm4-cbc"),
    ("1.2.840.113549.1.1.1", "rsaEncryption"),
    ("1.2.840.113549.1.1.10", "RSASSA-PSS"),
    ("1.2.840.10045.2.1", "ecPublicKey"),
    ("1.2.840.10040.4.1", "dsa"),
    ("1.2.840.113549.1.3.1", "dhKeyAgreement"),
    ("1.3.101.110", "X25519"),
    ("1.3.101.111", "X448"),
    ("1.3.101.112", "Ed25519"),
    ("1.3.101.113", "Ed448"),
    ("2.16.840.1.101.3.4.3.17", "ML-DSA-44"),
    ("2.16.840.1.101.3.4.3.18", "ML-DSA-65"),
    ("2.16.840.1.101.3.4.3.19", "ML-DSA-87"),
];

/// `"name (oid)"` when the OID is known, else the OID alone.
fn describe(oid: &str) -> String {
    match NAMES.iter().find(|(known, _)| *known == oid) {
        Some((_, name)) => format!("{name} ({oid})"),
        None => oid.to_owned(),
    }
}

/// What the outer (unencrypted) structure of an archive says about its algorithms.
#[derive(Debug, Default)]
struct Scan {
    /// Whether the archive carries a MAC.
    has_mac: bool,
    /// Algorithm OIDs with their purpose, in document order.
    algorithms: Vec<(&'static str, String)>,
}

impl Scan {
    /// Walks `der`; `None` if it does not even look like a PFX.
    fn of(der: &[u8]) -> Option<Self> {
        let (pfx, _) = Tlv::read(der)?;
        let mut fields = pfx.with_tag(TAG_SEQUENCE)?.children();
        fields.next()?.with_tag(TAG_INTEGER)?;
        let auth_safe = fields.next()?.with_tag(TAG_SEQUENCE)?;
        let mut scan = Self::default();
        if let Some(mac_data) = fields.next().and_then(|t| t.with_tag(TAG_SEQUENCE)) {
            scan.has_mac = true;
            let oid = mac_data
                .child(TAG_SEQUENCE)
                .and_then(|digest_info| digest_info.child(TAG_SEQUENCE))
                .and_then(|alg| alg.child(TAG_OID))
                .and_then(|oid| oid_to_string(oid.value));
            if let Some(oid) = oid {
                scan.algorithms.push((PURPOSE_MAC, oid));
            }
        }
        if let Some(safes) = data_content(auth_safe) {
            for content_info in safes.children() {
                scan.content_info(content_info);
            }
        }
        Some(scan)
    }

    /// Records the algorithms of one ContentInfo of the AuthenticatedSafe.
    fn content_info(&mut self, content_info: Tlv<'_>) {
        let Some(content_type) = content_info.oid_child() else {
            return;
        };
        if content_type == OID_DATA {
            let Some(safe_contents) = data_content(content_info) else {
                return;
            };
            for bag in safe_contents.children() {
                if bag.oid_child().as_deref() != Some(OID_SHROUDED_KEY_BAG) {
                    continue;
                }
                let alg = bag
                    .child(TAG_CONTEXT_0)
                    .and_then(|value| value.child(TAG_SEQUENCE))
                    .and_then(|info| info.child(TAG_SEQUENCE));
                if let Some(alg) = alg {
                    self.encryption(alg);
                }
            }
        } else if content_type == OID_ENCRYPTED_DATA {
            // [0] EncryptedData { version, EncryptedContentInfo { type, algorithm, .. } }
            let alg = content_info
                .child(TAG_CONTEXT_0)
                .and_then(|c| c.child(TAG_SEQUENCE))
                .and_then(|encrypted_data| encrypted_data.child(TAG_SEQUENCE))
                .and_then(|info| info.child(TAG_SEQUENCE));
            if let Some(alg) = alg {
                self.encryption(alg);
            }
        }
    }

    /// Records an encryption AlgorithmIdentifier and, for PBES2, its KDF, PRF and cipher.
    fn encryption(&mut self, alg: Tlv<'_>) {
        let Some(scheme) = alg.oid_child() else {
            return;
        };
        let is_pbes2 = scheme == OID_PBES2;
        self.algorithms.push((PURPOSE_SCHEME, scheme));
        if !is_pbes2 {
            return;
        }
        // PBES2-params { keyDerivationFunc AlgorithmIdentifier, encryptionScheme AlgorithmIdentifier }
        let Some(params) = alg.children().nth(1) else {
            return;
        };
        let mut parts = params.children();
        if let Some(kdf) = parts.next() {
            if let Some(kdf_oid) = kdf.oid_child() {
                let is_pbkdf2 = kdf_oid == OID_PBKDF2;
                self.algorithms.push((PURPOSE_KDF, kdf_oid));
                // PBKDF2-params { salt, iterationCount, keyLength OPTIONAL, prf OPTIONAL };
                // salt may itself be a SEQUENCE (otherSource), so skip it.
                let prf = kdf
                    .children()
                    .nth(1)
                    .filter(|_| is_pbkdf2)
                    .and_then(|p| p.children().skip(1).find(|t| t.tag == TAG_SEQUENCE))
                    .and_then(|prf| prf.oid_child());
                if let Some(prf) = prf {
                    self.algorithms.push((PURPOSE_PRF, prf));
                }
            }
        }
        if let Some(cipher) = parts.next().and_then(|c| c.oid_child()) {
            self.algorithms.push((PURPOSE_CIPHER, cipher));
        }
    }

    /// The first algorithm not in [`SUPPORTED`] for its purpose.
    fn first_unsupported(&self) -> Option<(&'static str, &str)> {
        self.algorithms
            .iter()
            .find(|(purpose, oid)| {
                !SUPPORTED
                    .iter()
                    .any(|(p, oids)| p == purpose && oids.contains(&oid.as_str()))
            })
            .map(|(purpose, oid)| (*purpose, oid.as_str()))
    }
}

/// The OCTET STRING inside `[0]` of a ContentInfo of type data, as a DER element.
fn data_content(content_info: Tlv<'_>) -> Option<Tlv<'_>> {
    if content_info.oid_child().as_deref() != Some(OID_DATA) {
        return None;
    }
    let octets = content_info.child(TAG_CONTEXT_0)?.child(TAG_OCTET_STRING)?;
    Tlv::read(octets.value).map(|(inner, _)| inner)
}

/// One DER element (definite length, low tag number).
#[derive(Debug, Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// Reads one element from the front of `input`, returning it and the rest.
    fn read(input: &'a [u8]) -> Option<(Self, &'a [u8])> {
        let (&tag, rest) = input.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return None;
            }
            let (bytes, after) = rest.split_at_checked(count)?;
            rest = after;
            bytes.iter().try_fold(0usize, |acc, &b| {
                acc.checked_mul(256)?.checked_add(usize::from(b))
            })?
        };
        let (value, rest) = rest.split_at_checked(len)?;
        Some((Self { tag, value }, rest))
    }

    fn with_tag(self, tag: u8) -> Option<Self> {
        (self.tag == tag).then_some(self)
    }

    /// The elements inside this one, stopping at the first that cannot be read.
    fn children(self) -> impl Iterator<Item = Tlv<'a>> {
        let mut rest = self.value;
        std::iter::from_fn(move || {
            let (tlv, after) = Self::read(rest)?;
            rest = after;
            Some(tlv)
        })
    }

    /// The first child with `tag`.
    fn child(self, tag: u8) -> Option<Tlv<'a>> {
        self.children().find(|child| child.tag == tag)
    }

    /// The first child as a dotted OID, if it is an OID.
    fn oid_child(self) -> Option<String> {
        oid_to_string(self.child(TAG_OID)?.value)
    }
}

/// Decodes the contents of a DER OBJECT IDENTIFIER to dotted form.
fn oid_to_string(bytes: &[u8]) -> Option<String> {
    if bytes.last().is_none_or(|last| last & 0x80 != 0) {
        return None;
    }
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for &b in bytes {
        value = value.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(value);
            value = 0;
        }
    }
    let (&first, rest) = arcs.split_first()?;
    let (a, b) = match first {
        0..40 => (0, first),
        40..80 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut out = format!("{a}.{b}");
    for arc in rest {
        out.push('.');
        out.push_str(&arc.to_string());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_decode_to_dotted_form() {
        // 1.2.840.113549.1.5.13 (PBES2) and 2.16.840.1.101.3.4.1.42 (aes-256-cbc).
        assert_eq!(
            oid_to_string(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d]).as_deref(),
            Some(OID_PBES2)
        );
        assert_eq!(
            oid_to_string(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a]).as_deref(),
            Some("2.16.840.1.101.3.4.1.42")
        );
        assert_eq!(oid_to_string(&[]), None);
        assert_eq!(oid_to_string(&[0x86]), None);
    }

    #[test]
    fn garbage_is_not_a_pfx() {
        assert!(Scan::of(b"").is_none());
        assert!(Scan::of(b"-----BEGIN CERTIFICATE-----").is_none());
        assert!(Scan::of(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
    }
}
