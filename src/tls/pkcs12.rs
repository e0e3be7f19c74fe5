//! Loading a server certificate chain and private key from a PKCS#12 (`.p12`/`.pfx`) archive.
//!
//! Decoding and decryption are done by `p12-keystore`: PBES2 (PBKDF2 or scrypt, AES-CBC),
//! which OpenSSL 3 writes by default, and the legacy PBES1 schemes
//! pbeWithSHAAnd3-KeyTripleDES-CBC and pbeWithSHAAnd40BitRC2-CBC (`openssl pkcs12 -legacy`),
//! with SHA-1 or SHA-2 MACs. When `p12-keystore` rejects an algorithm, the archive's outer
//! structure is decoded again with the `pkcs12` types to name the algorithm in the error
//! (by const-oid's database, else by its dotted OID).
//!
//! The private key must be one rustls can sign with (RSA, ECDSA P-256/P-384/P-521, Ed25519).
//! The leaf is the certificate sharing the key's localKeyId attribute or, failing that, its
//! SubjectPublicKeyInfo; the key/leaf pairing is then checked by rustls.

use const_oid::ObjectIdentifier;
use der::asn1::{ContextSpecific, OctetString};
use der::{Any, Decode as _, Encode as _};
use p12_keystore::Pkcs12Archive;
use p12_keystore::error::Error as P12Error;
use pkcs12::cms::content_info::ContentInfo;
use pkcs12::cms::encrypted_data::EncryptedData;
use pkcs12::pbe_params::{EncryptedPrivateKeyInfo, Pbes2Params, Pbkdf2Params};
use pkcs12::safe_bag::SafeContents;
use pkcs12::{AuthenticatedSafe, PKCS_12_PKCS8_KEY_BAG_OID, Pfx};
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
        /// The algorithm's name and OID, such as "id-md5 (1.2.840.113549.2.5)", or just the
        /// dotted OID, such as "1.2.392.200011.61.1.1.1.4", when const-oid does not name it.
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

    let bags = distinct_certificates(&archive.certs)?;
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
            algorithm: describe(key_bag.key.oid()),
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

/// A certificate of the archive (DER) and its localKeyId.
type CertificateBag<'a> = (&'a [u8], Option<&'a [u8]>);

/// The archive's distinct certificates, in archive order, each with its localKeyId.
fn distinct_certificates(
    certs: &[p12_keystore::CertificateBag],
) -> Result<Vec<CertificateBag<'_>>, Pkcs12Error> {
    let mut bags: Vec<CertificateBag<'_>> = Vec::new();
    for bag in certs {
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
    Ok(bags)
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
    let Ok(pfx) = Pfx::from_der(der) else {
        return Pkcs12Error::Malformed { source: err };
    };
    let may_be_unsupported = matches!(
        err,
        P12Error::UnsupportedEncryptionScheme
            | P12Error::UnsupportedMacAlgorithm
            | P12Error::DerError(_)
            | P12Error::Pkcs5Error(_)
    );
    if may_be_unsupported && let Some((purpose, oid)) = first_unsupported(&algorithms(&pfx)) {
        return Pkcs12Error::UnsupportedAlgorithm {
            purpose,
            algorithm: describe(oid),
        };
    }
    let decryption = matches!(err, P12Error::UnpadError | P12Error::Pkcs5Error(_));
    // Without a MAC the password is only checked by decrypting, and a wrong one yields
    // bad padding or garbage that fails to decode.
    let garbage = pfx.mac_data.is_none()
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

const OID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const OID_ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const OID_PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const OID_PBKDF2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.12");

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
            "1.2.840.113549.1.5.13",
            "1.2.840.113549.1.12.1.3",
            "1.2.840.113549.1.12.1.6",
        ],
    ),
    (
        PURPOSE_KDF,
        &["1.2.840.113549.1.5.12", "1.3.6.1.4.1.11591.4.11"],
    ),
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

/// `"name (oid)"` when const-oid's database names the OID, else the dotted OID alone.
fn describe(oid: ObjectIdentifier) -> String {
    match const_oid::db::DB.by_oid(&oid) {
        Some(name) => format!("{name} ({oid})"),
        None => oid.to_string(),
    }
}

