//! The certificates `certgate pki init` writes, as one table: who each is for, what it
//! holds, who signs it, and the files it is written as. [`FILES`] is derived from it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rcgen::ExtendedKeyUsagePurpose;

/// Every file `init` writes, in the order written, with a one-line description each: the
/// files of [`CA`] and then of each of [`LEAVES`].
pub const FILES: &[(&str, &str)] = &files();

/// What signs a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signer {
    /// The certificate signs itself.
    Itself,
    /// The development CA ([`CA`]).
    DevelopmentCa,
    /// A throwaway CA that is never written, so nothing can trust what it signs.
    ThrowawayCa,
}

/// One certificate `init` writes, its key, and how it is made.
pub(super) struct Spec {
    /// What is generated, for errors: "server certificate".
    pub(super) what: &'static str,
    pub(super) common_name: &'static str,
    /// The extended key usage of a leaf; `None` for a CA.
    pub(super) eku: Option<ExtendedKeyUsagePurpose>,
    pub(super) signer: Signer,
    pub(super) dns: &'static [&'static str],
    pub(super) uris: &'static [&'static str],
    pub(super) ips: &'static [IpAddr],
    /// The certificate file and its description; with `chain` it also holds the CA.
    pub(super) cert_file: (&'static str, &'static str),
    pub(super) chain: bool,
    /// The private key file and its description.
    pub(super) key_file: (&'static str, &'static str),
    /// A PKCS#12 archive of certificate, key and CA, and its password file, each with its
    /// description.
    pub(super) archive: Option<[(&'static str, &'static str); 2]>,
}

/// The development CA.
pub(super) const CA: Spec = Spec {
    what: "CA certificate",
    common_name: CA_COMMON_NAME,
    eku: None,
    signer: Signer::Itself,
    dns: &[],
    uris: &[],
    ips: &[],
    cert_file: (
        "ca.pem",
        "development CA certificate (\"certgate development CA\", ~10 years); trust this for clients and servers",
    ),
    chain: false,
    key_file: (
        "ca.key",
        "development CA private key (PKCS#8 PEM, mode 0600)",
    ),
    archive: None,
};

/// The leaf certificates, in the order written.
pub(super) const LEAVES: [Spec; 4] = [SERVER, CLIENT, SELF_SIGNED_CLIENT, UNTRUSTED_CLIENT];

/// The server certificate (`pki init --host` adds names to it).
pub(super) const SERVER: Spec = Spec {
    what: "server certificate",
    common_name: "localhost",
    eku: Some(ExtendedKeyUsagePurpose::ServerAuth),
    signer: Signer::DevelopmentCa,
    // OpenSSL and webpki refuse a wildcard directly above a one-label name, so the demo's
    // hosts are listed as well.
    dns: &[
        "localhost",
        "*.localhost",
        "require.localhost",
        "accept.localhost",
        "ignore.localhost",
    ],
    uris: &[],
    ips: &[
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ],
    cert_file: (
        "server.pem",
        "server certificate chain (leaf, then CA) for localhost, *.localhost, {require,accept,ignore}.localhost, 127.0.0.1, ::1 (serverAuth)",
    ),
    chain: true,
    key_file: ("server.key", "server private key (PKCS#8 PEM, mode 0600)"),
    archive: None,
};

/// The client certificate the development CA issues.
const CLIENT: Spec = Spec {
    what: "client certificate",
    common_name: CLIENT_COMMON_NAME,
    eku: Some(ExtendedKeyUsagePurpose::ClientAuth),
    signer: Signer::DevelopmentCa,
    dns: &["client.localhost"],
    uris: &["spiffe://certgate.localhost/dev-client"],
    ips: &[],
    cert_file: (
        "client.pem",
        "client certificate CN=certgate-dev-client, SANs client.localhost and spiffe://certgate.localhost/dev-client (clientAuth)",
    ),
    chain: false,
    key_file: ("client.key", "client private key (PKCS#8 PEM, mode 0600)"),
    archive: Some([
        (
            "client.p12",
            "client certificate, key and CA certificate as PKCS#12 (AES-256-CBC, SHA-256 MAC; mode 0600)",
        ),
        (
            "client.p12.password",
            "password of client.p12: 24 alphanumeric characters, no trailing newline (mode 0600)",
        ),
    ]),
};

/// A client certificate that signs itself.
const SELF_SIGNED_CLIENT: Spec = Spec {
    what: "self-signed client certificate",
    common_name: "certgate-self-signed-client",
    eku: Some(ExtendedKeyUsagePurpose::ClientAuth),
    signer: Signer::Itself,
    dns: &["self-signed-client.localhost"],
    uris: &["spiffe://certgate.localhost/self-signed-client"],
    ips: &[],
    cert_file: (
        "self-signed-client.pem",
        "self-signed client certificate (clientAuth) that certgate must reject",
    ),
    chain: false,
    key_file: (
        "self-signed-client.key",
        "private key of self-signed-client.pem (PKCS#8 PEM, mode 0600)",
    ),
    archive: None,
};

/// A client certificate of a CA that is never written.
const UNTRUSTED_CLIENT: Spec = Spec {
    what: "untrusted client certificate",
    common_name: "certgate-untrusted-client",
    eku: Some(ExtendedKeyUsagePurpose::ClientAuth),
    signer: Signer::ThrowawayCa,
    dns: &["untrusted-client.localhost"],
    uris: &["spiffe://certgate.localhost/untrusted-client"],
    ips: &[],
    cert_file: (
        "untrusted-client.pem",
        "client certificate (clientAuth) issued by a throwaway CA that is not written; certgate must reject it",
    ),
    chain: false,
    key_file: (
        "untrusted-client.key",
        "private key of untrusted-client.pem (PKCS#8 PEM, mode 0600)",
    ),
    archive: None,
};

/// How many files `init` writes.
const FILE_COUNT: usize = {
    let mut count = CA.file_count();
    let mut index = 0;
    while index < LEAVES.len() {
        count += LEAVES[index].file_count();
        index += 1;
    }
    count
};

impl Spec {
    /// How many files this certificate is written as.
    const fn file_count(&self) -> usize {
        if self.archive.is_some() { 4 } else { 2 }
    }
}

/// [`FILES`], flattened from [`CA`] and [`LEAVES`] at compile time.
const fn files() -> [(&'static str, &'static str); FILE_COUNT] {
    let mut out = [("", ""); FILE_COUNT];
    let mut next = 0;
    let mut index = 0;
    while index <= LEAVES.len() {
        let spec = if index == 0 { &CA } else { &LEAVES[index - 1] };
        out[next] = spec.cert_file;
        out[next + 1] = spec.key_file;
        next += 2;
        if let Some([archive, password]) = spec.archive {
            out[next] = archive;
            out[next + 1] = password;
            next += 2;
        }
        index += 1;
    }
    out
}

/// Common name of the development CA.
const CA_COMMON_NAME: &str = "certgate development CA";
/// Common name of the trusted development client certificate.
pub(super) const CLIENT_COMMON_NAME: &str = "certgate-dev-client";
