//! Transport security with rustls: this node's certificate and key, the CAs its callers'
//! certificates must chain to, and the configurations the runtime seam's TLS listener and
//! connectors use. Built in both builds; used by the production build only (the simulator's
//! channels stay plaintext and state identities in metadata instead).
//!
//! - **Server**: this node's certificate (`HYPERION_TLS_CERT_FILE`, `HYPERION_TLS_KEY_FILE`, or
//!   the `tls-cert`/`tls-key` secrets in Vault). Clients are asked for a certificate; the
//!   handshake checks that a presented one is backed by its key, and [`NodeTls::classify`] then
//!   decides, once per connection, what it proves (see [`crate::auth`]): a member (chains to the
//!   peer CA and names exactly one node of `HYPERION_CLUSTER_NODES`), a client (chains to
//!   `HYPERION_TLS_CLIENT_CA_FILE`), or nothing (rejected, with the reason). Refusing at the
//!   request instead of the handshake gives every refused caller a gRPC status and a message
//!   naming what to fix; a rejected certificate is trusted with nothing.
//! - **Peers**: node-to-node channels use mTLS with the node's own certificate as client
//!   certificate, and verify that the dialed node's certificate names it (its node name).
//! - **Rotation**: [`NodeTls::reload`] replaces the certificate, key and CAs whole, or keeps
//!   the old ones and reports why; established connections keep theirs.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::auth::PresentedCertificate;
use crate::reload::Reloadable;
use crate::runtime::{ChannelSecurity, ListenerSecurity, NodeClock};
use crate::secret::Secret;

/// A TLS file or secret that cannot be used: the variable at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct TlsError {
    pub variable: &'static str,
    pub problem: String,
}

fn tls_error(variable: &'static str, problem: impl Into<String>) -> TlsError {
    TlsError {
        variable,
        problem: problem.into(),
    }
}

/// The PEM inputs of a node's TLS: its identity and the CAs.
#[derive(Clone)]
pub struct TlsMaterial {
    /// This node's certificate chain (leaf first).
    pub cert_pem: Secret,
    /// Its private key.
    pub key_pem: Secret,
    /// `HYPERION_TLS_CLIENT_CA_FILE`: the CA of client certificates.
    pub client_ca_pem: Option<Vec<u8>>,
    /// `HYPERION_TLS_PEER_CA_FILE` (default: the client CA): the CA of members' certificates.
    pub peer_ca_pem: Option<Vec<u8>>,
}

/// The crypto provider everything here uses (ring, as the rest of the tree).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates from PEM; at least one.
pub fn certificates(
    pem: &[u8],
    variable: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(variable, format!("not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(tls_error(variable, "holds no PEM certificate"));
    }
    Ok(certificates)
}

/// A private key from PEM (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(
    pem: &Secret,
    variable: &'static str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.expose())
        .map_err(|_| tls_error(variable, "holds no PEM private key"))
}

