//! [`Database`] over the PostgreSQL wire protocol (PostgreSQL, CockroachDB) with tokio-postgres,
//! a bounded connection pool, TLS through rustls, and the password from a secret file.
//!
//! tokio-postgres runs on real tokio. The production build is real tokio; the simulation build
//! compiles this module and never constructs it (the simulator uses [`super::SimDatabase`]).
//! Each connection's background future is spawned through [`crate::runtime::spawn`].
//!
//! TLS follows the DSN's `sslmode`:
//! - `disable`: plaintext;
//! - `prefer` (the default, as in libpq) and `require`: TLS (required for `require`); the server
//!   certificate is verified (chain and host name) when a CA file is configured, otherwise it is
//!   not verified (libpq's meaning of these modes; a warning is logged);
//! - `verify-ca`, `verify-full`: TLS, a CA file is mandatory (`HYPERION_DB_CA_FILE`, or
//!   `sslrootcert` in the DSN), and chain *and* host name are verified (`verify-ca` is treated as
//!   the stricter `verify-full`).
//!
//! The pool holds at most `pool_size` connections. A connection goes back to the pool only after
//! a call on it finished cleanly; one whose call was cancelled (the caller's timeout) or broke is
//! closed, so a black-holed connection is not handed out again.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::{
    classify_sqlstate, coalesce, Database, DbError, Mutation, StoredEntry, SCHEMA_VERSION,
    WRITE_BATCH_MAX,
};
use crate::runtime;
use crate::secret::Secret;

/// Largest password file read: passwords are short; a wrong path must not fill memory.
const PASSWORD_FILE_BYTES_MAX: u64 = 4096;
/// Largest CA file read.
const CA_FILE_BYTES_MAX: u64 = 1 << 20;
/// Attempts at the migration when nodes race on `CREATE TABLE IF NOT EXISTS` (PostgreSQL can
/// report a duplicate catalog entry to the loser of that race; the retry finds the table).
const MIGRATE_RACE_ATTEMPTS: u32 = 3;

/// The schema, as (version, description, statements). Append only; each statement idempotent.
const MIGRATIONS: &[(i64, &str, &[&str])] = &[(
    1,
    "entries: versioned rows with tombstones",
    &["CREATE TABLE IF NOT EXISTS hyperion_entries (
        key BYTEA PRIMARY KEY,
        value BYTEA NOT NULL,
        version INT8 NOT NULL,
        ttl_ms INT8 NOT NULL,
        created_at_ms INT8 NOT NULL,
        deleted BOOL NOT NULL
    )"],
)];

const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS hyperion_schema_version (
    version INT8 PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";
const SELECT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM hyperion_schema_version";
const RECORD_VERSION: &str = "INSERT INTO hyperion_schema_version (version, description) \
     VALUES ($1, $2) ON CONFLICT (version) DO NOTHING";

const LOAD_SQL: &str = "SELECT value, version, ttl_ms, created_at_ms, deleted \
     FROM hyperion_entries WHERE key = $1";
/// One statement per batch: rows as parallel arrays; a row changes only for a newer version.
const WRITE_SQL: &str = "INSERT INTO hyperion_entries \
     (key, value, version, ttl_ms, created_at_ms, deleted) \
     SELECT * FROM UNNEST($1::BYTEA[], $2::BYTEA[], $3::INT8[], $4::INT8[], $5::INT8[], $6::BOOL[]) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version, \
     ttl_ms = excluded.ttl_ms, created_at_ms = excluded.created_at_ms, deleted = excluded.deleted \
     WHERE hyperion_entries.version < excluded.version";

/// TLS as the DSN's `sslmode` asks (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// The `postgresql://` URL (`COCKROACH_DSN`); may carry `sslmode` and `sslrootcert`.
    pub dsn: Secret,
    /// File holding the password (`HYPERION_DB_PASSWORD_FILE`); overrides any in the DSN.
    pub password_file: Option<PathBuf>,
    /// The password itself (fetched from the secret source); overrides the file.
    pub password: Option<Secret>,
    /// PEM file of CA certificates to verify the server against (`HYPERION_DB_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    /// Most open connections (`HYPERION_DB_POOL_SIZE`).
    pub pool_size: usize,
    /// Bound on opening one connection (TCP, TLS, authentication).
    pub connect_timeout: Duration,
}

