//! Revocation is checked along the path webpki verified, never along one of certgate's own
//! (docs/revocation.md). A client under an intermediate sends its revoked leaf with decoys:
//! certificates that copy the intermediate's name and public key but are signed by the
//! client's own CA. Each chain shape is refused as `revoked` for every source, at the
//! handshake and, once a revocation is learned later, on an open connection:
//! - shapes: the decoy before the real intermediate; the chain out of order (the root first,
//!   then the decoy, then the intermediate); duplicates of both; a decoy whose signers form a
//!   loop;
//! - sources: `crlFiles` (checked by webpki at the handshake, and by the checker when it runs),
//!   `crlUrls`, CRL distribution points (`crlFromCertificates`) and OCSP (`openssl ocsp`);
//! - controls: the same decoy chains of a leaf nobody revoked are served, so a refusal is the
//!   revocation's and not the chain's;
//! - open connections: a connection made with a decoy chain is closed once a refreshed CRL (from
//!   `crlUrls` or a distribution point) or an OCSP answer reports its leaf revoked (`crlFiles`
//!   only change with a reload, and open connections keep the config they started with);
//! - `allowUntrusted`: a leaf of the trusted CA's intermediate sent without the intermediate
//!   (or with only a decoy of it) is refused as `revocation_unknown` when the app checks that
//!   CA's revocation (`crlFiles`, `crlUrls`), or when the leaf names a source the app asks (its
//!   OCSP responder, its distribution point) or `ocspResponder` is set, while a self-signed
//!   certificate is still forwarded.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::sync::Arc;

use common::revocation::*;
use common::revocation_app::*;
use common::*;
use rcgen::{CertificateParams, Issuer, KeyPair};
use rustls::pki_types::CertificateDer;

/// How the client arranges its chain after the leaf.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// `[leaf, decoy, intermediate]`.
    DecoyFirst,
    /// `[leaf, root, decoy, intermediate]`.
    OutOfOrder,
    /// `[leaf, decoy, decoy, intermediate, intermediate]`.
    Duplicates,
    /// `[leaf, decoy signed by Y, Y signed by Z, Z signed by Y, intermediate]`.
    Loop,
}

const SHAPES: [Shape; 4] = [
    Shape::DecoyFirst,
    Shape::OutOfOrder,
    Shape::Duplicates,
    Shape::Loop,
];

/// The client CA (a root), an intermediate under it, and the decoys a client with a CA of its
/// own can make of that intermediate without its private key.
struct Hierarchy {
    pki: Pki,
    intermediate: Ca,
    /// Same subject and public key as the intermediate, signed by the client's own CA.
    decoy: CertificateDer<'static>,
    /// Same subject and public key as the intermediate, signed by `Y`; `Y` and `Z` sign each
    /// other.
    looped: [CertificateDer<'static>; 3],
}

impl Hierarchy {
    fn new(published: &Published) -> Self {
        let pki = Pki::new();
        let intermediate = intermediate(&pki.client_ca, "shared intermediate", published);
        let attacker = Ca::root("client's own CA");
        let decoy = copy_of(&intermediate, &attacker.params, &attacker.key);

        let y_key = KeyPair::generate().unwrap();
        let z_key = KeyPair::generate().unwrap();
        let y_params = named("loop Y");
        let z_params = named("loop Z");
        let y = y_params
            .signed_by(&y_key, &Issuer::from_params(&z_params, &z_key))
            .unwrap();
        let z = z_params
            .signed_by(&z_key, &Issuer::from_params(&y_params, &y_key))
            .unwrap();
        let looped = [
            copy_of(&intermediate, &y_params, &y_key),
            y.der().clone(),
            z.der().clone(),
        ];
        Self {
            pki,
            intermediate,
            decoy,
            looped,
        }
    }

    /// `leaf`'s chain in `shape`.
    fn chain(&self, leaf: &Leaf, shape: Shape) -> Vec<CertificateDer<'static>> {
        let leaf = leaf.der().clone();
        let real = self.intermediate.der.clone();
        let decoy = self.decoy.clone();
        match shape {
            Shape::DecoyFirst => vec![leaf, decoy, real],
            Shape::OutOfOrder => vec![leaf, self.pki.client_ca.der.clone(), decoy, real],
            Shape::Duplicates => vec![leaf, decoy.clone(), decoy, real.clone(), real],
            Shape::Loop => {
                let [copy, y, z] = self.looped.clone();
                vec![leaf, copy, y, z, real]
            }
        }
    }