/// A root store from PEM CA certificates.
pub fn roots(pem: &[u8], variable: &'static str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for certificate in certificates(pem, variable)? {
        store
            .add(certificate)
            .map_err(|e| tls_error(variable, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// A signing identity from a certificate chain and its key, checked to belong together.
pub fn certified_key(
    cert_pem: &Secret,
    key_pem: &Secret,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates(cert_pem.expose(), "HYPERION_TLS_CERT_FILE")?;
    let key = private_key(key_pem, "HYPERION_TLS_KEY_FILE")?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| tls_error("HYPERION_TLS_KEY_FILE", format!("unusable key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        tls_error(
            "HYPERION_TLS_KEY_FILE",
            "the key does not belong to the certificate in HYPERION_TLS_CERT_FILE",
        )
    })?;
    Ok(Arc::new(certified))
}

/// What reloads together.
struct TlsState {
    identity: Arc<CertifiedKey>,
    /// Verifies members' certificates (as clients of this node).
    peer_clients: Option<Arc<dyn ClientCertVerifier>>,
    /// Verifies the nodes this node dials.
    peer_servers: Option<Arc<dyn ServerCertVerifier>>,
    /// Verifies client certificates.
    clients: Option<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("peer_ca", &self.peer_clients.is_some())
            .field("client_ca", &self.clients.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsState {
    fn load(material: &TlsMaterial, provider: &Arc<CryptoProvider>) -> Result<TlsState, TlsError> {
        let identity = certified_key(&material.cert_pem, &material.key_pem, provider)?;
        let client_verifier = |pem: &[u8],
                               variable|
         -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
            WebPkiClientVerifier::builder_with_provider(roots(pem, variable)?, Arc::clone(provider))
                .build()
                .map_err(|e| tls_error(variable, e.to_string()))
        };
        let (peer_clients, peer_servers) = match (&material.peer_ca_pem, &material.client_ca_pem) {
            (Some(pem), _) => (
                Some(client_verifier(pem, "HYPERION_TLS_PEER_CA_FILE")?),
                Some(server_verifier(pem, "HYPERION_TLS_PEER_CA_FILE", provider)?),
            ),
            (None, Some(pem)) => (
                Some(client_verifier(pem, "HYPERION_TLS_CLIENT_CA_FILE")?),
                Some(server_verifier(
                    pem,
                    "HYPERION_TLS_CLIENT_CA_FILE",
                    provider,
                )?),
            ),
            (None, None) => (None, None),
        };
        let clients = match &material.client_ca_pem {
            Some(pem) => Some(client_verifier(pem, "HYPERION_TLS_CLIENT_CA_FILE")?),
            None => None,
        };
        Ok(TlsState {
            identity,
            peer_clients,
            peer_servers,
            clients,
        })
    }
}

fn server_verifier(
    pem: &[u8],
    variable: &'static str,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots(pem, variable)?,
        Arc::clone(provider),
    )
    .build()
    .map_err(|e| tls_error(variable, e.to_string()))?;
    Ok(verifier)
}

/// A node's TLS: the listener's and the peer channels' configurations over reloadable state.
pub struct NodeTls {
    state: Arc<Reloadable<TlsState>>,
    members: Arc<Vec<String>>,
    provider: Arc<CryptoProvider>,
    clock: NodeClock,
    server: Arc<rustls::ServerConfig>,
    peers: Option<Arc<rustls::ClientConfig>>,
}

impl NodeTls {
    /// Loads `material` for a node of a cluster whose members are `members`.
    pub fn new(
        material: &TlsMaterial,
        members: Vec<String>,
        clock: NodeClock,
    ) -> Result<NodeTls, TlsError> {
        let provider = provider();
        let state = Arc::new(Reloadable::new(TlsState::load(material, &provider)?));
        let time = Arc::new(NodeTime(clock.clone()));
        let mut server =
            rustls::ServerConfig::builder_with_details(Arc::clone(&provider), time.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| tls_error("HYPERION_TLS_CERT_FILE", e.to_string()))?
                .with_client_cert_verifier(Arc::new(AskForCertificate {
                    provider: Arc::clone(&provider),
                }))
                .with_cert_resolver(Arc::new(CurrentIdentity(Arc::clone(&state))));
        server.alpn_protocols = vec![b"h2".to_vec()];
        let peers = match state.get().peer_servers {
            Some(_) => {
                let mut peers =
                    rustls::ClientConfig::builder_with_details(Arc::clone(&provider), time)
                        .with_safe_default_protocol_versions()
                        .map_err(|e| tls_error("HYPERION_TLS_PEER_CA_FILE", e.to_string()))?
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(PeerServers(Arc::clone(&state))))
                        .with_client_cert_resolver(Arc::new(CurrentIdentity(Arc::clone(&state))));
                peers.alpn_protocols = vec![b"h2".to_vec()];
                Some(Arc::new(peers))
            }
            None => None,
        };
        Ok(NodeTls {
            state,
            members: Arc::new(members),
            provider,
            clock,
            server: Arc::new(server),
            peers,
        })
    }

    /// Replaces the certificate, key and CAs with `material`, or keeps the current ones and
    /// says why. Connections already made keep what they were made with.
    pub fn reload(&self, material: &TlsMaterial) -> Result<(), TlsError> {
        let state = TlsState::load(material, &self.provider)?;
        if state.peer_servers.is_some() != self.peers.is_some() {
            return Err(tls_error(
                "HYPERION_TLS_PEER_CA_FILE",
                "a reload cannot add or remove the peer CA; restart the node for that",
            ));
        }
        self.state.set(state);
        Ok(())
    }

    /// What a client's certificate chain proves (see the module docs).
    pub fn classify(&self, chain: &[CertificateDer<'static>]) -> PresentedCertificate {
        classify(&self.state.get(), &self.members, chain, self.now())
    }

    fn now(&self) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_millis(self.clock.now_ms()))
    }

    /// The listener's security (the seam's TLS listener).
    pub fn listener(self: &Arc<NodeTls>) -> ListenerSecurity {
        let tls = Arc::clone(self);
        ListenerSecurity {
            tls: Arc::clone(&self.server),
            classify: Arc::new(move |chain| {
                let classified: Arc<dyn std::any::Any + Send + Sync> =
                    Arc::new(tls.classify(chain));
                Some(classified)
            }),
        }
    }

    /// The security of a channel to member `name` (mTLS, its certificate must name it); `None`
    /// when no peer CA is configured.
    pub fn peer_channel(&self, name: &str) -> Option<ChannelSecurity> {
        let server_name = ServerName::try_from(name.to_string()).ok()?;
        Some(ChannelSecurity {
            tls: Arc::clone(self.peers.as_ref()?),
            server_name,
        })
    }
}

