//! Values that reload while the node runs (certificates and keys, the ACL, the JWKS, the feature
//! flags), and the watcher that reloads them on SIGHUP and when their files change.
//!
//! Contract: a reload either replaces the value whole or keeps the previous one and logs why
//! (a bad new file never takes a working node down); readers take an `Arc` of the current value
//! and are never blocked for long. Connections and requests already using the old value keep it.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

/// A value replaced whole by reloads.
#[derive(Debug)]
pub struct Reloadable<T>(RwLock<Arc<T>>);

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Reloadable<T> {
        Reloadable(RwLock::new(Arc::new(value)))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the value.
    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
    }
}

/// The result of one reload: `Err` names what was wrong (the previous value stays).
pub type ReloadFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One reloadable thing, for [`watch`].
pub struct Watched {
    /// What it is, for logs (the variable that names it).
    pub name: &'static str,
    /// The files whose change triggers a reload (empty: SIGHUP only, e.g. secrets from Vault).
    pub files: Vec<PathBuf>,
    /// Loads it again.
    pub reload: Box<dyn Fn() -> ReloadFuture + Send + Sync>,
}

/// How often [`watch`] looks at the watched files' modification times and sizes.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A file's (modification time, length), or `None` while it cannot be read.
fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Reloads everything on SIGHUP, and each thing whose files changed, checked every
/// `poll_interval`. Runs until the process ends.
pub async fn watch(watched: Vec<Watched>, poll_interval: Duration) {
    if watched.is_empty() {
        return;
    }
    let mut hangups = crate::runtime::Hangups::listen();
    let stamps = |item: &Watched| item.files.iter().map(stamp).collect::<Vec<_>>();
    let mut seen: Vec<_> = watched.iter().map(stamps).collect();
    loop {
        let hangup = tokio::select! {
            () = hangups.recv() => true,
            () = crate::runtime::sleep(poll_interval) => false,
        };
        if hangup {
            tracing::info!(
                "SIGHUP: reloading certificates, keys, the ACL, the JWKS and the feature flags"
            );
        }
        for (item, seen) in watched.iter().zip(seen.iter_mut()) {
            let now = stamps(item);
            if !hangup && now == *seen {
                continue;
            }
            // A file being rewritten may be half-written: a failed load is retried at the
            // next change (the stamp is only taken once a load succeeded or the file settled).
            match (item.reload)().await {
                Ok(()) => {
                    tracing::info!(what = item.name, "reloaded");
                    *seen = now;
                }
                Err(error) => {
                    tracing::error!(
                        what = item.name,
                        "reload failed, keeping the previous version: {error}"
                    );
                    *seen = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloadable_value_is_replaced_whole_and_old_readers_keep_theirs() {
        let value = Reloadable::new(1);
        let old = value.get();
        value.set(2);
        assert_eq!((*old, *value.get()), (1, 2));
    }
}