/// The first algorithm not in [`SUPPORTED`] for its purpose.
fn first_unsupported(
    algorithms: &[(&'static str, ObjectIdentifier)],
) -> Option<(&'static str, ObjectIdentifier)> {
    algorithms.iter().copied().find(|(purpose, oid)| {
        let dotted = oid.to_string();
        !SUPPORTED
            .iter()
            .any(|(p, oids)| p == purpose && oids.contains(&dotted.as_str()))
    })
}

/// The algorithms the outer (unencrypted) structure of an archive names, with their
/// purpose, in document order: the MAC digest, then each encryption of the contents and of
/// the shrouded keys. Parts that do not decode are skipped.
fn algorithms(pfx: &Pfx) -> Vec<(&'static str, ObjectIdentifier)> {
    let mut found = Vec::new();
    if let Some(mac_data) = &pfx.mac_data {
        found.push((PURPOSE_MAC, mac_data.mac.algorithm.oid));
    }
    let safes = data_content(&pfx.auth_safe)
        .and_then(|octets| AuthenticatedSafe::from_der(&octets).ok())
        .unwrap_or_default();
    for content_info in &safes {
        if content_info.content_type == OID_DATA {
            let bags = data_content(content_info)
                .and_then(|octets| SafeContents::from_der(&octets).ok())
                .unwrap_or_default();
            for bag in bags
                .iter()
                .filter(|bag| bag.bag_id == PKCS_12_PKCS8_KEY_BAG_OID)
            {
                // bagValue is [0] EXPLICIT EncryptedPrivateKeyInfo.
                if let Ok(info) =
                    ContextSpecific::<EncryptedPrivateKeyInfo>::from_der(&bag.bag_value)
                {
                    let alg = &info.value.encryption_algorithm;
                    encryption(alg.oid, alg.parameters.as_ref(), &mut found);
                }
            }
        } else if content_info.content_type == OID_ENCRYPTED_DATA {
            let encrypted = content_info
                .content
                .to_der()
                .ok()
                .and_then(|der| EncryptedData::from_der(&der).ok());
            if let Some(encrypted) = encrypted {
                let alg = &encrypted.enc_content_info.content_enc_alg;
                encryption(alg.oid, alg.parameters.as_ref(), &mut found);
            }
        }
    }
    found
}

/// Records an encryption scheme and, for PBES2, its KDF, PBKDF2's PRF and the cipher.
fn encryption(
    scheme: ObjectIdentifier,
    parameters: Option<&Any>,
    found: &mut Vec<(&'static str, ObjectIdentifier)>,
) {
    found.push((PURPOSE_SCHEME, scheme));
    if scheme != OID_PBES2 {
        return;
    }
    let Some(params) = parameters
        .and_then(|params| params.to_der().ok())
        .and_then(|der| Pbes2Params::from_der(&der).ok())
    else {
        return;
    };
    found.push((PURPOSE_KDF, params.kdf.oid));
    if params.kdf.oid == OID_PBKDF2 {
        // A PBKDF2-params without a PRF (the SHA-1 default) does not decode here; SHA-1 is
        // supported, so nothing is lost.
        let prf = params
            .kdf
            .parameters
            .as_ref()
            .and_then(|kdf| kdf.to_der().ok())
            .and_then(|der| Pbkdf2Params::from_der(&der).ok());
        if let Some(pbkdf2) = prf {
            found.push((PURPOSE_PRF, pbkdf2.prf.oid));
        }
    }
    found.push((PURPOSE_CIPHER, params.encryption.oid));
}

/// The bytes of the OCTET STRING a ContentInfo of type data holds.
fn data_content(content_info: &ContentInfo) -> Option<Box<[u8]>> {
    if content_info.content_type != OID_DATA {
        return None;
    }
    let der = content_info.content.to_der().ok()?;
    OctetString::from_der(&der)
        .ok()
        .map(OctetString::into_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_decode_to_dotted_form() {
        // Named by const-oid's database, and a camellia OID it does not name.
        assert_eq!(
            describe(ObjectIdentifier::new_unwrap("1.2.840.113549.2.5")),
            "id-md5 (1.2.840.113549.2.5)"
        );
        assert_eq!(
            describe(ObjectIdentifier::new_unwrap("1.2.392.200011.61.1.1.1.4")),
            "1.2.392.200011.61.1.1.1.4"
        );
    }

    #[test]
    fn garbage_is_not_a_pfx() {
        for garbage in [
            &b""[..],
            b"-----BEGIN CERTIFICATE-----",
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        ] {
            let err = classify(garbage, P12Error::UnsupportedEncryptionScheme);
            assert!(matches!(err, Pkcs12Error::Malformed { .. }), "{err:?}");
        }
    }
}
