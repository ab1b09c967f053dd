//! `dinov3_perception reindex DIR`: what `ros2 bag reindex` does for a bag whose writer never
//! finished (killed, or the disk filled up). Each `.mcap` without a summary is rewritten with
//! every message up to its last complete chunk and a full summary; then `metadata.yaml` is
//! rebuilt from all the files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::metadata::{MetadataFile, QosProfile};
use super::reader::{mcap_files_in, summary, Messages};
use super::writer::{bag_info, BagOptions, McapFile, TopicSpec};
use super::BagError;
use crate::ros::node::TopicQos;

/// What reindexing did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Messages it holds now.
    pub messages: u64,
    /// Whether it had to be rewritten (it had no summary).
    pub rewritten: bool,
    /// Why the old file ended early (rewritten files).
    pub stopped: Option<String>,
}

/// What reindexing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// One entry per file, in order.
    pub files: Vec<FileReport>,
    /// Messages in the bag.
    pub messages: u64,
}

/// Accumulates topics, counts and time bounds over the files.
#[derive(Default)]
struct Tally {
    topics: Vec<TopicSpec>,
    counts: Vec<u64>,
    bounds: Option<(u64, u64)>,
    files: Vec<super::metadata::FileInfo>,
}

impl Tally {
    fn topic(&mut self, spec: TopicSpec) -> usize {
        match self.topics.iter().position(|t| t.name == spec.name) {
            Some(i) => i,
            None => {
                self.topics.push(spec);
                self.counts.push(0);
                self.topics.len() - 1
            }
        }
    }

    fn span(&mut self, start: u64, end: u64) {
        self.bounds = Some(match self.bounds {
            None => (start, end),
            Some((a, b)) => (a.min(start), b.max(end)),
        });
    }
}

/// The QoS profiles in a channel's `offered_qos_profiles` (sensor data when unreadable).
fn parse_qos(metadata: &BTreeMap<String, String>) -> Vec<QosProfile> {
    metadata
        .get("offered_qos_profiles")
        .and_then(|y| serde_yaml_ng::from_str::<Vec<QosProfile>>(y).ok())
        .unwrap_or_else(|| vec![QosProfile::of(TopicQos::SensorData)])
}

/// Rebuild the summaries of `dir`'s files and its `metadata.yaml`.
pub fn reindex(dir: &Path) -> Result<ReindexReport, BagError> {
    if !dir.is_dir() {
        return Err(BagError::Corrupt {
            path: dir.to_path_buf(),
            reason: "is not a directory".into(),
            fix: "give the bag directory (the one that holds the .mcap files)".into(),
        });
    }
    let files = mcap_files_in(dir)?;
    let options = BagOptions::default();
    let mut tally = Tally::default();
    let mut reports = Vec::new();
    for file in &files {
        let relative = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match summary(file)? {
            Some(s) => {
                let stats = s.stats.clone().unwrap_or_default();
                let mut channels: Vec<_> = s.channels.values().collect();
                channels.sort_by_key(|c| c.id);
                for c in channels {
                    let (ros_type, definition) = c
                        .schema
                        .as_ref()
                        .map(|s| {
                            (
                                s.name.clone(),
                                String::from_utf8_lossy(&s.data).into_owned(),
                            )
                        })
                        .unwrap_or_default();
                    let i = tally.topic(TopicSpec {
                        name: c.topic.clone(),
                        ros_type,
                        definition,
                        qos: parse_qos(&c.metadata),
                    });
                    tally.counts[i] += stats
                        .channel_message_counts
                        .get(&c.id)
                        .copied()
                        .unwrap_or(0);
                }
                if stats.message_count > 0 {
                    tally.span(stats.message_start_time, stats.message_end_time);
                }
                tally.files.push(super::metadata::FileInfo {
                    path: relative,
                    starting_time: super::metadata::EpochTime {
                        nanoseconds_since_epoch: stats.message_start_time,
                    },
                    duration: super::metadata::Nanoseconds {
                        nanoseconds: stats
                            .message_end_time
                            .saturating_sub(stats.message_start_time),
                    },
                    message_count: stats.message_count,
                });
                reports.push(FileReport {
                    path: file.clone(),
                    messages: stats.message_count,
                    rewritten: false,
                    stopped: None,
                });
            }
            None => {
                let (report, info) = rewrite(dir, file, &relative, &options, &mut tally)?;
                tally.files.push(info);
                reports.push(report);
            }
        }
    }
    let info = bag_info(
        &tally.topics,
        &tally.counts,
        tally.bounds,
        tally.files,
        &options,
    );
    let messages = info.message_count;
    MetadataFile {
        rosbag2_bagfile_information: info,
    }
    .write(dir)?;
    Ok(ReindexReport {
        files: reports,
        messages,
    })
}

/// Copy every readable message of `file` into a complete file that replaces it.
fn rewrite(
    dir: &Path,
    file: &Path,
    relative: &str,
    options: &BagOptions,
    tally: &mut Tally,
) -> Result<(FileReport, super::metadata::FileInfo), BagError> {
    // First pass: the topics the file defines (channels may appear before any message).
    let mut messages = Messages::lenient(vec![file.to_path_buf()]);
    let mut topics: Vec<TopicSpec> = Vec::new();
    for m in messages.by_ref() {
        m?;
    }
    let defs = messages.definitions().clone();
    let mut ids: Vec<_> = defs.channels.keys().copied().collect();
    ids.sort();
    for id in ids {
        let c = &defs.channels[&id];
        let (ros_type, definition) = defs
            .schemas
            .get(&c.schema_id)
            .map(|(n, _, d)| (n.clone(), String::from_utf8_lossy(d).into_owned()))
            .unwrap_or_default();
        topics.push(TopicSpec {
            name: c.topic.clone(),
            ros_type,
            definition,
            qos: parse_qos(&c.metadata),
        });
    }
    let tmp_name = format!(".{relative}.reindex");
    let tmp = dir.join(&tmp_name);
    if tmp.exists() {
        std::fs::remove_file(&tmp).map_err(|e| BagError::io(&tmp, e))?;
    }
    let mut out = McapFile::create(dir, &tmp_name, &topics, options)?;
    // Second pass: copy.
    let mut copied = 0u64;
    for m in Messages::lenient(vec![file.to_path_buf()]) {
        let m = m?;
        let i = topics
            .iter()
            .position(|t| *t.name == *m.topic)
            .ok_or_else(|| BagError::Internal(format!("topic {} not found", m.topic)))?;
        out.write(i, m.log_time, m.publish_time, &m.data)?;
        let t = tally.topic(topics[i].clone());
        tally.counts[t] += 1;
        copied += 1;
    }
    if let Some((a, b)) = out.bounds() {
        tally.span(a, b);
    }
    let mut info = out.info();
    info.path = relative.to_string();
    let bag = bag_info(
        &tally.topics,
        &tally.counts,
        tally.bounds,
        vec![info.clone()],
        options,
    );
    out.finish(&bag)?;
    std::fs::rename(&tmp, file).map_err(|e| BagError::io(file, e))?;
    Ok((
        FileReport {
            path: file.to_path_buf(),
            messages: copied,
            rewritten: true,
            stopped: messages.stopped_early.map(|(_, why)| why),
        },
        info,
    ))
}
