//! The `vault` secret provider: HashiCorp Vault's KV v2 engine over HTTPS.
//!
//! One secret is one Vault secret at `<HYPERION_VAULT_PATH>/<key>` (the runbook's
//! `vault kv get secret/hyperion/prod/db-password`): the first path segment is the KV mount, so
//! the request is `GET <VAULT_ADDR>/v1/<mount>/data/<rest>/<key>` with the token in
//! `X-Vault-Token`, and the answer is `{"data": {"data": {"value": "..."}}}` (the field `value`;
//! a secret with a single field of another name is read from that field). A 404 means the secret
//! is not configured. The token comes from `VAULT_TOKEN_FILE` (never from `VAULT_TOKEN`), the
//! server is verified against the CA certificates in `VAULT_CACERT`, and every answer is read
//! into zeroizing memory with a size bound.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::{read_secret_file, Secret, SecretError, SecretName};

/// `HYPERION_VAULT_PATH` when unset.
pub const DEFAULT_VAULT_PATH: &str = "secret/hyperion/prod";
/// Bound on one Vault request (connect, TLS, answer).
pub const VAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest Vault answer read: a secret plus Vault's envelope.
const VAULT_ANSWER_BYTES_MAX: usize = (1 << 20) + 64 * 1024;

/// Where in Vault the secrets are, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSource {
    /// `VAULT_ADDR`: `https://host[:port]`.
    pub addr: String,
    /// `VAULT_TOKEN_FILE`.
    pub token_file: PathBuf,
    /// `HYPERION_VAULT_PATH`: `<mount>/<path>`.
    pub path: String,
    /// `VAULT_CACERT`: PEM CA certificates the server's certificate must chain to.
    pub ca_file: PathBuf,
}

impl VaultSource {
    /// The Vault path of a secret (`secret/hyperion/prod/db-password`).
    pub fn secret_path(&self, name: SecretName) -> String {
        format!("{}/{}", self.path.trim_end_matches('/'), name.key())
    }

    /// The KV v2 read endpoint of a secret: `/v1/<mount>/data/<rest>/<key>`.
    pub fn endpoint(&self, name: SecretName) -> String {
        let path = self.secret_path(name);
        let (mount, rest) = path.split_once('/').unwrap_or((path.as_str(), ""));
        format!("/v1/{mount}/data/{rest}")
    }

    fn host_port(&self) -> Result<(String, u16), SecretError> {
        let invalid = |problem: &str| SecretError {
            origin: "VAULT_ADDR".to_string(),
            problem: problem.to_string(),
        };
        let rest = self.addr.strip_prefix("https://").ok_or_else(|| {
            invalid("must be an https:// URL (secrets never travel in plaintext)")
        })?;
        let authority = rest.trim_end_matches('/');
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => Ok((
                host.to_string(),
                port.parse()
                    .map_err(|_| invalid("the port must be a number in 1..=65535"))?,
            )),
            _ if !authority.is_empty() => Ok((authority.to_string(), 443)),
            _ => Err(invalid("has no host")),
        }
    }

    /// Fetches one secret (`None` if Vault has no such secret).
    pub async fn fetch(&self, name: SecretName) -> Result<Option<Secret>, SecretError> {
        let origin = format!("HYPERION_SECRETS=vault ({})", self.secret_path(name));
        let fail = |problem: String| SecretError {
            origin: origin.clone(),
            problem,
        };
        let (host, port) = self.host_port()?;
        let token =
            read_secret_file(&self.token_file, SecretName::HmacKey).map_err(|e| SecretError {
                origin: format!("VAULT_TOKEN_FILE ({})", self.token_file.display()),
                problem: e.problem,
            })?;
        let tls = crate::tls::https_client_config(&self.ca_file).map_err(|e| SecretError {
            origin: format!("VAULT_CACERT ({})", self.ca_file.display()),
            problem: e.to_string(),
        })?;
        let token_text = std::str::from_utf8(token.expose())
            .map(str::trim)
            .map_err(|_| fail("the token in VAULT_TOKEN_FILE is not text".to_string()))?;
        let mut token_header = http::HeaderValue::from_str(token_text)
            .map_err(|_| fail("the token in VAULT_TOKEN_FILE is not a header value".to_string()))?;
        token_header.set_sensitive(true);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-vault-token", token_header);
        let answer = crate::runtime::https_get(crate::runtime::HttpsGet {
            tls: Arc::new(tls),
            host,
            port,
            path: self.endpoint(name),
            headers,
            timeout: VAULT_REQUEST_TIMEOUT,
            body_max: VAULT_ANSWER_BYTES_MAX,
        })
        .await
        .map_err(|e| fail(format!("request failed: {e}")))?;
        match answer.status {
            200 => {}
            404 => return Ok(None),
            status => {
                return Err(fail(format!(
                    "Vault answered HTTP {status} (is the token allowed to read this path?)"
                )))
            }
        }
        let value = secret_value(&answer.body).map_err(fail)?;
        if value.len() > name.bytes_max() {
            return Err(fail(format!("larger than {} bytes", name.bytes_max())));
        }
        Ok(Some(Secret::new(value.to_vec())))
    }
}

/// The secret in a KV v2 answer: `data.data.value`, or its one field.
fn secret_value(body: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let answer: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the answer is not KV v2 JSON".to_string())?;
    let fields = answer
        .get("data")
        .and_then(|data| data.get("data"))
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| "the answer has no data.data object (is the mount KV v2?)".to_string())?;
    let value = match (fields.get("value"), fields.len()) {
        (Some(value), _) => value,
        (None, 1) => fields.values().next().expect("one field"),
        (None, _) => {
            return Err("the secret has no `value` field (and more than one other)".to_string())
        }
    };
    let text = value
        .as_str()
        .ok_or_else(|| "the secret's field is not a string".to_string())?;
    Ok(Zeroizing::new(text.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> VaultSource {
        VaultSource {
            addr: "https://vault.internal:8200".to_string(),
            token_file: PathBuf::from("/run/token"),
            path: DEFAULT_VAULT_PATH.to_string(),
            ca_file: PathBuf::from("/run/ca.pem"),
        }
    }

    #[test]
    fn paths_follow_the_runbook_and_the_kv2_api() {
        let vault = source();
        assert_eq!(
            vault.secret_path(SecretName::DbPassword),
            "secret/hyperion/prod/db-password"
        );
        assert_eq!(
            vault.endpoint(SecretName::TlsKey),
            "/v1/secret/data/hyperion/prod/tls-key"
        );
        assert_eq!(
            vault.host_port().unwrap(),
            ("vault.internal".to_string(), 8200)
        );
        let plain = VaultSource {
            addr: "http://vault:8200".to_string(),
            ..source()
        };
        assert_eq!(plain.host_port().unwrap_err().origin, "VAULT_ADDR");
    }

    #[test]
    fn answers_are_read_from_data_data() {
        let one = br#"{"data":{"data":{"value":"s3cret"},"metadata":{"version":3}}}"#;
        assert_eq!(&secret_value(one).unwrap()[..], b"s3cret");
        let single = br#"{"data":{"data":{"password":"p"}}}"#;
        assert_eq!(&secret_value(single).unwrap()[..], b"p");
        assert!(secret_value(br#"{"data":{"a":"b"}}"#).is_err());
        assert!(secret_value(br#"{"data":{"data":{"a":"1","b":"2"}}}"#).is_err());
        assert!(secret_value(b"not json").is_err());
    }
}
