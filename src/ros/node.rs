//! The ROS 2 node on ros2-client: DDS participant bound to `ROS_DOMAIN_ID` (and to loopback
//! under `ROS_LOCALHOST_ONLY=1` / `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`), the node in the
//! ROS graph (`ros_discovery_info`), topic names with namespace and remapping, QoS profiles.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender, TrySendError};

use ros2_client::qos::{Durability, History, QosProfile, Reliability, WhenFull};
use ros2_client::{Context, MessageTypeName, Name, Node, NodeName, NodeOptions, Publisher};
use serde::de::DeserializeOwned;

use super::args::RosArgsError;
use super::msg::RosMessage;
use super::params::ParamError;

/// Errors of the ROS layer.
#[derive(Debug, thiserror::Error)]
pub enum RosError {
    /// `--ros-args` problem.
    #[error(transparent)]
    Args(#[from] RosArgsError),
    /// Parameter problem.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// Invalid node name, namespace or topic name.
    #[error("{what} {value:?} is not a valid ROS 2 name: {reason}")]
    Name {
        /// Node name, namespace or topic.
        what: &'static str,
        /// The name.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// A bad environment variable.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Env {
        /// Variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is accepted.
        reason: String,
    },
    /// Security is enforced by the environment and this build has none.
    #[error(
        "ROS_SECURITY_ENABLE=true with ROS_SECURITY_STRATEGY=Enforce, but this build has no DDS security (SROS2): the node will not join the graph unsecured. Unset ROS_SECURITY_ENABLE, set ROS_SECURITY_STRATEGY=Permissive to run unsecured, or run with --no-ros (docs/dds-security.md)"
    )]
    SecurityUnsupported,
    /// DDS could not create an entity (sockets, ports).
    #[error("DDS: {0}")]
    Dds(String),
}

impl RosError {
    /// Whether the user's input is at fault (exit 2) rather than the system (exit 1).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, RosError::Dds(_))
    }
}

/// QoS of a published topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicQos {
    /// Sensor data: best effort, volatile, keep last 5 (rmw_qos_profile_sensor_data).
    SensorData,
    /// Reliable, volatile, keep last 10 (rmw_qos_profile_default).
    Reliable,
    /// Reliable, transient local, keep last 1 (latched: late joiners get the last message).
    Latched,
}

impl TopicQos {
    /// The ros2-client profile.
    pub fn profile(self) -> QosProfile {
        let base = QosProfile::subscription_default();
        match self {
            TopicQos::SensorData => base
                .reliability(Reliability::BestEffort)
                .history(History::KeepLast { depth: 5 }),
            TopicQos::Reliable => base
                .reliability(Reliability::Reliable {
                    when_full: WhenFull::Wait(Duration::from_millis(100)),
                })
                .history(History::KeepLast { depth: 10 }),
            TopicQos::Latched => base
                .reliability(Reliability::Reliable {
                    when_full: WhenFull::Wait(Duration::from_millis(100)),
                })
                .durability(Durability::TransientLocal)
                .history(History::KeepLast { depth: 1 }),
        }
    }
}

/// Where and how the node lives in the ROS graph.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSettings {
    /// Node name (after `-r __node:=`).
    pub node_name: String,
    /// Namespace, absolute (after `-r __ns:=`).
    pub namespace: String,
    /// Topic remaps `FROM:=TO`.
    pub remaps: Vec<(String, String)>,
    /// DDS domain (`ROS_DOMAIN_ID`).
    pub domain_id: u16,
    /// Bind DDS to loopback only.
    pub localhost_only: bool,
    /// What `ROS_SECURITY_ENABLE` / `ROS_SECURITY_STRATEGY` ask for.
    pub security: SecurityRequest,
    /// Topics (relative names as published, e.g. `dinov3/detections`) made reliable.
    pub reliable_topics: BTreeSet<String>,
}

/// DDS security (SROS2) as the environment asks for it. This build has none
/// (docs/dds-security.md): Enforce refuses to start, Permissive runs unsecured with a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityRequest {
    /// `ROS_SECURITY_ENABLE` is not `true`.
    #[default]
    Off,
    /// `ROS_SECURITY_ENABLE=true` without `ROS_SECURITY_STRATEGY=Enforce`.
    Permissive,
    /// `ROS_SECURITY_ENABLE=true` and `ROS_SECURITY_STRATEGY=Enforce`.
    Enforce,
}

