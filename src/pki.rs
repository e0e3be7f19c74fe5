//! `certgate pki init`: writes a throwaway development PKI (CA, server, clients, PKCS#12).
//!
//! Everything is generated in memory first; files are written only after every
//! certificate, key and the PKCS#12 archive have been produced. Keys are ECDSA
//! P-256. Private material (`*.key`, `client.p12`, `client.p12.password`) is
//! created with mode 0600; certificates with mode 0644 (both subject to umask).
//! `client.p12.password` holds exactly the password, with no trailing newline, so both
//! `openssl pkcs12 -passin file:client.p12.password` and `"$(cat client.p12.password)"` work.
//!
//! Nothing here is meant for production: the CA key sits next to its certificate.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use p12_keystore::{
    Certificate as P12Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm,
    PrivateKey as P12PrivateKey, PrivateKeyChain,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// Every file `init` writes, in the order written, with a one-line description each.
pub const FILES: &[(&str, &str)] = &[
    (
        "ca.pem",
        "development CA certificate (\"certgate development CA\", ~10 years); trust this for clients and servers",
    ),
    (
        "ca.key",
        "development CA private key (PKCS#8 PEM, mode 0600)",
    ),
    (
        "server.pem",
        "server certificate chain (leaf, then CA) for localhost, *.localhost, {require,accept,ignore}.localhost, 127.0.0.1, ::1 (serverAuth)",
    ),
    ("server.key", "server private key (PKCS#8 PEM, mode 0600)"),
    (
        "client.pem",
        "client certificate CN=certgate-dev-client, SANs client.localhost and spiffe://certgate.localhost/dev-client (clientAuth)",
    ),
    ("client.key", "client private key (PKCS#8 PEM, mode 0600)"),
    (
        "client.p12",
        "client certificate, key and CA certificate as PKCS#12 (AES-256-CBC, SHA-256 MAC; mode 0600)",
    ),
    (
        "client.p12.password",
        "password of client.p12: 24 alphanumeric characters, no trailing newline (mode 0600)",
    ),
    (
        "self-signed-client.pem",
        "self-signed client certificate (clientAuth) that certgate must reject",
    ),
    (
        "self-signed-client.key",
        "private key of self-signed-client.pem (PKCS#8 PEM, mode 0600)",
    ),
    (
        "untrusted-client.pem",
        "client certificate (clientAuth) issued by a throwaway CA that is not written; certgate must reject it",
    ),
    (
        "untrusted-client.key",
        "private key of untrusted-client.pem (PKCS#8 PEM, mode 0600)",
    ),
];

/// Common name of the development CA.
const CA_COMMON_NAME: &str = "certgate development CA";
/// Common name of the trusted development client certificate.
const CLIENT_COMMON_NAME: &str = "certgate-dev-client";
/// DNS subject alternative name of the trusted development client certificate.
const CLIENT_DNS_NAME: &str = "client.localhost";
/// URI subject alternative name (SPIFFE ID) of the trusted development client certificate.
const CLIENT_SPIFFE_ID: &str = "spiffe://certgate.localhost/dev-client";
/// Number of characters in the generated `client.p12.password`.
const P12_PASSWORD_LEN: usize = 24;

/// Validity of the CA certificates, counted from one hour before generation.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Validity of leaf certificates; stays under the 397-day limit browsers and Apple enforce.
const LEAF_VALIDITY: Duration = Duration::days(396);
/// Backdating of `notBefore`, to tolerate clock skew between machines.
const BACKDATE: Duration = Duration::hours(1);

/// Failure of [`init`].
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A target file exists and overwriting was not requested; nothing was written.
    #[error("refusing to overwrite {}: it already exists (use --force to replace it)", path.display())]
    Exists {
        /// The first existing target file.
        path: PathBuf,
    },
    /// Reading metadata of, creating or writing a file or directory failed.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Generating a key or certificate failed.
    #[error("cannot generate the {what}")]
    Generate {
        /// What was being generated, such as "server certificate".
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// Building the PKCS#12 archive failed.
    #[error("cannot build the pkcs#12 archive {file}")]
    Pkcs12 {
        /// File name of the archive, relative to the output directory.
        file: &'static str,
        /// The underlying error.
        #[source]
        source: p12_keystore::error::Error,
    },
    /// The operating system's random number generator failed.
    #[error("cannot generate random bytes for the {what}")]
    Random {
        /// What the random bytes were for.
        what: &'static str,
    },
    /// A session ticket key file could not be made or rotated.
    #[error("cannot use session ticket key file {}", path.display())]
    TicketKeys {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: crate::tls::ticket_keys::TicketKeyError,
    },
}

