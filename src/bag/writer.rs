//! [`BagWriter`]: a rosbag2 directory written message by message, chunked and compressed,
//! split into `<name>_<i>.mcap` files by size or duration, finished with a summary in each file
//! and `metadata.yaml`.
//!
//! Each chunk is assembled in memory and written whole, and [`BagWriter::flush`] closes the
//! chunk being filled: a writer killed at any moment leaves every message up to the last
//! written chunk readable ([`super::reader`] reads such a file; [`super::reindex`] completes it).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mcap::records::{MessageHeader, Metadata};

use super::metadata::{
    qos_yaml, BagInfo, EpochTime, FileInfo, MetadataFile, Nanoseconds, QosList, QosProfile,
    TopicMetadata, TopicWithCount, VERSION,
};
use super::BagError;

/// Chunk compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkCompression {
    /// Uncompressed chunks.
    None,
    /// Zstandard.
    Zstd,
    /// LZ4 frames.
    Lz4,
}

impl std::str::FromStr for ChunkCompression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" | "" => Ok(ChunkCompression::None),
            "zstd" => Ok(ChunkCompression::Zstd),
            "lz4" => Ok(ChunkCompression::Lz4),
            _ => Err(format!("{s:?}: give zstd, lz4 or none")),
        }
    }
}

impl ChunkCompression {
    fn mcap(self) -> Option<mcap::Compression> {
        match self {
            ChunkCompression::None => None,
            ChunkCompression::Zstd => Some(mcap::Compression::Zstd),
            ChunkCompression::Lz4 => Some(mcap::Compression::Lz4),
        }
    }
}

/// How a bag is written.
#[derive(Debug, Clone, PartialEq)]
pub struct BagOptions {
    /// Chunk compression.
    pub compression: ChunkCompression,
    /// Target uncompressed chunk size in bytes.
    pub chunk_size: u64,
    /// Start a new file once the current one holds this many bytes (`None`: never).
    pub split_size: Option<u64>,
    /// Start a new file once the current one spans this many nanoseconds (`None`: never).
    pub split_duration: Option<u64>,
    /// `ros_distro` of the metadata.
    pub ros_distro: String,
    /// `custom_data` of the metadata.
    pub custom_data: BTreeMap<String, String>,
}

impl Default for BagOptions {
    fn default() -> Self {
        BagOptions {
            compression: ChunkCompression::Zstd,
            chunk_size: 1 << 20,
            split_size: None,
            split_duration: None,
            ros_distro: "jazzy".into(),
            custom_data: BTreeMap::new(),
        }
    }
}

/// A topic of the bag.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    /// Absolute name.
    pub name: String,
    /// `package/msg/Type`.
    pub ros_type: String,
    /// The full `ros2msg` definition.
    pub definition: String,
    /// Offered QoS.
    pub qos: Vec<QosProfile>,
}

/// A file that counts what was written to it (the split size is the file's size, compressed).
struct CountingFile {
    file: File,
    written: Arc<AtomicU64>,
}