impl NodeSettings {
    /// Before joining the graph: refuse to talk in the clear where the environment enforces
    /// security; warn where it only asks for it.
    pub fn check_security(&self) -> Result<(), RosError> {
        match self.security {
            SecurityRequest::Off => Ok(()),
            SecurityRequest::Permissive => {
                log::warn!(
                    "ROS_SECURITY_ENABLE=true, but this build has no DDS security: the node runs unsecured (ROS_SECURITY_STRATEGY is not Enforce); see docs/dds-security.md"
                );
                Ok(())
            }
            SecurityRequest::Enforce => Err(RosError::SecurityUnsupported),
        }
    }
}

/// The default node name.
pub const DEFAULT_NODE_NAME: &str = "dinov3_perception";

fn check_token(what: &'static str, value: &str, token: &str) -> Result<(), RosError> {
    let bad = |reason: &str| RosError::Name {
        what,
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let first = token.chars().next().ok_or_else(|| bad("empty name part"))?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err(bad(
            "each part must start with a letter or underscore (e.g. camera_1)",
        ));
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(bad(&format!(
            "{c:?} is not allowed: use letters, digits and underscores"
        )));
    }
    if token.contains("__") {
        return Err(bad("repeated underscores are not allowed"));
    }
    Ok(())
}

impl NodeSettings {
    /// Settings from the ROS arguments and the environment (`ROS_DOMAIN_ID`,
    /// `ROS_LOCALHOST_ONLY`, `ROS_AUTOMATIC_DISCOVERY_RANGE`).
    pub fn from_args(
        node_name: Option<&str>,
        namespace: Option<&str>,
        remaps: &[(String, String)],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, RosError> {
        let node_name = node_name.unwrap_or(DEFAULT_NODE_NAME).to_string();
        check_token("node name", &node_name, &node_name)?;
        let mut namespace = namespace.unwrap_or("/").trim().to_string();
        if !namespace.starts_with('/') {
            namespace.insert(0, '/');
        }
        if namespace.len() > 1 {
            namespace = namespace.trim_end_matches('/').to_string();
            for part in namespace[1..].split('/') {
                check_token("namespace", &namespace, part)?;
            }
        }
        for (from, to) in remaps {
            for name in [from, to] {
                for part in name.trim_start_matches('/').split('/') {
                    check_token("remapped topic", name, part)?;
                }
            }
        }
        let domain_id = match env("ROS_DOMAIN_ID").filter(|v| !v.trim().is_empty()) {
            None => 0,
            Some(v) => match v.trim().parse::<u16>() {
                // 232 is the largest domain whose RTPS ports fit (ROS 2 documents 0..101 as safe).
                Ok(d) if d <= 232 => d,
                _ => {
                    return Err(RosError::Env {
                        var: "ROS_DOMAIN_ID",
                        value: v,
                        reason: "give an integer 0..232 (0..101 avoids ephemeral ports)".into(),
                    })
                }
            },
        };
        // rcl's rules (Jazzy): ROS_LOCALHOST_ONLY=1 wins over ROS_AUTOMATIC_DISCOVERY_RANGE
        // ("automatic_discovery_range will be ignored"). OFF means no discovery at all, which
        // RustDDS cannot do; loopback is the nearest it can keep to.
        let localhost_var = match env("ROS_LOCALHOST_ONLY").as_deref() {
            Some("1") => true,
            Some("0") | Some("") | None => false,
            Some(other) => {
                return Err(RosError::Env {
                    var: "ROS_LOCALHOST_ONLY",
                    value: other.to_string(),
                    reason: "give 1 (loopback only) or 0".into(),
                })
            }
        };
        let range_localhost = match env("ROS_AUTOMATIC_DISCOVERY_RANGE")
            .filter(|v| !v.is_empty())
            .as_deref()
        {
            Some("LOCALHOST") => true,
            Some("OFF") => {
                log::warn!(
                    "ROS_AUTOMATIC_DISCOVERY_RANGE=OFF: this node cannot switch discovery off; it stays on loopback (other processes on this machine still discover it)"
                );
                true
            }
            Some("SUBNET") | Some("SYSTEM_DEFAULT") | None => false,
            Some(other) => {
                return Err(RosError::Env {
                    var: "ROS_AUTOMATIC_DISCOVERY_RANGE",
                    value: other.to_string(),
                    reason: "give LOCALHOST, SUBNET, OFF or SYSTEM_DEFAULT".into(),
                })
            }
        };
        let localhost_only = localhost_var || range_localhost;
        // SROS2: rcl's rules, `true` and `Enforce` exactly as written.
        let security = match (
            env("ROS_SECURITY_ENABLE").as_deref(),
            env("ROS_SECURITY_STRATEGY").as_deref(),
        ) {
            (Some("true"), Some("Enforce")) => SecurityRequest::Enforce,
            (Some("true"), _) => SecurityRequest::Permissive,
            _ => SecurityRequest::Off,
        };
        Ok(NodeSettings {
            node_name,
            namespace,
            remaps: remaps.to_vec(),
            domain_id,
            localhost_only,
            security,
            reliable_topics: BTreeSet::new(),
        })
    }

    /// Fully qualified node name, e.g. `/robot1/dinov3_perception`.
    pub fn fully_qualified_name(&self) -> String {
        if self.namespace == "/" {
            format!("/{}", self.node_name)
        } else {
            format!("{}/{}", self.namespace, self.node_name)
        }
    }

    /// The name a topic is published under after remapping: a rule matches the relative name
    /// as written in the code or the fully resolved name. The result may be relative (to the
    /// namespace) or absolute.
    pub fn remapped(&self, topic: &str) -> String {
        let resolved = self.resolve(topic);
        for (from, to) in &self.remaps {
            if from == topic || self.resolve(from) == resolved {
                return to.clone();
            }
        }
        topic.to_string()
    }

    /// Fully resolved topic name (`/ns/name` for a relative name).
    pub fn resolve(&self, topic: &str) -> String {
        if topic.starts_with('/') {
            topic.to_string()
        } else if self.namespace == "/" {
            format!("/{topic}")
        } else {
            format!("{}/{topic}", self.namespace)
        }
    }

    /// QoS of a topic: sensor data unless listed as reliable, or the topic's fixed QoS.
    pub fn qos_for(&self, topic: &str, fixed: Option<TopicQos>) -> TopicQos {
        fixed.unwrap_or_else(|| {
            if self.reliable_topics.contains(topic)
                || self.reliable_topics.contains(&self.resolve(topic))
            {
                TopicQos::Reliable
            } else {
                TopicQos::SensorData
            }
        })
    }
}

/// One log record on its way to /rosout.
#[derive(Debug, Clone)]
pub struct RosoutLine {
    /// When it was logged.
    pub stamp: ros2_client::builtin_interfaces::Time,
    /// Severity.
    pub level: ros2_client::log::LogLevel,
    /// Logger name (the node's fully qualified name, dots for slashes).
    pub logger: String,
    /// The message.
    pub message: String,
    /// Source file.
    pub file: String,
    /// Module path.
    pub function: String,
    /// Source line.
    pub line: u32,
}

/// Log lines that may wait for the /rosout publisher; more are dropped (and counted).
pub const ROSOUT_QUEUE: usize = 256;

/// How long closing the queue keeps publishing the lines still in it.
pub const ROSOUT_DRAIN: Duration = Duration::from_secs(1);

/// The logging side of a [`RosoutQueue`]: never blocks, drops a line when the queue is full.
#[derive(Debug, Clone)]
pub struct RosoutSender {
    tx: Sender<RosoutLine>,
    dropped: Arc<AtomicU64>,
}

impl RosoutSender {
    /// Queue `line` for the publisher thread; `false` if it was dropped (queue full or closed).
    pub fn push(&self, line: RosoutLine) -> bool {
        match self.tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// /rosout behind a bounded queue drained by its own thread, so that a log call (on the
/// inference thread, say) never waits for DDS: publishing a reliable topic can block while a
/// reader is slow or gone.
#[derive(Debug)]
pub struct RosoutQueue {
    dropped: Arc<AtomicU64>,
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RosoutQueue {
    /// A queue of `capacity` lines whose thread hands each line to `publish`, and the sender
    /// that feeds it. The thread ends once every sender is gone and the queue is drained (or
    /// [`RosoutQueue::close`] gave up waiting).
    pub fn start(
        capacity: usize,
        mut publish: impl FnMut(RosoutLine) + Send + 'static,
    ) -> std::io::Result<(RosoutQueue, RosoutSender)> {
        let (tx, rx) = bounded::<RosoutLine>(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let closing = Arc::new(AtomicBool::new(false));
        let (late, stop) = (dropped.clone(), closing.clone());
        let thread = std::thread::Builder::new()
            .name("ros-rosout".into())
            .spawn(move || {
                let mut deadline = None;
                loop {
                    let line = match rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(line) => line,
                        // Closing and nothing queued: done even if a sender is still around.
                        Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => return,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => return,
                    };
                    if stop.load(Ordering::Relaxed) {
                        let end = *deadline.get_or_insert_with(|| Instant::now() + ROSOUT_DRAIN);
                        if Instant::now() >= end {
                            // Closing took too long: count what is left as dropped.
                            late.fetch_add(1 + rx.try_iter().count() as u64, Ordering::Relaxed);
                            return;
                        }
                    }
                    publish(line);
                }
            })?;
        Ok((
            RosoutQueue {
                dropped: dropped.clone(),
                closing,
                thread: Some(thread),
            },
            RosoutSender { tx, dropped },
        ))
    }

    /// Lines dropped so far because the queue was full (or closing took too long).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Stop the thread once it has published what is queued (for at most [`ROSOUT_DRAIN`]),
    /// and wait for it. Remove the log hook (the sender) first, or lines logged meanwhile may
    /// be lost.
    pub fn close(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RosoutQueue {
    fn drop(&mut self) {
        self.close();
    }
}

/// The log hook that queues this crate's records for /rosout on `sender` (never blocks).
fn rosout_hook(logger: String, sender: RosoutSender) -> crate::telemetry::LogHook {
    Box::new(move |record: &log::Record| {
        use ros2_client::log::LogLevel;
        let level = match record.level() {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug | log::Level::Trace => LogLevel::Debug,
        };
        sender.push(RosoutLine {
            stamp: ros2_client::builtin_interfaces::Time::now(),
            level,
            logger: logger.clone(),
            message: record.args().to_string(),
            file: record.file().unwrap_or_default().to_string(),
            function: record.module_path().unwrap_or_default().to_string(),
            line: record.line().unwrap_or_default(),
        });
    })
}

/// A running node: DDS participant, ROS node, spinner thread.
pub struct RosNode {
    settings: NodeSettings,
    context: Context,
    /// `None` only while dropping (dropping the Node stops its spinner).
    node: Option<Node>,
    spinner: Option<JoinHandle<()>>,
    /// /rosout's queue and thread (`None` only while dropping).
    rosout: Option<RosoutQueue>,
}

impl std::fmt::Debug for RosNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RosNode")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn dds<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> RosError + '_ {
    move |e| RosError::Dds(format!("{what}: {e:?}"))
}

impl RosNode {
    /// Join the ROS graph.
    pub fn start(settings: NodeSettings) -> Result<RosNode, RosError> {
        let mut builder = rustdds::DomainParticipantBuilder::new(settings.domain_id);
        if settings.localhost_only {
            builder = builder.with_only_networks([IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        }
        let participant = builder
            .build()
            .map_err(dds("creating the DDS participant"))?;
        let context = Context::from_domain_participant(participant)
            .map_err(dds("creating the ROS context"))?;
        let name = NodeName::new(&settings.namespace, &settings.node_name).map_err(|e| {
            RosError::Name {
                what: "node name",
                value: settings.fully_qualified_name(),
                reason: format!("{e:?}"),
            }
        })?;
        let mut node = context
            .new_node(
                name,
                NodeOptions::new()
                    .enable_rosout(true)
                    .start_parameter_services(false),
            )
            .map_err(dds("creating the node"))?;
        // This crate's log records also go to /rosout (rqt_console, `ros2 topic echo /rosout`).
        let rosout = node.logging_handle();
        let logger_name = settings
            .fully_qualified_name()
            .trim_start_matches('/')
            .replace('/', ".");
        let (rosout_queue, sender) = RosoutQueue::start(ROSOUT_QUEUE, move |l: RosoutLine| {
            use ros2_client::RosoutRaw;
            rosout.rosout_raw(
                l.stamp,
                l.level,
                &l.logger,
                &l.message,
                &l.file,
                &l.function,
                l.line,
            )
        })
        .map_err(dds("starting the /rosout thread"))?;
        crate::telemetry::set_log_hook(Some(rosout_hook(logger_name, sender)));
        let spinner = node.spinner().map_err(dds("creating the spinner"))?;
        let handle = std::thread::Builder::new()
            .name("ros-spinner".into())
            .spawn(move || {
                if let Err(e) = futures::executor::block_on(spinner.spin()) {
                    log::warn!("ROS spinner stopped: {e:?}");
                }
            })
            .map_err(dds("starting the spinner thread"))?;
        log::info!(
            "ROS 2 node {} on domain {}{} ({})",
            settings.fully_qualified_name(),
            settings.domain_id,
            if settings.localhost_only {
                ", loopback only"
            } else {
                ""
            },
            ros2_client::COMPILED_ROS_DISTRO
        );
        Ok(RosNode {
            settings,
            context,
            node: Some(node),
            spinner: Some(handle),
            rosout: Some(rosout_queue),
        })
    }

    /// Log lines not sent to /rosout because its queue was full.
    pub fn rosout_dropped(&self) -> u64 {
        self.rosout.as_ref().map_or(0, RosoutQueue::dropped)
    }

    /// The settings the node runs with.
    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// The DDS participant (for the parameter services' raw readers and writers).
    pub fn context(&self) -> &Context {
        &self.context
    }

    fn node(&mut self) -> Result<&mut Node, RosError> {
        self.node
            .as_mut()
            .ok_or_else(|| RosError::Dds("the node is shut down".into()))
    }

    fn topic_name(&self, topic: &str) -> Result<Name, RosError> {
        // Resolve to an absolute name first: ros2-client 0.12 turns a relative name in the root
        // namespace into `rt//name` (namespace "/" plus another slash).
        let remapped = self.settings.resolve(&self.settings.remapped(topic));
        Name::parse(&remapped).map_err(|e| RosError::Name {
            what: "topic",
            value: remapped.clone(),
            reason: format!("{e:?}"),
        })
    }

    /// A publisher on `topic` (relative names move with the namespace; remaps apply).
    pub fn publisher<M: RosMessage>(
        &mut self,
        topic: &str,
        fixed_qos: Option<TopicQos>,
    ) -> Result<Publisher<M>, RosError> {
        let qos = self.settings.qos_for(topic, fixed_qos).profile();
        let name = self.topic_name(topic)?;
        let node = self.node()?;
        let t = node
            .create_topic(&name, MessageTypeName::new(M::PACKAGE, M::NAME), &qos)
            .map_err(dds("creating a topic"))?;
        log::debug!("publishing {} ({}/{})", name, M::PACKAGE, M::NAME);
        node.create_publisher(&t, Some(qos))
            .map_err(dds("creating a publisher"))
    }

    /// A sensor-data subscription on `topic` of ROS type `package/Type`.
    pub fn subscription<M: DeserializeOwned + 'static>(
        &mut self,
        topic: &str,
        package: &str,
        type_name: &str,
    ) -> Result<ros2_client::Subscription<M>, RosError> {
        let qos = TopicQos::SensorData.profile();
        let name = self.topic_name(topic)?;
        let node = self.node()?;
        let t = node
            .create_topic(&name, MessageTypeName::new(package, type_name), &qos)
            .map_err(dds("creating a topic"))?;
        node.create_subscription(&t, Some(qos))
            .map_err(dds("creating a subscription"))
    }
}

impl Drop for RosNode {
    fn drop(&mut self) {
        // Removing the hook drops the /rosout sender: its thread publishes what is queued, ends.
        crate::telemetry::set_log_hook(None);
        if let Some(mut q) = self.rosout.take() {
            q.close();
        }
        // Dropping the Node stops its spinner.
        drop(self.node.take());
        if let Some(h) = self.spinner.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn environment_sets_domain_and_loopback() {
        let s = NodeSettings::from_args(
            None,
            None,
            &[],
            &env(&[("ROS_DOMAIN_ID", "42"), ("ROS_LOCALHOST_ONLY", "1")]),
        )
        .unwrap();
        assert_eq!((s.domain_id, s.localhost_only), (42, true));
        let s = NodeSettings::from_args(
            None,
            None,
            &[],
            &env(&[("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")]),
        )
        .unwrap();
        assert!(s.localhost_only);
        let s = NodeSettings::from_args(
            None,
            None,
            &[],
            &env(&[
                ("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET"),
                ("ROS_LOCALHOST_ONLY", "1"),
            ]),
        )
        .unwrap();
        assert!(
            s.localhost_only,
            "ROS_LOCALHOST_ONLY=1 wins over ROS_AUTOMATIC_DISCOVERY_RANGE, as in rcl"
        );
        let s = NodeSettings::from_args(
            None,
            None,
            &[],
            &env(&[("ROS_AUTOMATIC_DISCOVERY_RANGE", "OFF")]),
        )
        .unwrap();
        assert!(
            s.localhost_only,
            "OFF: the nearest RustDDS gets is loopback"
        );
        let s = NodeSettings::from_args(
            None,
            None,
            &[],
            &env(&[("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")]),
        )
        .unwrap();
        assert!(!s.localhost_only);
        for bad in ["x", "-1", "300"] {
            let e = NodeSettings::from_args(None, None, &[], &env(&[("ROS_DOMAIN_ID", bad)]))
                .unwrap_err();
            assert!(e.to_string().contains("ROS_DOMAIN_ID"), "{e}");
        }
    }

    fn record_through(hook: &crate::telemetry::LogHook, i: usize) {
        hook(
            &log::Record::builder()
                .args(format_args!("line {i}"))
                .level(log::Level::Warn)
                .target("dinov3_perception::test")
                .build(),
        );
    }

    #[test]
    fn logging_never_waits_for_a_blocked_rosout_publisher() {
        use std::sync::Mutex;
        // The publisher blocks (up to 100 ms a line) until the gate is opened (dropped).
        let (gate, gate_rx) = crossbeam_channel::bounded::<()>(0);
        let published = Arc::new(Mutex::new(Vec::<String>::new()));
        let out = published.clone();
        const CAPACITY: usize = 8;
        let (mut queue, sender) = RosoutQueue::start(CAPACITY, move |l: RosoutLine| {
            let _ = gate_rx.recv_timeout(Duration::from_millis(100));
            out.lock().unwrap().push(l.message);
        })
        .unwrap();
        let hook = rosout_hook("node".into(), sender);
        const N: usize = 200;
        let t = Instant::now();
        for i in 0..N {
            record_through(&hook, i);
        }
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "{N} log calls took {took:?} with the /rosout publisher blocked"
        );
        // The queue holds CAPACITY lines and the publisher one or a few (one per 100 ms at
        // most while blocked): the rest were dropped and counted.
        let in_flight = 1 + (took.as_millis() / 100) as usize;
        let dropped = queue.dropped() as usize;
        assert!(
            (N - CAPACITY - in_flight..=N - CAPACITY).contains(&dropped),
            "dropped {dropped} of {N} (queue {CAPACITY})"
        );
        // Open the gate: every queued line arrives, in order.
        drop(gate);
        let wait = |n: usize| {
            let t = Instant::now();
            while published.lock().unwrap().len() < n && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(2));
            }
            published.lock().unwrap().clone()
        };
        let got = wait(N - dropped);
        assert_eq!(got.len(), N - dropped);
        assert_eq!(got[0], "line 0");
        // Not full: nothing more is dropped and the lines arrive.
        for i in N..N + 5 {
            record_through(&hook, i);
            std::thread::sleep(Duration::from_millis(1));
        }
        let got = wait(N - dropped + 5);
        assert_eq!(
            &got[got.len() - 5..],
            ["line 200", "line 201", "line 202", "line 203", "line 204"]
        );
        assert_eq!(queue.dropped() as usize, dropped);
        // Removing the hook (the sender) lets the thread end.
        drop(hook);
        queue.close();
    }

    #[test]
    fn names_are_validated_and_topics_resolved() {
        let e = NodeSettings::from_args(Some("1cam"), None, &[], &env(&[])).unwrap_err();
        assert!(e.to_string().contains("node name"), "{e}");
        let e = NodeSettings::from_args(None, Some("/a//b"), &[], &env(&[])).unwrap_err();
        assert!(e.to_string().contains("namespace"), "{e}");
        let s = NodeSettings::from_args(
            Some("cam0"),
            Some("robot1"),
            &[
                ("dinov3/detections".into(), "objects".into()),
                ("/robot1/dinov3/depth".into(), "/depth".into()),
            ],
            &env(&[]),
        )
        .unwrap();
        assert_eq!(s.fully_qualified_name(), "/robot1/cam0");
        assert_eq!(s.remapped("dinov3/detections"), "objects");
        assert_eq!(s.remapped("dinov3/depth"), "/depth");
        assert_eq!(s.remapped("dinov3/points"), "dinov3/points");
        assert_eq!(s.resolve("dinov3/points"), "/robot1/dinov3/points");
    }
}