    /// A client presenting `leaf` with its chain in `shape`.
    fn options(&self, leaf: &Leaf, shape: Shape) -> ClientOptions {
        ClientOptions::new(&self.pki, HOST).with_identity(Identity {
            chain: self.chain(leaf, shape),
            key: Arc::new(leaf.key_der()),
        })
    }

    /// A leaf of the intermediate for each shape, published at `published`.
    fn leaves(&self, name: &str, published: &Published) -> Vec<(Shape, Leaf)> {
        SHAPES
            .iter()
            .map(|shape| {
                let cn = format!("{name} {shape:?}");
                (*shape, leaf(&self.intermediate, &cn, published))
            })
            .collect()
    }
}

/// CA parameters with a fresh serial and `name` as subject.
fn named(name: &str) -> CertificateParams {
    common::pki::ca_params(name)
}

/// A certificate with `of`'s subject and public key, issued by the CA of `params` and `key`.
fn copy_of(of: &Ca, params: &CertificateParams, key: &KeyPair) -> CertificateDer<'static> {
    let mut copy = of.params.clone();
    copy.serial_number = named("serial").serial_number;
    copy.signed_by(&of.key, &Issuer::from_params(params, key))
        .unwrap()
        .der()
        .clone()
}

/// The decoy chains of each revoked leaf are refused as `revoked`; those of a good leaf are
/// served.
async fn every_shape_is_refused(
    gateway: &Gateway,
    hierarchy: &Hierarchy,
    revoked: &[(Shape, Leaf)],
    good: &Leaf,
) {
    for (shape, leaf) in revoked {
        assert!(
            served(gateway, &hierarchy.options(good, *shape)).await,
            "control: a good leaf with a {shape:?} chain is served"
        );
        let before = refusals(gateway, "revoked").await;
        assert!(
            !served(gateway, &hierarchy.options(leaf, *shape)).await,
            "a revoked leaf with a {shape:?} chain reached the app"
        );
        assert_eq!(
            refusals(gateway, "revoked").await,
            before + 1.0,
            "a revoked leaf with a {shape:?} chain was not refused as revoked"
        );
    }
}

/// PEM CRLs of the intermediate (listing `revoked`) and of the root (listing nothing).
fn crl_files(hierarchy: &Hierarchy, revoked: &[(Shape, Leaf)]) -> [(&'static str, Vec<u8>); 2] {
    let tomorrow = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let listed: Vec<&Leaf> = revoked.iter().map(|(_, leaf)| leaf).collect();
    [
        (
            "int.crl",
            hierarchy.intermediate.crl(&listed, tomorrow).into_bytes(),
        ),
        (
            "root.crl",
            hierarchy.pki.client_ca.crl(&[], tomorrow).into_bytes(),
        ),
    ]
}

/// The serials of `leaves`.
fn serials(leaves: &[(Shape, Leaf)]) -> Vec<&rcgen::SerialNumber> {
    leaves.iter().map(|(_, leaf)| &leaf.serial).collect()
}

/// A gateway trusting `pki`'s client CA whose folder also holds `files`.
async fn gateway_with_files(
    pki: &Pki,
    revocation: serde_json::Value,
    files: &[(&str, Vec<u8>)],
) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    for (name, bytes) in files {
        dir.write(name, bytes);
    }
    Gateway::start(dir, config(echo_upstream().await, revocation)).await
}

// ---- at the handshake ----

async fn decoys_with_crl_files(revocation: serde_json::Value) {
    let hierarchy = Hierarchy::new(&Published::default());
    let revoked = hierarchy.leaves("crl file", &Published::default());
    let good = leaf(&hierarchy.intermediate, "good", &Published::default());
    let files = crl_files(&hierarchy, &revoked);
    let gateway = gateway_with_files(&hierarchy.pki, revocation, &files).await;
    every_shape_is_refused(&gateway, &hierarchy, &revoked, &good).await;
}

#[tokio::test]
async fn decoy_chains_of_a_leaf_on_a_crl_file_are_refused() {
    decoys_with_crl_files(serde_json::json!({ "crlFiles": ["int.crl", "root.crl"] })).await;
}

#[tokio::test]
async fn decoy_chains_of_a_leaf_on_a_crl_file_are_refused_by_the_checker_too() {
    // onUnknown "allow" moves crlFiles from webpki to the checker that runs after the handshake.
    decoys_with_crl_files(serde_json::json!({
        "crlFiles": ["int.crl", "root.crl"],
        "onUnknown": "allow",
    }))
    .await;
}

