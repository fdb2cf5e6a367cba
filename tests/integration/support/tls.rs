//! Real TLS test servers on 127.0.0.1: a throwaway PKI made with rcgen (a CA, a server
//! certificate for `127.0.0.1`/`localhost`, client certificates signed by the CA) and an
//! HTTPS server that serves an axum `Router` over tokio-rustls, optionally requiring client
//! certificates from the CA. Also a plain-HTTP variant.
//!
//! Servers listen on an ephemeral loopback port and stop when the [`TestServer`] is dropped.
//! Nothing here touches any address but 127.0.0.1.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A certificate and its private key, in PEM and DER.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl CertKey {
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }
}

/// A test certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate in PEM, to hand to clients as their trust root.
    pub pem: String,
}

impl TestCa {
    /// A fresh self-signed CA named `name` (ECDSA P-256).
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let pem = cert.pem();
        TestCa { cert, key, pem }
    }

    fn issue(&self, sans: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose) -> CertKey {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A server certificate valid for `127.0.0.1` and `localhost`.
    pub fn server_cert(&self) -> CertKey {
        self.issue(
            vec!["127.0.0.1".into(), "localhost".into()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `cn` (as K3s's `system:admin`).
    pub fn client_cert(&self, cn: &str) -> CertKey {
        self.issue(Vec::new(), cn, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("add CA root");
        roots
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server config presenting `server`. With `client_ca`, the handshake fails unless
/// the client presents a certificate signed by that CA.
pub fn server_config(server: &CertKey, client_ca: Option<&TestCa>) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.root_store()),
                provider(),
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(vec![server.cert_der.clone()], server.key_der())
        .expect("server cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A running server on 127.0.0.1; stops accepting when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    scheme: &'static str,
    task: JoinHandle<()>,
}

impl TestServer {
    /// `https://127.0.0.1:PORT` (or `http://…`), no trailing slash.
    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// `base()` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` over HTTPS with `config` on an ephemeral 127.0.0.1 port. Failed TLS
/// handshakes (e.g. a client without a certificate) just drop that connection.
pub async fn serve_https(config: Arc<rustls::ServerConfig>, router: axum::Router) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TestServer {
        addr,
        scheme: "https",
        task,
    }
}

/// Serves `router` over plain HTTP on an ephemeral 127.0.0.1 port.
pub async fn serve_http(router: axum::Router) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    TestServer {
        addr,
        scheme: "http",
        task,
    }
}
