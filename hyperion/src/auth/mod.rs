//! Who is calling, and may they: the identity of every request and the rules applied to it.
//!
//! Identities (see README, "Security"):
//! - a **member**: a certificate that chains to the peer CA (`HYPERION_TLS_PEER_CA_FILE`,
//!   default the client CA) and whose DNS name is exactly one node name of
//!   `HYPERION_CLUSTER_NODES` (wildcards never name a member);
//! - a **client**: a certificate that chains to the client CA (`HYPERION_TLS_CLIENT_CA_FILE`),
//!   named by its DNS name; or a verified bearer token (`authorization: Bearer <JWT>`), named by
//!   its subject ([`jwt`]); or an admin API key (`x-hyperion-api-key`, admin operations only).
//!
//! Rules:
//! - `RaftService` serves members only, and only messages whose `from` is the member's own id
//!   (checked by [`crate::replica::inbound`]); clients can never call it.
//! - `CacheService` serves clients (members count as clients named by their node name); with
//!   an ACL ([`acl`]) only what a rule allows; without one, every authenticated caller.
//! - `NodeAdmin` serves members, admin API keys and clients the ACL grants `admin`.
//! - No identity at all is `UNAUTHENTICATED`; every other refusal is `PERMISSION_DENIED`, with a
//!   message naming the operation and the variable to look at, never a key's bytes.
//!
//! The TLS listener classifies a certificate once per connection (`crate::tls`); the simulator,
//! which has no TLS, states the same classification in metadata
//! ([`crate::runtime::simulated_identity`]), so every rule here runs in simulation too.

pub mod acl;
pub mod gate;
pub mod jwt;

use std::sync::Arc;

use hyperion_raft::NodeId;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

pub use acl::{Acl, Operation, Proof};
pub use jwt::{JwtKeys, JwtSettings};

use crate::reload::Reloadable;
use crate::runtime::NodeClock;
use crate::secret::Secret;

/// Request metadata carrying an admin API key.
pub const API_KEY_METADATA: &str = "x-hyperion-api-key";

/// What a caller's certificate proved (once per connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresentedCertificate {
    /// Chains to the peer CA and names this member (its node name).
    Member { name: String },
    /// Chains to the client CA (or to the peer CA without naming a member); its DNS name.
    Client { name: String },
    /// Presented but not accepted: why (another CA, expired, not for client authentication).
    Rejected { reason: String },
}

impl PresentedCertificate {
    /// The classification a simulated caller states: `member:<name>`, `client:<name>` or
    /// `rejected:<reason>`.
    pub fn from_simulated(text: &str) -> Option<PresentedCertificate> {
        let (kind, value) = text.split_once(':')?;
        let value = value.to_string();
        Some(match kind {
            "member" => PresentedCertificate::Member { name: value },
            "client" => PresentedCertificate::Client { name: value },
            "rejected" => PresentedCertificate::Rejected { reason: value },
            _ => return None,
        })
    }

    /// The form [`PresentedCertificate::from_simulated`] reads.
    pub fn simulated(&self) -> String {
        match self {
            PresentedCertificate::Member { name } => format!("member:{name}"),
            PresentedCertificate::Client { name } => format!("client:{name}"),
            PresentedCertificate::Rejected { reason } => format!("rejected:{reason}"),
        }
    }
}

/// Who a request is from, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Identities are not checked (development mode: plaintext on loopback, no JWKS).
    Unchecked,
    /// A cluster member.
    Member { id: NodeId, name: String },
    /// A client, by certificate or token.
    Client { name: String, proof: Proof },
    /// An admin API key.
    AdminKey,
}

/// Which identities each service requires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthRules {
    /// `RaftService` requires a member's certificate (set when a peer CA is configured).
    pub require_peer_identity: bool,
    /// `CacheService` and `NodeAdmin` require an identity (set when a client CA or a JWKS is
    /// configured).
    pub require_client_identity: bool,
}