impl Write for CountingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Seek for CountingFile {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

/// One `.mcap` file of a bag, being written.
pub struct McapFile {
    relative: String,
    path: PathBuf,
    writer: mcap::Writer<CountingFile>,
    written: Arc<AtomicU64>,
    channels: Vec<u16>,
    sequences: Vec<u32>,
    bounds: Option<(u64, u64)>,
    count: u64,
}

impl std::fmt::Debug for McapFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McapFile")
            .field("path", &self.path)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl McapFile {
    /// Create `dir/relative` (it must not exist) with a channel per topic.
    pub fn create(
        dir: &Path,
        relative: &str,
        topics: &[TopicSpec],
        options: &BagOptions,
    ) -> Result<Self, BagError> {
        let path = dir.join(relative);
        let file = File::create_new(&path).map_err(|e| BagError::io(&path, e))?;
        let written = Arc::new(AtomicU64::new(0));
        let mcap_options = mcap::WriteOptions::new()
            .profile("ros2")
            .library(concat!("dinov3_perception ", env!("CARGO_PKG_VERSION")))
            .compression(options.compression.mcap())
            .chunk_size(Some(options.chunk_size))
            // zstd on the writer thread itself: with 1 MiB chunks extra compression threads
            // gain nothing and cost 1.5x on one core (benches/RESULTS.md, recorder section).
            .compression_threads(0)
            // Chunks are built in memory and written whole: a killed writer never leaves half a
            // chunk that looks complete.
            .disable_seeking(true);
        let mut writer = mcap_options
            .create(CountingFile {
                file,
                written: written.clone(),
            })
            .map_err(|e| BagError::mcap(&path, e))?;
        let mut schemas: BTreeMap<&str, u16> = BTreeMap::new();
        let mut channels = Vec::with_capacity(topics.len());
        for t in topics {
            let schema = match schemas.get(t.ros_type.as_str()) {
                Some(&id) => id,
                None => {
                    let id = writer
                        .add_schema(&t.ros_type, "ros2msg", t.definition.as_bytes())
                        .map_err(|e| BagError::mcap(&path, e))?;
                    schemas.insert(&t.ros_type, id);
                    id
                }
            };
            let metadata =
                BTreeMap::from([("offered_qos_profiles".to_string(), qos_yaml(&t.qos)?)]);
            let id = writer
                .add_channel(schema, &t.name, "cdr", &metadata)
                .map_err(|e| BagError::mcap(&path, e))?;
            channels.push(id);
        }
        Ok(McapFile {
            relative: relative.to_string(),
            path,
            writer,
            written,
            channels,
            sequences: vec![0; topics.len()],
            bounds: None,
            count: 0,
        })
    }

    /// Bytes written to the file so far (compressed).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Messages written.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// First and last log time.
    pub fn bounds(&self) -> Option<(u64, u64)> {
        self.bounds
    }

    /// Write one message of topic index `topic`.
    pub fn write(
        &mut self,
        topic: usize,
        log_time: u64,
        publish_time: u64,
        data: &[u8],
    ) -> Result<(), BagError> {
        let (Some(&channel_id), Some(sequence)) =
            (self.channels.get(topic), self.sequences.get_mut(topic))
        else {
            return Err(BagError::Internal(format!("no topic {topic}")));
        };
        let header = MessageHeader {
            channel_id,
            sequence: *sequence,
            log_time,
            publish_time,
        };
        *sequence = sequence.wrapping_add(1);
        self.writer
            .write_to_known_channel(&header, data)
            .map_err(|e| BagError::mcap(&self.path, e))?;
        self.bounds = Some(widen(self.bounds, log_time));
        self.count += 1;
        Ok(())
    }

    /// Close the chunk being filled and hand it to the operating system.
    pub fn flush(&mut self) -> Result<(), BagError> {
        self.writer
            .flush()
            .map_err(|e| BagError::mcap(&self.path, e))
    }

    /// This file's entry in `metadata.yaml`.
    pub fn info(&self) -> FileInfo {
        let (start, end) = self.bounds.unwrap_or((0, 0));
        FileInfo {
            path: self.relative.clone(),
            starting_time: EpochTime {
                nanoseconds_since_epoch: start,
            },
            duration: Nanoseconds {
                nanoseconds: end - start,
            },
            message_count: self.count,
        }
    }

    /// Write the `rosbag2` metadata record (`bag`: the bag's metadata as it stands) and the
    /// summary.
    pub fn finish(mut self, bag: &BagInfo) -> Result<FileInfo, BagError> {
        let info = self.info();
        let serialized = MetadataFile {
            rosbag2_bagfile_information: bag.clone(),
        }
        .to_yaml()?;
        let distro = bag.ros_distro.clone().unwrap_or_default();
        write_rosbag2_record(&mut self.writer, &serialized, &distro)
            .map_err(|e| BagError::mcap(&self.path, e))?;
        self.writer
            .finish()
            .map_err(|e| BagError::mcap(&self.path, e))?;
        Ok(info)
    }
}

/// Writes one bag directory.
pub struct BagWriter {
    dir: PathBuf,
    name: String,
    options: BagOptions,
    topics: Vec<TopicSpec>,
    counts: Vec<u64>,
    file: Option<McapFile>,
    files: Vec<FileInfo>,
    bounds: Option<(u64, u64)>,
}

impl std::fmt::Debug for BagWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BagWriter")
            .field("dir", &self.dir)
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

/// `bounds` (first, last) widened to include `t`.
fn widen(bounds: Option<(u64, u64)>, t: u64) -> (u64, u64) {
    match bounds {
        None => (t, t),
        Some((a, b)) => (a.min(t), b.max(t)),
    }
}

/// The bag name of directory `dir` (its last component), the prefix of its files.
pub fn bag_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .unwrap_or_else(|| "bag".into())
}

