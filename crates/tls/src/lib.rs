//! TLS for every domicile listener and client (decision 0007).
//!
//! - [`certs`] makes the development CA and a certificate per [`Role`].
//! - [`RoleTls::load`] reads a role's certificate, key and the cluster CA from such a folder and
//!   builds what that role serves with ([`ServerTransport`]) and calls others with
//!   ([`ClientTransport`]): region nodes require a client certificate from the cluster CA on
//!   their whole listener, the control plane accepts one (its `/internal` routes require it), the
//!   gateway serves clients without one. Every client trusts the cluster CA alone and presents
//!   its role's certificate.
//! - Plaintext exists only as the explicit `InsecurePlaintext` variants.
//!
//! Every config uses the aws-lc-rs provider explicitly (no process-wide default is needed) and
//! offers ALPN `h2` and `http/1.1`.

#![deny(clippy::unwrap_used)]

pub mod certs;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

pub use rustls;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} already holds a CA (ca.pem); remove the folder to make a new one", .0.display())]
    Exists(PathBuf),
    #[error("make certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A role in the cluster; each has its own certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The control plane.
    Control,
    /// A gateway (serves clients; calls the control plane and region nodes).
    Gateway,
    /// A region node.
    Region,
    /// Tools that call cluster members directly (benchmarks, the demo's checker, tests).
    Client,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Control, Role::Gateway, Role::Region, Role::Client];

    pub fn name(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Gateway => "gateway",
            Role::Region => "region",
            Role::Client => "client",
        }
    }

    /// Whom the role's listener lets in at the TLS layer.
    pub fn client_auth(self) -> ClientAuth {
        match self {
            // Every caller of a region node is a cluster member.
            Role::Region | Role::Client => ClientAuth::Required,
            // The admin API is reached with the admin credential (no certificate); `/internal`
            // routes check for a verified one.
            Role::Control => ClientAuth::Optional,
            // Clients authenticate with tokens.
            Role::Gateway => ClientAuth::None,
        }
    }
}

/// Whether a listener asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// None is asked for.
    None,
    /// One is asked for; a connection without one is accepted, one from another CA is not.
    Optional,
    /// A connection without a certificate from the cluster CA is refused in the handshake.
    Required,
}

/// What a listener serves with.
#[derive(Clone)]
pub enum ServerTransport {
    Tls(Arc<ServerConfig>),
    /// No transport security: every peer counts as a cluster member. Only where asked for by name.
    InsecurePlaintext,
}

/// What a client calls cluster members with.
#[derive(Clone)]
pub enum ClientTransport {
    Tls(Arc<ClientConfig>),
    /// `http://` URLs only (an `https://` one fails: nothing is trusted).
    InsecurePlaintext,
}

/// The HTTP versions a client offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2`, then `http/1.1`: one multiplexed connection per peer.
    H2AndHttp1,
    /// `http/1.1` only: a connection per concurrent request (simulated independent clients).
    Http1,
    /// `h2` only: a server that cannot speak HTTP/2 fails the handshake instead of quietly
    /// serving HTTP/1.1 (the gateway's `--node-http http2`).
    H2Only,
}

impl ClientTransport {
    /// The rustls config to give an HTTP client, offering `alpn`. For plaintext, a config that
    /// trusts nothing, so an `https://` URL fails instead of being trusted.
    pub fn rustls_config(&self, alpn: Alpn) -> ClientConfig {
        let mut config = match self {
            ClientTransport::Tls(c) => c.as_ref().clone(),
            ClientTransport::InsecurePlaintext => {
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    // Nothing input can change: the provider supports its default versions.
                    .expect("aws-lc-rs supports the default TLS versions")
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth()
            }
        };
        config.alpn_protocols = match alpn {
            Alpn::H2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::H2Only => vec![b"h2".to_vec()],
        };
        config
    }

    /// The URL scheme to reach a listener of the same cluster with.
    pub fn scheme(&self) -> &'static str {
        match self {
            ClientTransport::Tls(_) => "https",
            ClientTransport::InsecurePlaintext => "http",
        }
    }
}

impl ServerTransport {
    /// The URL scheme this listener answers on.
    pub fn scheme(&self) -> &'static str {
        match self {
            ServerTransport::Tls(_) => "https",
            ServerTransport::InsecurePlaintext => "http",
        }
    }
}

/// What one role serves with and calls others with.
#[derive(Clone)]
pub struct RoleTls {
    pub server: ServerTransport,
    pub client: ClientTransport,
}

impl RoleTls {
    /// Reads `role`'s certificate and key and the cluster CA from `dir` (a `certs init` folder).
    pub fn load(dir: &Path, role: Role) -> Result<Self, TlsError> {
        let roots = Arc::new(load_roots(&dir.join(certs::CA_CERT))?);
        let chain = load_certs(&certs::cert_file(dir, role))?;
        let key_path = certs::key_file(dir, role);
        let key = load_key(&key_path)?;
        let server = server_config(&roots, chain.clone(), key.clone_key(), role.client_auth())
            .map_err(|e| TlsError::Parse {
                path: key_path.clone(),
                message: e.to_string(),
            })?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Parse {
                path: key_path,
                message: e.to_string(),
            })?;
        Ok(Self {
            server: ServerTransport::Tls(server),
            client: ClientTransport::Tls(Arc::new(client)),
        })
    }

    /// Plaintext both ways, by name.
    pub fn insecure_plaintext() -> Self {
        Self {
            server: ServerTransport::InsecurePlaintext,
            client: ClientTransport::InsecurePlaintext,
        }
    }
}

/// A client outside the cluster (an operator's CLI, a user's app): trusts the CA in `ca_file`
/// and presents no certificate.
pub fn trust_ca(ca_file: &Path) -> Result<ClientTransport, TlsError> {
    let roots = load_roots(ca_file)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(ClientTransport::Tls(Arc::new(config)))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(
    roots: &Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let verifier = || WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
    let builder = match auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional => {
            builder.with_client_cert_verifier(verifier().allow_unauthenticated().build()?)
        }
        ClientAuth::Required => builder.with_client_cert_verifier(verifier().build()?),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::Parse {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse_error(path, e))?;
    if certs.is_empty() {
        return Err(parse_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| parse_error(path, e))
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| parse_error(path, e))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load_every_role() {
        let dir = tempfile::tempdir().expect("tempdir");
        certs::init(dir.path()).expect("init");
        for role in Role::ALL {
            let tls = RoleTls::load(dir.path(), role).expect("load");
            assert_eq!(tls.server.scheme(), "https");
            assert_eq!(tls.client.scheme(), "https");
        }
        trust_ca(&dir.path().join(certs::CA_CERT)).expect("trust");
        // A second init would replace the CA under everyone's feet.
        assert!(matches!(certs::init(dir.path()), Err(TlsError::Exists(_))));
        assert!(!certs::ensure(dir.path()).expect("ensure"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(certs::CA_KEY))
            .expect("ca.key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_missing_or_bad_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = RoleTls::load(dir.path(), Role::Region)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("ca.pem"), "{e}");
        certs::init(dir.path()).expect("init");
        std::fs::write(certs::key_file(dir.path(), Role::Region), "not a key").expect("write");
        let e = RoleTls::load(dir.path(), Role::Region)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("region.key"), "{e}");
    }
}
