//! A node's security, set up from its configuration: its TLS (certificate, key, CAs), the
//! [`Authority`] that decides who may call what, and the reloads of what can change while it
//! runs (certificates and keys on SIGHUP and on file change, the ACL and the JWKS likewise).

use std::sync::Arc;

use crate::auth::{Acl, Authority, JwtKeys};
use crate::config::Config;
use crate::reload::{Reloadable, Watched};
use crate::runtime::NodeClock;
use crate::secret::{SecretName, SecretSource};
use crate::tls::{NodeTls, TlsMaterial};

/// Why a node's security could not be set up: the variable at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct SecurityError {
    pub variable: String,
    pub problem: String,
}

fn error(variable: impl Into<String>, problem: impl Into<String>) -> SecurityError {
    SecurityError {
        variable: variable.into(),
        problem: problem.into(),
    }
}

/// A node's TLS (if configured), its authority, and what reloads.
pub struct NodeSecurity {
    pub tls: Option<Arc<NodeTls>>,
    pub authority: Arc<Authority>,
    pub watched: Vec<Watched>,
}

fn read_ca(
    path: &Option<std::path::PathBuf>,
    variable: &str,
) -> Result<Option<Vec<u8>>, SecurityError> {
    match path {
        None => Ok(None),
        Some(path) => std::fs::read(path)
            .map(Some)
            .map_err(|e| error(variable, format!("cannot read {}: {e}", path.display()))),
    }
}

/// The TLS inputs: this node's certificate and key (from the secret source), the CA files.
async fn material(
    source: &SecretSource,
    security: &crate::config::SecurityConfig,
    fetch: bool,
) -> Result<Option<TlsMaterial>, SecurityError> {
    let Some(identity) = &security.tls_identity else {
        return Ok(None);
    };
    let (cert_pem, key_pem) = if fetch {
        let fetch = |name: SecretName| async move {
            source
                .fetch(name)
                .await
                .map_err(|e| error(e.origin, e.problem))?
                .ok_or_else(|| error(name.file_variable(), "is gone"))
        };
        (
            fetch(SecretName::TlsCert).await?,
            fetch(SecretName::TlsKey).await?,
        )
    } else {
        (identity.cert_pem.clone(), identity.key_pem.clone())
    };
    Ok(Some(TlsMaterial {
        cert_pem,
        key_pem,
        client_ca_pem: read_ca(&security.client_ca_file, "HYPERION_TLS_CLIENT_CA_FILE")?,
        peer_ca_pem: read_ca(&security.peer_ca_file, "HYPERION_TLS_PEER_CA_FILE")?,
    }))
}

/// Sets up the node's security from `config` (see the module docs).
pub async fn node_security(
    config: &Config,
    clock: &NodeClock,
) -> Result<NodeSecurity, SecurityError> {
    let security = &config.security;
    let members: Vec<String> = config
        .cluster_nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let mut watched = Vec::new();
    let tls = match material(&config.secrets, security, false).await? {
        None => None,
        Some(initial) => {
            let tls = Arc::new(
                NodeTls::new(&initial, members.clone(), clock.clone())
                    .map_err(|e| error(e.variable, e.problem))?,
            );
            let mut files: Vec<_> = [SecretName::TlsCert, SecretName::TlsKey]
                .into_iter()
                .filter_map(|name| config.secrets.file(name).map(|p| p.to_path_buf()))
                .collect();
            files.extend(security.client_ca_file.iter().cloned());
            files.extend(security.peer_ca_file.iter().cloned());
            let (reloading, source, settings) =
                (Arc::clone(&tls), config.secrets.clone(), security.clone());
            watched.push(Watched {
                name: "TLS certificate, key and CAs",
                files,
                reload: Box::new(move || {
                    let (tls, source, settings) =
                        (Arc::clone(&reloading), source.clone(), settings.clone());
                    Box::pin(async move {
                        let material = material(&source, &settings, true)
                            .await
                            .map_err(|e| e.to_string())?
                            .ok_or("TLS is no longer configured")?;
                        tls.reload(&material).map_err(|e| e.to_string())
                    })
                }),
            });
            Some(tls)
        }
    };
    let mut authority = Authority::new(security.rules.clone(), members, clock.clone())
        .with_admin_keys(security.admin_api_keys.clone())
        .with_unauthenticated_raft(config.faults.unauthenticated_raft);
    if let Some(jwt) = &security.jwt {
        let keys = JwtKeys::load(&jwt.jwks_file).map_err(|e| {
            error(
                "HYPERION_JWT_JWKS_FILE",
                format!("{}: {e}", jwt.jwks_file.display()),
            )
        })?;
        let keys = Arc::new(Reloadable::new(keys));
        let (reloading, path) = (Arc::clone(&keys), jwt.jwks_file.clone());
        watched.push(Watched {
            name: "HYPERION_JWT_JWKS_FILE",
            files: vec![path.clone()],
            reload: Box::new(move || {
                let (keys, path) = (Arc::clone(&reloading), path.clone());
                Box::pin(async move {
                    keys.set(JwtKeys::load(&path)?);
                    Ok(())
                })
            }),
        });
        authority = authority.with_jwt(jwt.clone(), keys);
    }
    if let Some(path) = &security.acl_file {
        let acl = Acl::load(path)
            .map_err(|e| error("HYPERION_ACL_FILE", format!("{}: {e}", path.display())))?;
        let acl = Arc::new(Reloadable::new(acl));
        let (reloading, path) = (Arc::clone(&acl), path.clone());
        watched.push(Watched {
            name: "HYPERION_ACL_FILE",
            files: vec![path.clone()],
            reload: Box::new(move || {
                let (acl, path) = (Arc::clone(&reloading), path.clone());
                Box::pin(async move {
                    acl.set(Acl::load(&path)?);
                    Ok(())
                })
            }),
        });
        authority = authority.with_acl(acl);
    }
    Ok(NodeSecurity {
        tls,
        authority: Arc::new(authority),
        watched,
    })
}