impl BagWriter {
    /// Create directory `dir` (it must not exist; its parent is created) for `topics`.
    pub fn create(
        dir: &Path,
        topics: Vec<TopicSpec>,
        options: BagOptions,
    ) -> Result<Self, BagError> {
        if dir.exists() {
            return Err(BagError::Exists {
                path: dir.to_path_buf(),
            });
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| BagError::io(parent, e))?;
        }
        std::fs::create_dir(dir).map_err(|e| BagError::io(dir, e))?;
        let counts = vec![0; topics.len()];
        Ok(BagWriter {
            dir: dir.to_path_buf(),
            name: bag_name(dir),
            options,
            topics,
            counts,
            file: None,
            files: Vec::new(),
            bounds: None,
        })
    }

    /// The bag directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The topics, indexed as [`BagWriter::write`] takes them.
    pub fn topics(&self) -> &[TopicSpec] {
        &self.topics
    }

    fn open_next(&mut self) -> Result<&mut McapFile, BagError> {
        let relative = format!("{}_{}.mcap", self.name, self.files.len());
        let file = McapFile::create(&self.dir, &relative, &self.topics, &self.options)?;
        Ok(self.file.insert(file))
    }

    /// Whether the open file is due to be closed before a message logged at `log_time`.
    fn split_due(&self, log_time: u64) -> bool {
        let Some(f) = &self.file else {
            return false;
        };
        let by_size = self.options.split_size.is_some_and(|s| f.written() >= s);
        let by_time = match (self.options.split_duration, f.bounds()) {
            (Some(d), Some((start, _))) => log_time.saturating_sub(start) >= d,
            _ => false,
        };
        f.count() > 0 && (by_size || by_time)
    }

    /// Write one message of topic `topic` (an index into [`BagWriter::topics`]).
    pub fn write(
        &mut self,
        topic: usize,
        log_time: u64,
        publish_time: u64,
        data: &[u8],
    ) -> Result<(), BagError> {
        if topic >= self.topics.len() {
            return Err(BagError::Internal(format!("no topic {topic}")));
        }
        if self.split_due(log_time) {
            self.close_file()?;
        }
        let f = match self.file.as_mut() {
            Some(f) => f,
            None => self.open_next()?,
        };
        f.write(topic, log_time, publish_time, data)?;
        self.counts[topic] += 1;
        self.bounds = Some(widen(self.bounds, log_time));
        Ok(())
    }

    /// Close the chunk being filled and hand it to the operating system: everything written
    /// so far survives a kill.
    pub fn flush(&mut self) -> Result<(), BagError> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }

    /// The metadata of what was written so far (`files` are the closed files plus `open`).
    fn info(&self, open: Option<FileInfo>) -> BagInfo {
        let mut files = self.files.clone();
        files.extend(open);
        bag_info(
            &self.topics,
            &self.counts,
            self.bounds,
            files,
            &self.options,
        )
    }

    fn close_file(&mut self) -> Result<(), BagError> {
        let Some(f) = self.file.take() else {
            return Ok(());
        };
        let bag = self.info(Some(f.info()));
        let info = f.finish(&bag)?;
        self.files.push(info);
        Ok(())
    }

    /// Finish the open file and write `metadata.yaml`.
    pub fn finish(mut self) -> Result<BagInfo, BagError> {
        self.close_file()?;
        let info = self.info(None);
        MetadataFile {
            rosbag2_bagfile_information: info.clone(),
        }
        .write(&self.dir)?;
        Ok(info)
    }
}

/// The `rosbag2` metadata record rosbag2 writes at the end of each file: the bag's metadata as
/// YAML (without the top-level key) and the distribution.
pub fn write_rosbag2_record<W: Write + Seek>(
    writer: &mut mcap::Writer<W>,
    metadata_yaml: &str,
    ros_distro: &str,
) -> Result<(), mcap::McapError> {
    let inner = metadata_yaml
        .strip_prefix("rosbag2_bagfile_information:\n")
        .map(unindent)
        .unwrap_or_else(|| metadata_yaml.to_string());
    writer.write_metadata(&Metadata {
        name: "rosbag2".into(),
        metadata: BTreeMap::from([
            ("serialized_metadata".to_string(), inner),
            ("ROS_DISTRO".to_string(), ros_distro.to_string()),
        ]),
    })
}

/// `text` with its common two-space indentation removed.
fn unindent(text: &str) -> String {
    text.lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Bag metadata from per-topic counts, the time span and the files.
pub fn bag_info(
    topics: &[TopicSpec],
    counts: &[u64],
    bounds: Option<(u64, u64)>,
    files: Vec<FileInfo>,
    options: &BagOptions,
) -> BagInfo {
    let (start, end) = bounds.unwrap_or((0, 0));
    BagInfo {
        version: VERSION,
        storage_identifier: "mcap".into(),
        relative_file_paths: files.iter().map(|f| f.path.clone()).collect(),
        duration: Nanoseconds {
            nanoseconds: end - start,
        },
        starting_time: EpochTime {
            nanoseconds_since_epoch: start,
        },
        message_count: counts.iter().sum(),
        topics_with_message_count: topics
            .iter()
            .zip(counts)
            .map(|(t, &message_count)| TopicWithCount {
                topic_metadata: TopicMetadata {
                    name: t.name.clone(),
                    type_name: t.ros_type.clone(),
                    serialization_format: "cdr".into(),
                    offered_qos_profiles: QosList::List(t.qos.clone()),
                    type_description_hash: String::new(),
                },
                message_count,
            })
            .collect(),
        compression_format: String::new(),
        compression_mode: String::new(),
        files,
        custom_data: (!options.custom_data.is_empty()).then(|| options.custom_data.clone()),
        ros_distro: Some(options.ros_distro.clone()),
    }
}
