//! Counters and histograms of one process, labelled by tenant, rendered in the Prometheus text format.
//!
//! Each process counts what it did (runs it started, attempts it ran); Prometheus sums the processes. Gauges
//! that belong to the store (queue depth) are read from the store when `/metrics` is scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the histogram buckets.
const BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Every metric: name, type, help. A name not listed here is not recorded.
pub const METRICS: &[(&str, &str, &str)] = &[
    ("sluice_runs_started_total", "counter", "Runs started, by tenant and trigger kind."),
    (
        "sluice_runs_finished_total",
        "counter",
        "Runs that reached a final status in this process, by tenant and status.",
    ),
    ("sluice_run_duration_seconds", "histogram", "From a run's start to its final status, by tenant."),
    ("sluice_steps_total", "counter", "Steps (and for_each items) that finished, by tenant and status."),
    ("sluice_attempts_total", "counter", "Step attempts, by tenant and result (ok or error)."),
    ("sluice_attempt_duration_seconds", "histogram", "How long one step attempt took, by tenant."),
    ("sluice_retries_total", "counter", "Attempts that failed and were scheduled again, by tenant."),
    ("sluice_dead_letters_total", "counter", "Steps that failed for good and became dead letters, by tenant."),
    ("sluice_http_requests_total", "counter", "API and webhook requests, by route and status code."),
    ("sluice_webhooks_total", "counter", "Inbound webhooks, by tenant and result (accepted, duplicate, rejected)."),
    ("sluice_rate_limited_total", "counter", "Requests refused with 429, by tenant and limit."),
    (
        "sluice_queue_wait_seconds",
        "histogram",
        "From a run's start to its first step's first attempt (queue latency), by tenant.",
    ),
    ("sluice_queue_depth", "gauge", "Tasks waiting for a worker (ready now or timers), by tenant."),
];

/// A gauge read when rendering: name, labels, value.
pub type Gauge<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// The metrics of one process.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, String), Histogram>>,
}

/// `{a="x",b="y"}` with values escaped.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn known(name: &str) -> Option<&'static str> {
    METRICS.iter().find(|(n, _, _)| *n == name).map(|(n, _, _)| *n)
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    pub fn inc(&self, name: &str, pairs: &[(&str, &str)]) {
        self.add(name, pairs, 1);
    }

    pub fn add(&self, name: &str, pairs: &[(&str, &str)], n: u64) {
        let Some(name) = known(name) else { return };
        if let Ok(mut m) = self.counters.lock() {
            *m.entry((name, labels(pairs))).or_default() += n;
        }
    }

    pub fn observe(&self, name: &str, pairs: &[(&str, &str)], seconds: f64) {
        let Some(name) = known(name) else { return };
        if let Ok(mut m) = self.histograms.lock() {
            let h = m
                .entry((name, labels(pairs)))
                .or_insert_with(|| Histogram { counts: vec![0; BUCKETS.len()], ..Histogram::default() });
            for (i, b) in BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// The value of a counter (tests and benchmarks).
    pub fn counter(&self, name: &str, pairs: &[(&str, &str)]) -> u64 {
        let key = labels(pairs);
        self.counters
            .lock()
            .ok()
            .and_then(|m| m.iter().find(|((n, l), _)| *n == name && *l == key).map(|(_, v)| *v))
            .unwrap_or(0)
    }

    /// The Prometheus text format, with `gauges` (name, labels, value) read by the caller.
    pub fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let counters = self.counters.lock().map(|m| m.clone()).unwrap_or_default();
        let histograms = self.histograms.lock().map(|m| m.clone()).unwrap_or_default();
        let mut out = String::new();
        for (name, kind, help) in METRICS {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match *kind {
                "counter" => {
                    for ((n, l), v) in counters.iter().filter(|((n, _), _)| n == name) {
                        let _ = writeln!(out, "{n}{l} {v}");
                    }
                }
                "histogram" => {
                    for ((n, l), h) in histograms.iter().filter(|((n, _), _)| n == name) {
                        let inner = l.trim_start_matches('{').trim_end_matches('}');
                        let sep = if inner.is_empty() { "" } else { "," };
                        for (b, c) in BUCKETS.iter().zip(&h.counts) {
                            let _ = writeln!(out, "{n}_bucket{{{inner}{sep}le=\"{b}\"}} {c}");
                        }
                        let _ = writeln!(out, "{n}_bucket{{{inner}{sep}le=\"+Inf\"}} {}", h.count);
                        let _ = writeln!(out, "{n}_sum{l} {}", h.sum);
                        let _ = writeln!(out, "{n}_count{l} {}", h.count);
                    }
                }
                _ => {
                    for (n, pairs, v) in gauges.iter().filter(|(n, _, _)| n == name) {
                        let _ = writeln!(out, "{n}{} {v}", labels(pairs));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::new();
        m.inc("sluice_runs_started_total", &[("tenant", "acme"), ("trigger", "webhook")]);
        m.inc("sluice_runs_started_total", &[("tenant", "acme"), ("trigger", "webhook")]);
        m.observe("sluice_run_duration_seconds", &[("tenant", "a\"b")], 0.02);
        m.inc("not_a_metric", &[]);
        let text = m.render(&[("sluice_queue_depth", vec![("tenant", "acme")], 3.0)]);
        assert!(text.contains("sluice_runs_started_total{tenant=\"acme\",trigger=\"webhook\"} 2\n"), "{text}");
        assert!(text.contains("sluice_run_duration_seconds_bucket{tenant=\"a\\\"b\",le=\"0.025\"} 1\n"), "{text}");
        assert!(text.contains("sluice_run_duration_seconds_bucket{tenant=\"a\\\"b\",le=\"0.01\"} 0\n"), "{text}");
        assert!(text.contains("sluice_run_duration_seconds_count{tenant=\"a\\\"b\"} 1\n"), "{text}");
        assert!(text.contains("sluice_queue_depth{tenant=\"acme\"} 3\n"), "{text}");
        assert!(!text.contains("not_a_metric"));
        assert_eq!(m.counter("sluice_runs_started_total", &[("tenant", "acme"), ("trigger", "webhook")]), 2);
    }
}
