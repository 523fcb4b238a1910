//! Transport security and caller identities (`HYPERION_TLS_*`, `HYPERION_JWT_*`,
//! `HYPERION_ACL_FILE`) and where secrets come from (`HYPERION_SECRETS`, `VAULT_*`).
//!
//! The rules across fields live in [`SecurityConfig::validate`] (called by `Config::validate`):
//! plaintext only in development mode and only on loopback; a certificate needs its key; CAs need
//! the node's own certificate; a cluster over TLS needs a CA for its members; a JWKS needs an
//! audience and an issuer.

use std::path::PathBuf;

use super::{ClusterNode, ConfigError, Vars};
use crate::auth::{AuthRules, JwtSettings};
use crate::secret::{SecretName, SecretSource, Secrets, VaultSource, DEFAULT_VAULT_PATH};

pub use crate::auth::jwt::{DEFAULT_LEEWAY_S, LEEWAY_S_MAX};

/// This node's TLS identity: its certificate chain and key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    pub cert_pem: crate::secret::Secret,
    pub key_pem: crate::secret::Secret,
}

/// Transport security and identities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// This node's certificate and key (`HYPERION_TLS_CERT_FILE`, `HYPERION_TLS_KEY_FILE`, or
    /// the `tls-cert`/`tls-key` secrets); `None` serves plaintext (development mode on loopback).
    pub tls_identity: Option<TlsIdentity>,
    /// `HYPERION_TLS_CLIENT_CA_FILE`: client certificates must chain to it (mTLS for every
    /// connection).
    pub client_ca_file: Option<PathBuf>,
    /// `HYPERION_TLS_PEER_CA_FILE`: members' certificates must chain to it (default: the client
    /// CA).
    pub peer_ca_file: Option<PathBuf>,
    /// Bearer tokens (`HYPERION_JWT_JWKS_FILE`, `_AUDIENCE`, `_ISSUER`, `_LEEWAY_S`).
    pub jwt: Option<JwtSettings>,
    /// `HYPERION_ACL_FILE`: who may do what (without it, every authenticated caller may do
    /// everything).
    pub acl_file: Option<PathBuf>,
    /// The admin API keys (the `admin-api-keys` secret: one key per line).
    pub admin_api_keys: Vec<crate::secret::Secret>,
    /// The name of each admin API key, in the same order (for logs and per-key rate limits).
    pub admin_key_names: Vec<String>,
    /// Which identities the services require (derived from the above; the simulator, which has
    /// no TLS, sets them directly).
    pub rules: AuthRules,
    /// `HYPERION_TLS_HANDSHAKE_TIMEOUT_MS`: a TLS handshake must finish within this (default
    /// `server::TLS_HANDSHAKE_TIMEOUT`).
    pub handshake_timeout_ms: Option<u64>,
    /// `HYPERION_CONNECTION_IDLE_TIMEOUT_MS`: a TLS connection that sends nothing for this long
    /// is closed (default `server::CONNECTION_IDLE_TIMEOUT`).
    pub idle_timeout_ms: Option<u64>,
}

/// Longest `HYPERION_TLS_HANDSHAKE_TIMEOUT_MS`: a minute (a slow-loris handshake holds a
/// connection slot this long).
pub const HANDSHAKE_TIMEOUT_MS_MAX: u64 = 60_000;
/// Longest `HYPERION_CONNECTION_IDLE_TIMEOUT_MS`: a day.
pub const IDLE_TIMEOUT_MS_MAX: u64 = 86_400_000;

