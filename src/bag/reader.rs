//! Reading bags: a rosbag2 directory (its `metadata.yaml` lists the files; without one, every
//! `.mcap` in it) or a single `.mcap` file, message by message in file order, streamed (a bag
//! larger than memory replays).
//!
//! A file cut short (killed writer, full disk) has no summary: [`topics`] refuses it and
//! [`Messages`] stops at its end with an error naming the fix (`reindex`), unless opened
//! [`Messages::lenient`], which reads every message up to the last complete chunk (what
//! [`super::reindex`] keeps).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mcap::records::Record;
use mcap::sans_io::{LinearReadEvent, LinearReader, SummaryReadEvent, SummaryReader};

use super::metadata::{MetadataFile, METADATA_FILE};
use super::BagError;

/// The files of the bag at `path` (a bag directory or one `.mcap`), in order.
pub fn bag_files(path: &Path) -> Result<Vec<PathBuf>, BagError> {
    if !path.exists() {
        return Err(BagError::Corrupt {
            path: path.to_path_buf(),
            reason: "does not exist".into(),
            fix: "give a rosbag2 directory or an .mcap file".into(),
        });
    }
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if path.join(METADATA_FILE).is_file() {
        let m = MetadataFile::read(path)?;
        let files: Vec<PathBuf> = m
            .rosbag2_bagfile_information
            .relative_file_paths
            .iter()
            .map(|f| path.join(f))
            .collect();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(BagError::Corrupt {
                path: path.join(METADATA_FILE),
                reason: format!("lists {}, which is not there", missing.display()),
                fix: "run `dinov3_perception reindex DIR` to rebuild metadata.yaml from the files present".into(),
            });
        }
        if !files.is_empty() {
            return Ok(files);
        }
    }
    mcap_files_in(path)
}

/// The `.mcap` files in `dir`, by their split index (`name_0`, `name_1`, ..., `name_10`).
pub fn mcap_files_in(dir: &Path) -> Result<Vec<PathBuf>, BagError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| BagError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "mcap") && p.is_file())
        .collect();
    files.sort_by_key(|p| {
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
        let index = stem
            .as_deref()
            .and_then(|s| s.rsplit('_').next())
            .and_then(|i| i.parse::<u64>().ok());
        (index, p.clone())
    });
    if files.is_empty() {
        return Err(BagError::Corrupt {
            path: dir.to_path_buf(),
            reason: "holds no .mcap file".into(),
            fix: "give a rosbag2 directory recorded with storage mcap, or an .mcap file".into(),
        });
    }
    Ok(files)
}

/// A topic of a bag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// Topic name.
    pub name: String,
    /// Schema name (`package/msg/Type`).
    pub ros_type: String,
    /// Message encoding (`cdr`).
    pub encoding: String,
    /// Messages in the bag (from the summaries' statistics).
    pub message_count: u64,
}

/// The summary of `file`, or `None` when it has none (cut short).
pub fn summary(file: &Path) -> Result<Option<mcap::Summary>, BagError> {
    let mut f = File::open(file).map_err(|e| BagError::io(file, e))?;
    let size = f.metadata().map_err(|e| BagError::io(file, e))?.len();
    summary_from(&mut f, size, file)
}

/// [`summary`] of an `.mcap` file's bytes already in memory; `origin` names it in errors.
pub fn summary_of_bytes(bytes: &[u8], origin: &Path) -> Result<Option<mcap::Summary>, BagError> {
    summary_from(&mut Cursor::new(bytes), bytes.len() as u64, origin)
}

/// The summary read from `f` (`size` bytes long), `file` naming it in errors.
fn summary_from<R: Read + Seek>(
    f: &mut R,
    size: u64,
    file: &Path,
) -> Result<Option<mcap::Summary>, BagError> {
    let mut reader = SummaryReader::new_with_options(
        mcap::sans_io::SummaryReaderOptions::default().with_file_size(size),
    );
    while let Some(event) = reader.next_event() {
        match event {
            Ok(SummaryReadEvent::ReadRequest(n)) => {
                let read = f
                    .read(reader.insert(n))
                    .map_err(|e| BagError::io(file, e))?;
                reader.notify_read(read);
            }
            Ok(SummaryReadEvent::SeekRequest(to)) => {
                let pos = f.seek(to).map_err(|e| BagError::io(file, e))?;
                reader.notify_seeked(pos);
            }
            // A file without footer (cut short) or without the magic at its end.
            Err(mcap::McapError::UnexpectedEof)
            | Err(mcap::McapError::BadMagic)
            | Err(mcap::McapError::BadFooter) => return Ok(None),
            Err(e) => return Err(BagError::mcap(file, e)),
        }
    }
    Ok(reader.finish())
}

