//! Duration histograms handed to the code that times its own work: the WAL's fsyncs, snapshots,
//! system-of-record queries. A [`Timer`] travels explicitly (never through a global), so each
//! simulated node of one process records into its own registry. An off timer
//! (`HYPERION_METRICS=false`) records nothing and reads no clock.
//!
//! The histogram is `prometheus-client`'s own (a shared handle); only [`crate::metrics`] makes
//! and registers them, and this module knows nothing of the registry.

use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

use crate::runtime::{self, Instant};

/// Where one kind of work records how long it took (seconds), or nowhere.
#[derive(Debug, Clone, Default)]
pub struct Timer(Option<Histogram>);

impl Timer {
    /// Records into `histogram`.
    pub fn recording(histogram: Histogram) -> Timer {
        Timer(Some(histogram))
    }

    /// Records nothing.
    pub fn off() -> Timer {
        Timer(None)
    }

    /// The start of one timed piece of work (`None` when off: no clock is read).
    pub fn start(&self) -> Option<Instant> {
        self.0.as_ref().map(|_| runtime::now())
    }

    /// Records the work begun at `started` (from [`Timer::start`]) as done now.
    pub fn stop(&self, started: Option<Instant>) {
        if let (Some(histogram), Some(started)) = (&self.0, started) {
            let took: Duration = runtime::now().saturating_duration_since(started);
            histogram.observe(took.as_secs_f64());
        }
    }

    /// Runs `work` and records how long it took.
    pub fn time<T>(&self, work: impl FnOnce() -> T) -> T {
        let started = self.start();
        let value = work();
        self.stop(started);
        value
    }
}
