//! A throwaway PKI made with rcgen: CAs (root or intermediate) that issue leaves and CRLs,
//! and the server + client CA pair most tests use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::Digest;
use time::OffsetDateTime;

use super::{Identity, TempDir};

static SERIAL: AtomicU64 = AtomicU64::new(1);

fn next_serial() -> SerialNumber {
    let n = SERIAL.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1_000_000;
    SerialNumber::from_slice(&n.to_be_bytes())
}

/// A certificate authority (root or intermediate) that can issue leaves and CRLs.
pub struct Ca {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub der: CertificateDer<'static>,
    pub pem: String,
    /// What a client sends after a leaf this CA issued: nothing for a root, the
    /// intermediate itself otherwise.
    pub sent_after_leaf: Vec<CertificateDer<'static>>,
}

impl Ca {
    pub fn root(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().clone(),
            pem: cert.pem(),
            params,
            key,
            sent_after_leaf: Vec::new(),
        }
    }

    pub fn intermediate(&self, name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(name);
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        Self {
            sent_after_leaf: vec![cert.der().clone()],
            der: cert.der().clone(),
            pem: cert.pem(),
            params,
            key,
        }
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    pub fn issue(&self, spec: LeafSpec) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params = spec.params();
        let serial = params.serial_number.clone().unwrap();
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.sent_after_leaf.iter().cloned());
        Leaf {
            chain,
            pem: cert.pem(),
            key,
            serial,
        }
    }

    /// A PEM CRL revoking `revoked`, valid from an hour ago until `next_update`.
    pub fn crl(&self, revoked: &[&Leaf], next_update: OffsetDateTime) -> String {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: next_update.min(now) - time::Duration::hours(1),
            next_update,
            crl_number: next_serial(),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|leaf| rcgen::RevokedCertParams {
                    serial_number: leaf.serial.clone(),
                    revocation_time: now - time::Duration::minutes(5),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer()).unwrap().pem().unwrap()
    }
}

/// The parameters of a CA certificate valid from yesterday for a year, with a fresh serial.
pub fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(next_serial());
    params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(365);
    params
}

/// What a leaf certificate holds.
#[derive(Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub ekus: Vec<ExtendedKeyUsagePurpose>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A client certificate (clientAuth EKU) valid from yesterday for a month.
    pub fn client(common_name: &str) -> Self {
        Self {
            common_name: common_name.to_owned(),
            dns: Vec::new(),
            uris: Vec::new(),
            ips: Vec::new(),
            ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
            not_before: OffsetDateTime::now_utc() - time::Duration::days(1),
            not_after: OffsetDateTime::now_utc() + time::Duration::days(30),
        }
    }

    /// A server certificate (serverAuth EKU) for the names tests use.
    pub fn server() -> Self {
        Self {
            dns: [
                "localhost",
                "example.test",
                "*.example.test",
                "*.pay.example.test",
            ]
            .map(String::from)
            .to_vec(),
            ips: vec!["127.0.0.1".parse().unwrap()],
            ekus: vec![ExtendedKeyUsagePurpose::ServerAuth],
            ..Self::client("certgate test server")
        }
    }

    fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name.as_str());
        for dns in &self.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into().unwrap()));
        }
        for uri in &self.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into().unwrap()));
        }
        for ip in &self.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.extended_key_usages = self.ekus.clone();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params.serial_number = Some(next_serial());
        params
    }
}

/// An issued certificate with its key.
pub struct Leaf {
    /// What the client sends: leaf first, then any intermediate.
    pub chain: Vec<CertificateDer<'static>>,
    pub pem: String,
    pub key: KeyPair,
    pub serial: SerialNumber,
}

impl Leaf {
    pub fn self_signed(spec: LeafSpec) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = spec.params();
        let serial = params.serial_number.clone().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            chain: vec![cert.der().clone()],
            pem: cert.pem(),
            key,
            serial,
        }
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// SHA-256 of the leaf DER, lowercase hex.
    pub fn hash_hex(&self) -> String {
        hex(&sha2::Sha256::digest(self.der()))
    }

    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| pem_of(c)).collect()
    }

    pub fn identity(&self) -> Identity {
        Identity {
            chain: self.chain.clone(),
            key: Arc::new(self.key_der()),
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// PEM written the simple way, independently of certgate's encoder.
pub fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out += line;
        out += "\n";
        rest = tail;
    }
    out + "-----END CERTIFICATE-----\n"
}

/// The test PKI: a server certificate from its own CA, and a client CA.
pub struct Pki {
    pub server_ca: Ca,
    pub server: Leaf,
    pub client_ca: Ca,
}

impl Pki {
    pub fn new() -> Self {
        let server_ca = Ca::root("certgate test server CA");
        let server = server_ca.issue(LeafSpec::server());
        Self {
            server_ca,
            server,
            client_ca: Ca::root("certgate test client CA"),
        }
    }

    /// Writes `server.pem`, `server.key` and `client-ca.pem` into `dir`.
    pub fn write(&self, dir: &TempDir) {
        dir.write("server.pem", &self.server.pem);
        dir.write("server.key", self.server.key.serialize_pem());
        dir.write("client-ca.pem", &self.client_ca.pem);
    }

    pub fn client(&self, cn: &str) -> Leaf {
        self.client_ca.issue(LeafSpec::client(cn))
    }
}