#[tokio::test]
async fn decoy_chains_of_a_leaf_on_a_fetched_crl_are_refused() {
    let hierarchy = Hierarchy::new(&Published::default());
    let revoked = hierarchy.leaves("crl url", &Published::default());
    let good = leaf(&hierarchy.intermediate, "good", &Published::default());
    let int_crls = crl_server(&hierarchy.intermediate, &serials(&revoked));
    let root_crls = crl_server(&hierarchy.pki.client_ca, &[]);
    let gateway = gateway(
        &hierarchy.pki,
        serde_json::json!({ "crlUrls": [int_crls.url("int.crl"), root_crls.url("root.crl")] }),
    )
    .await;
    every_shape_is_refused(&gateway, &hierarchy, &revoked, &good).await;
}

/// A hierarchy whose certificates name distribution points: the intermediate the root's, its
/// leaves (one per shape, named `name`) the intermediate's. Both CRLs list nothing yet.
struct WithDistributionPoints {
    hierarchy: Hierarchy,
    leaves: Vec<(Shape, Leaf)>,
    /// The intermediate's distribution point, for more leaves.
    at_int: Published,
    int_crls: HttpFixture,
    _root_crls: HttpFixture,
}

fn with_distribution_points(name: &str) -> WithDistributionPoints {
    // The URLs go into the certificates, so the servers start before the CRLs exist.
    let root_crls = HttpFixture::start(Answer::Status(404));
    let int_crls = HttpFixture::start(Answer::Status(404));
    let at_root = Published {
        crl: Some(root_crls.url("root.crl")),
        ocsp: None,
    };
    let at_int = Published {
        crl: Some(int_crls.url("int.crl")),
        ocsp: None,
    };
    let hierarchy = Hierarchy::new(&at_root);
    let leaves = hierarchy.leaves(name, &at_int);
    root_crls.set(Answer::Body(fresh_crl(&hierarchy.pki.client_ca, &[])));
    int_crls.set(Answer::Body(fresh_crl(&hierarchy.intermediate, &[])));
    WithDistributionPoints {
        hierarchy,
        leaves,
        at_int,
        int_crls,
        _root_crls: root_crls,
    }
}

#[tokio::test]
async fn decoy_chains_of_a_leaf_on_its_distribution_points_crl_are_refused() {
    let published = with_distribution_points("distribution point");
    let hierarchy = &published.hierarchy;
    let good = leaf(&hierarchy.intermediate, "good", &published.at_int);
    published.int_crls.set(Answer::Body(fresh_crl(
        &hierarchy.intermediate,
        &serials(&published.leaves),
    )));
    let gateway = gateway(
        &hierarchy.pki,
        serde_json::json!({ "crlFromCertificates": true }),
    )
    .await;
    every_shape_is_refused(&gateway, hierarchy, &published.leaves, &good).await;
}

#[tokio::test]
async fn decoy_chains_of_a_leaf_its_ocsp_responder_reports_revoked_are_refused() {
    let hierarchy = Hierarchy::new(&Published::default());
    let Some(mut responder) = openssl_responder(&hierarchy.intermediate, None, "", &[]) else {
        return;
    };
    let revoked = hierarchy.leaves("ocsp", &Published::default());
    let good = leaf(&hierarchy.intermediate, "good", &Published::default());
    let mut index = index_line(good.der(), "good", false);
    for (shape, leaf) in &revoked {
        index.push_str(&index_line(leaf.der(), &format!("ocsp {shape:?}"), true));
    }
    responder.ocsp.write_index(&index);
    let gateway = gateway(
        &hierarchy.pki,
        serde_json::json!({ "ocsp": "leaf", "ocspResponder": responder.ocsp.url() }),
    )
    .await;
    every_shape_is_refused(&gateway, &hierarchy, &revoked, &good).await;
}

// ---- on an open connection ----

/// Opens a connection of `leaf` with a decoy chain of `shape` and checks it is served.
async fn open(gateway: &Gateway, hierarchy: &Hierarchy, leaf: &Leaf, shape: Shape) -> Connection {
    let mut connection = Connection::open(gateway.addr, &hierarchy.options(leaf, shape))
        .await
        .unwrap();
    let request = connection.get(HOST, "/");
    assert_eq!(connection.send(request).await.unwrap().status, 200);
    connection
}

