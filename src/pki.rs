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

mod certificates;

pub use certificates::FILES;
use certificates::{CA, CLIENT_COMMON_NAME, LEAVES, SERVER, Signer, Spec};

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
    /// Some of the development PKI's files exist and others do not.
    #[error("{} holds an incomplete development PKI (missing {missing}); make a new one with --force", dir.display())]
    Incomplete {
        /// The folder.
        dir: PathBuf,
        /// The first missing file.
        missing: &'static str,
    },
    /// A `--host` that is neither a DNS name nor an IP address.
    #[error("--host {host:?} is not a DNS name or an IP address")]
    BadHost {
        /// The name as given.
        host: String,
    },
    /// The existing CA could not be read to sign a new server certificate.
    #[error("cannot read the development CA {} to sign the server certificate", path.display())]
    Ca {
        /// `ca.pem` or `ca.key`.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
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

    write_all(dir, &generate(&[])?, force)
}

/// Writes `outputs` into `dir` (created if missing), replacing files with `replace`.
fn write_all(dir: &Path, outputs: &[Output], replace: bool) -> Result<Vec<PathBuf>, PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::with_capacity(outputs.len());
    for output in outputs {
        let path = dir.join(output.name);
        write_file(&path, &output.contents, output.secret, replace).map_err(|source| {
            PkiError::Io {
                path: path.clone(),
                source,
            }
        })?;
        written.push(path);
    }
    Ok(written)
}

/// What [`init_for_hosts`] did.
#[derive(Debug)]
pub enum Initialized {
    /// Made a new development PKI: the files written.
    Written(Vec<PathBuf>),
    /// The folder already holds a whole development PKI, kept as it is.
    Kept,
    /// The folder already holds a whole development PKI; its server certificate and key were
    /// issued again by its CA, for the default names and the hosts asked for.
    Reissued(Vec<PathBuf>),
}

/// `certgate pki init DIR [--host NAME]... [--force]`: like [`init`], with `hosts` (DNS
/// names or IP addresses) added to the server certificate, and a folder that already holds a
/// whole development PKI (the demo's) kept rather than refused: without `hosts` it is left
/// as it is, with them only its server certificate is issued again, by the same CA, so the
/// client certificates and every trust in `ca.pem` stay valid. A folder holding part of a
/// PKI is refused; `force` makes a new one whatever is there.
pub fn init_for_hosts(dir: &Path, force: bool, hosts: &[String]) -> Result<Initialized, PkiError> {
    let hosts = hosts
        .iter()
        .map(|host| SanType::try_from(Host::parse(host)?))
        .collect::<Result<Vec<_>, PkiError>>()?;
    if force {
        return write_all(dir, &generate(&hosts)?, true).map(Initialized::Written);
    }
    let mut missing = None;
    let mut present = false;
    for (name, _) in FILES {
        match fs::symlink_metadata(dir.join(name)) {
            Ok(_) => present = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing = missing.or(Some(*name)),
            Err(source) => {
                return Err(PkiError::Io {
                    path: dir.join(name),
                    source,
                });
            }
        }
    }
    match (present, missing) {
        (false, _) => write_all(dir, &generate(&hosts)?, false).map(Initialized::Written),
        (true, Some(missing)) => Err(PkiError::Incomplete {
            dir: dir.to_path_buf(),
            missing,
        }),
        (true, None) if hosts.is_empty() => Ok(Initialized::Kept),
        (true, None) => {
            let outputs = reissue_server(dir, &hosts)?;
            write_all(dir, &outputs, true).map(Initialized::Reissued)
        }
    }
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

/// Generates every output in memory, in the order of [`FILES`], with `hosts` added to the
/// server certificate's names.
fn generate(hosts: &[SanType]) -> Result<Vec<Output>, PkiError> {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let not_before = now - BACKDATE;

    let ca_key = new_key(CA.what)?;
    let ca_cert_params = CA.params(not_before)?;
    let ca_cert = ca_cert_params
        .self_signed(&ca_key)
        .map_err(generate_err(CA.what))?;
    let ca_pem = ca_cert.pem();
    let mut outputs = CA.outputs(&ca_pem, &ca_key, None)?;
    let ca = Issuer::new(ca_cert_params, ca_key);
    let throwaway = Issuer::new(
        ca_params("certgate untrusted CA (not written to disk)", not_before),
        new_key("untrusted CA key")?,
    );

    for spec in &LEAVES {
        let key = new_key(spec.what)?;
        let mut params = spec.params(not_before)?;
        if spec.what == SERVER.what {
            params.subject_alt_names.extend_from_slice(hosts);
        }
        let cert = match spec.signer {
            Signer::Itself => params.self_signed(&key),
            Signer::DevelopmentCa => params.signed_by(&key, &ca),
            Signer::ThrowawayCa => params.signed_by(&key, &throwaway),
        }
        .map_err(generate_err(spec.what))?;
        let mut pem = cert.pem();
        if spec.chain {
            pem.push_str(&ca_pem);
        }
        let archive = (cert.der().as_ref(), ca_cert.der().as_ref());
        outputs.extend(spec.outputs(&pem, &key, Some(archive))?);
    }
    Ok(outputs)
}

/// The server certificate and key issued again by the CA in `dir`, for the default names and
/// `hosts`.
fn reissue_server(dir: &Path, hosts: &[SanType]) -> Result<Vec<Output>, PkiError> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).map_err(|source| PkiError::Io { path, source })
    };
    let (ca_pem, ca_key) = (read(CA.cert_file.0)?, read(CA.key_file.0)?);
    let ca_error = |name: &str| {
        let path = dir.join(name);
        move |source| PkiError::Ca { path, source }
    };
    let key = KeyPair::from_pem(&ca_key).map_err(ca_error(CA.key_file.0))?;
    let ca = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(ca_error(CA.cert_file.0))?;
    let not_before = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        - BACKDATE;
    let key = new_key(SERVER.what)?;
    let mut params = SERVER.params(not_before)?;
    params.subject_alt_names.extend_from_slice(hosts);
    let cert = params
        .signed_by(&key, &ca)
        .map_err(generate_err(SERVER.what))?;
    let mut pem = cert.pem();
    pem.push_str(&ca_pem);
    SERVER.outputs(&pem, &key, None)
}