/// Everything [`Authority`] decides with.
pub struct Authority {
    rules: AuthRules,
    /// Member names in Raft-id order (id = position + 1).
    members: Vec<String>,
    jwt: Option<(JwtSettings, Arc<Reloadable<JwtKeys>>)>,
    acl: Option<Arc<Reloadable<Acl>>>,
    admin_keys: Vec<Secret>,
    clock: NodeClock,
    /// Fault injection: `RaftService` serves anyone (the pre-fix behaviour).
    unauthenticated_raft: bool,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("rules", &self.rules)
            .field("members", &self.members)
            .field("jwt", &self.jwt.is_some())
            .field("acl", &self.acl.is_some())
            .field("admin_keys", &self.admin_keys.len())
            .finish()
    }
}

fn unauthenticated(message: String) -> Status {
    Status::unauthenticated(message)
}

fn denied(message: String) -> Status {
    Status::permission_denied(message)
}

impl Authority {
    /// An authority for a cluster whose members are `members` (in Raft-id order).
    pub fn new(rules: AuthRules, members: Vec<String>, clock: NodeClock) -> Authority {
        Authority {
            rules,
            members,
            jwt: None,
            acl: None,
            admin_keys: Vec::new(),
            clock,
            unauthenticated_raft: false,
        }
    }

    /// An authority that checks nothing (development mode).
    pub fn unchecked(clock: NodeClock) -> Authority {
        Authority::new(AuthRules::default(), Vec::new(), clock)
    }

    /// Verifies bearer tokens with these keys.
    pub fn with_jwt(mut self, settings: JwtSettings, keys: Arc<Reloadable<JwtKeys>>) -> Authority {
        self.jwt = Some((settings, keys));
        self
    }

    /// Applies this ACL to clients.
    pub fn with_acl(mut self, acl: Arc<Reloadable<Acl>>) -> Authority {
        self.acl = Some(acl);
        self
    }

    /// Accepts these admin API keys (one per line of the `admin-api-keys` secret).
    pub fn with_admin_keys(mut self, keys: Vec<Secret>) -> Authority {
        self.admin_keys = keys;
        self
    }

    /// Fault injection: `RaftService` serves anyone.
    pub fn with_unauthenticated_raft(mut self, on: bool) -> Authority {
        self.unauthenticated_raft = on;
        self
    }

    /// The rules in force.
    pub fn rules(&self) -> &AuthRules {
        &self.rules
    }

    fn member_id(&self, name: &str) -> Option<NodeId> {
        self.members
            .iter()
            .position(|member| member == name)
            .map(|index| index as NodeId + 1)
    }

    /// The certificate of a request's connection (production), or the one a simulated caller
    /// states.
    fn certificate<T>(request: &Request<T>) -> Option<PresentedCertificate> {
        if let Some(peer) = crate::runtime::connection_peer(request.extensions()) {
            return peer.downcast_ref::<PresentedCertificate>().cloned();
        }
        crate::runtime::simulated_identity(request.metadata())
            .and_then(PresentedCertificate::from_simulated)
    }

    /// `RaftService`: the member a request comes from (`None` when peers are not
    /// authenticated), or the refusal.
    pub fn raft_sender<T>(&self, request: &Request<T>) -> Result<Option<NodeId>, Status> {
        if !self.rules.require_peer_identity || self.unauthenticated_raft {
            return Ok(None);
        }
        match Authority::certificate(request) {
            None => Err(unauthenticated(
                "RaftService: no certificate presented; only cluster members may call it, with a \
                 certificate from HYPERION_TLS_PEER_CA_FILE naming their node"
                    .to_string(),
            )),
            Some(PresentedCertificate::Member { name }) => match self.member_id(&name) {
                Some(id) => Ok(Some(id)),
                None => Err(denied(format!(
                    "RaftService: `{name}` is not a member of HYPERION_CLUSTER_NODES"
                ))),
            },
            Some(PresentedCertificate::Client { name }) => Err(denied(format!(
                "RaftService: only cluster members may call it; the certificate names `{name}`, \
                 which is not a node of HYPERION_CLUSTER_NODES"
            ))),
            Some(PresentedCertificate::Rejected { reason }) => Err(denied(format!(
                "RaftService: the certificate is not accepted: {reason}"
            ))),
        }
    }