/// The topics of the bag's files (each file must have its summary).
pub fn topics(files: &[PathBuf]) -> Result<Vec<Topic>, BagError> {
    let mut out: Vec<Topic> = Vec::new();
    for file in files {
        let s = summary(file)?.ok_or_else(|| cut_short(file))?;
        add_topics(&mut out, &s);
    }
    Ok(out)
}

/// [`topics`] of one `.mcap` file's bytes already in memory; `origin` names it in errors.
pub fn topics_of_bytes(bytes: &[u8], origin: &Path) -> Result<Vec<Topic>, BagError> {
    let s = summary_of_bytes(bytes, origin)?.ok_or_else(|| cut_short(origin))?;
    let mut out = Vec::new();
    add_topics(&mut out, &s);
    Ok(out)
}

/// Add the channels of one file's summary to `out` (message counts of a topic already there
/// are added up).
fn add_topics(out: &mut Vec<Topic>, s: &mcap::Summary) {
    let counts = s
        .stats
        .as_ref()
        .map(|st| st.channel_message_counts.clone())
        .unwrap_or_default();
    let mut channels: Vec<_> = s.channels.values().collect();
    channels.sort_by_key(|c| c.id);
    for c in channels {
        let n = counts.get(&c.id).copied().unwrap_or(0);
        let ros_type = c
            .schema
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        match out.iter_mut().find(|t| t.name == c.topic) {
            Some(t) => t.message_count += n,
            None => out.push(Topic {
                name: c.topic.clone(),
                ros_type,
                encoding: c.message_encoding.clone(),
                message_count: n,
            }),
        }
    }
}

fn cut_short(file: &Path) -> BagError {
    BagError::Corrupt {
        path: file.to_path_buf(),
        reason: "ends early (no summary: the recorder was killed or the disk filled up)".into(),
        fix: "run `dinov3_perception reindex DIR` (keeps every message up to the last complete chunk)".into(),
    }
}

/// One message read from a bag.
#[derive(Debug, Clone, PartialEq)]
pub struct BagMessage {
    /// Topic name.
    pub topic: Arc<str>,
    /// Schema name (`package/msg/Type`).
    pub ros_type: Arc<str>,
    /// Per-channel sequence number.
    pub sequence: u32,
    /// When it was recorded (ns since the epoch).
    pub log_time: u64,
    /// When it was published (ns since the epoch).
    pub publish_time: u64,
    /// The serialised message (encapsulated CDR).
    pub data: Vec<u8>,
}

/// A schema or channel as first seen in a file.
#[derive(Debug, Clone)]
struct Channel {
    topic: Arc<str>,
    ros_type: Arc<str>,
}

/// Schemas and channels of a file as its records define them.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    /// Schema id → (name, encoding, definition).
    pub schemas: HashMap<u16, (String, String, Vec<u8>)>,
    /// Channel id → (topic, schema id, message encoding, metadata).
    pub channels: HashMap<u16, mcap::records::Channel>,
}

/// One file of a bag to read: on disk, or its bytes already in memory.
enum BagInput {
    Path(PathBuf),
    /// The name it goes by in errors, and the bytes (taken when the file is opened).
    Bytes(PathBuf, Vec<u8>),
}

impl std::fmt::Debug for BagInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BagInput::Path(p) => p.fmt(f),
            BagInput::Bytes(p, bytes) => {
                write!(f, "{} ({} bytes in memory)", p.display(), bytes.len())
            }
        }
    }
}

