//! Tests `certgate::pkcs12::load` on certgate's own `client.p12`, on archives made by
//! OpenSSL 3 (default and `-legacy`) and on broken or mismatched archives.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::common;

use common::{TempDir, tools};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use certgate::pki;
use certgate::{Pkcs12Error, pkcs12};
use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

const PASSWORD: &str = "correct horse battery staple";

/// A development PKI written by `pki::init`.
struct Pki {
    tmp: TempDir,
}

impl Pki {
    fn new() -> Self {
        let tmp = TempDir::new();
        pki::init(tmp.path(), false).expect("pki init");
        Self { tmp }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf-8 path").to_owned()
    }

    fn certs(&self, name: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(self.path(name))
            .expect("open pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse pem")
    }

    fn key(&self, name: &str) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_file(self.path(name)).expect("parse key")
    }

    fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.path(name)).expect("read file")
    }

    fn p12_password(&self) -> String {
        fs::read_to_string(self.path("client.p12.password")).expect("read password")
    }

    /// Runs `openssl pkcs12 -export` with `args` into `name` (password [`PASSWORD`]).
    /// `None` when openssl is not installed and the test is skipped (outside CI only).
    fn openssl_export(&self, name: &str, args: &[&str]) -> Option<Vec<u8>> {
        if !tools::openssl() {
            return None;
        }
        let out = self.arg(name);
        let passout = format!("pass:{PASSWORD}");
        let mut all = vec!["pkcs12", "-export", "-out", &out, "-passout", &passout];
        all.extend_from_slice(args);
        tools::run_openssl(self.tmp.path(), &all);
        Some(self.read(name))
    }

    /// [`Self::openssl_export`] of server.key and server.pem, with `extra` options.
    fn openssl_server_p12(&self, name: &str, extra: &[&str]) -> Option<Vec<u8>> {
        let (key, cert) = (self.arg("server.key"), self.arg("server.pem"));
        let mut args = extra.to_vec();
        args.extend(["-inkey", &key, "-in", &cert]);
        self.openssl_export(name, &args)
    }

    /// [`Self::openssl_export`] of server.key alone (`-nocerts`), with each of `certfiles`
    /// stored next to it (`-certfile`, no key id links them to the key).
    fn openssl_server_key_p12(&self, name: &str, certfiles: &[&str]) -> Option<Vec<u8>> {
        let mut args = vec![
            "-nocerts".to_owned(),
            "-inkey".to_owned(),
            self.arg("server.key"),
        ];
        for file in certfiles {
            args.extend(["-certfile".to_owned(), self.arg(file)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.openssl_export(name, &args)
    }

    /// `openssl pkcs12 -info -noout` (plus `extra`) on `name`: the algorithm report on stderr.
    fn openssl_info(&self, name: &str, extra: &[&str]) -> String {
        let input = self.arg(name);
        let passin = format!("pass:{PASSWORD}");
        let mut all = vec![
            "pkcs12", "-in", &input, "-passin", &passin, "-info", "-noout",
        ];
        all.extend_from_slice(extra);
        let output = tools::run_openssl(self.tmp.path(), &all);
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

/// Whether OpenSSL 3's legacy provider (RC2, 3DES-based PKCS#12) can be loaded. Under CI
/// its absence fails the test, as a missing tool does.
fn legacy_provider_available() -> bool {
    let dir = std::env::temp_dir();
    let available = tools::openssl_output(&dir, &["list", "-providers", "-provider", "legacy"])
        .status
        .success();
    if !available {
        // Debian and Ubuntu ship the provider in libssl3, which openssl depends on.
        tools::missing(
            "OpenSSL's legacy provider (for `openssl pkcs12 -legacy`)",
            "apt-get install openssl",
        );
    }
    available
}

/// A PKCS#12 written by p12-keystore with one key chain per `(key, certs)`.
fn keystore_p12(chains: &[(&PrivateKeyDer<'_>, &[&CertificateDer<'_>])]) -> Vec<u8> {
    let mut store = KeyStore::new();
    for (index, (key, certs)) in chains.iter().enumerate() {
        let chain = PrivateKeyChain::new(
            vec![u8::try_from(index).expect("few chains"); 20],
            PrivateKey::from_der(key.secret_der()).expect("pkcs8 key"),
            certs
                .iter()
                .map(|cert| Certificate::from_der(cert).expect("certificate")),
        );
        store.add_entry(
            &format!("entry-{index}"),
            KeyStoreEntry::PrivateKeyChain(chain),
        );
    }
    store.writer(PASSWORD).write().expect("write pkcs12")
}

fn assert_loads_as(
    loaded: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    chain: &[CertificateDer<'static>],
) {
    let (loaded_chain, loaded_key) = loaded;
    assert_eq!(loaded_chain, chain, "chain is the leaf, then its CA");
    assert!(matches!(loaded_key, PrivateKeyDer::Pkcs8(_)));
    // The loaded pair is usable as a rustls server certificate.
    rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(loaded_chain, loaded_key)
    .expect("rustls accepts the chain and key");
}

#[test]
fn load_reads_certgates_own_client_p12() {
    let pki = Pki::new();
    let loaded = pkcs12::load(&pki.read("client.p12"), &pki.p12_password()).expect("load");
    assert_eq!(
        loaded.1.secret_der(),
        pki.key("client.key").secret_der(),
        "the key is client.key"
    );
    let mut chain = pki.certs("client.pem");
    chain.extend(pki.certs("ca.pem"));
    assert_loads_as(loaded, &chain);
}

/// Exports server.key and server.pem as `name` with openssl and the `extra` options, checks
/// that `openssl pkcs12 -info` (with `extra`) names each of `algorithms`, and that the archive
/// loads as server.pem and its key; the archive. `None` without openssl (outside CI).
fn assert_openssl_archive_loads(
    name: &str,
    extra: &[&str],
    algorithms: &[&str],
) -> Option<Vec<u8>> {
    let pki = Pki::new();
    let der = pki.openssl_server_p12(name, extra)?;
    if !algorithms.is_empty() {
        let info = pki.openssl_info(name, extra);
        for algorithm in algorithms {
            assert!(
                info.contains(algorithm),
                "{name}: {algorithm} not in {info}"
            );
        }
    }
    let loaded = pkcs12::load(&der, PASSWORD).expect("load");
    assert_loads_as(loaded, &pki.certs("server.pem"));
    Some(der)
}

#[test]
fn load_reads_an_openssl_3_default_archive() {
    assert_openssl_archive_loads("server.p12", &[], &["PBES2, PBKDF2, AES-256-CBC"]);
}

#[test]
fn load_reads_an_openssl_3_legacy_archive() {
    if !tools::openssl() || !legacy_provider_available() {
        return;
    }
    assert_openssl_archive_loads(
        "legacy.p12",
        &["-legacy"],
        &[
            "pbeWithSHA1And40BitRC2-CBC",
            "pbeWithSHA1And3-KeyTripleDES-CBC",
            "MAC: sha1",
        ],
    );
}

#[test]
fn load_reports_a_wrong_password() {
    let pki = Pki::new();
    let err = pkcs12::load(&pki.read("client.p12"), "not the password").expect_err("must fail");
    assert!(matches!(err, Pkcs12Error::WrongPassword), "{err:?}");
    assert_eq!(err.to_string(), "wrong password (MAC check failed)");

    let Some(der) = pki.openssl_server_p12("server.p12", &[]) else {
        return;
    };
    let err = pkcs12::load(&der, "").expect_err("must fail");
    assert!(matches!(err, Pkcs12Error::WrongPassword), "{err:?}");
}

#[test]
fn load_without_a_mac_checks_the_password_by_decrypting() {
    let Some(der) = assert_openssl_archive_loads("nomac.p12", &["-nomac"], &[]) else {
        return;
    };

    let err = pkcs12::load(&der, "not the password").expect_err("must fail");
    assert!(
        matches!(err, Pkcs12Error::DecryptionFailed { .. }),
        "{err:?}"
    );
}

#[test]
fn load_reports_an_archive_without_a_private_key() {
    let pki = Pki::new();
    let mut store = KeyStore::new();
    let ca = pki.certs("ca.pem").remove(0);
    store.add_entry(
        "ca",
        KeyStoreEntry::Certificate(Certificate::from_der(&ca).expect("certificate")),
    );
    let truststore = store.writer(PASSWORD).write().expect("write pkcs12");
    let err = pkcs12::load(&truststore, PASSWORD).expect_err("must fail");
    assert!(matches!(err, Pkcs12Error::NoPrivateKey), "{err:?}");

    let Some(der) = pki.openssl_export("nokeys.p12", &["-nokeys", "-in", &pki.arg("server.pem")])
    else {
        return;
    };
    let err = pkcs12::load(&der, PASSWORD).expect_err("must fail");
    assert!(matches!(err, Pkcs12Error::NoPrivateKey), "{err:?}");
    assert_eq!(err.to_string(), "the archive holds no private key");
}

#[test]
fn load_reports_an_archive_without_a_certificate() {
    let pki = Pki::new();
    let Some(der) = pki.openssl_server_key_p12("nocerts.p12", &[]) else {
        return;
    };
    let err = pkcs12::load(&der, PASSWORD).expect_err("must fail");
    assert!(matches!(err, Pkcs12Error::NoCertificate), "{err:?}");
}

#[test]
fn load_reports_a_key_that_matches_no_certificate() {
    let pki = Pki::new();
    // OpenSSL refuses `-inkey server.key -in client.pem`, but `-nocerts` plus `-certfile`
    // stores an unrelated certificate next to the key.
    let Some(der) = pki.openssl_server_key_p12("nomatch.p12", &["client.pem"]) else {
        return;
    };
    let err = pkcs12::load(&der, PASSWORD).expect_err("must fail");
    assert!(
        matches!(err, Pkcs12Error::NoMatchingCertificate { certificates: 1 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("matches the private key"), "{err}");
}

#[test]
fn load_reports_a_certificate_linked_to_the_wrong_key() {
    let pki = Pki::new();
    let server_key = pki.key("server.key");
    let client = pki.certs("client.pem").remove(0);
    let ca = pki.certs("ca.pem").remove(0);
    let der = keystore_p12(&[(&server_key, &[&client, &ca])]);

    let err = pkcs12::load(&der, PASSWORD).expect_err("must fail");
    match &err {
        Pkcs12Error::KeyCertificateMismatch { subject } => {
            assert!(subject.contains("certgate-dev-client"), "{subject}");
        }
        other => panic!("expected KeyCertificateMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn load_rejects_more_than_one_private_key() {
    let pki = Pki::new();
    let server_key = pki.key("server.key");
    let client_key = pki.key("client.key");
    let server = pki.certs("server.pem").remove(0);
    let client = pki.certs("client.pem").remove(0);
    let der = keystore_p12(&[(&server_key, &[&server]), (&client_key, &[&client])]);

    let err = pkcs12::load(&der, PASSWORD).expect_err("must fail");
    assert!(
        matches!(err, Pkcs12Error::MultiplePrivateKeys { count: 2 }),
        "{err:?}"
    );
}

#[test]
fn load_finds_the_leaf_by_public_key_when_bags_carry_no_key_id() {
    let pki = Pki::new();
    // The CA first and no localKeyId on the certificates: the leaf must be found by its key.
    let Some(der) = pki.openssl_server_key_p12("nokeyid.p12", &["ca.pem", "server.pem"]) else {
        return;
    };
    let loaded = pkcs12::load(&der, PASSWORD).expect("load");
    assert_loads_as(loaded, &pki.certs("server.pem"));
}

/// Exports `name` from server.key and server.pem with the extra `args` and asserts that
/// loading it is refused naming `purpose` and `algorithm`. The error, or `None` when openssl
/// is not installed (outside CI).
fn assert_names_unsupported(
    name: &str,
    args: &[&str],
    purpose: &str,
    algorithm: &str,
) -> Option<Pkcs12Error> {
    let der = Pki::new().openssl_server_p12(name, args)?;
    let err = pkcs12::load(&der, PASSWORD).expect_err("must fail");
    match &err {
        Pkcs12Error::UnsupportedAlgorithm {
            purpose: named_purpose,
            algorithm: named,
        } => {
            assert_eq!(*named_purpose, purpose);
            assert_eq!(named, algorithm);
        }
        other => panic!("expected UnsupportedAlgorithm, got {other:?}"),
    }
    Some(err)
}

#[test]
fn load_names_an_unsupported_cipher() {
    // const-oid's database has no name for camellia: the dotted OID names it.
    let camellia = "1.2.392.200011.61.1.1.1.4";
    let args = ["-keypbe", "camellia-256-cbc"];
    let Some(err) = assert_names_unsupported("camellia.p12", &args, "cipher", camellia) else {
        return;
    };
    assert_eq!(err.to_string(), format!("unsupported cipher {camellia}"));
}

#[test]
fn load_names_an_unsupported_mac_digest() {
    let md5 = "id-md5 (1.2.840.113549.2.5)";
    assert_names_unsupported("md5.p12", &["-macalg", "md5"], "MAC digest", md5);
}

#[test]
fn load_rejects_garbage_without_panicking() {
    let pki = Pki::new();
    let good = pki.read("client.p12");
    let password = pki.p12_password();

    let pem = pki.read("client.pem");
    let inputs: [&[u8]; 6] = [
        b"",
        b"\x30",
        b"\x30\x80\x00\x00",
        b"\x30\x84\xff\xff\xff\xff",
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        &pem,
    ];
    for input in inputs {
        let err = pkcs12::load(input, &password).expect_err("garbage must fail");
        assert!(matches!(err, Pkcs12Error::Malformed { .. }), "{err:?}");
        assert!(!err.to_string().ends_with('.'));
    }

    for len in (0..good.len()).step_by(37) {
        assert!(
            pkcs12::load(&good[..len], &password).is_err(),
            "prefix {len}"
        );
    }
    for index in (0..good.len()).step_by(53) {
        let mut flipped = good.clone();
        flipped[index] ^= 0x5a;
        // A flip may land in an ignored attribute and still load; it must never panic.
        if let Ok((chain, _)) = pkcs12::load(&flipped, &password) {
            assert!(!chain.is_empty());
        }
    }
}

#[test]
fn errors_render_lowercase_without_trailing_period() {
    let errors = [
        Pkcs12Error::WrongPassword,
        Pkcs12Error::NoPrivateKey,
        Pkcs12Error::NoCertificate,
        Pkcs12Error::MultiplePrivateKeys { count: 3 },
        Pkcs12Error::NoMatchingCertificate { certificates: 2 },
        Pkcs12Error::KeyCertificateMismatch {
            subject: "CN=x".into(),
        },
        Pkcs12Error::UnsupportedAlgorithm {
            purpose: "cipher",
            algorithm: "1.2.3".into(),
        },
    ];
    for err in errors {
        let message = err.to_string();
        assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
        assert!(!message.ends_with('.'), "{message}");
    }
}
