//! Sinks: consumers of frame results, each on its own pipeline thread behind a bounded queue.
//!
//! | sink | file | what it does |
//! |------|------|--------------|
//! | [`log::HeadLogSink`] | `log.rs` | head outputs (and quality against ground truth) as log lines |
//! | [`ros::RosSink`] | `ros.rs` | every output topic, published on the ROS 2 node |
//! | [`record::RecordSink`] | `record.rs` | every output topic and the input frames, to a rosbag2 MCAP directory |
//! | [`foxglove::LiveView`] | `foxglove.rs` | live view: every output topic, the input frames and `/diagnostics` served to the Foxglove app over WebSocket |
//!
//! [`outputs`] turns a frame result into the node's output messages (topic, stamp, message)
//! once, for every sink that sends or writes messages; [`diagnostics`] builds `/diagnostics`,
//! which the status callback hands to every [`MessageTap`] (the ROS publisher, the recorder,
//! the live view).

use std::sync::Arc;

use crate::frame::Clock;
use crate::result::FrameResult;
use outputs::Outgoing;

pub mod diagnostics;
pub mod foxglove;
pub mod log;
pub mod outputs;
pub mod record;
pub mod ros;

/// Errors reported by a sink (logged, rate-limited; the pipeline goes on).
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {reason}")]
pub struct SinkError {
    /// Sink name.
    pub sink: String,
    /// What failed.
    pub reason: String,
}

/// A consumer of results (ROS publisher, recorder, ...), run on its own thread.
pub trait Sink: Send {
    /// Name for logs and timings.
    fn name(&self) -> String;
    /// Called once on the sink's thread before the first result, with the node clock (stamps
    /// of what the sink writes that do not come from a frame: receive times, file names).
    fn start(&mut self, clock: Arc<dyn Clock>) -> Result<(), SinkError> {
        let _ = clock;
        Ok(())
    }
    /// Handle one result.
    fn consume(&mut self, result: &FrameResult) -> Result<(), SinkError>;
    /// Flush and release; called once after the last result.
    fn close(&mut self) -> Result<(), SinkError>;
}

/// Takes messages that do not come from a frame result (`/diagnostics`), from any thread,
/// without blocking.
pub trait MessageTap: Send + Sync {
    /// Send or queue `message` (dropped and counted when the tap is behind).
    fn offer(&self, message: &Outgoing);
}