/// Opens a connection of each leaf with its decoy chain, publishes an intermediate's CRL
/// listing them all, waits until certgate fetched it, and checks that every connection closes.
async fn connections_close_once_listed(
    gateway: &Gateway,
    hierarchy: &Hierarchy,
    leaves: &[(Shape, Leaf)],
    int_crls: &HttpFixture,
) {
    let mut connections = Vec::new();
    for (shape, leaf) in leaves {
        connections.push(open(gateway, hierarchy, leaf, *shape).await);
    }
    let good_fetches = r#"certgate_crl_fetches_total{app="require",outcome="good"}"#;
    let before = metric(&scrape(gateway.admin.unwrap()).await, good_fetches);
    int_crls.set(Answer::Body(fresh_crl(
        &hierarchy.intermediate,
        &serials(leaves),
    )));
    wait_for_metric(gateway, good_fetches, before + 2.0).await;
    for connection in &mut connections {
        wait_until_closed(connection).await;
    }
}

#[tokio::test]
async fn open_connections_with_decoy_chains_close_once_a_crl_refresh_revokes_the_leaf() {
    let hierarchy = Hierarchy::new(&Published::default());
    let leaves = hierarchy.leaves("revoked later", &Published::default());
    let int_crls = crl_server(&hierarchy.intermediate, &[]);
    let root_crls = crl_server(&hierarchy.pki.client_ca, &[]);
    let gateway = gateway(
        &hierarchy.pki,
        serde_json::json!({
            "crlUrls": [int_crls.url("int.crl"), root_crls.url("root.crl")],
            "refreshMs": 1000,
        }),
    )
    .await;
    connections_close_once_listed(&gateway, &hierarchy, &leaves, &int_crls).await;
}

#[tokio::test]
async fn open_connection_with_a_decoy_chain_closes_once_the_responder_reports_the_leaf_revoked() {
    let hierarchy = Hierarchy::new(&Published::default());
    let Some(mut responder) = openssl_responder(&hierarchy.intermediate, None, "", &[]) else {
        return;
    };
    let client = leaf(&hierarchy.intermediate, "ocsp later", &Published::default());
    responder
        .ocsp
        .write_index(&index_line(client.der(), "ocsp later", false));
    let gateway = gateway(
        &hierarchy.pki,
        serde_json::json!({ "ocsp": "leaf", "ocspResponder": responder.ocsp.url() }),
    )
    .await;
    let mut connection = open(&gateway, &hierarchy, &client, Shape::DecoyFirst).await;
    responder
        .ocsp
        .write_index(&index_line(client.der(), "ocsp later", true));
    // A second connection of the same leaf asks the responder (answers without nextUpdate are
    // not kept), learns the revocation, and so refuses the first one too.
    assert_refused(
        &gateway,
        &hierarchy.options(&client, Shape::Loop),
        "revoked",
    )
    .await;
    wait_until_closed(&mut connection).await;
}

// ---- allowUntrusted ----

/// An app trusting the client CA with `allowUntrusted`, whose revocation covers the
/// intermediate through `revocation`.
async fn untrusted_gateway(
    hierarchy: &Hierarchy,
    revocation: serde_json::Value,
    files: &[(&str, Vec<u8>)],
) -> Gateway {
    let dir = TempDir::new();
    hierarchy.pki.write(&dir);
    for (name, bytes) in files {
        dir.write(name, bytes);
    }
    let mut config = config(echo_upstream().await, revocation);
    config["apps"][0]["clientAuth"]["allowUntrusted"] = serde_json::json!(true);
    Gateway::start(dir, config).await
}

/// Under `allowUntrusted`, the revoked leaf sent alone or with a decoy is refused as
/// `revocation_unknown`; a self-signed certificate is still forwarded, and the full chain of
/// the revoked leaf is refused as `revoked`.
async fn leaf_without_its_intermediate_is_refused(
    gateway: &Gateway,
    hierarchy: &Hierarchy,
    revoked: &Leaf,
) {
    let self_signed = Leaf::self_signed(LeafSpec::client("self-signed"));
    let client = |chain: Vec<CertificateDer<'static>>, leaf: &Leaf| {
        ClientOptions::new(&hierarchy.pki, HOST).with_identity(Identity {
            chain,
            key: Arc::new(leaf.key_der()),
        })
    };
    assert!(
        served(gateway, &client(self_signed.chain.clone(), &self_signed)).await,
        "control: allowUntrusted forwards a self-signed certificate"
    );
    assert_refused(gateway, &client(revoked.chain.clone(), revoked), "revoked").await;
    let alone = vec![revoked.der().clone()];
    assert_refused(gateway, &client(alone, revoked), "revocation_unknown").await;
    let with_decoy = vec![revoked.der().clone(), hierarchy.decoy.clone()];
    assert_refused(gateway, &client(with_decoy, revoked), "revocation_unknown").await;
}