/// Writes a session ticket key file holding one fresh key (mode 0600), or with `rotate`
/// prepends a fresh key to the existing file and keeps the newest three; the file is replaced
/// by a rename, so a reader never sees half of it.
pub fn ticket_keys(path: &Path, force: bool, rotate: bool) -> Result<PathBuf, PkiError> {
    let keys_error = |source| PkiError::TicketKeys {
        path: path.to_path_buf(),
        source,
    };
    let text = if rotate {
        let existing = fs::read(path).map_err(|source| PkiError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        crate::tls::ticket_keys::rotate_key_file(&existing).map_err(keys_error)?
    } else {
        if !force && fs::symlink_metadata(path).is_ok() {
            return Err(PkiError::Exists {
                path: path.to_path_buf(),
            });
        }
        crate::tls::ticket_keys::new_key_file().map_err(keys_error)?
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let io_error = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    write_file(&temporary, text.as_bytes(), true, true).map_err(io_error)?;
    fs::rename(&temporary, path).map_err(io_error)?;
    Ok(path.to_path_buf())
}

/// A file to write: its name (from [`FILES`]), contents and whether it is secret.
struct Output {
    name: &'static str,
    contents: Vec<u8>,
    secret: bool,
}

/// Generates the development PKI into `dir` (created if missing) and returns the paths written,
/// in the order of [`FILES`].
///
/// If any target file exists (a dangling symlink counts) and `force` is false, returns
/// [`PkiError::Exists`] before generating or writing anything. With `force`, existing files
/// are removed and recreated, so the new files get fresh modes and symlinks are replaced
/// rather than followed. If writing fails part-way, files written so far are left in place.
pub fn init(dir: &Path, force: bool) -> Result<Vec<PathBuf>, PkiError> {
    if !force {
        for (name, _) in FILES {
            let path = dir.join(name);
            match fs::symlink_metadata(&path) {
                Ok(_) => return Err(PkiError::Exists { path }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(PkiError::Io { path, source }),
            }
        }
    }

    let outputs = generate()?;

    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::with_capacity(outputs.len());
    for output in &outputs {
        let path = dir.join(output.name);
        write_file(&path, &output.contents, output.secret, force).map_err(|source| {
            PkiError::Io {
                path: path.clone(),
                source,
            }
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Creates `path` with `contents`; mode 0600 if `secret`, else 0644 (before umask).
///
/// Without `replace` the file must not exist (`O_EXCL`, so a file that appeared since the
/// existence check is not clobbered). With `replace` an existing file or symlink is removed
/// first, so the mode applies at creation and symlinks are never followed.
fn write_file(path: &Path, contents: &[u8], secret: bool, replace: bool) -> io::Result<()> {
    if replace {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Generates every output in memory, in the order of [`FILES`].
fn generate() -> Result<Vec<Output>, PkiError> {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let not_before = now - BACKDATE;

    // Development CA.
    let ca_key = new_key("CA key")?;
    let ca_cert_params = ca_params(CA_COMMON_NAME, not_before);
    let ca_cert = ca_cert_params
        .self_signed(&ca_key)
        .map_err(generate_err("CA certificate"))?;
    let ca = Issuer::new(ca_cert_params, ca_key);

    // Server leaf.
    let server_key = new_key("server key")?;
    let mut server_params =
        leaf_params("localhost", not_before, ExtendedKeyUsagePurpose::ServerAuth);
    server_params.subject_alt_names = vec![
        dns_san("localhost", "server certificate")?,
        dns_san("*.localhost", "server certificate")?,
        // OpenSSL and webpki refuse a wildcard directly above a one-label name, so the demo's
        // hosts are listed as well.
        dns_san("require.localhost", "server certificate")?,
        dns_san("accept.localhost", "server certificate")?,
        dns_san("ignore.localhost", "server certificate")?,
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    let server_cert = server_params
        .signed_by(&server_key, &ca)
        .map_err(generate_err("server certificate"))?;

    // Trusted client leaf.
    let client_key = new_key("client key")?;
    let mut client_params = leaf_params(
        CLIENT_COMMON_NAME,
        not_before,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    client_params.subject_alt_names = vec![
        dns_san(CLIENT_DNS_NAME, "client certificate")?,
        uri_san(CLIENT_SPIFFE_ID, "client certificate")?,
    ];
    let client_cert = client_params
        .signed_by(&client_key, &ca)
        .map_err(generate_err("client certificate"))?;

    // PKCS#12 of the trusted client.
    let password = random_password(P12_PASSWORD_LEN)?;
    let p12 = client_p12(
        client_cert.der(),
        client_key.serialized_der(),
        ca_cert.der(),
        &password,
    )
    .map_err(|source| PkiError::Pkcs12 {
        file: "client.p12",
        source,
    })?;

    // Self-signed client leaf.
    let self_signed_key = new_key("self-signed client key")?;
    let mut self_signed_params = leaf_params(
        "certgate-self-signed-client",
        not_before,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    self_signed_params.subject_alt_names = vec![
        dns_san(
            "self-signed-client.localhost",
            "self-signed client certificate",
        )?,
        uri_san(
            "spiffe://certgate.localhost/self-signed-client",
            "self-signed client certificate",
        )?,
    ];
    self_signed_params.use_authority_key_identifier_extension = false;
    let self_signed_cert = self_signed_params
        .self_signed(&self_signed_key)
        .map_err(generate_err("self-signed client certificate"))?;

    // Client leaf issued by a CA that is never written, so nothing can trust it.
    let untrusted_ca_key = new_key("untrusted CA key")?;
    let untrusted_ca = Issuer::new(
        ca_params("certgate untrusted CA (not written to disk)", not_before),
        untrusted_ca_key,
    );
    let untrusted_key = new_key("untrusted client key")?;
    let mut untrusted_params = leaf_params(
        "certgate-untrusted-client",
        not_before,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    untrusted_params.subject_alt_names = vec![
        dns_san("untrusted-client.localhost", "untrusted client certificate")?,
        uri_san(
            "spiffe://certgate.localhost/untrusted-client",
            "untrusted client certificate",
        )?,
    ];
    let untrusted_cert = untrusted_params
        .signed_by(&untrusted_key, &untrusted_ca)
        .map_err(generate_err("untrusted client certificate"))?;

    let public = |name, contents: String| Output {
        name,
        contents: contents.into_bytes(),
        secret: false,
    };
    let secret = |name, contents: Vec<u8>| Output {
        name,
        contents,
        secret: true,
    };
    let outputs = vec![
        public("ca.pem", ca_cert.pem()),
        secret("ca.key", ca.key().serialize_pem().into_bytes()),
        public("server.pem", server_cert.pem() + &ca_cert.pem()),
        secret("server.key", server_key.serialize_pem().into_bytes()),
        public("client.pem", client_cert.pem()),
        secret("client.key", client_key.serialize_pem().into_bytes()),
        secret("client.p12", p12),
        secret("client.p12.password", password.into_bytes()),
        public("self-signed-client.pem", self_signed_cert.pem()),
        secret(
            "self-signed-client.key",
            self_signed_key.serialize_pem().into_bytes(),
        ),
        public("untrusted-client.pem", untrusted_cert.pem()),
        secret(
            "untrusted-client.key",
            untrusted_key.serialize_pem().into_bytes(),
        ),
    ];
    Ok(outputs)
}

/// Generates an ECDSA P-256 key pair.
fn new_key(what: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_err(what))
}

fn generate_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate { what, source }
}

fn dns_san(name: &str, what: &'static str) -> Result<SanType, PkiError> {
    Ok(SanType::DnsName(
        name.try_into().map_err(generate_err(what))?,
    ))
}

fn uri_san(uri: &str, what: &'static str) -> Result<SanType, PkiError> {
    Ok(SanType::URI(uri.try_into().map_err(generate_err(what))?))
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "certgate (development only)");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Parameters of a CA that may issue leaf certificates only (path length 0).
fn ca_params(common_name: &str, not_before: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.not_before = not_before;
    params.not_after = not_before + CA_VALIDITY;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Parameters of an end-entity certificate with one extended key usage.
fn leaf_params(
    common_name: &str,
    not_before: OffsetDateTime,
    eku: ExtendedKeyUsagePurpose,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.not_before = not_before;
    params.not_after = not_before + LEAF_VALIDITY;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    params
}

/// A password of `len` characters drawn uniformly from `[A-Za-z0-9]`.
fn random_password(len: usize) -> Result<String, PkiError> {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // Bytes at or above the largest multiple of 62 are rejected to avoid modulo bias.
    const LIMIT: u8 = 248;
    let random = rustls::crypto::aws_lc_rs::default_provider().secure_random;
    let mut password = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while password.len() < len {
        random.fill(&mut buf).map_err(|_| PkiError::Random {
            what: "pkcs#12 password",
        })?;
        for &b in buf.iter().filter(|&&b| b < LIMIT) {
            if password.len() == len {
                break;
            }
            password.push(char::from(ALPHABET[usize::from(b % 62)]));
        }
    }
    Ok(password)
}

/// PKCS#12 holding the client key, its certificate and the CA certificate:
/// PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) for both bags and an HMAC-SHA256 MAC,
/// which OpenSSL 3 reads without `-legacy`.
fn client_p12(
    client_cert: &[u8],
    client_key_pkcs8: &[u8],
    ca_cert: &[u8],
    password: &str,
) -> Result<Vec<u8>, p12_keystore::error::Error> {
    let local_key_id = Sha256::digest(client_cert).to_vec();
    let chain = PrivateKeyChain::new(
        local_key_id,
        P12PrivateKey::from_der(client_key_pkcs8)?,
        [
            P12Certificate::from_der(client_cert)?,
            P12Certificate::from_der(ca_cert)?,
        ],
    );
    let mut store = KeyStore::new();
    store.add_entry(CLIENT_COMMON_NAME, KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(10_000)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(10_000)
        .write()
}
