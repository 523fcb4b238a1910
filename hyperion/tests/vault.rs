//! The `vault` secret provider against a stand-in for HashiCorp Vault.
//!
//! No Vault server can be installed here, so this test runs a small stand-in that implements
//! only the documented KV v2 read endpoint: `GET /v1/<mount>/data/<path>`, authenticated by the
//! `X-Vault-Token` header, answering `{"data": {"data": {...}, "metadata": {...}}}` (404 for a
//! secret that does not exist, 403 for a wrong token), over HTTPS with a certificate from a
//! test CA. Everything on loopback.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hyperion::config::Config;
use hyperion::secret::SecretName;
use rcgen::{CertificateParams, KeyPair, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "hvs.test-token-7f3a";
const HMAC: &str = "0123456789abcdef0123456789abcdef-hmac";
const DB_PASSWORD: &str = "correct horse battery staple";

/// The stand-in: secrets by KV path (`secret/data/hyperion/prod/hmac-key` → value).
struct StandIn {
    addr: std::net::SocketAddr,
    ca_pem: String,
    requests: Arc<AtomicUsize>,
}

async fn stand_in(secrets: BTreeMap<String, String>) -> StandIn {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.self_signed(&key).unwrap();
    let ca_pem = cert.pem();
    let config = rustls::ServerConfig::builder_with_provider(hyperion::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    let secrets = Arc::new(secrets);
    hyperion::runtime::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, secrets, counted) =
                (acceptor.clone(), Arc::clone(&secrets), Arc::clone(&counted));
            hyperion::runtime::spawn(async move {
                let Ok(mut stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                counted.fetch_add(1, Ordering::Relaxed);
                let head = String::from_utf8_lossy(&head).to_string();
                let mut lines = head.lines();
                let request_line = lines.next().unwrap_or_default().to_string();
                let token = lines
                    .filter_map(|line| line.split_once(':'))
                    .find(|(name, _)| name.eq_ignore_ascii_case("x-vault-token"))
                    .map(|(_, value)| value.trim().to_string());
                let path = request_line
                    .strip_prefix("GET /v1/")
                    .and_then(|rest| rest.split_once(' '))
                    .map(|(path, _)| path.to_string());
                let (status, body) = match (token.as_deref(), path) {
                    (Some(TOKEN), Some(path)) => match secrets.get(&path) {
                        Some(value) => (
                            "200 OK",
                            serde_json::json!({
                                "data": {
                                    "data": {"value": value},
                                    "metadata": {"version": 1}
                                }
                            })
                            .to_string(),
                        ),
                        None => ("404 Not Found", r#"{"errors":[]}"#.to_string()),
                    },
                    (Some(_), _) | (None, _) => (
                        "403 Forbidden",
                        r#"{"errors":["permission denied"]}"#.to_string(),
                    ),
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    StandIn {
        addr,
        ca_pem,
        requests,
    }
}

fn kv(path: &str, value: &str) -> (String, String) {
    // `secret/hyperion/prod/<key>` lives at `secret/data/hyperion/prod/<key>` in KV v2.
    (
        format!("secret/data/hyperion/prod/{path}"),
        value.to_string(),
    )
}

fn env(vault: &StandIn, dir: &std::path::Path, token: &str) -> BTreeMap<String, String> {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let ca_file = dir.join("vault-ca.pem");
    std::fs::write(&ca_file, &vault.ca_pem).unwrap();
    [
        ("HYPERION_SECRETS", "vault".to_string()),
        (
            "VAULT_ADDR",
            format!("https://127.0.0.1:{}", vault.addr.port()),
        ),
        ("VAULT_TOKEN_FILE", token_file.display().to_string()),
        ("VAULT_CACERT", ca_file.display().to_string()),
        ("HYPERION_DEV_MODE", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hyperion-vault-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn secrets_come_from_vault_and_never_show() {
    let vault = stand_in(
        [
            kv("hmac-key", HMAC),
            kv("db-password", DB_PASSWORD),
            kv("admin-api-keys", "ops-key-1\nops-key-2\n"),
        ]
        .into_iter()
        .collect(),
    )
    .await;
    let dir = temp_dir("ok");
    let config = Config::load(&env(&vault, &dir, TOKEN)).await.unwrap();
    assert_eq!(config.hmac_key.expose(), HMAC.as_bytes());
    assert_eq!(
        config.database.password.as_ref().unwrap().expose(),
        DB_PASSWORD.as_bytes()
    );
    assert_eq!(config.security.admin_api_keys.len(), 2);
    assert!(
        config.security.tls_identity.is_none(),
        "no tls-cert in Vault"
    );
    // One request per secret; the ones Vault does not have (404) are simply not configured.
    assert_eq!(
        vault.requests.load(Ordering::Relaxed),
        SecretName::ALL.len()
    );
    // `hyperion config` prints the configuration's Debug form: no secret, no token.
    let shown = format!("{config:?}");
    for secret in [HMAC, DB_PASSWORD, "ops-key-1", TOKEN] {
        assert!(!shown.contains(secret), "`{secret}` shown: {shown}");
    }
    assert!(shown.contains("secret/hyperion/prod"), "the path is shown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_wrong_token_or_a_missing_required_secret_is_a_clear_error() {
    let vault = stand_in([kv("db-password", DB_PASSWORD)].into_iter().collect()).await;
    let dir = temp_dir("errors");
    let wrong = Config::load(&env(&vault, &dir, "hvs.wrong"))
        .await
        .unwrap_err();
    assert!(
        wrong.variable.contains("secret/hyperion/prod/db-password"),
        "{wrong}"
    );
    assert!(wrong.problem.contains("HTTP 403"), "{wrong}");
    assert!(
        !wrong.to_string().contains("hvs.wrong"),
        "the token is never shown"
    );
    // Outside development mode the HMAC key is required: Vault has none here.
    let mut production = env(&vault, &dir, TOKEN);
    production.insert("HYPERION_DEV_MODE".to_string(), "false".to_string());
    let missing = Config::load(&production).await.unwrap_err();
    assert_eq!(
        missing.variable, "HYPERION_SECRETS=vault (hmac-key)",
        "{missing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn vault_settings_are_checked_before_any_request() {
    let vault = stand_in(BTreeMap::new()).await;
    let dir = temp_dir("settings");
    let mut from_env = env(&vault, &dir, TOKEN);
    from_env.insert("VAULT_TOKEN".to_string(), TOKEN.to_string());
    let error = Config::load(&from_env).await.unwrap_err();
    assert_eq!(error.variable, "VAULT_TOKEN");
    assert!(!error.to_string().contains(TOKEN));
    let mut plain = env(&vault, &dir, TOKEN);
    plain.insert("VAULT_ADDR".to_string(), format!("http://{}", vault.addr));
    assert_eq!(
        Config::load(&plain).await.unwrap_err().variable,
        "VAULT_ADDR"
    );
    let mut both = env(&vault, &dir, TOKEN);
    both.insert("HYPERION_HMAC_KEY_FILE".to_string(), "/x".to_string());
    assert_eq!(
        Config::load(&both).await.unwrap_err().variable,
        "HYPERION_HMAC_KEY_FILE"
    );
    // A synchronous load cannot reach Vault and says so.
    assert_eq!(
        Config::from_env(&env(&vault, &dir, TOKEN))
            .unwrap_err()
            .variable,
        "HYPERION_SECRETS"
    );
    assert_eq!(vault.requests.load(Ordering::Relaxed), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
