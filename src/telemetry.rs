//! Logging set-up, rate-limited warnings and fixed-size latency histograms per pipeline stage.
//!
//! Log-level policy: per-frame detail at `trace`, lost data (a sink dropping results, a recording
//! failing) at `error`, repeated conditions (corrupt frames, drops) warned at a limited rate,
//! state changes (start, device lost/back, stop) at `info`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Where this crate's log records go besides stderr (the ROS node's `/rosout`).
pub type LogHook = Box<dyn Fn(&log::Record) + Send + Sync>;

struct Logger {
    inner: env_logger::Logger,
    hook: RwLock<Option<LogHook>>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.inner.matches(record) {
            return;
        }
        self.inner.log(record);
        // Only our own records: the hook publishes through DDS, whose libraries log too.
        if record.target().starts_with(env!("CARGO_CRATE_NAME")) {
            if let Ok(hook) = self.hook.try_read() {
                if let Some(h) = hook.as_ref() {
                    h(record);
                }
            }
        }
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// Initialise logging to stderr (`RUST_LOG` overrides `default_filter`), with room for a
/// [`set_log_hook`]. A second call does nothing.
pub fn init_logging(default_filter: &str) {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
            .build();
    let max = inner.filter();
    if LOGGER
        .set(Logger {
            inner,
            hook: RwLock::new(None),
        })
        .is_ok()
    {
        if let Some(l) = LOGGER.get() {
            if log::set_logger(l).is_ok() {
                log::set_max_level(max);
            }
        }
    }
}

/// Also send this crate's records that pass the filter to `hook` (`None` removes it).
pub fn set_log_hook(hook: Option<LogHook>) {
    if let Some(l) = LOGGER.get() {
        if let Ok(mut h) = l.hook.write() {
            *h = hook;
        }
    }
}

/// Lets a repeated warning through at most once per `interval`, counting the suppressed ones.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// At most one message per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` if a message may be logged now (`n` = messages suppressed since the last one).
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Latency histogram in microseconds, 1 µs .. 10 min, 2 significant digits (fixed size).
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    const MAX_US: u64 = 600_000_000;

    /// An empty histogram.
    pub fn new() -> Self {
        // Bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
        let hist = Histogram::new_with_bounds(1, Self::MAX_US, 2)
            .unwrap_or_else(|_| unreachable!("constant bounds are valid"));
        Self { hist }
    }

    /// Record one duration (clamped to the histogram's range).
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, Self::MAX_US);
        self.hist.saturating_record(us);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Quantile `q` (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1e3
    }

    /// Mean in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        self.hist.mean() / 1e3
    }

    /// Forget all samples.
    pub fn clear(&mut self) {
        self.hist.reset();
    }
}

/// Latency histograms of every stage, by name (sorted, so reports are stable).
#[derive(Debug, Clone, Default)]
pub struct StageTimings {
    stages: BTreeMap<String, LatencyHistogram>,
}

impl StageTimings {
    /// Record `d` for `stage`.
    pub fn record(&mut self, stage: &str, d: Duration) {
        match self.stages.get_mut(stage) {
            Some(h) => h.record(d),
            None => {
                let mut h = LatencyHistogram::new();
                h.record(d);
                self.stages.insert(stage.to_string(), h);
            }
        }
    }

    /// The histogram of `stage`.
    pub fn get(&self, stage: &str) -> Option<&LatencyHistogram> {
        self.stages.get(stage)
    }

    /// All stages, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &LatencyHistogram)> {
        self.stages.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Forget all samples (stages stay listed).
    pub fn clear(&mut self) {
        for h in self.stages.values_mut() {
            h.clear();
        }
    }

    /// `stage p50/p99 ms` for each stage, in `order` first, then the rest by name.
    pub fn summary(&self, order: &[&str]) -> String {
        let mut out = String::new();
        let mut names: Vec<&str> = order
            .iter()
            .copied()
            .filter(|n| self.stages.contains_key(*n))
            .collect();
        names.extend(
            self.stages
                .keys()
                .map(String::as_str)
                .filter(|n| !order.contains(n)),
        );
        for name in names {
            if let Some(h) = self.stages.get(name) {
                if h.count() == 0 {
                    continue;
                }
                let _ = write!(
                    out,
                    " {name} {:.1}/{:.1}",
                    h.quantile_ms(0.5),
                    h.quantile_ms(0.99)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_two_significant_digits() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        assert!(
            (h.quantile_ms(0.5) - 50.0).abs() <= 0.5,
            "{}",
            h.quantile_ms(0.5)
        );
        assert!(
            (h.quantile_ms(0.99) - 99.0).abs() <= 1.0,
            "{}",
            h.quantile_ms(0.99)
        );
        h.record(Duration::from_secs(100_000)); // clamped, not lost
        assert_eq!(h.count(), 101);
    }

    #[test]
    fn rate_limit_counts_suppressed() {
        let mut r = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
        let mut r2 = RateLimit::new(Duration::ZERO);
        assert_eq!(r2.allow(), Some(0));
        assert_eq!(r2.allow(), Some(0));
    }

    #[test]
    fn summary_lists_stages_in_order() {
        let mut t = StageTimings::default();
        t.record("backbone", Duration::from_millis(10));
        t.record("capture", Duration::from_millis(1));
        t.record("zz_sink", Duration::from_millis(2));
        let s = t.summary(&["capture", "backbone"]);
        assert!(
            s.starts_with(" capture 1.0/1.0 backbone 10.0/10.0 zz_sink"),
            "{s}"
        );
    }
}
