//! `metadata.yaml` of a rosbag2 directory (format version 9, what `ros2 bag info` and
//! `ros2 bag play` read first), and the QoS profiles written in it and in each MCAP channel.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BagError;
use crate::ros::node::TopicQos;

/// The file's name in a bag directory.
pub const METADATA_FILE: &str = "metadata.yaml";

/// The metadata format version this crate writes.
pub const VERSION: u32 = 9;

/// The whole file: one top-level key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataFile {
    /// The bag's information.
    pub rosbag2_bagfile_information: BagInfo,
}

/// A duration in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Nanoseconds {
    /// Nanoseconds.
    pub nanoseconds: u64,
}

/// A time in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EpochTime {
    /// Nanoseconds since the Unix epoch.
    pub nanoseconds_since_epoch: u64,
}

/// The bag: storage, time span, topics, files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BagInfo {
    /// Format version (9).
    pub version: u32,
    /// Storage plugin (`mcap`).
    pub storage_identifier: String,
    /// Files relative to the bag directory, in order.
    pub relative_file_paths: Vec<String>,
    /// Last message time minus first.
    pub duration: Nanoseconds,
    /// First message time.
    pub starting_time: EpochTime,
    /// Messages in all files.
    pub message_count: u64,
    /// Each topic with its message count.
    pub topics_with_message_count: Vec<TopicWithCount>,
    /// rosbag2 file or message compression (`""`: none; MCAP chunk compression is inside the
    /// files and not listed here).
    #[serde(default)]
    pub compression_format: String,
    /// `""`, `FILE` or `MESSAGE`.
    #[serde(default)]
    pub compression_mode: String,
    /// Each file's span and count.
    #[serde(default)]
    pub files: Vec<FileInfo>,
    /// Free-form key/value pairs.
    #[serde(default)]
    pub custom_data: Option<BTreeMap<String, String>>,
    /// The ROS distribution that wrote the bag.
    #[serde(default)]
    pub ros_distro: Option<String>,
}

/// One topic and how many messages it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicWithCount {
    /// The topic.
    pub topic_metadata: TopicMetadata,
    /// Its messages in the bag.
    pub message_count: u64,
}

/// A topic's name, type, serialisation and QoS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// Absolute topic name.
    pub name: String,
    /// `package/msg/Type`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// `cdr`.
    pub serialization_format: String,
    /// The publishers' offered QoS (a list in version 9, a YAML string before).
    pub offered_qos_profiles: QosList,
    /// `RIHS01_...` type hash; empty when unknown (rosbag2 then does not check it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub type_description_hash: String,
}

/// QoS profiles as version 9 writes them (a list), or as older versions did (a YAML string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QosList {
    /// Version 9.
    List(Vec<QosProfile>),
    /// Versions before 9.
    Text(String),
}

/// One file of the bag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Relative path.
    pub path: String,
    /// First message time in the file.
    pub starting_time: EpochTime,
    /// Span of the file's messages.
    pub duration: Nanoseconds,
    /// Messages in the file.
    pub message_count: u64,
}

/// A `sec` / `nsec` pair as rosbag2 writes durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecNsec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds.
    pub nsec: i64,
}

/// An infinite duration (what rosbag2 records for a publisher that set none).
pub const INFINITE: SecNsec = SecNsec {
    sec: 9_223_372_036,
    nsec: 854_775_807,
};

/// One QoS profile as rosbag2 writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosProfile {
    /// `keep_last` / `keep_all`.
    pub history: String,
    /// History depth.
    pub depth: u32,
    /// `reliable` / `best_effort`.
    pub reliability: String,
    /// `volatile` / `transient_local`.
    pub durability: String,
    /// Deadline.
    pub deadline: SecNsec,
    /// Lifespan.
    pub lifespan: SecNsec,
    /// `automatic` / `manual_by_topic`.
    pub liveliness: String,
    /// Liveliness lease.
    pub liveliness_lease_duration: SecNsec,
    /// Whether the topic name bypasses ROS conventions.
    pub avoid_ros_namespace_conventions: bool,
}

impl QosProfile {
    /// The profile the node offers with `qos`.
    pub fn of(qos: TopicQos) -> Self {
        let (depth, reliability, durability) = match qos {
            TopicQos::SensorData => (5, "best_effort", "volatile"),
            TopicQos::Reliable => (10, "reliable", "volatile"),
            TopicQos::Latched => (1, "reliable", "transient_local"),
        };
        QosProfile {
            history: "keep_last".into(),
            depth,
            reliability: reliability.into(),
            durability: durability.into(),
            deadline: INFINITE,
            lifespan: INFINITE,
            liveliness: "automatic".into(),
            liveliness_lease_duration: INFINITE,
            avoid_ros_namespace_conventions: false,
        }
    }
}

/// The profiles as the YAML text an MCAP channel's `offered_qos_profiles` holds.
pub fn qos_yaml(profiles: &[QosProfile]) -> Result<String, BagError> {
    serde_yaml_ng::to_string(profiles)
        .map(|s| s.trim_end().to_string())
        .map_err(|e| BagError::Internal(format!("QoS profiles as YAML: {e}")))
}

impl MetadataFile {
    /// The metadata as YAML text.
    pub fn to_yaml(&self) -> Result<String, BagError> {
        serde_yaml_ng::to_string(self)
            .map_err(|e| BagError::Internal(format!("metadata.yaml: {e}")))
    }

    /// Read `DIR/metadata.yaml`.
    pub fn read(dir: &Path) -> Result<Self, BagError> {
        let path = dir.join(METADATA_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| BagError::io(&path, e))?;
        serde_yaml_ng::from_str(&text).map_err(|e| BagError::Corrupt {
            path: path.clone(),
            reason: format!("not rosbag2 metadata: {e}"),
            fix: "run `dinov3_perception reindex DIR` to rebuild it from the .mcap files".into(),
        })
    }

    /// Write `DIR/metadata.yaml` (through a temporary file: a crash leaves the old one or the
    /// new one, never half of either).
    pub fn write(&self, dir: &Path) -> Result<(), BagError> {
        let path = dir.join(METADATA_FILE);
        let tmp = dir.join(".metadata.yaml.tmp");
        let text = self.to_yaml()?;
        std::fs::write(&tmp, text).map_err(|e| BagError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| BagError::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_list_round_trips_and_reads_the_old_string_form() {
        let t = TopicMetadata {
            name: "/a".into(),
            type_name: "std_msgs/msg/Float32".into(),
            serialization_format: "cdr".into(),
            offered_qos_profiles: QosList::List(vec![QosProfile::of(TopicQos::Latched)]),
            type_description_hash: String::new(),
        };
        let y = serde_yaml_ng::to_string(&t).unwrap();
        assert!(y.contains("durability: transient_local"), "{y}");
        assert!(!y.contains("type_description_hash"), "{y}");
        let back: TopicMetadata = serde_yaml_ng::from_str(&y).unwrap();
        assert_eq!(back, t);
        let old = "name: /a\ntype: std_msgs/msg/Float32\nserialization_format: cdr\noffered_qos_profiles: \"- history: 3\"\n";
        let o: TopicMetadata = serde_yaml_ng::from_str(old).unwrap();
        assert!(matches!(o.offered_qos_profiles, QosList::Text(_)));
    }
}