/// Every message of a bag, file after file, in file order.
pub struct Messages {
    files: Vec<BagInput>,
    next_file: usize,
    current: Option<(PathBuf, Box<dyn Read + Send>, LinearReader)>,
    channels: HashMap<u16, Channel>,
    definitions: Definitions,
    lenient: bool,
    /// Where a lenient read stopped early: the file and why.
    pub stopped_early: Option<(PathBuf, String)>,
    failed: bool,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Messages {
    /// Read `files` strictly: a file cut short is an error.
    pub fn new(files: Vec<PathBuf>) -> Self {
        Self::from_inputs(files.into_iter().map(BagInput::Path).collect())
    }

    /// Read one `.mcap` file's bytes already in memory, strictly; `origin` names it in errors.
    pub fn from_bytes(origin: PathBuf, bytes: Vec<u8>) -> Self {
        Self::from_inputs(vec![BagInput::Bytes(origin, bytes)])
    }

    /// [`Messages::from_bytes`], read as [`Messages::lenient`] reads.
    pub fn lenient_from_bytes(origin: PathBuf, bytes: Vec<u8>) -> Self {
        Messages {
            lenient: true,
            ..Self::from_bytes(origin, bytes)
        }
    }

    fn from_inputs(files: Vec<BagInput>) -> Self {
        Messages {
            files,
            next_file: 0,
            current: None,
            channels: HashMap::new(),
            definitions: Definitions::default(),
            lenient: false,
            stopped_early: None,
            failed: false,
        }
    }

    /// Read `files`, stopping quietly at the end of the last complete record of a file cut
    /// short (see [`Messages::stopped_early`]).
    pub fn lenient(files: Vec<PathBuf>) -> Self {
        Messages {
            lenient: true,
            ..Messages::new(files)
        }
    }

    /// The schemas and channels of the current file so far.
    pub fn definitions(&self) -> &Definitions {
        &self.definitions
    }

    fn open_next(&mut self) -> Result<bool, BagError> {
        let Some(input) = self.files.get_mut(self.next_file) else {
            return Ok(false);
        };
        self.next_file += 1;
        let (path, file): (PathBuf, Box<dyn Read + Send>) = match input {
            BagInput::Path(path) => {
                let file = File::open(&*path).map_err(|e| BagError::io(path, e))?;
                (path.clone(), Box::new(file))
            }
            // Each file is opened once: its bytes move into the reader.
            BagInput::Bytes(path, bytes) => {
                (path.clone(), Box::new(Cursor::new(std::mem::take(bytes))))
            }
        };
        self.channels.clear();
        self.definitions = Definitions::default();
        self.current = Some((path, file, LinearReader::new()));
        Ok(true)
    }

    fn next_message(&mut self) -> Result<Option<BagMessage>, BagError> {
        loop {
            if self.current.is_none() && !self.open_next()? {
                return Ok(None);
            }
            let Some((path, file, reader)) = self.current.as_mut() else {
                return Ok(None);
            };
            let Some(event) = reader.next_event() else {
                self.current = None;
                continue;
            };
            let (opcode, data) = match event {
                Ok(LinearReadEvent::ReadRequest(n)) => {
                    let read = file
                        .read(reader.insert(n))
                        .map_err(|e| BagError::io(path, e))?;
                    reader.notify_read(read);
                    continue;
                }
                Ok(LinearReadEvent::Record { opcode, data }) => (opcode, data),
                Err(e) => {
                    let path = path.clone();
                    let truncated = matches!(e, mcap::McapError::UnexpectedEof);
                    self.current = None;
                    if self.lenient {
                        self.stopped_early = Some((path, e.to_string()));
                        continue;
                    }
                    return Err(if truncated {
                        cut_short(&path)
                    } else {
                        BagError::mcap(&path, e)
                    });
                }
            };
            let record = match mcap::parse_record(opcode, data) {
                Ok(r) => r,
                Err(e) => {
                    let path = path.clone();
                    self.current = None;
                    if self.lenient {
                        self.stopped_early = Some((path, e.to_string()));
                        continue;
                    }
                    return Err(BagError::mcap(&path, e));
                }
            };
            match record {
                Record::Schema { header, data } => {
                    self.definitions
                        .schemas
                        .insert(header.id, (header.name, header.encoding, data.into_owned()));
                }
                Record::Channel(c) => {
                    let ros_type = self
                        .definitions
                        .schemas
                        .get(&c.schema_id)
                        .map(|s| s.0.as_str())
                        .unwrap_or("");
                    self.channels.insert(
                        c.id,
                        Channel {
                            topic: Arc::from(c.topic.as_str()),
                            ros_type: Arc::from(ros_type),
                        },
                    );
                    self.definitions.channels.insert(c.id, c);
                }
                Record::Message { header, data } => {
                    let Some(c) = self.channels.get(&header.channel_id) else {
                        let path = path.clone();
                        return Err(BagError::Corrupt {
                            path,
                            reason: format!(
                                "a message on channel {} before that channel's record",
                                header.channel_id
                            ),
                            fix: "the file is damaged; record it again".into(),
                        });
                    };
                    return Ok(Some(BagMessage {
                        topic: c.topic.clone(),
                        ros_type: c.ros_type.clone(),
                        sequence: header.sequence,
                        log_time: header.log_time,
                        publish_time: header.publish_time,
                        data: data.into_owned(),
                    }));
                }
                _ => {}
            }
        }
    }
}

impl Iterator for Messages {
    type Item = Result<BagMessage, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_message() {
            Ok(Some(m)) => Some(Ok(m)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