impl SecurityConfig {
    /// Reads the variables; secrets come from `secrets`.
    pub(super) fn from_vars(vars: &Vars, secrets: &Secrets) -> Result<SecurityConfig, ConfigError> {
        let file = |name: &str| -> Result<Option<PathBuf>, ConfigError> {
            let Some(path) = vars.get(name).map(PathBuf::from) else {
                return Ok(None);
            };
            std::fs::File::open(&path).map_err(|e| {
                ConfigError::new(name, format!("cannot read {}: {e}", path.display()))
            })?;
            Ok(Some(path))
        };
        let tls_identity = match (
            secrets.get(SecretName::TlsCert),
            secrets.get(SecretName::TlsKey),
        ) {
            (Some(cert), Some(key)) => Some(TlsIdentity {
                cert_pem: cert.clone(),
                key_pem: key.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "HYPERION_TLS_KEY_FILE",
                    "is required with HYPERION_TLS_CERT_FILE (the certificate's private key)",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "HYPERION_TLS_CERT_FILE",
                    "is required with HYPERION_TLS_KEY_FILE (the key's certificate)",
                ))
            }
        };
        let client_ca_file = file("HYPERION_TLS_CLIENT_CA_FILE")?;
        let peer_ca_file = file("HYPERION_TLS_PEER_CA_FILE")?;
        let jwt = match file("HYPERION_JWT_JWKS_FILE")? {
            None => None,
            Some(jwks_file) => {
                let required = |name: &str| {
                    vars.get(name).map(str::to_string).ok_or_else(|| {
                        ConfigError::new(
                            name,
                            "is required with HYPERION_JWT_JWKS_FILE (tokens for another \
                             audience or issuer must be refused)",
                        )
                    })
                };
                Some(JwtSettings {
                    jwks_file,
                    audience: required("HYPERION_JWT_AUDIENCE")?,
                    issuer: required("HYPERION_JWT_ISSUER")?,
                    leeway_s: match vars.get("HYPERION_JWT_LEEWAY_S") {
                        Some("0") => 0,
                        _ => vars
                            .positive("HYPERION_JWT_LEEWAY_S", 1, LEEWAY_S_MAX)?
                            .unwrap_or(DEFAULT_LEEWAY_S),
                    },
                })
            }
        };
        let acl_file = file("HYPERION_ACL_FILE")?;
        // One `NAME:KEY` per line: the name goes into logs, the key never does. A line without
        // a name (the earlier format) is named by its position.
        let (admin_key_names, admin_api_keys) = match secrets.get(SecretName::AdminApiKeys) {
            None => (Vec::new(), Vec::new()),
            Some(keys) => std::str::from_utf8(keys.expose())
                .map_err(|_| {
                    ConfigError::new(
                        SecretName::AdminApiKeys.file_variable(),
                        "admin API keys are text, one NAME:KEY per line",
                    )
                })?
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .enumerate()
                .map(|(index, line)| match line.split_once(':') {
                    Some((name, key)) if !name.trim().is_empty() && !key.trim().is_empty() => (
                        name.trim().to_string(),
                        crate::secret::Secret::new(key.trim().as_bytes().to_vec()),
                    ),
                    _ => (
                        format!("key-{}", index + 1),
                        crate::secret::Secret::new(line.as_bytes().to_vec()),
                    ),
                })
                .unzip(),
        };
        let rules = AuthRules {
            require_peer_identity: tls_identity.is_some()
                && (peer_ca_file.is_some() || client_ca_file.is_some()),
            require_client_identity: client_ca_file.is_some() || jwt.is_some(),
        };
        Ok(SecurityConfig {
            tls_identity,
            client_ca_file,
            peer_ca_file,
            jwt,
            acl_file,
            admin_api_keys,
            admin_key_names,
            rules,
            handshake_timeout_ms: vars.positive(
                "HYPERION_TLS_HANDSHAKE_TIMEOUT_MS",
                1,
                HANDSHAKE_TIMEOUT_MS_MAX,
            )?,
            idle_timeout_ms: vars.positive(
                "HYPERION_CONNECTION_IDLE_TIMEOUT_MS",
                1,
                IDLE_TIMEOUT_MS_MAX,
            )?,
        })
    }

    /// The cross-field rules (see the module docs).
    pub(super) fn validate(
        &self,
        listen_addr: std::net::SocketAddr,
        nodes: &[ClusterNode],
        dev_mode: bool,
    ) -> Result<(), ConfigError> {
        let simulated = crate::runtime::NETWORK_IS_SIMULATED;
        let tls = self.tls_identity.is_some();
        if !tls {
            for (variable, set) in [
                ("HYPERION_TLS_CLIENT_CA_FILE", self.client_ca_file.is_some()),
                ("HYPERION_TLS_PEER_CA_FILE", self.peer_ca_file.is_some()),
            ] {
                if set {
                    return Err(ConfigError::new(
                        variable,
                        "needs the node's own certificate: set HYPERION_TLS_CERT_FILE and \
                         HYPERION_TLS_KEY_FILE",
                    ));
                }
            }
        }
        if !tls && !simulated {
            const SET_TLS: &str = "set HYPERION_TLS_CERT_FILE, HYPERION_TLS_KEY_FILE and \
                                   HYPERION_TLS_CLIENT_CA_FILE (plaintext is served only in \
                                   development mode, on loopback)";
            if !listen_addr.ip().is_loopback() {
                return Err(ConfigError::new(
                    "HYPERION_LISTEN_ADDR",
                    format!("{listen_addr} is not a loopback address and TLS is not configured: {SET_TLS}"),
                ));
            }
            if let Some(node) = nodes.iter().find(|node| !is_loopback_host(&node.addr)) {
                return Err(ConfigError::new(
                    "HYPERION_CLUSTER_NODES",
                    format!(
                        "node `{}` at {} is not on loopback and TLS is not configured: {SET_TLS}",
                        node.name, node.addr
                    ),
                ));
            }
            if !dev_mode {
                return Err(ConfigError::new(
                    "HYPERION_DEV_MODE",
                    format!("is false and TLS is not configured: {SET_TLS}"),
                ));
            }
        }
        if tls && nodes.len() > 1 && self.client_ca_file.is_none() && self.peer_ca_file.is_none() {
            return Err(ConfigError::new(
                "HYPERION_TLS_PEER_CA_FILE",
                format!(
                    "a cluster of {} nodes over TLS needs the CA of its members' certificates \
                     (HYPERION_TLS_PEER_CA_FILE, or HYPERION_TLS_CLIENT_CA_FILE for both)",
                    nodes.len()
                ),
            ));
        }
        if tls {
            for node in nodes {
                if rustls_pki_types::DnsName::try_from(node.name.as_str()).is_err() {
                    return Err(ConfigError::new(
                        "HYPERION_CLUSTER_NODES",
                        format!(
                            "node name `{}` is not a DNS name, and a member's certificate names \
                             its node by DNS name",
                            node.name
                        ),
                    ));
                }
            }
        }
        if !simulated {
            if self.rules.require_peer_identity
                && !(tls && (self.peer_ca_file.is_some() || self.client_ca_file.is_some()))
            {
                return Err(ConfigError::new(
                    "HYPERION_TLS_PEER_CA_FILE",
                    "member identities need TLS with a peer CA",
                ));
            }
            if self.rules.require_client_identity
                && self.client_ca_file.is_none()
                && self.jwt.is_none()
            {
                return Err(ConfigError::new(
                    "HYPERION_TLS_CLIENT_CA_FILE",
                    "client identities need a client CA or HYPERION_JWT_JWKS_FILE",
                ));
            }
        }
        for (variable, value, max) in [
            (
                "HYPERION_TLS_HANDSHAKE_TIMEOUT_MS",
                self.handshake_timeout_ms,
                HANDSHAKE_TIMEOUT_MS_MAX,
            ),
            (
                "HYPERION_CONNECTION_IDLE_TIMEOUT_MS",
                self.idle_timeout_ms,
                IDLE_TIMEOUT_MS_MAX,
            ),
        ] {
            if let Some(value) = value.filter(|v| !(1..=max).contains(v)) {
                return Err(ConfigError::new(
                    variable,
                    format!("expected an integer in 1..={max}, got {value}"),
                ));
            }
        }
        if let Some(jwt) = &self.jwt {
            if jwt.leeway_s > LEEWAY_S_MAX {
                return Err(ConfigError::new(
                    "HYPERION_JWT_LEEWAY_S",
                    format!(
                        "expected an integer in 0..={LEEWAY_S_MAX}, got {}",
                        jwt.leeway_s
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether `host:port` names a loopback host (`localhost`, 127.0.0.0/8, ::1).
fn is_loopback_host(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `HYPERION_SECRETS` and the Vault variables.
pub(super) fn secret_source(vars: &Vars) -> Result<SecretSource, ConfigError> {
    match vars
        .get("HYPERION_SECRETS")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("file") => {
            let mut files = std::collections::BTreeMap::new();
            for name in SecretName::ALL {
                if let Some(path) = vars.get(name.file_variable()) {
                    files.insert(name, PathBuf::from(path));
                }
            }
            Ok(SecretSource::Files(files))
        }
        Some("vault") => {
            if vars.get("VAULT_TOKEN").is_some() {
                return Err(ConfigError::new(
                    "VAULT_TOKEN",
                    "secrets never come from environment values: put the token in a file and \
                     set VAULT_TOKEN_FILE",
                ));
            }
            for name in SecretName::ALL {
                if vars.get(name.file_variable()).is_some() {
                    return Err(ConfigError::new(
                        name.file_variable(),
                        format!(
                            "is ignored with HYPERION_SECRETS=vault (the secret comes from \
                             Vault's `{}`); unset it",
                            name.key()
                        ),
                    ));
                }
            }
            let required = |name: &str, what: &str| {
                vars.get(name).map(str::to_string).ok_or_else(|| {
                    ConfigError::new(
                        name,
                        format!("is required with HYPERION_SECRETS=vault ({what})"),
                    )
                })
            };
            let addr = required("VAULT_ADDR", "https://host:port")?;
            if !addr.starts_with("https://") {
                return Err(ConfigError::new(
                    "VAULT_ADDR",
                    format!("`{addr}` must be an https:// URL: secrets never travel in plaintext"),
                ));
            }
            Ok(SecretSource::Vault(VaultSource {
                addr,
                token_file: PathBuf::from(required("VAULT_TOKEN_FILE", "the token's file")?),
                path: vars
                    .get("HYPERION_VAULT_PATH")
                    .unwrap_or(DEFAULT_VAULT_PATH)
                    .trim_matches('/')
                    .to_string(),
                ca_file: PathBuf::from(required(
                    "VAULT_CACERT",
                    "the CA certificates Vault's certificate chains to",
                )?),
            }))
        }
        Some(other) => Err(ConfigError::new(
            "HYPERION_SECRETS",
            format!("expected file or vault, got `{other}`"),
        )),
    }
}