/// A `--host`: an IP address or a DNS name.
enum Host {
    Ip(std::net::IpAddr),
    Dns(String),
}

impl Host {
    fn parse(host: &str) -> Result<Self, PkiError> {
        let bad = || PkiError::BadHost {
            host: host.to_owned(),
        };
        if let Ok(ip) = host.parse() {
            return Ok(Self::Ip(ip));
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        let mut labels = name.split('.');
        let first_ok = labels
            .next()
            .is_some_and(|first| first == "*" || label_ok(first));
        if first_ok && labels.all(label_ok) && name.len() <= 253 {
            Ok(Self::Dns(name))
        } else {
            Err(bad())
        }
    }
}

impl TryFrom<Host> for SanType {
    type Error = PkiError;

    fn try_from(host: Host) -> Result<Self, PkiError> {
        match host {
            Host::Ip(ip) => Ok(SanType::IpAddress(ip)),
            Host::Dns(name) => {
                let san = name
                    .clone()
                    .try_into()
                    .map_err(|_| PkiError::BadHost { host: name })?;
                Ok(SanType::DnsName(san))
            }
        }
    }
}

impl Spec {
    /// The certificate's parameters, valid from `not_before`.
    fn params(&self, not_before: OffsetDateTime) -> Result<CertificateParams, PkiError> {
        let Some(eku) = &self.eku else {
            return Ok(ca_params(self.common_name, not_before));
        };
        let mut params = leaf_params(self.common_name, not_before, eku.clone());
        for dns in self.dns {
            let name = (*dns).try_into().map_err(generate_err(self.what))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for uri in self.uris {
            let uri = (*uri).try_into().map_err(generate_err(self.what))?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        for ip in self.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        // A self-signed certificate has no authority to identify.
        params.use_authority_key_identifier_extension = self.signer != Signer::Itself;
        Ok(params)
    }

    /// The files of this certificate: `pem`, `key` and, when it has an archive, the
    /// PKCS#12 of `(certificate DER, CA certificate DER)` with `key`, and its password.
    fn outputs(
        &self,
        pem: &str,
        key: &KeyPair,
        certificates: Option<(&[u8], &[u8])>,
    ) -> Result<Vec<Output>, PkiError> {
        let mut outputs = vec![
            Output {
                name: self.cert_file.0,
                contents: pem.as_bytes().to_vec(),
                secret: false,
            },
            Output {
                name: self.key_file.0,
                contents: key.serialize_pem().into_bytes(),
                secret: true,
            },
        ];
        if let (Some([(archive, _), (password_file, _)]), Some((cert, ca))) =
            (self.archive, certificates)
        {
            let password = random_password(P12_PASSWORD_LEN)?;
            let p12 = client_p12(cert, key.serialized_der(), ca, &password).map_err(|source| {
                PkiError::Pkcs12 {
                    file: archive,
                    source,
                }
            })?;
            outputs.push(Output {
                name: archive,
                contents: p12,
                secret: true,
            });
            outputs.push(Output {
                name: password_file,
                contents: password.into_bytes(),
                secret: true,
            });
        }
        Ok(outputs)
    }
}

/// Generates an ECDSA P-256 key pair.
fn new_key(what: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_err(what))
}

fn generate_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate { what, source }
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
