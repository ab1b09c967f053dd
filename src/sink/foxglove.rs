//! The live view: a Foxglove WebSocket server (the official `foxglove` SDK) that offers every
//! topic the node publishes, the input frames and `/diagnostics`, with no ROS needed.
//!
//! Each topic is a channel named as on ROS (absolute, after namespace and remaps), with the
//! `ros2msg` schema of its type (named `package/msg/Type`, dependencies included) and `cdr`
//! messages: the same bytes the rosbag2 recorder writes, so the Foxglove app decodes them with
//! its ROS 2 readers. Input frames go out as `sensor_msgs/CompressedImage` JPEG by default (a
//! 640x480 rgb8 frame is 900 KiB raw, ~40 KiB as JPEG).
//!
//! Nothing here can stall the pipeline:
//!
//! ```text
//! sink thread (consume) --+--[LIVE_VIEW_QUEUE batches, newest wins, drops counted]--> sender thread
//! status callback (tap) --+                                    encode CDR, log to the SDK channel
//!                                      SDK: per-client queue of MESSAGE_BACKLOG, oldest dropped
//! ```
//!
//! Nothing is built while no client subscribes; only subscribed topics are sent. The SDK never blocks a log call: a
//! client that reads too slowly loses its oldest queued messages inside the SDK, which does not
//! count them (it logs "outbox for client ... full", at most every 30 s); what the live view
//! drops itself is counted in [`LiveViewStats`] (`live_view_dropped` in `/diagnostics`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use foxglove::websocket::{ChannelView, Client, ServerListener};
use foxglove::{Context, PartialMetadata, RawChannel, Schema, WebSocketServerHandle};

use super::outputs::{
    input_image, topics, type_of, InputImageFormat, LiveSettings, Outgoing, OutputBuilder,
    PublishPlan,
};
use super::{MessageTap, Sink, SinkError};
use crate::frame::Clock;
use crate::result::FrameResult;
use crate::ros::msg::{CompressedImage, DiagnosticArray, Image};
use crate::ros::node::NodeSettings;

/// Where `--foxglove` without a value listens: loopback only (reach it over an SSH tunnel).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8765";
/// The sink's name (logs, timings, `sink_drops`).
pub const SINK_NAME: &str = "foxglove";
/// Messages the SDK queues per client before it drops the oldest (about five frames of every
/// topic: bounds the memory a stalled client holds).
pub const MESSAGE_BACKLOG: usize = 64;
/// Batches (one frame's messages, or one `/diagnostics`) waiting for the sender thread.
pub const LIVE_VIEW_QUEUE: usize = 2;
/// JPEG quality of the input frames.
pub const INPUT_JPEG_QUALITY: u8 = 80;
/// How long `close()` waits for clients to take the server's close frame.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the live view cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LiveViewError {
    /// The port is taken.
    #[error("live view: another process listens on {address}: stop it or pass --foxglove {ip}:PORT (parameter foxglove.address) with a free port", ip = .address.ip())]
    AddressInUse {
        /// The address asked for.
        address: SocketAddr,
    },
    /// The address cannot be bound (not this machine's, or a privileged port).
    #[error("live view: cannot listen on {address}: {reason}; pass --foxglove IP:PORT with an address of this machine (127.0.0.1 for loopback, 0.0.0.0 for every interface) and a port above 1023")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The operating system's reason.
        reason: std::io::Error,
    },
    /// A type without a `.msg` definition (a bug: every offered type has one).
    #[error("live view: no ros2msg definition of {0}")]
    NoSchema(&'static str),
    /// The SDK or its runtime failed to start.
    #[error("live view: cannot start the Foxglove WebSocket server on {address}: {reason}")]
    Start {
        /// The address asked for.
        address: SocketAddr,
        /// What failed.
        reason: String,
    },
}

impl LiveViewError {
    /// Whether the user's configuration is at fault (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            LiveViewError::AddressInUse { .. } | LiveViewError::Bind { .. }
        )
    }
}

/// What the live view serves and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveViewSettings {
    /// Listen address (port 0: any free port; [`LiveView::address`] tells which).
    pub address: SocketAddr,
    /// How the input frames are offered.
    pub input_image: InputImageFormat,
}

impl LiveViewSettings {
    /// On `address`, input frames as JPEG.
    pub fn new(address: SocketAddr) -> Self {
        LiveViewSettings {
            address,
            input_image: InputImageFormat::Jpeg(INPUT_JPEG_QUALITY),
        }
    }
}

