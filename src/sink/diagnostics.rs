//! The `/diagnostics` message: one DiagnosticStatus per status interval with the pipeline's
//! counters and latencies, the node's own counters and what went wrong (a recorder that stopped).

use std::collections::BTreeMap;

use crate::frame::Stamp;
use crate::pipeline::{Status, STAGES};
use crate::ros::msg::*;

/// Key of the source's skipped-frame counter in the diagnostics (malformed image messages,
/// corrupt camera buffers).
pub const DIAG_SOURCE_SKIPPED: &str = "source_skipped";

/// Builds the `/diagnostics` message of each status snapshot.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    name: String,
    static_values: Vec<KeyValue>,
    warning: Option<String>,
}

impl Diagnostics {
    /// Status named `<node>: pipeline`, with `static_values` (backend, model, ...) in every
    /// message.
    pub fn new(node_name: &str, static_values: BTreeMap<String, String>) -> Self {
        Diagnostics {
            name: format!("{node_name}: pipeline"),
            static_values: static_values
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
            warning: None,
        }
    }

    /// With a condition that lasts the whole run (the node fell back from the backend it was
    /// asked for): an otherwise OK status is WARN and says so.
    pub fn with_warning(mut self, warning: Option<String>) -> Self {
        self.warning = warning;
        self
    }

    /// A WARN status sent before the pipeline runs, while a slow start-up step (the first
    /// TensorRT engine build) is under way.
    pub fn starting(node_name: &str, line: &str, now: Stamp) -> DiagnosticArray {
        DiagnosticArray {
            header: Header {
                stamp: Time::from(now),
                frame_id: String::new(),
            },
            status: vec![DiagnosticStatus {
                level: diagnostic_level::WARN,
                name: format!("{node_name}: pipeline"),
                message: format!("starting: {line}"),
                hardware_id: "dinov3_perception".into(),
                values: Vec::new(),
            }],
        }
    }

    /// The message for one status snapshot. `counters` are added as they are (the node's own:
    /// `/rosout` lines dropped, malformed parameter requests; the recorder's drops). Each of
    /// `errors` (a recorder that stopped, ...) raises the level to ERROR and is in the message.
    pub fn message(
        &self,
        status: &Status,
        now: Stamp,
        counters: &[(&str, u64)],
        errors: &[String],
    ) -> DiagnosticArray {
        let sink_drops: u64 = status.sink_drops.values().sum();
        let mut values = vec![
            kv("fps", format!("{:.2}", status.fps)),
            kv("frames_captured", status.captured.to_string()),
            kv("frames_processed", status.processed.to_string()),
            kv("frames_dropped", status.dropped.to_string()),
            kv("sink_drops", sink_drops.to_string()),
            kv(DIAG_SOURCE_SKIPPED, status.source.skipped.to_string()),
            kv("source_reconnects", status.source.reconnects.to_string()),
        ];
        for stage in STAGES {
            if let Some(h) = status.timings.get(stage) {
                if h.count() > 0 {
                    values.push(kv(
                        &format!("latency_{stage}_p50_ms"),
                        format!("{:.2}", h.quantile_ms(0.5)),
                    ));
                    values.push(kv(
                        &format!("latency_{stage}_p99_ms"),
                        format!("{:.2}", h.quantile_ms(0.99)),
                    ));
                }
            }
        }
        values.extend(counters.iter().map(|(k, v)| kv(k, v.to_string())));
        values.extend(self.static_values.iter().cloned());
        let (level, message) = if !errors.is_empty() {
            (diagnostic_level::ERROR, errors.join("; "))
        } else if status.processed == 0 {
            (diagnostic_level::WARN, "no frame processed yet".to_string())
        } else if status.fps <= 0.0 {
            (
                diagnostic_level::WARN,
                "no frame in the last interval".to_string(),
            )
        } else if let Some(warning) = &self.warning {
            (
                diagnostic_level::WARN,
                format!(
                    "{:.1} fps, {} dropped; {warning}",
                    status.fps, status.dropped
                ),
            )
        } else {
            (
                diagnostic_level::OK,
                format!("{:.1} fps, {} dropped", status.fps, status.dropped),
            )
        };
        DiagnosticArray {
            header: Header {
                stamp: Time::from(now),
                frame_id: String::new(),
            },
            status: vec![DiagnosticStatus {
                level,
                name: self.name.clone(),
                message,
                hardware_id: "dinov3_perception".into(),
                values,
            }],
        }
    }
}

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceStats;
    use crate::telemetry::StageTimings;

    fn status() -> Status {
        Status {
            elapsed: std::time::Duration::from_secs(3),
            fps: 12.5,
            captured: 40,
            processed: 38,
            dropped: 2,
            sink_drops: BTreeMap::new(),
            timings: StageTimings::default(),
            source: SourceStats::default(),
        }
    }

    #[test]
    fn counters_are_values_and_errors_raise_the_level() {
        let d = Diagnostics::new("node", BTreeMap::from([("backend".into(), "tract".into())]));
        let ok = d.message(&status(), Stamp(7), &[("record_dropped", 3)], &[]);
        let s = &ok.status[0];
        assert_eq!(
            (s.level, s.name.as_str()),
            (diagnostic_level::OK, "node: pipeline")
        );
        let value = |k: &str| {
            s.values
                .iter()
                .find(|v| v.key == k)
                .map(|v| v.value.clone())
        };
        assert_eq!(value("record_dropped").as_deref(), Some("3"));
        assert_eq!(value("backend").as_deref(), Some("tract"));
        assert_eq!(ok.header.stamp, Time::from(Stamp(7)));
        let failed = d.message(
            &status(),
            Stamp(7),
            &[],
            &["recording stopped: disk full".into()],
        );
        assert_eq!(failed.status[0].level, diagnostic_level::ERROR);
        assert_eq!(failed.status[0].message, "recording stopped: disk full");
    }

    #[test]
    fn a_fallback_backend_warns_every_interval_and_errors_still_win() {
        let d = Diagnostics::new("node", BTreeMap::new()).with_warning(Some(
            "running on tract: onnxruntime (tensorrt, fp16) could not be used".into(),
        ));
        let m = d.message(&status(), Stamp(1), &[], &[]);
        assert_eq!(m.status[0].level, diagnostic_level::WARN);
        assert!(
            m.status[0]
                .message
                .starts_with("12.5 fps, 2 dropped; running on tract"),
            "{}",
            m.status[0].message
        );
        let m = d.message(&status(), Stamp(1), &[], &["disk full".into()]);
        assert_eq!(m.status[0].level, diagnostic_level::ERROR);
    }

    #[test]
    fn the_starting_status_is_a_warning_naming_the_step() {
        let m = Diagnostics::starting("node", "building the TensorRT engine", Stamp(3));
        let s = &m.status[0];
        assert_eq!(s.level, diagnostic_level::WARN);
        assert_eq!(s.name, "node: pipeline");
        assert_eq!(s.message, "starting: building the TensorRT engine");
        assert_eq!(m.header.stamp, Time::from(Stamp(3)));
    }
}
