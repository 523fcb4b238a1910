//! Bearer tokens from the product's Auth Service: JWTs signed with RS256, ES256 or EdDSA and
//! verified against the keys of a JWKS file (`HYPERION_JWT_JWKS_FILE`).
//!
//! Checked: the signature (by the key the header's `kid` names, or the only key of the token's
//! algorithm), the algorithm (one of the three; `none` and HMAC are refused), `aud`
//! (`HYPERION_JWT_AUDIENCE`), `iss` (`HYPERION_JWT_ISSUER`), `exp` and `nbf` against the node's
//! clock with a bounded leeway (`HYPERION_JWT_LEEWAY_S`, at most [`LEEWAY_S_MAX`]). Time is an
//! argument, so the same checks run in simulation.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, OctetKeyPairType};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Default clock leeway for `exp` and `nbf`.
pub const DEFAULT_LEEWAY_S: u64 = 30;
/// Largest accepted leeway: five minutes (a larger one lets expired tokens live on).
pub const LEEWAY_S_MAX: u64 = 300;
/// Largest JWKS file read.
pub const JWKS_FILE_BYTES_MAX: u64 = 1 << 20;
/// Longest token accepted (bounds the work one request can ask for).
pub const TOKEN_BYTES_MAX: usize = 8192;

/// What a token must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    pub jwks_file: std::path::PathBuf,
    pub audience: String,
    pub issuer: String,
    pub leeway_s: u64,
}

/// The verification keys of a JWKS.
pub struct JwtKeys {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtKeys({} keys)", self.keys.len())
    }
}

impl JwtKeys {
    /// Parses a JWKS (`{"keys": [...]}`); keys of other algorithms are skipped, and a set with
    /// no usable key is refused.
    pub fn parse(json: &[u8]) -> Result<JwtKeys, String> {
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::OctetKeyPair(okp)
                    if okp.key_type == OctetKeyPairType::OctetKeyPair
                        && okp.curve == EllipticCurve::Ed25519 =>
                {
                    Algorithm::EdDSA
                }
                _ => continue,
            };
            if let Some(declared) = jwk.common.key_algorithm {
                let declared = format!("{declared:?}");
                if declared != format!("{algorithm:?}") {
                    continue;
                }
            }
            let key =
                DecodingKey::from_jwk(jwk).map_err(|e| format!("a key does not load: {e}"))?;
            keys.push((jwk.common.key_id.clone(), algorithm, key));
        }
        if keys.is_empty() {
            return Err("no RS256, ES256 or EdDSA key in the JWKS".to_string());
        }
        Ok(JwtKeys { keys })
    }

    /// Reads and parses a JWKS file.
    pub fn load(path: &std::path::Path) -> Result<JwtKeys, String> {
        use std::io::Read;
        let mut json = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(JWKS_FILE_BYTES_MAX).read_to_end(&mut json))
            .map_err(|e| format!("cannot read: {e}"))?;
        JwtKeys::parse(&json)
    }

    /// Verifies `token` at `now_s` (seconds since the Unix epoch on the node's clock); the
    /// subject on success, else why not (never the token itself).
    pub fn verify(
        &self,
        settings: &JwtSettings,
        token: &str,
        now_s: u64,
    ) -> Result<String, String> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(format!("longer than {TOKEN_BYTES_MAX} bytes"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed: {e}"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let mut candidates = self.keys.iter().filter(|(kid, alg, _)| {
            *alg == header.alg && (header.kid.is_none() || *kid == header.kid)
        });
        let (_, _, key) = match (candidates.next(), candidates.next(), &header.kid) {
            (Some(key), _, Some(_)) | (Some(key), None, None) => key,
            (None, _, _) => {
                return Err("no key in the JWKS verifies it (kid, algorithm)".to_string())
            }
            (Some(_), Some(_), None) => {
                return Err(
                    "it names no kid and the JWKS has several keys for its algorithm".to_string(),
                )
            }
        };
        let mut validation = Validation::new(header.alg);
        // Time is checked below against the node's clock, with our own bounded leeway.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_audience(&[&settings.audience]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| format!("not accepted: {e}"))?
            .claims;
        let leeway = settings.leeway_s.min(LEEWAY_S_MAX);
        if now_s > claims.exp.saturating_add(leeway) {
            return Err(format!("expired at {} (now {now_s})", claims.exp));
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now_s.saturating_add(leeway))
        {
            return Err("not valid yet (nbf)".to_string());
        }
        if claims.sub.is_empty() {
            return Err("its subject is empty".to_string());
        }
        Ok(claims.sub)
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    nbf: Option<u64>,
}