/// The live view's counters.
#[derive(Debug, Default)]
pub struct LiveViewStats {
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl LiveViewStats {
    /// Messages handed to the server for its clients.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    /// Messages dropped because the sender thread was behind (newest wins).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Messages that could not be encoded.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// State shared by the sink, the tap and the sender thread.
struct Shared {
    /// Relative topic (as in [`Outgoing::topic`]) -> channel.
    channels: BTreeMap<String, Arc<RawChannel>>,
    tx: Sender<Vec<Outgoing>>,
    /// To evict the oldest batch when the queue is full.
    rx: Receiver<Vec<Outgoing>>,
    stats: Arc<LiveViewStats>,
}

impl Shared {
    fn subscribed(&self, topic: &str) -> bool {
        self.channels.get(topic).is_some_and(|c| c.has_sinks())
    }

    /// Queue `batch`; when the queue is full the oldest batch makes room, counted as dropped.
    fn push(&self, mut batch: Vec<Outgoing>) {
        loop {
            match self.tx.try_send(batch) {
                Ok(()) => return,
                Err(TrySendError::Full(b)) => {
                    if let Ok(old) = self.rx.try_recv() {
                        self.stats
                            .dropped
                            .fetch_add(old.len() as u64, Ordering::Relaxed);
                    }
                    batch = b;
                }
                Err(TrySendError::Disconnected(b)) => {
                    self.stats
                        .dropped
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Encode and hand one batch to the server (the sender thread).
    fn send(&self, batch: Vec<Outgoing>) {
        for m in batch {
            // A client may have unsubscribed since the batch was queued.
            let Some(channel) = self.channels.get(&m.topic).filter(|c| c.has_sinks()) else {
                continue;
            };
            match m.message.encode() {
                Ok(bytes) => {
                    channel.log_with_meta(&bytes, PartialMetadata::with_log_time(m.stamp.0));
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    if self.stats.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        log::warn!("live view: cannot encode a {} message: {e}", m.topic);
                    }
                }
            }
        }
    }
}

/// Sends the latched messages (vision_info) to each client that subscribes to their channel.
struct Latch {
    latched: Vec<(Arc<RawChannel>, Vec<u8>, u64)>,
}

impl ServerListener for Latch {
    fn on_subscribe(&self, client: Client, channel: ChannelView) {
        for (c, bytes, stamp) in &self.latched {
            if c.id() == channel.id() {
                c.log_with_meta_to_sink(
                    bytes,
                    PartialMetadata::with_log_time(*stamp),
                    client.sink_id(),
                );
            }
        }
    }
}

/// The live view: a [`Sink`] for frame results; [`LiveView::tap`] takes `/diagnostics`.
pub struct LiveView {
    shared: Arc<Shared>,
    builder: OutputBuilder,
    input_topic: &'static str,
    input_format: InputImageFormat,
    address: SocketAddr,
    closing: Arc<AtomicBool>,
    sender: Option<JoinHandle<()>>,
    server: Option<WebSocketServerHandle>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Owns the channels (dropping it would close them).
    _context: Arc<Context>,
}

impl std::fmt::Debug for LiveView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveView")
            .field("address", &self.address)
            .field("topics", &self.shared.channels.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The live view's side of `/diagnostics` (see [`MessageTap`]).
#[derive(Clone)]
pub struct LiveViewTap {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LiveViewTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveViewTap").finish_non_exhaustive()
    }
}

impl MessageTap for LiveViewTap {
    fn offer(&self, message: &Outgoing) {
        if self.shared.subscribed(&message.topic) {
            self.shared.push(vec![message.clone()]);
        }
    }
}

impl LiveView {
    /// Start the server on `settings.address` with a channel for every topic `plan` offers
    /// (named as `node` resolves them), the input frames and `/diagnostics`.
    pub fn start(
        settings: &LiveViewSettings,
        node: &NodeSettings,
        plan: &PublishPlan,
        live: Arc<LiveSettings>,
        clock: &dyn Clock,
    ) -> Result<LiveView, LiveViewError> {
        let address = settings.address;
        let builder = OutputBuilder::new(plan, live);
        let input_topic = match settings.input_image {
            InputImageFormat::Raw => (topics::INPUT_IMAGE, type_of::<Image>()),
            InputImageFormat::Jpeg(_) => {
                (topics::INPUT_IMAGE_COMPRESSED, type_of::<CompressedImage>())
            }
        };
        let mut offered = builder.offered();
        offered.push(input_topic);
        offered.push((topics::DIAGNOSTICS, type_of::<DiagnosticArray>()));

        let context = Context::new();
        let mut channels = BTreeMap::new();
        for (topic, ty) in offered {
            let text = crate::ros::definitions::schema(ty.msg_name)
                .ok_or(LiveViewError::NoSchema(ty.ros_name))?;
            let channel = context
                .channel_builder(node.resolve(&node.remapped(topic)))
                .message_encoding("cdr")
                .schema(Schema::new(ty.ros_name, "ros2msg", text.into_bytes()))
                .build_raw()
                .map_err(|e| LiveViewError::Start {
                    address,
                    reason: format!("channel {topic}: {e}"),
                })?;
            channels.insert(topic.to_string(), channel);
        }
        let mut latched = Vec::new();
        for m in builder.latched(clock.now()) {
            let Some(channel) = channels.get(&m.topic) else {
                continue;
            };
            let bytes = m.message.encode().map_err(|e| LiveViewError::Start {
                address,
                reason: format!("{}: {e}", m.topic),
            })?;
            latched.push((channel.clone(), bytes, m.stamp.0));
        }

        // The SDK's tasks run on a runtime of our own, shut down in close().
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("foxglove")
            .enable_all()
            .build()
            .map_err(|e| LiveViewError::Start {
                address,
                reason: format!("tokio runtime: {e}"),
            })?;
        let host = match address.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let server = runtime
            .block_on(
                context
                    .websocket_server()
                    .name("dinov3_perception")
                    .bind(host, address.port())
                    .message_backlog_size(MESSAGE_BACKLOG)
                    .listener(Arc::new(Latch { latched }))
                    .start(),
            )
            .map_err(|e| match e {
                foxglove::FoxgloveError::Bind(io) if io.kind() == std::io::ErrorKind::AddrInUse => {
                    LiveViewError::AddressInUse { address }
                }
                foxglove::FoxgloveError::Bind(reason) => LiveViewError::Bind { address, reason },
                other => LiveViewError::Start {
                    address,
                    reason: other.to_string(),
                },
            })?;
        let bound = SocketAddr::new(address.ip(), server.port());

        let (tx, rx) = bounded(LIVE_VIEW_QUEUE);
        let shared = Arc::new(Shared {
            channels,
            tx,
            rx: rx.clone(),
            stats: Arc::new(LiveViewStats::default()),
        });
        let closing = Arc::new(AtomicBool::new(false));
        let sender = {
            let shared = shared.clone();
            let closing = closing.clone();
            std::thread::Builder::new()
                .name("live-view".into())
                .spawn(move || loop {
                    match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(batch) => shared.send(batch),
                        // Nothing queued for 50 ms: everything before close() has gone out.
                        Err(RecvTimeoutError::Timeout) if closing.load(Ordering::SeqCst) => break,
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                })
                .map_err(|e| LiveViewError::Start {
                    address,
                    reason: format!("sender thread: {e}"),
                })?
        };
        log::info!(
            "live view: Foxglove WebSocket server on ws://{bound} ({} topics; in Foxglove: Open connection -> Foxglove WebSocket)",
            shared.channels.len()
        );
        Ok(LiveView {
            shared,
            builder,
            input_topic: input_topic.0,
            input_format: settings.input_image,
            address: bound,
            closing,
            sender: Some(sender),
            server: Some(server),
            runtime: Some(runtime),
            _context: context,
        })
    }

    /// The address the server listens on (the port chosen when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The absolute topic names offered, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .shared
            .channels
            .values()
            .map(|c| c.topic().to_string())
            .collect();
        t.sort();
        t
    }

    /// The counters (shared: they stay readable after the sink is handed to the pipeline).
    pub fn stats(&self) -> Arc<LiveViewStats> {
        self.shared.stats.clone()
    }

    /// Where the status callback offers `/diagnostics`.
    pub fn tap(&self) -> LiveViewTap {
        LiveViewTap {
            shared: self.shared.clone(),
        }
    }

    /// Drain the queue, stop the server (clients get a close frame; one that does not take it
    /// within [`SHUTDOWN_GRACE`] is cut), stop the runtime.
    fn shutdown(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        if let Some(sender) = self.sender.take() {
            if sender.join().is_err() {
                log::error!("live view: the sender thread panicked");
            }
        }
        if let (Some(server), Some(runtime)) = (self.server.take(), self.runtime.as_ref()) {
            let done = server.stop();
            let waited =
                runtime.block_on(async { tokio::time::timeout(SHUTDOWN_GRACE, done.wait()).await });
            if waited.is_err() {
                log::warn!(
                    "live view: a client did not take the close frame within {} s; connection cut",
                    SHUTDOWN_GRACE.as_secs()
                );
            }
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        for channel in self.shared.channels.values() {
            channel.close();
        }
    }
}

impl Sink for LiveView {
    fn name(&self) -> String {
        SINK_NAME.into()
    }

    fn consume(&mut self, result: &FrameResult) -> Result<(), SinkError> {
        let shared = &self.shared;
        if !shared.channels.values().any(|c| c.has_sinks()) {
            return Ok(());
        }
        let (mut messages, mut errors) = self.builder.frame_messages(result);
        messages.retain(|m| shared.subscribed(&m.topic));
        if shared.subscribed(self.input_topic) {
            match input_image(&result.frame, self.input_format, self.input_topic) {
                Ok(m) => messages.push(m),
                Err(e) => errors.push(e),
            }
        }
        if !messages.is_empty() {
            shared.push(messages);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SinkError {
                sink: SINK_NAME.into(),
                reason: errors.join("; "),
            })
        }
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.shutdown();
        let s = &self.shared.stats;
        log::info!(
            "live view: {} messages sent to clients, {} dropped (live view behind), {} not encodable",
            s.sent(),
            s.dropped(),
            s.failed()
        );
        Ok(())
    }
}

impl Drop for LiveView {
    fn drop(&mut self) {
        if self.runtime.is_some() {
            self.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Stamp;
    use crate::ros::msg::Float32;
    use crate::sink::outputs::Message;

    fn shared(capacity: usize) -> Shared {
        let (tx, rx) = bounded(capacity);
        Shared {
            channels: BTreeMap::new(),
            tx,
            rx,
            stats: Arc::new(LiveViewStats::default()),
        }
    }

    fn batch(n: usize, tag: u64) -> Vec<Outgoing> {
        (0..n)
            .map(|_| Outgoing {
                topic: "t".into(),
                stamp: Stamp(tag),
                message: Message::Float32(Float32 { data: 0.0 }),
            })
            .collect()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_batch_and_counts_its_messages() {
        let s = shared(2);
        s.push(batch(3, 1));
        s.push(batch(1, 2));
        s.push(batch(2, 3));
        assert_eq!(s.stats.dropped(), 3);
        let left: Vec<u64> = s.rx.try_iter().map(|b| b[0].stamp.0).collect();
        assert_eq!(left, vec![2, 3]);
    }

    #[test]
    fn channels_are_named_as_on_ros_and_the_server_stops() {
        let remaps = vec![("dinov3/depth".to_string(), "depth_m".to_string())];
        let node = NodeSettings::from_args(None, Some("/robot1"), &remaps, &|_| None).unwrap();
        let plan = PublishPlan {
            heads: vec![crate::heads::manifest::Task::Depth],
            ..PublishPlan::default()
        };
        let settings = LiveViewSettings::new("127.0.0.1:0".parse().unwrap());
        let clock = crate::frame::SystemClock;
        let mut view = LiveView::start(&settings, &node, &plan, Arc::default(), &clock).unwrap();
        assert_ne!(view.address().port(), 0);
        assert_eq!(
            view.topics(),
            [
                "/diagnostics",
                "/robot1/depth_m",
                "/robot1/dinov3/debug_image",
                "/robot1/dinov3/input/image/compressed",
            ]
        );
        let address = view.address();
        view.close().unwrap();
        assert!(
            std::net::TcpStream::connect(address).is_err(),
            "still listening on {address}"
        );
    }

    #[test]
    fn bad_addresses_are_bad_input() {
        let address: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let e = LiveViewError::AddressInUse { address };
        assert!(e.is_bad_input());
        assert!(e.to_string().contains("--foxglove 127.0.0.1:PORT"), "{e}");
        let e = LiveViewError::Start {
            address,
            reason: "x".into(),
        };
        assert!(!e.is_bad_input());
    }
}
