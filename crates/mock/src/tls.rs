//! HTTPS for vt-mock (`--tls`): a certificate authority and a server certificate made when
//! the server starts, the way clients meet TLS in a SOC (behind TLS inspection, a corporate
//! CA they must be told about), and the broken certificates a client must refuse.
//!
//! The CA is written out (PEM) for the client under test to trust (`vtbulk --ca-cert`); the
//! server presents its certificate and the CA's. Keys are ECDSA P-256 made by rcgen on
//! aws-lc-rs (the TLS stack's own provider: no second crypto library).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What is wrong with the server certificate, on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flaw {
    /// A good certificate for `127.0.0.1`, `::1` and `localhost`.
    #[default]
    None,
    /// Valid for those names, but expired in 2020.
    Expired,
    /// Current, but for `www.example.com` only.
    WrongHost,
}

/// The server's TLS setup and the CA that signed its certificate.
#[derive(Clone)]
pub struct MockTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    /// The CA certificate (PEM): what a client must trust.
    pub ca_pem: String,
}

impl std::fmt::Debug for MockTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockTls").finish_non_exhaustive()
    }
}

impl MockTls {
    /// A fresh CA and a server certificate signed by it, with `flaw`.
    pub fn generate(flaw: Flaw) -> Result<MockTls, String> {
        let err = |e: rcgen::Error| format!("failed to make a certificate: {e}");
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "vt-mock test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca, ca_key);
        let names: Vec<String> = match flaw {
            Flaw::WrongHost => vec!["www.example.com".into()],
            _ => vec!["127.0.0.1".into(), "::1".into(), "localhost".into()],
        };
        let mut server = CertificateParams::new(names).map_err(err)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "vt-mock");
        if flaw == Flaw::Expired {
            server.not_before = rcgen::date_time_ymd(2019, 1, 1);
            server.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let server_key = KeyPair::generate().map_err(err)?;
        let server_cert = server.signed_by(&server_key, &issuer).map_err(err)?;
        let chain: Vec<CertificateDer<'static>> =
            vec![server_cert.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("failed to set up TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("failed to set up TLS: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(MockTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            ca_pem: ca_cert.pem(),
        })
    }
}