#[tokio::test]
async fn allow_untrusted_refuses_a_leaf_sent_without_the_intermediate_whose_crl_is_fetched() {
    let hierarchy = Hierarchy::new(&Published::default());
    let revoked = hierarchy.leaves("untrusted", &Published::default());
    let int_crls = crl_server(&hierarchy.intermediate, &serials(&revoked));
    let root_crls = crl_server(&hierarchy.pki.client_ca, &[]);
    let revocation =
        serde_json::json!({ "crlUrls": [int_crls.url("int.crl"), root_crls.url("root.crl")] });
    let gateway = untrusted_gateway(&hierarchy, revocation, &[]).await;
    leaf_without_its_intermediate_is_refused(&gateway, &hierarchy, &revoked[0].1).await;
}

#[tokio::test]
async fn allow_untrusted_refuses_a_leaf_sent_without_the_intermediate_of_a_crl_file() {
    let hierarchy = Hierarchy::new(&Published::default());
    let revoked = hierarchy.leaves("untrusted", &Published::default());
    let files = crl_files(&hierarchy, &revoked);
    let revocation = serde_json::json!({ "crlFiles": ["int.crl", "root.crl"] });
    let gateway = untrusted_gateway(&hierarchy, revocation, &files).await;
    leaf_without_its_intermediate_is_refused(&gateway, &hierarchy, &revoked[0].1).await;
}

#[tokio::test]
async fn allow_untrusted_refuses_a_leaf_sent_without_the_intermediate_its_ocsp_responder_answers_for()
 {
    let hierarchy = Hierarchy::new(&Published::default());
    let Some(mut responder) = openssl_responder(&hierarchy.intermediate, None, "", &[]) else {
        return;
    };
    let at_responder = Published {
        crl: None,
        ocsp: Some(responder.ocsp.url()),
    };
    let revoked = leaf(&hierarchy.intermediate, "untrusted ocsp", &at_responder);
    responder
        .ocsp
        .write_index(&index_line(revoked.der(), "untrusted ocsp", true));
    let revocation = serde_json::json!({ "ocsp": "leaf" });
    let gateway = untrusted_gateway(&hierarchy, revocation, &[]).await;
    leaf_without_its_intermediate_is_refused(&gateway, &hierarchy, &revoked).await;
}

#[tokio::test]
async fn allow_untrusted_refuses_a_leaf_sent_without_the_intermediate_under_an_ocsp_responder_setting()
 {
    let hierarchy = Hierarchy::new(&Published::default());
    let Some(mut responder) = openssl_responder(&hierarchy.intermediate, None, "", &[]) else {
        return;
    };
    let revoked = leaf(
        &hierarchy.intermediate,
        "untrusted ocsp",
        &Published::default(),
    );
    responder
        .ocsp
        .write_index(&index_line(revoked.der(), "untrusted ocsp", true));
    let revocation = serde_json::json!({ "ocsp": "leaf", "ocspResponder": responder.ocsp.url() });
    let gateway = untrusted_gateway(&hierarchy, revocation, &[]).await;
    leaf_without_its_intermediate_is_refused(&gateway, &hierarchy, &revoked).await;
}

#[tokio::test]
async fn allow_untrusted_refuses_a_leaf_sent_without_the_intermediate_of_its_distribution_point() {
    let published = with_distribution_points("untrusted distribution point");
    let hierarchy = &published.hierarchy;
    published.int_crls.set(Answer::Body(fresh_crl(
        &hierarchy.intermediate,
        &serials(&published.leaves),
    )));
    let revocation = serde_json::json!({ "crlFromCertificates": true });
    let gateway = untrusted_gateway(hierarchy, revocation, &[]).await;
    leaf_without_its_intermediate_is_refused(&gateway, hierarchy, &published.leaves[0].1).await;
}

#[tokio::test]
async fn open_connections_with_decoy_chains_close_once_a_distribution_point_revokes_the_leaf() {
    let published = with_distribution_points("distribution point later");
    let (hierarchy, leaves, int_crls) =
        (&published.hierarchy, &published.leaves, &published.int_crls);
    let gateway = gateway(
        &hierarchy.pki,
        serde_json::json!({ "crlFromCertificates": true, "refreshMs": 1000 }),
    )
    .await;
    connections_close_once_listed(&gateway, hierarchy, leaves, int_crls).await;
}