    /// Authenticates a client request (certificate, bearer token or API key).
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let metadata = request.metadata();
        let certificate = Authority::certificate(request);
        if let Some(PresentedCertificate::Rejected { reason }) = &certificate {
            return Err(denied(format!(
                "the client certificate is not accepted: {reason}"
            )));
        }
        if let Some(token) = bearer_token(metadata)? {
            let Some((settings, keys)) = &self.jwt else {
                return Err(unauthenticated(
                    "authorization: bearer tokens are not accepted here (no \
                     HYPERION_JWT_JWKS_FILE)"
                        .to_string(),
                ));
            };
            let now_s = self.clock.now_ms() / 1000;
            return match keys.get().verify(settings, token, now_s) {
                Ok(subject) => Ok(Caller::Client {
                    name: subject,
                    proof: Proof::Token,
                }),
                Err(why) => Err(unauthenticated(format!(
                    "authorization: the bearer token is {why}"
                ))),
            };
        }
        if let Some(key) = metadata.get(API_KEY_METADATA) {
            let presented = Secret::new(key.as_bytes().to_vec());
            return if self.admin_keys.contains(&presented) {
                Ok(Caller::AdminKey)
            } else {
                Err(unauthenticated(format!(
                    "{API_KEY_METADATA}: not a valid admin API key"
                )))
            };
        }
        match certificate {
            Some(PresentedCertificate::Member { name }) => match self.member_id(&name) {
                Some(id) => Ok(Caller::Member { id, name }),
                None => Ok(Caller::Client {
                    name,
                    proof: Proof::Certificate,
                }),
            },
            Some(PresentedCertificate::Client { name }) => Ok(Caller::Client {
                name,
                proof: Proof::Certificate,
            }),
            Some(PresentedCertificate::Rejected { .. }) => unreachable!("refused above"),
            None if self.rules.require_client_identity => Err(unauthenticated(
                "no client certificate and no bearer token: this node requires one \
                 (HYPERION_TLS_CLIENT_CA_FILE, HYPERION_JWT_JWKS_FILE)"
                    .to_string(),
            )),
            None => Ok(Caller::Unchecked),
        }
    }

    /// Authenticates a request and checks that it may do `operation` on every key of `keys`
    /// (`keys[i]` names a refused key by position, never by its bytes).
    pub fn authorize<T>(
        &self,
        request: &Request<T>,
        operation: Operation,
        keys: &[&[u8]],
    ) -> Result<Caller, Status> {
        let caller = self.authenticate(request)?;
        self.permit(&caller, operation, keys)?;
        Ok(caller)
    }

    /// Whether an authenticated caller may do `operation` on `keys`.
    pub fn permit(
        &self,
        caller: &Caller,
        operation: Operation,
        keys: &[&[u8]],
    ) -> Result<(), Status> {
        let (name, proof) = match caller {
            Caller::Unchecked => return Ok(()),
            Caller::AdminKey if operation == Operation::Admin => return Ok(()),
            Caller::AdminKey => {
                return Err(denied(format!(
                    "an admin API key may not {}; use a client certificate or a bearer token",
                    operation.name()
                )))
            }
            Caller::Member { .. } if operation == Operation::Admin => return Ok(()),
            Caller::Member { name, .. } => (name.as_str(), Proof::Certificate),
            Caller::Client { name, proof } => (name.as_str(), *proof),
        };
        let Some(acl) = &self.acl else {
            return Ok(());
        };
        let acl = acl.get();
        let refused = |which: String| {
            Err(denied(format!(
                "`{name}` may not {} {which} (HYPERION_ACL_FILE)",
                operation.name()
            )))
        };
        if keys.is_empty() {
            if !acl.allows(name, proof, operation, None) {
                return refused("here".to_string());
            }
            return Ok(());
        }
        for (index, key) in keys.iter().enumerate() {
            if !acl.allows(name, proof, operation, Some(key)) {
                return refused(if keys.len() == 1 {
                    "this key".to_string()
                } else {
                    format!("keys[{index}]")
                });
            }
        }
        Ok(())
    }
}

/// The token of an `authorization: Bearer <token>` header, if there is one.
fn bearer_token(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| unauthenticated("authorization: not ASCII".to_string()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(unauthenticated(
            "authorization: expected `Bearer <token>`".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests;
