//! What a benchmark run measured: one HDR histogram per operation class (microseconds, 3
//! significant digits), errors by gRPC code with `RESOURCE_EXHAUSTED` apart, and the table and
//! JSON they are reported as.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

/// Operation classes measured apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    GetHit,
    GetMiss,
    Set,
    BatchGet,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::GetHit, Class::GetMiss, Class::Set, Class::BatchGet];

    pub fn name(self) -> &'static str {
        match self {
            Class::GetHit => "get (hit)",
            Class::GetMiss => "get (miss)",
            Class::Set => "set",
            Class::BatchGet => "batch_get",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Class::GetHit => "get_hit",
            Class::GetMiss => "get_miss",
            Class::Set => "set",
            Class::BatchGet => "batch_get",
        }
    }
}

/// Longest latency a histogram records exactly (larger values are clamped to it): 10 minutes.
const LATENCY_US_MAX: u64 = 600_000_000;

/// One worker's measurements; merged at the end.
pub struct Stats {
    histograms: BTreeMap<Class, Histogram<u64>>,
    /// Keys answered by BatchGets.
    pub batch_keys: u64,
    /// Gets a near cache answered (`--near-cache-entries`).
    pub near_hits: u64,
    /// Failed requests by gRPC code (`RESOURCE_EXHAUSTED` included).
    pub errors: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        let histograms = Class::ALL
            .into_iter()
            .map(|class| {
                let histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                    .expect("constant histogram bounds are valid");
                (class, histogram)
            })
            .collect();
        Stats {
            histograms,
            batch_keys: 0,
            near_hits: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Stats {
    pub fn record(&mut self, class: Class, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        if let Some(histogram) = self.histograms.get_mut(&class) {
            histogram.saturating_record(micros);
        }
    }

    pub fn record_error(&mut self, code: tonic::Code) {
        *self.errors.entry(format!("{code:?}")).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Stats) {
        for (class, histogram) in &other.histograms {
            if let Some(mine) = self.histograms.get_mut(class) {
                // Same bounds on both sides: adding cannot fail.
                let _ = mine.add(histogram);
            }
        }
        self.batch_keys += other.batch_keys;
        self.near_hits += other.near_hits;
        for (code, count) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += count;
        }
    }

    pub fn ops(&self) -> u64 {
        self.histograms.values().map(Histogram::len).sum()
    }

    /// Gets measured (hits and misses).
    pub fn gets(&self) -> u64 {
        [Class::GetHit, Class::GetMiss]
            .iter()
            .filter_map(|class| self.histograms.get(class))
            .map(Histogram::len)
            .sum()
    }

    /// The share of Gets a near cache answered.
    pub fn near_hit_rate(&self) -> f64 {
        self.near_hits as f64 / self.gets().max(1) as f64
    }

    pub fn resource_exhausted(&self) -> u64 {
        self.errors.get("ResourceExhausted").copied().unwrap_or(0)
    }

    /// The table printed at the end: one row per class that ran.
    pub fn table(&self, elapsed: Duration) -> String {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let mut out = format!(
            "{:<12} {:>10} {:>12} {:>10} {:>10} {:>10} {:>10}\n",
            "operation", "count", "ops/s", "p50 us", "p99 us", "p999 us", "max us"
        );
        for (class, h) in self.histograms.iter().filter(|(_, h)| !h.is_empty()) {
            out.push_str(&format!(
                "{:<12} {:>10} {:>12.0} {:>10} {:>10} {:>10} {:>10}\n",
                class.name(),
                h.len(),
                h.len() as f64 / seconds,
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            ));
        }
        if self.batch_keys > 0 {
            out.push_str(&format!(
                "batch_get keys: {} ({:.0} keys/s)\n",
                self.batch_keys,
                self.batch_keys as f64 / seconds
            ));
        }
        if self.near_hits > 0 {
            out.push_str(&format!(
                "near cache: {} of {} Gets answered ({:.1} %)\n",
                self.near_hits,
                self.gets(),
                self.near_hit_rate() * 100.0
            ));
        }
        let errors: u64 = self.errors.values().sum();
        out.push_str(&format!(
            "errors: {errors} (RESOURCE_EXHAUSTED {}){}\n",
            self.resource_exhausted(),
            if self.errors.is_empty() {
                String::new()
            } else {
                format!(" {:?}", self.errors)
            }
        ));
        out
    }

    /// The JSON printed at the end (`settings` describes the run).
    pub fn json(&self, elapsed: Duration, settings: serde_json::Value) -> serde_json::Value {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let classes: serde_json::Map<String, serde_json::Value> = self
            .histograms
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(class, h)| {
                let value = json!({
                    "count": h.len(),
                    "ops_per_sec": h.len() as f64 / seconds,
                    "p50_us": h.value_at_quantile(0.50),
                    "p99_us": h.value_at_quantile(0.99),
                    "p999_us": h.value_at_quantile(0.999),
                    "max_us": h.max(),
                    "mean_us": h.mean(),
                });
                (class.key().to_string(), value)
            })
            .collect();
        json!({
            "settings": settings,
            "elapsed_s": seconds,
            "ops": self.ops(),
            "ops_per_sec": self.ops() as f64 / seconds,
            "batch_get_keys": self.batch_keys,
            "batch_get_keys_per_sec": self.batch_keys as f64 / seconds,
            "near_cache_hits": self.near_hits,
            "near_cache_hit_rate": self.near_hit_rate(),
            "classes": classes,
            "errors": self.errors,
            "resource_exhausted": self.resource_exhausted(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_measured_apart_and_merge() {
        let mut a = Stats::default();
        a.record(Class::GetHit, Duration::from_micros(100));
        a.record(Class::GetMiss, Duration::from_micros(900));
        let mut b = Stats::default();
        b.record(Class::GetHit, Duration::from_micros(300));
        b.record_error(tonic::Code::ResourceExhausted);
        a.merge(&b);
        assert_eq!(a.ops(), 3);
        assert_eq!(a.resource_exhausted(), 1);
        let table = a.table(Duration::from_secs(1));
        assert!(
            table.contains("get (hit)") && table.contains("get (miss)"),
            "{table}"
        );
        assert!(!table.contains("set "), "{table}");
        let json = a.json(Duration::from_secs(1), json!({}));
        assert_eq!(json["classes"]["get_hit"]["count"], 2);
        assert_eq!(json["classes"]["get_miss"]["max_us"], 900);
    }
}