fn classify(
    state: &TlsState,
    members: &[String],
    chain: &[CertificateDer<'static>],
    now: UnixTime,
) -> PresentedCertificate {
    let rejected = |reason: String| PresentedCertificate::Rejected { reason };
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return rejected("an empty certificate chain".to_string());
    };
    let names: Vec<String> = match webpki::EndEntityCert::try_from(end_entity) {
        Ok(certificate) => certificate.valid_dns_names().map(str::to_string).collect(),
        Err(e) => return rejected(format!("the certificate does not parse: {e}")),
    };
    let mut from_peer_ca = false;
    let mut why = None;
    if let Some(peers) = &state.peer_clients {
        match peers.verify_client_cert(end_entity, intermediates, now) {
            Ok(_) => {
                // Exact names only: a wildcard never names a member.
                let named: Vec<&String> = members
                    .iter()
                    .filter(|member| names.iter().any(|name| name.eq_ignore_ascii_case(member)))
                    .collect();
                match named.as_slice() {
                    [member] => {
                        return PresentedCertificate::Member {
                            name: (*member).clone(),
                        }
                    }
                    [] => from_peer_ca = true,
                    _ => return rejected("it names several members".to_string()),
                }
            }
            Err(e) => why = Some(format!("not valid for HYPERION_TLS_PEER_CA_FILE: {e}")),
        }
    }
    let client_name = || match names.first() {
        Some(name) => PresentedCertificate::Client { name: name.clone() },
        None => rejected("it names no DNS name (subjectAltName)".to_string()),
    };
    match &state.clients {
        Some(clients) => match clients.verify_client_cert(end_entity, intermediates, now) {
            Ok(_) => client_name(),
            Err(e) => rejected(format!("not valid for HYPERION_TLS_CLIENT_CA_FILE: {e}")),
        },
        None if from_peer_ca => rejected(
            "it is from HYPERION_TLS_PEER_CA_FILE but names no member of HYPERION_CLUSTER_NODES"
                .to_string(),
        ),
        None => rejected(why.unwrap_or_else(|| "no CA is configured for clients".to_string())),
    }
}

/// rustls reads the node's clock, like everything else.
#[derive(Debug)]
struct NodeTime(NodeClock);

impl rustls::time_provider::TimeProvider for NodeTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(
            std::time::Duration::from_millis(self.0.now_ms()),
        ))
    }
}

/// The handshake asks every client for a certificate and checks that a presented one is backed
/// by its key (the signature over the handshake); what the chain proves is
/// [`NodeTls::classify`]'s to decide, so a refusal can be a gRPC status.
#[derive(Debug)]
struct AskForCertificate {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AskForCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// This node's current certificate, as a server and as a client of its peers.
#[derive(Debug)]
struct CurrentIdentity(Arc<Reloadable<TlsState>>);

impl ResolvesServerCert for CurrentIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.get().identity))
    }
}

impl ResolvesClientCert for CurrentIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.get().identity))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies a dialed member against the current peer CA and its node name.
#[derive(Debug)]
struct PeerServers(Arc<Reloadable<TlsState>>);

impl PeerServers {
    fn current(&self) -> Result<Arc<dyn ServerCertVerifier>, rustls::Error> {
        self.0
            .get()
            .peer_servers
            .clone()
            .ok_or_else(|| rustls::Error::General("no peer CA".to_string()))
    }
}

impl ServerCertVerifier for PeerServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.current()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// A client configuration for HTTPS (the Vault provider): servers verified against the CA
/// certificates in `ca_file`.
pub fn https_client_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, TlsError> {
    let pem = std::fs::read(ca_file)
        .map_err(|e| tls_error("VAULT_CACERT", format!("cannot read: {e}")))?;
    let roots = roots(&pem, "VAULT_CACERT")?;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("VAULT_CACERT", e.to_string()))
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
}

/// A client's TLS (the Rust client, `hyperion-cli`): the CA the servers' certificates must chain
/// to, and optionally a client certificate.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&Secret, &Secret)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = roots(ca_pem, "HYPERION_TLS_CA_FILE")?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("HYPERION_TLS_CA_FILE", e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                certificates(cert.expose(), "HYPERION_TLS_CLIENT_CERT_FILE")?,
                private_key(key, "HYPERION_TLS_CLIENT_KEY_FILE")?,
            )
            .map_err(|e| tls_error("HYPERION_TLS_CLIENT_KEY_FILE", e.to_string()))?,
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
