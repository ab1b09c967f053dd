//! The ROS 2 sink: every output message of a frame published on its topic, and the
//! `/diagnostics` publisher the status callback uses.

use std::collections::BTreeMap;
use std::sync::Arc;

use ros2_client::Publisher;

use super::outputs::{topics, LiveSettings, Message, Outgoing, OutputBuilder, PublishPlan};
use super::{MessageTap, Sink, SinkError};
use crate::result::FrameResult;
use crate::ros::msg::*;
use crate::ros::node::{RosError, RosNode};

/// A publisher of one of the node's message types.
enum AnyPublisher {
    Image(Publisher<Image>),
    CompressedImage(Publisher<CompressedImage>),
    CameraInfo(Publisher<CameraInfo>),
    PointCloud2(Publisher<PointCloud2>),
    Detections(Publisher<Detection2DArray>),
    Classification(Publisher<Classification>),
    VisionInfo(Publisher<VisionInfo>),
    Float32(Publisher<Float32>),
    Diagnostics(Publisher<DiagnosticArray>),
}

impl AnyPublisher {
    /// A publisher on `topic` for messages like `ros_name`.
    fn new(node: &mut RosNode, topic: &str, ros_name: &str) -> Result<Self, RosError> {
        let q = topics::fixed_qos(topic);
        Ok(match ros_name {
            CompressedImage::ROS_NAME => AnyPublisher::CompressedImage(node.publisher(topic, q)?),
            CameraInfo::ROS_NAME => AnyPublisher::CameraInfo(node.publisher(topic, q)?),
            PointCloud2::ROS_NAME => AnyPublisher::PointCloud2(node.publisher(topic, q)?),
            Detection2DArray::ROS_NAME => AnyPublisher::Detections(node.publisher(topic, q)?),
            Classification::ROS_NAME => AnyPublisher::Classification(node.publisher(topic, q)?),
            VisionInfo::ROS_NAME => AnyPublisher::VisionInfo(node.publisher(topic, q)?),
            Float32::ROS_NAME => AnyPublisher::Float32(node.publisher(topic, q)?),
            DiagnosticArray::ROS_NAME => AnyPublisher::Diagnostics(node.publisher(topic, q)?),
            _ => AnyPublisher::Image(node.publisher(topic, q)?),
        })
    }

    /// Publish `message`; a message of another type than the publisher's is an error (a bug).
    fn publish(&self, message: Message) -> Result<(), String> {
        fn sent<M: std::fmt::Debug>(
            r: Result<(), ros2_client::ros2::WriteError<M>>,
        ) -> Result<(), String> {
            r.map_err(|e| format!("{e:?}"))
        }
        match (self, message) {
            (AnyPublisher::Image(p), Message::Image(m)) => sent(p.publish(m)),
            (AnyPublisher::CompressedImage(p), Message::CompressedImage(m)) => sent(p.publish(m)),
            (AnyPublisher::CameraInfo(p), Message::CameraInfo(m)) => sent(p.publish(*m)),
            (AnyPublisher::PointCloud2(p), Message::PointCloud2(m)) => sent(p.publish(m)),
            (AnyPublisher::Detections(p), Message::Detections(m)) => sent(p.publish(m)),
            (AnyPublisher::Classification(p), Message::Classification(m)) => sent(p.publish(m)),
            (AnyPublisher::VisionInfo(p), Message::VisionInfo(m)) => sent(p.publish(m)),
            (AnyPublisher::Float32(p), Message::Float32(m)) => sent(p.publish(m)),
            (AnyPublisher::Diagnostics(p), Message::Diagnostics(m)) => sent(p.publish(m)),
            (_, m) => Err(format!(
                "a {} message for a publisher of another type",
                m.message_type().ros_name
            )),
        }
    }
}

/// Publishes every output of a frame on the node.
pub struct RosSink {
    builder: OutputBuilder,
    publishers: BTreeMap<&'static str, AnyPublisher>,
}

impl std::fmt::Debug for RosSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RosSink")
            .field("topics", &self.publishers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RosSink {
    /// Create the publishers for what `plan` says is there, and send the latched messages.
    pub fn new(
        node: &mut RosNode,
        plan: &PublishPlan,
        live: Arc<LiveSettings>,
    ) -> Result<RosSink, RosError> {
        let builder = OutputBuilder::new(plan, live);
        let mut publishers = BTreeMap::new();
        for (topic, ty) in builder.offered() {
            publishers.insert(topic, AnyPublisher::new(node, topic, ty.ros_name)?);
        }
        let sink = RosSink {
            builder,
            publishers,
        };
        for m in sink.builder.latched(crate::frame::Stamp(0)) {
            if let Err(e) = sink.send(m) {
                log::warn!("{e}");
            }
        }
        Ok(sink)
    }

    fn send(&self, m: Outgoing) -> Result<(), String> {
        match self.publishers.get(m.topic.as_str()) {
            Some(p) => p
                .publish(m.message)
                .map_err(|e| format!("{}: {e}", m.topic)),
            None => Err(format!("{}: no publisher", m.topic)),
        }
    }
}

impl Sink for RosSink {
    fn name(&self) -> String {
        "ros".into()
    }

    fn consume(&mut self, result: &FrameResult) -> Result<(), SinkError> {
        let (messages, mut errors) = self.builder.frame_messages(result);
        for m in messages {
            if let Err(e) = self.send(m) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SinkError {
                sink: "ros".into(),
                reason: errors.join("; "),
            })
        }
    }

    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// `/diagnostics` on the node (reliable, as diagnostic_updater publishes).
pub struct RosDiagnostics {
    publisher: Publisher<DiagnosticArray>,
}

impl std::fmt::Debug for RosDiagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RosDiagnostics").finish_non_exhaustive()
    }
}

impl RosDiagnostics {
    /// The publisher.
    pub fn new(node: &mut RosNode) -> Result<Self, RosError> {
        Ok(RosDiagnostics {
            publisher: node
                .publisher(topics::DIAGNOSTICS, topics::fixed_qos(topics::DIAGNOSTICS))?,
        })
    }
}

impl MessageTap for RosDiagnostics {
    fn offer(&self, message: &Outgoing) {
        if let Message::Diagnostics(d) = &message.message {
            if let Err(e) = self.publisher.publish(d.clone()) {
                log::warn!("publishing {}: {e:?}", topics::DIAGNOSTICS);
            }
        }
    }
}
