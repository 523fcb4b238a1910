//! The metrics checker: what the clients saw (Get latency in simulated time, hit rate, whether
//! the first Get was answered) and what the simulated database went through (queries, the most
//! in flight at once, refusals), judged against a scenario's `[expect]` thresholds.

use hyperion::db::SimDatabase;

use crate::spec::MetricLimits;

/// What the clients saw, and what the database went through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub gets: usize,
    pub hits: usize,
    pub get_p50_ms: u64,
    pub get_p99_ms: u64,
    /// The first Get of the run succeeded (answered at all), if there was one.
    pub first_get_ok: Option<bool>,
    pub db_queries: u64,
    pub db_peak_concurrency: u64,
    pub db_refused: u64,
    /// Times leadership changed hands after the first election (from the Raft monitor).
    pub leader_changes: u64,
}

impl Metrics {
    pub fn of(history: &hyperion_checker::History, db: Option<&SimDatabase>) -> Metrics {
        use hyperion_checker::{Op, OpResult, Outcome};
        let mut latencies = Vec::new();
        let mut hits = 0;
        let mut first: Option<(u64, bool)> = None;
        for op in history.ops() {
            if !matches!(op.op, Op::Get { .. }) {
                continue;
            }
            let Some(returned) = op.return_ms else {
                continue;
            };
            latencies.push(returned - op.invoke_ms);
            let outcome = op.effective_outcome();
            if matches!(outcome, Outcome::Ok(OpResult::Hit { .. })) {
                hits += 1;
            }
            let ok = matches!(outcome, Outcome::Ok(_));
            if first.is_none_or(|(at, _)| op.invoke_ms < at) {
                first = Some((op.invoke_ms, ok));
            }
        }
        latencies.sort_unstable();
        let percentile = |p: usize| -> u64 {
            if latencies.is_empty() {
                0
            } else {
                latencies[((latencies.len() - 1) * p) / 100]
            }
        };
        let stats = db.map(SimDatabase::stats).unwrap_or_default();
        Metrics {
            gets: latencies.len(),
            hits,
            get_p50_ms: percentile(50),
            get_p99_ms: percentile(99),
            first_get_ok: first.map(|(_, ok)| ok),
            db_queries: stats.total_queries,
            db_peak_concurrency: stats.peak_concurrent,
            db_refused: stats.refused_over_cap,
            leader_changes: 0,
        }
    }

    pub fn render(&self) -> String {
        let hit_rate = if self.gets == 0 {
            0.0
        } else {
            100.0 * self.hits as f64 / self.gets as f64
        };
        format!(
            "metrics: {} gets, hit rate {hit_rate:.1} %, get p50 {} ms, p99 {} ms; database: {} \
             queries, peak {} in flight, {} refused for lack of a connection; {} leader \
             change(s){}",
            self.gets,
            self.get_p50_ms,
            self.get_p99_ms,
            self.db_queries,
            self.db_peak_concurrency,
            self.db_refused,
            self.leader_changes,
            match self.first_get_ok {
                Some(true) => "; first get answered",
                Some(false) => "; first get FAILED",
                None => "",
            }
        )
    }

    /// What exceeds the limits.
    pub fn violations(&self, limits: &MetricLimits) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(max) = limits.get_p99_ms_max {
            if self.get_p99_ms > max {
                found.push(format!("get p99 {} ms exceeds {max} ms", self.get_p99_ms));
            }
        }
        if let Some(max) = limits.db_peak_concurrency_max {
            if self.db_peak_concurrency > max {
                found.push(format!(
                    "database peak concurrency {} exceeds {max}",
                    self.db_peak_concurrency
                ));
            }
        }
        if let Some(max) = limits.db_refused_max {
            if self.db_refused > max {
                found.push(format!(
                    "database refused {} queries for lack of a connection (limit {max})",
                    self.db_refused
                ));
            }
        }
        if let Some(max) = limits.db_queries_max {
            if self.db_queries > max {
                found.push(format!(
                    "the database received {} queries (limit {max})",
                    self.db_queries
                ));
            }
        }
        if let Some(max) = limits.leader_changes_max {
            if self.leader_changes > max {
                found.push(format!(
                    "leadership changed hands {} times (limit {max})",
                    self.leader_changes
                ));
            }
        }
        if limits.first_get_ok && self.first_get_ok == Some(false) {
            found.push("the first Get of the run failed".to_string());
        }
        found
    }
}
