//! A host's TLS identity, loaded from the file `cluster::issue` writes, and the
//! rustls configurations built from it: TLS 1.3 only, ALPN `shoal/1`, the ring
//! provider, and the cluster CA as the only root on both sides, so a peer without a
//! certificate from this cluster can neither connect nor be connected to.

use crate::error::{IoAt, NetError};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, client::WebPkiServerVerifier};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;

/// The ALPN protocol every shoal connection negotiates.
pub const ALPN: &[u8] = b"shoal/1";

/// A host's TLS identity: its certificate and key, and the cluster CA it trusts.
#[derive(Clone)]
pub struct Identity {
    /// The host the certificate names (its first SAN).
    pub host: String,
    /// The datacenter recorded in the certificate (its subject OU).
    pub dc: String,
    server: Arc<QuicServerConfig>,
    client: Arc<QuicClientConfig>,
}

impl fmt::Debug for Identity {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("host", &self.host)
            .field("dc", &self.dc)
            .finish_non_exhaustive()
    }
}

/// Who a verified peer certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerName {
    pub host: String,
    pub dc: String,
}

impl Identity {
    /// Loads an identity file: the host certificate first, its private key, then the
    /// CA certificate(s). Checks that the certificate chains to the CA, is valid now,
    /// and matches the key, so a bad file fails here rather than at the first handshake.
    pub fn load(path: &Path) -> Result<Identity, NetError> {
        let bytes = std::fs::read(path).at(path)?;
        let bad = |reason: String| NetError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        let mut certs = Vec::new();
        let mut key = None;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
            let (kind, der) = section.map_err(|e| bad(format!("bad PEM: {e}")))?;
            match kind {
                SectionKind::Certificate => certs.push(CertificateDer::from(der)),
                SectionKind::PrivateKey
                | SectionKind::EcPrivateKey
                | SectionKind::RsaPrivateKey => {
                    if key.is_some() {
                        return Err(bad("more than one private key".into()));
                    }
                    key = PrivateKeyDer::from_pem(kind, der);
                }
                _ => {}
            }
        }
        let key = key.ok_or_else(|| bad("no private key".into()))?;
        if certs.len() < 2 {
            return Err(bad(
                "expected the host certificate followed by the CA certificate".into(),
            ));
        }
        let cas = certs.split_off(1);
        let leaf = certs.remove(0);
        let name = cert_names(&leaf).map_err(|e| bad(format!("host certificate: {e}")))?;

        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| bad(format!("CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let provider = provider();

        let server_name = ServerName::try_from(name.host.clone())
            .map_err(|e| bad(format!("host name {:?}: {e}", name.host)))?;
        let now = UnixTime::now();
        // Check the certificate as a peer will: as a server for its own name, and as a client.
        WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| bad(format!("CA certificate: {e}")))?
            .verify_server_cert(&leaf, &[], &server_name, &[], now)
            .map_err(|e| bad(format!("host certificate does not verify as a server: {e}")))?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| bad(format!("CA certificate: {e}")))?;
        client_verifier
            .verify_client_cert(&leaf, &[], now)
            .map_err(|e| bad(format!("host certificate does not verify as a client: {e}")))?;

        let chain = vec![leaf];
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| bad(format!("certificate and key: {e}")))?;
        server.alpn_protocols = vec![ALPN.to_vec()];

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad(format!("certificate and key: {e}")))?;
        client.alpn_protocols = vec![ALPN.to_vec()];

        Ok(Identity {
            host: name.host,
            dc: name.dc,
            server: Arc::new(QuicServerConfig::try_from(server).map_err(tls)?),
            client: Arc::new(QuicClientConfig::try_from(client).map_err(tls)?),
        })
    }

    pub(crate) fn server_crypto(&self) -> Arc<QuicServerConfig> {
        self.server.clone()
    }

    pub(crate) fn client_crypto(&self) -> Arc<QuicClientConfig> {
        self.client.clone()
    }
}

/// The crypto provider, named explicitly rather than taken from a process default, so
/// shoal never depends on which provider some other crate installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls(e: impl fmt::Display) -> NetError {
    NetError::Tls(e.to_string())
}

/// The host and datacenter the peer's certificate names. The handshake has already
/// checked that the certificate chains to the cluster CA; callers compare the name
/// with what the peer claims (e.g. in its Hello).
pub fn peer_name(conn: &quinn::Connection) -> Result<PeerName, NetError> {
    let any = conn
        .peer_identity()
        .ok_or_else(|| NetError::PeerCert("none presented".into()))?;
    let certs = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| NetError::PeerCert("not an X.509 chain".into()))?;
    let leaf = certs
        .first()
        .ok_or_else(|| NetError::PeerCert("empty chain".into()))?;
    cert_names(leaf).map_err(NetError::PeerCert)
}

/// Reads the host (first DNS or IP SAN) and datacenter (subject OU) from a certificate.
fn cert_names(der: &CertificateDer<'_>) -> Result<PeerName, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unparsable: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subject alternative names: {e}"))?
        .ok_or("no subject alternative name")?;
    let host = san
        .value
        .general_names
        .iter()
        .find_map(|g| match g {
            GeneralName::DNSName(s) => Some(s.to_string()),
            GeneralName::IPAddress(b) => ip_from(b).map(|ip| ip.to_string()),
            _ => None,
        })
        .ok_or("no DNS name or IP address among the subject alternative names")?;
    let dc = cert
        .subject()
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or("no datacenter (subject OU)")?
        .to_string();
    Ok(PeerName { host, dc })
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b)
            .ok()
            .map(|a| Ipv4Addr::from(a).into()),
        16 => <[u8; 16]>::try_from(b)
            .ok()
            .map(|a| Ipv6Addr::from(a).into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_reads_names_and_rejects_broken_files() {
        let d = tempfile::tempdir().unwrap();
        crate::cluster::init(d.path()).unwrap();
        let out = d.path().join("h.pem");
        crate::cluster::issue(d.path(), "h1.example", "eqiad", &out).unwrap();
        let id = Identity::load(&out).unwrap();
        assert_eq!((id.host.as_str(), id.dc.as_str()), ("h1.example", "eqiad"));
        assert!(!format!("{id:?}").contains("PRIVATE"));

        let ip = d.path().join("ip.pem");
        crate::cluster::issue(d.path(), "127.0.0.1", "dc2", &ip).unwrap();
        assert_eq!(Identity::load(&ip).unwrap().host, "127.0.0.1");

        // The CA certificate alone: no key, no host certificate.
        let e = Identity::load(&d.path().join("ca.crt")).unwrap_err();
        assert!(e.to_string().contains("ca.crt"), "{e}");
        // A host certificate paired with another cluster's CA does not verify.
        let other = tempfile::tempdir().unwrap();
        crate::cluster::init(other.path()).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let cut = text.rfind("-----BEGIN CERTIFICATE-----").unwrap();
        let foreign_ca = std::fs::read_to_string(other.path().join("ca.crt")).unwrap();
        let mixed = d.path().join("mixed.pem");
        std::fs::write(&mixed, format!("{}{}", &text[..cut], foreign_ca)).unwrap();
        assert!(matches!(
            Identity::load(&mixed),
            Err(NetError::BadFile { .. })
        ));
        let e = Identity::load(&d.path().join("missing.pem")).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