/// Splits `sslmode` and `sslrootcert` (which tokio-postgres does not fully understand) out of a
/// DSN and parses the rest. The DSN is a secret: errors never quote it.
pub fn parse_dsn(dsn: &str) -> Result<(tokio_postgres::Config, TlsMode, Option<PathBuf>), DbError> {
    let (base, query) = dsn.split_once('?').unwrap_or((dsn, ""));
    let mut tls = TlsMode::Prefer;
    let mut root_cert = None;
    let mut kept = Zeroizing::new(String::from(base));
    let mut separator = '?';
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        match name {
            "sslmode" => {
                tls = match value {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" | "verify-full" => TlsMode::VerifyFull,
                    other => {
                        return Err(DbError::Config(format!(
                            "COCKROACH_DSN: sslmode `{other}` is not one of disable, prefer, \
                             require, verify-ca, verify-full"
                        )))
                    }
                }
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            _ => {
                kept.push(separator);
                kept.push_str(param);
                separator = '&';
            }
        }
    }
    let mut config = tokio_postgres::Config::from_str(&kept).map_err(|e| {
        DbError::Config(format!(
            "COCKROACH_DSN is not a valid postgresql:// URL: {e}"
        ))
    })?;
    config.ssl_mode(match tls {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyFull => SslMode::Require,
    });
    Ok((config, tls, root_cert))
}

fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Zeroizing<Vec<u8>>, DbError> {
    use std::io::Read;
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|file| file.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| DbError::Config(format!("{what} ({}): cannot read: {e}", path.display())))?;
    if bytes.len() as u64 > max {
        return Err(DbError::Config(format!(
            "{what} ({}): larger than {max} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The password in a file: its bytes without the trailing newline; must not be empty.
fn read_password(path: &Path) -> Result<Zeroizing<Vec<u8>>, DbError> {
    let mut bytes = read_bounded(path, PASSWORD_FILE_BYTES_MAX, "HYPERION_DB_PASSWORD_FILE")?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(DbError::Config(format!(
            "HYPERION_DB_PASSWORD_FILE ({}): is empty",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The rustls configuration for a TLS mode (`None` for plaintext).
fn tls_config(mode: TlsMode, ca_file: Option<&Path>) -> Result<Option<ClientConfig>, DbError> {
    if mode == TlsMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Config(format!("TLS: {e}")))?;
    let config = match ca_file {
        Some(path) => {
            let pem = read_bounded(path, CA_FILE_BYTES_MAX, "HYPERION_DB_CA_FILE")?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    DbError::Config(format!("HYPERION_DB_CA_FILE ({}): {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    DbError::Config(format!("HYPERION_DB_CA_FILE ({}): {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(DbError::Config(format!(
                    "HYPERION_DB_CA_FILE ({}): no PEM certificate found",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None if mode == TlsMode::VerifyFull => {
            return Err(DbError::Config(
                "COCKROACH_DSN: sslmode=verify-full needs a CA file \
                 (HYPERION_DB_CA_FILE or sslrootcert)"
                    .to_string(),
            ))
        }
        None => {
            tracing::warn!(
                "database TLS without a CA file: the server certificate is not verified \
                 (set HYPERION_DB_CA_FILE and sslmode=verify-full)"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(UnverifiedServer(provider)))
                .with_no_client_auth()
        }
    };
    Ok(Some(config))
}

/// libpq's `sslmode=require` without a CA: encrypt, but accept any server certificate.
/// Signatures are still checked, so the session is bound to the presented key.
#[derive(Debug)]
struct UnverifiedServer(Arc<CryptoProvider>);

impl ServerCertVerifier for UnverifiedServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Converts a driver error: SQLSTATEs by class (see [`classify_sqlstate`]), the rest (I/O, TLS,
/// closed connection) as unavailability.
fn pg_error(error: tokio_postgres::Error) -> DbError {
    if let Some(db) = error.as_db_error() {
        return classify_sqlstate(db.code().code(), db.message().to_string());
    }
    if let Some(code) = error.code() {
        return classify_sqlstate(code.code(), error.to_string());
    }
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
        source = cause_of(source);
    }
    DbError::Unavailable(message)
}

fn cause_of<'a>(
    error: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    error.and_then(std::error::Error::source)
}

fn to_i64(value: u64, field: &str) -> Result<i64, DbError> {
    i64::try_from(value).map_err(|_| DbError::Invalid(format!("{field} {value} exceeds 2^63-1")))
}

fn to_u64(value: i64, field: &str) -> Result<u64, DbError> {
    u64::try_from(value)
        .map_err(|_| DbError::Invalid(format!("stored {field} {value} is negative")))
}

struct Statements {
    load: Statement,
    write: Statement,
}

struct PgConn {
    client: Client,
    statements: Option<Statements>,
}

struct PgInner {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    idle: Mutex<Vec<PgConn>>,
    permits: Semaphore,
    pool_size: usize,
    connect_timeout: Duration,
    connections_opened: AtomicU64,
}

/// The PostgreSQL/CockroachDB database (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct PgDatabase {
    inner: Arc<PgInner>,
}

/// A connection taken from the pool; back to the pool on drop only if marked reusable.
struct Lease<'a> {
    pool: &'a PgInner,
    conn: Option<PgConn>,
    reusable: bool,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    fn conn(&mut self) -> &mut PgConn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }

    /// The prepared statements of this connection, prepared on first use (after migration).
    async fn statements(&mut self) -> Result<&Statements, tokio_postgres::Error> {
        let conn = self.conn();
        if conn.statements.is_none() {
            let load = conn.client.prepare(LOAD_SQL).await?;
            let write = conn.client.prepare(WRITE_SQL).await?;
            conn.statements = Some(Statements { load, write });
        }
        Ok(conn.statements.as_ref().expect("prepared above"))
    }

    /// Ends a call: an SQL-level error leaves the connection usable; anything else closes it.
    fn finish<T>(mut self, outcome: Result<T, tokio_postgres::Error>) -> Result<T, DbError> {
        self.reusable = match &outcome {
            Ok(_) => true,
            Err(error) => error.as_db_error().is_some() && !error.is_closed(),
        };
        outcome.map_err(pg_error)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.reusable && !conn.client.is_closed() {
                self.pool.lock_idle().push(conn);
            }
        }
    }
}

impl PgInner {
    fn lock_idle(&self) -> MutexGuard<'_, Vec<PgConn>> {
        // A Vec push/pop cannot be left half-done by a panic.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn lease(&self) -> Result<Lease<'_>, DbError> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the pool semaphore is never closed");
        let reused = loop {
            match self.lock_idle().pop() {
                Some(conn) if conn.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match reused {
            Some(conn) => conn,
            None => self.open().await?,
        };
        assert!(
            self.lock_idle().len() < self.pool_size,
            "more connections than the pool size"
        );
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            reusable: false,
            _permit: permit,
        })
    }

    async fn open(&self) -> Result<PgConn, DbError> {
        let connecting = async {
            let client = match &self.tls {
                None => {
                    let (client, connection) = self.config.connect(NoTls).await?;
                    runtime::spawn(drive(connection));
                    client
                }
                Some(tls) => {
                    let (client, connection) = self.config.connect(tls.clone()).await?;
                    runtime::spawn(drive(connection));
                    client
                }
            };
            Ok::<_, tokio_postgres::Error>(client)
        };
        let client = runtime::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| {
                DbError::Unavailable(format!(
                    "no connection within {} ms",
                    self.connect_timeout.as_millis()
                ))
            })?
            .map_err(pg_error)?;
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
        Ok(PgConn {
            client,
            statements: None,
        })
    }
}

/// Drives one connection's I/O until it closes.
async fn drive<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(error) = connection.await {
        tracing::debug!("database connection closed: {error}");
    }
}

impl PgDatabase {
    /// Checks the settings (DSN, password file, CA file) without connecting; warm-up connects.
    pub fn new(settings: &PgSettings) -> Result<PgDatabase, DbError> {
        assert!(settings.pool_size > 0, "a pool needs a connection");
        let dsn = std::str::from_utf8(settings.dsn.expose())
            .map_err(|_| DbError::Config("COCKROACH_DSN is not UTF-8".to_string()))?;
        let (mut config, mode, root_cert) = parse_dsn(dsn)?;
        if let Some(password) = &settings.password {
            config.password(password.expose());
        } else if let Some(path) = &settings.password_file {
            config.password(read_password(path)?.as_slice());
        }
        config.application_name("hyperion");
        let ca_file = settings.ca_file.as_deref().or(root_cert.as_deref());
        let tls = tls_config(mode, ca_file)?.map(MakeRustlsConnect::new);
        Ok(PgDatabase {
            inner: Arc::new(PgInner {
                config,
                tls,
                idle: Mutex::new(Vec::with_capacity(settings.pool_size)),
                permits: Semaphore::new(settings.pool_size),
                pool_size: settings.pool_size,
                connect_timeout: settings.connect_timeout,
                connections_opened: AtomicU64::new(0),
            }),
        })
    }

    /// Connections opened so far (a warm pool stops growing).
    pub fn connections_opened(&self) -> u64 {
        self.inner.connections_opened.load(Ordering::Relaxed)
    }

    /// Idle connections in the pool now.
    pub fn idle_connections(&self) -> usize {
        self.inner.lock_idle().len()
    }

    async fn migrate_once(&self) -> Result<(), DbError> {
        let mut lease = self.inner.lease().await?;
        let client = &lease.conn().client;
        let outcome = async {
            client.execute(CREATE_VERSION_TABLE, &[]).await?;
            let current: i64 = client.query_one(SELECT_VERSION, &[]).await?.try_get(0)?;
            Ok::<_, tokio_postgres::Error>(current)
        }
        .await;
        let current = lease.finish_ref(outcome)?;
        if current > SCHEMA_VERSION {
            return Err(DbError::Config(format!(
                "the database schema is at version {current}, newer than this build's \
                 {SCHEMA_VERSION}: upgrade Hyperion"
            )));
        }
        for (version, description, statements) in MIGRATIONS {
            if *version <= current {
                continue;
            }
            let client = &lease.conn().client;
            let outcome = async {
                for statement in *statements {
                    client.execute(*statement, &[]).await?;
                }
                client
                    .execute(RECORD_VERSION, &[version, description])
                    .await?;
                Ok::<_, tokio_postgres::Error>(())
            }
            .await;
            lease.finish_ref(outcome)?;
            tracing::info!(version, description, "database schema migrated");
        }
        lease.reusable = true;
        Ok(())
    }
}

impl Lease<'_> {
    /// Like `finish`, for a step in the middle of a multi-statement call.
    fn finish_ref<T>(&mut self, outcome: Result<T, tokio_postgres::Error>) -> Result<T, DbError> {
        if let Err(error) = &outcome {
            self.reusable = error.as_db_error().is_some() && !error.is_closed();
        }
        outcome.map_err(pg_error)
    }
}

impl Database for PgDatabase {
    async fn migrate(&self) -> Result<(), DbError> {
        let mut attempt = 1;
        loop {
            match self.migrate_once().await {
                Err(DbError::Rejected { code, .. })
                    if (code == "23505" || code == "42P07") && attempt < MIGRATE_RACE_ATTEMPTS =>
                {
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn load(&self, key: &[u8]) -> Result<Option<StoredEntry>, DbError> {
        let mut lease = self.inner.lease().await?;
        let outcome = async {
            let statement = lease.statements().await?.load.clone();
            lease.conn().client.query_opt(&statement, &[&key]).await
        }
        .await;
        let Some(row) = lease.finish(outcome)? else {
            return Ok(None);
        };
        let read = |e: tokio_postgres::Error| DbError::Invalid(format!("stored row: {e}"));
        if row.try_get::<_, bool>(4).map_err(read)? {
            return Ok(None); // A tombstone.
        }
        Ok(Some(StoredEntry {
            key: key.to_vec(),
            value: row.try_get(0).map_err(read)?,
            version: to_u64(row.try_get(1).map_err(read)?, "version")?,
            ttl_ms: to_u64(row.try_get(2).map_err(read)?, "ttl_ms")?,
            created_at_ms: to_u64(row.try_get(3).map_err(read)?, "created_at_ms")?,
        }))
    }

    async fn write_batch(&self, mutations: &[Mutation]) -> Result<(), DbError> {
        if mutations.len() > WRITE_BATCH_MAX {
            return Err(DbError::Invalid(format!(
                "{} mutations in one batch; at most {WRITE_BATCH_MAX}",
                mutations.len()
            )));
        }
        let kept = coalesce(mutations);
        if kept.is_empty() {
            return Ok(());
        }
        let mut keys: Vec<&[u8]> = Vec::with_capacity(kept.len());
        let mut values: Vec<&[u8]> = Vec::with_capacity(kept.len());
        let mut versions = Vec::with_capacity(kept.len());
        let mut ttls = Vec::with_capacity(kept.len());
        let mut created = Vec::with_capacity(kept.len());
        let mut deleted = Vec::with_capacity(kept.len());
        for mutation in kept {
            keys.push(mutation.key());
            versions.push(to_i64(mutation.version(), "version")?);
            match mutation {
                Mutation::Upsert(entry) => {
                    values.push(&entry.value);
                    ttls.push(to_i64(entry.ttl_ms, "ttl_ms")?);
                    created.push(to_i64(entry.created_at_ms, "created_at_ms")?);
                    deleted.push(false);
                }
                Mutation::Delete { .. } => {
                    values.push(&[]);
                    ttls.push(0i64);
                    created.push(0i64);
                    deleted.push(true);
                }
            }
        }
        let mut lease = self.inner.lease().await?;
        let outcome = async {
            let statement = lease.statements().await?.write.clone();
            lease
                .conn()
                .client
                .execute(
                    &statement,
                    &[&keys, &values, &versions, &ttls, &created, &deleted],
                )
                .await
        }
        .await;
        lease.finish(outcome).map(|_| ())
    }

    async fn ping(&self) -> Result<(), DbError> {
        let mut lease = self.inner.lease().await?;
        let outcome = lease.conn().client.simple_query("SELECT 1").await;
        lease.finish(outcome).map(|_| ())
    }

    async fn max_version(&self) -> Result<u64, DbError> {
        let mut lease = self.inner.lease().await?;
        let outcome = lease.conn().client.query_one(MAX_VERSION_SQL, &[]).await;
        let row = lease.finish(outcome)?;
        let read = |e: tokio_postgres::Error| DbError::Invalid(format!("max version: {e}"));
        to_u64(row.try_get(0).map_err(read)?, "version")
    }
}

/// The highest version of any row (tombstones included).
const MAX_VERSION_SQL: &str = "SELECT COALESCE(MAX(version), 0)::INT8 FROM hyperion_entries";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_tls_modes_and_root_cert_are_split_out() {
        let (config, mode, root) = parse_dsn(
            "postgresql://hyperion@roach:26257/hyperion?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(mode, TlsMode::VerifyFull);
        assert_eq!(root, Some(PathBuf::from("/ca.pem")));
        assert_eq!(config.get_user(), Some("hyperion"));
        assert_eq!(config.get_dbname(), Some("hyperion"));
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(config.get_ports(), &[26257]);
        let (_, mode, _) = parse_dsn("postgres://u@h/d").unwrap();
        assert_eq!(mode, TlsMode::Prefer);
        let (_, mode, _) = parse_dsn("postgres://u@h/d?sslmode=disable").unwrap();
        assert_eq!(mode, TlsMode::Disable);
        let bad = parse_dsn("postgres://u:hunter2@h/d?sslmode=sometimes").unwrap_err();
        assert!(bad.to_string().contains("sslmode `sometimes`"), "{bad}");
        assert!(!bad.to_string().contains("hunter2"));
        let bad = parse_dsn("postgres://u:hunter2@h:notaport/d").unwrap_err();
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
    }

    #[test]
    fn verify_full_needs_a_ca_and_files_are_checked() {
        let error = tls_config(TlsMode::VerifyFull, None).unwrap_err();
        assert!(error.to_string().contains("HYPERION_DB_CA_FILE"), "{error}");
        assert!(tls_config(TlsMode::Disable, None).unwrap().is_none());
        assert!(tls_config(TlsMode::Require, None).unwrap().is_some());
        let dir = std::env::temp_dir().join(format!("hyperion-pg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let error = tls_config(TlsMode::VerifyFull, Some(&not_pem)).unwrap_err();
        assert!(error.to_string().contains("no PEM certificate"), "{error}");
        let password = dir.join("password");
        std::fs::write(&password, "s3cret\n").unwrap();
        assert_eq!(read_password(&password).unwrap().as_slice(), b"s3cret");
        std::fs::write(&password, "\n").unwrap();
        assert!(read_password(&password)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
