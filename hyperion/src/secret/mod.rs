//! Secrets: bytes that are zeroized when dropped and never printed ([`Secret`]: the database
//! password, the HMAC key, TLS keys, admin API keys), and where they come from
//! ([`SecretSource`], `HYPERION_SECRETS`):
//! - `file` (the default): each secret from the file its `*_FILE` variable names
//!   ([`SecretName::file_variable`]);
//! - `vault`: each secret from HashiCorp Vault's KV v2 engine over HTTPS, at
//!   `<HYPERION_VAULT_PATH>/<key>` ([`SecretName::key`]; the runbook's `vault kv get
//!   secret/hyperion/prod/db-password`), with the token read from `VAULT_TOKEN_FILE`.
//!
//! Secrets never come from environment values: a variable may name a file or a Vault path, never
//! hold the secret itself. Every secret is read into zeroizing memory, bounded in size, and never
//! appears in a log line, an error message or `hyperion config`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

mod vault;
pub use vault::{VaultSource, DEFAULT_VAULT_PATH};

/// A secret's bytes, zeroized when dropped and never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        // Constant time: secrets are compared with what a caller sent (API keys).
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0[..].ct_eq(&other.0[..]))
    }
}

impl Eq for Secret {}

/// The secrets Hyperion uses, by their names in Vault and in the file variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretName {
    DbPassword,
    TlsCert,
    TlsKey,
    HmacKey,
    AdminApiKeys,
}

impl SecretName {
    /// Every secret, in the order they are fetched and shown.
    pub const ALL: [SecretName; 5] = [
        SecretName::DbPassword,
        SecretName::TlsCert,
        SecretName::TlsKey,
        SecretName::HmacKey,
        SecretName::AdminApiKeys,
    ];

    /// The key under `HYPERION_VAULT_PATH`.
    pub fn key(self) -> &'static str {
        match self {
            SecretName::DbPassword => "db-password",
            SecretName::TlsCert => "tls-cert",
            SecretName::TlsKey => "tls-key",
            SecretName::HmacKey => "hmac-key",
            SecretName::AdminApiKeys => "admin-api-keys",
        }
    }

    /// The variable naming the secret's file (`HYPERION_SECRETS=file`).
    pub fn file_variable(self) -> &'static str {
        match self {
            SecretName::DbPassword => "HYPERION_DB_PASSWORD_FILE",
            SecretName::TlsCert => "HYPERION_TLS_CERT_FILE",
            SecretName::TlsKey => "HYPERION_TLS_KEY_FILE",
            SecretName::HmacKey => "HYPERION_HMAC_KEY_FILE",
            SecretName::AdminApiKeys => "HYPERION_ADMIN_API_KEYS_FILE",
        }
    }

    /// Largest accepted secret: bounds the read (a wrong path pointing at a huge file, or a
    /// hostile Vault answer, must not exhaust memory).
    pub fn bytes_max(self) -> usize {
        match self {
            SecretName::DbPassword | SecretName::HmacKey => 4096,
            SecretName::TlsCert | SecretName::TlsKey | SecretName::AdminApiKeys => 1 << 20,
        }
    }
}

/// Why a secret could not be had. Never holds the secret's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct SecretError {
    /// The variable, file or Vault path at fault.
    pub origin: String,
    pub problem: String,
}

/// Where secrets come from (`HYPERION_SECRETS`).
#[derive(Debug, Clone, PartialEq)]
pub enum SecretSource {
    /// Files named by the `*_FILE` variables that are set.
    Files(BTreeMap<SecretName, PathBuf>),
    /// HashiCorp Vault (KV v2).
    Vault(VaultSource),
}

impl Default for SecretSource {
    fn default() -> Self {
        SecretSource::Files(BTreeMap::new())
    }
}

impl SecretSource {
    /// Whether secrets come from files.
    pub fn is_files(&self) -> bool {
        matches!(self, SecretSource::Files(_))
    }

    /// The file a secret is read from (`file` provider), if its variable is set.
    pub fn file(&self, name: SecretName) -> Option<&Path> {
        match self {
            SecretSource::Files(files) => files.get(&name).map(PathBuf::as_path),
            SecretSource::Vault(_) => None,
        }
    }

    /// Fetches one secret: `None` when it is not configured (no `*_FILE` variable, or no such
    /// key in Vault).
    pub async fn fetch(&self, name: SecretName) -> Result<Option<Secret>, SecretError> {
        match self {
            SecretSource::Files(_) => self.read_file(name),
            SecretSource::Vault(vault) => vault.fetch(name).await,
        }
    }

    /// Fetches every secret that is configured.
    pub async fn fetch_all(&self) -> Result<Secrets, SecretError> {
        let mut secrets = Secrets::default();
        for name in SecretName::ALL {
            if let Some(secret) = self.fetch(name).await? {
                secrets.0.insert(name, secret);
            }
        }
        Ok(secrets)
    }

    /// Reads every configured secret file (the `file` provider, without a runtime).
    pub fn read_files(&self) -> Result<Secrets, SecretError> {
        let mut secrets = Secrets::default();
        for name in SecretName::ALL {
            if let Some(secret) = self.read_file(name)? {
                secrets.0.insert(name, secret);
            }
        }
        Ok(secrets)
    }

    fn read_file(&self, name: SecretName) -> Result<Option<Secret>, SecretError> {
        let Some(path) = self.file(name) else {
            return Ok(None);
        };
        read_secret_file(path, name).map(Some)
    }
}

/// Reads a secret file, bounded by [`SecretName::bytes_max`].
pub fn read_secret_file(path: &Path, name: SecretName) -> Result<Secret, SecretError> {
    use std::io::Read;
    let origin = name.file_variable().to_string();
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(name.bytes_max() as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| SecretError {
            origin: origin.clone(),
            problem: format!("cannot read {}: {e}", path.display()),
        })?;
    if bytes.len() > name.bytes_max() {
        return Err(SecretError {
            origin,
            problem: format!(
                "{} is larger than {} bytes",
                path.display(),
                name.bytes_max()
            ),
        });
    }
    Ok(Secret::new(bytes.to_vec()))
}

/// The secrets fetched at start, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Secrets(BTreeMap<SecretName, Secret>);

impl Secrets {
    pub fn get(&self, name: SecretName) -> Option<&Secret> {
        self.0.get(&name)
    }

    /// Adds or replaces one secret (tests, and the simulator's nodes).
    pub fn insert(&mut self, name: SecretName, secret: Secret) {
        self.0.insert(name, secret);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_compare_in_constant_time() {
        let secret = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{secret:?}"), "Secret(<7 bytes redacted>)");
        assert_eq!(secret, Secret::new(b"hunter2".to_vec()));
        assert_ne!(secret, Secret::new(b"hunter3".to_vec()));
        assert_ne!(secret, Secret::new(b"hunter".to_vec()));
        let mut secrets = Secrets::default();
        secrets.insert(SecretName::HmacKey, secret);
        assert!(!format!("{secrets:?}").contains("hunter"));
    }

    #[test]
    fn secret_files_are_bounded_and_errors_name_the_variable() {
        let dir = std::env::temp_dir().join(format!("hyperion-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 5000]).unwrap();
        let error = read_secret_file(&big, SecretName::HmacKey).unwrap_err();
        assert_eq!(error.origin, "HYPERION_HMAC_KEY_FILE", "{error}");
        assert!(error.problem.contains("larger than 4096"), "{error}");
        let missing = read_secret_file(&dir.join("nope"), SecretName::DbPassword).unwrap_err();
        assert!(missing.to_string().starts_with("HYPERION_DB_PASSWORD_FILE"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
