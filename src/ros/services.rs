//! The six `rcl_interfaces` parameter services (list, get, set, set atomically, describe, get
//! types), answering BOTH request layouts found in ROS 2:
//!
//! * **Enhanced** (RPC over DDS, rmw_fastrtps and rmw_connextdds): the payload is the bare
//!   request; the request id is the sample's identity or a `related_sample_identity` inline QoS
//!   (rmw_fastrtps sends one), and the reply carries it as `related_sample_identity`.
//! * **Cyclone** (rmw_cyclonedds): the payload starts with a 16-byte header (lower 8 bytes of
//!   the client GUID, sequence number) followed by the request; the reply starts with the same
//!   header.
//!
//! ros2-client's own servers serve one fixed layout. Here each request topic is read raw, the
//! layout is decided from the payload (see `decode_request`), and the reply is written in the
//! same layout on the reply topic (`rq/<node>/<service>Request` -> `rr/<node>/<service>Reply`).

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ros2_client::parameters::raw;
use ros2_client::rcl_interfaces::*;
use ros2_client::ParameterValue;
use rustdds::no_key::{
    DataWriter, Decode, DefaultDecoder, DeserializerAdapter, SerializerAdapter, SimpleDataReader,
};
use rustdds::policy::{Durability, History, Reliability};
use rustdds::serialization::{deserialize_from_cdr_with_rep_id, to_writer_with_rep_id};
use rustdds::{
    DataWriterStatus, QosPolicies, QosPolicyBuilder, RepresentationIdentifier, SampleIdentity,
    SequenceNumber, StatusEvented, Timestamp, TopicKind, WriteOptions, WriteOptionsBuilder, GUID,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::node::{RosError, RosNode, TopicQos};
use super::params::{ParamStore, Range};
use crate::telemetry::RateLimit;

/// A sample as bytes, with its CDR byte order.
#[derive(Debug, Clone)]
pub struct RawSample {
    bytes: Vec<u8>,
    encoding: RepresentationIdentifier,
}

/// Keeps samples as bytes (the layout is decided after reading the inline QoS).
#[derive(Debug, Clone, Copy)]
pub struct RawAdapter;

impl DeserializerAdapter<RawSample> for RawAdapter {
    type Error = io::Error;
    type Decoded = RawSample;
    fn supported_encodings() -> &'static [RepresentationIdentifier] {
        &[
            RepresentationIdentifier::CDR_LE,
            RepresentationIdentifier::CDR_BE,
        ]
    }
    fn transform_decoded(decoded: RawSample) -> RawSample {
        decoded
    }
}

impl<'de> Decode<'de, RawSample> for RawAdapter {
    type Error = io::Error;
    fn decode_bytes(
        self,
        input_bytes: &'de [u8],
        encoding: RepresentationIdentifier,
    ) -> Result<RawSample, io::Error> {
        Ok(RawSample {
            bytes: input_bytes.to_vec(),
            encoding,
        })
    }
}

impl DefaultDecoder<RawSample> for RawAdapter {
    type Decoder = RawAdapter;
    const DECODER: RawAdapter = RawAdapter;
}

impl SerializerAdapter<RawSample> for RawAdapter {
    type Error = io::Error;
    fn output_encoding() -> RepresentationIdentifier {
        RepresentationIdentifier::CDR_LE
    }
    fn to_bytes(value: &RawSample) -> Result<rustdds::bytes::Bytes, io::Error> {
        Ok(rustdds::bytes::Bytes::from(value.bytes.clone()))
    }
}

/// rmw_cyclonedds' in-payload request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct CycloneHeader {
    guid: [u8; 8],
    seq_high: i32,
    seq_low: u32,
}

/// How a request arrived, so the reply goes back the same way.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    Enhanced(SampleIdentity),
    Cyclone(CycloneHeader),
}

/// Decode `bytes` as one `R` that uses the whole payload (up to 3 bytes of CDR end padding).
fn decode_whole<R: DeserializeOwned>(
    bytes: &[u8],
    encoding: RepresentationIdentifier,
) -> Option<(R, usize)> {
    let (value, used) = deserialize_from_cdr_with_rep_id::<R>(bytes, encoding).ok()?;
    (used <= bytes.len() && bytes.len() - used <= 3).then_some((value, used))
}

/// Tell the layout apart and decode the request.
///
/// Neither layout announces itself, and clients differ in what inline QoS they send: rmw_fastrtps
/// sends `related_sample_identity`, rmw_cyclonedds sends none, ros2-client's "Enhanced" client
/// none and its "Cyclone" client one. So the payload decides: a request is taken as Enhanced if
/// it carries `related_sample_identity` and decodes as a bare request using the whole payload;
/// else as Cyclone if a 16-byte header followed by the request uses the whole payload; else as
/// a bare (Enhanced) request. A bare request read as Cyclone loses its first 16 bytes (a
/// sequence length and the start of the data), which leaves the rest too short or misaligned
/// to decode whole, and a Cyclone header read as a bare request turns 4 bytes of a client GUID
/// into a sequence length that does not fit the payload.
fn decode_request<R: DeserializeOwned>(
    sample: &RawSample,
    related: Option<SampleIdentity>,
    writer: GUID,
    sequence: SequenceNumber,
) -> Result<(Layout, R), String> {
    let enhanced_id = || match related {
        // FastDDS may leave the sequence number unknown: use the request's own.
        Some(mut id) => {
            if id.sequence_number == SequenceNumber::UNKNOWN {
                id.sequence_number = sequence;
            }
            id
        }
        // No inline id: the request's own sample identity is the request id.
        None => SampleIdentity {
            writer_guid: writer,
            sequence_number: sequence,
        },
    };
    let bytes = &sample.bytes;
    if related.is_some() {
        if let Some((req, _)) = decode_whole::<R>(bytes, sample.encoding) {
            return Ok((Layout::Enhanced(enhanced_id()), req));
        }
    }
    if let Ok((header, 16)) =
        deserialize_from_cdr_with_rep_id::<CycloneHeader>(bytes, sample.encoding)
    {
        if let Some((req, _)) = decode_whole::<R>(&bytes[16..], sample.encoding) {
            return Ok((Layout::Cyclone(header), req));
        }
    }
    match decode_whole::<R>(bytes, sample.encoding) {
        Some((req, _)) => Ok((Layout::Enhanced(enhanced_id()), req)),
        None => Err(format!(
            "{} bytes decode neither as a bare request nor as an rmw_cyclonedds header + request",
            bytes.len()
        )),
    }
}

/// Which of the two request layouts a payload was read in (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestLayout {
    /// The bare request (rmw_fastrtps, rmw_connextdds).
    Enhanced,
    /// rmw_cyclonedds' 16-byte header, then the request.
    Cyclone,
}

/// Tell the layout apart and decode a request payload as `R`, exactly as the services do, and
/// encode a reply in that layout (an echo of the request: the same encoder as the replies).
/// `payload`: the sample's bytes after the 4-byte encapsulation header; `big_endian`: the
/// header said CDR_BE; `related_identity`: the sample carried a `related_sample_identity`
/// inline QoS. For tests and the fuzz target `parameter_request`, which have no DDS sample.
pub fn decode_request_payload<R: DeserializeOwned + Serialize>(
    payload: &[u8],
    big_endian: bool,
    related_identity: bool,
) -> Result<(RequestLayout, R), String> {
    let sample = RawSample {
        bytes: payload.to_vec(),
        encoding: if big_endian {
            RepresentationIdentifier::CDR_BE
        } else {
            RepresentationIdentifier::CDR_LE
        },
    };
    let id = SampleIdentity {
        writer_guid: GUID::GUID_UNKNOWN,
        sequence_number: SequenceNumber::new(1),
    };
    let (layout, req) = decode_request::<R>(
        &sample,
        related_identity.then_some(id),
        id.writer_guid,
        id.sequence_number,
    )?;
    encode_reply(layout, &req)?;
    let kind = match layout {
        Layout::Enhanced(_) => RequestLayout::Enhanced,
        Layout::Cyclone(_) => RequestLayout::Cyclone,
    };
    Ok((kind, req))
}

/// Encode a reply in the request's layout.
fn encode_reply<T: Serialize>(layout: Layout, reply: &T) -> Result<RawSample, String> {
    let mut bytes = Vec::new();
    if let Layout::Cyclone(h) = layout {
        to_writer_with_rep_id(&mut bytes, &h, RepresentationIdentifier::CDR_LE)
            .map_err(|e| format!("{e}"))?;
    }
    // The header is 16 bytes, so the body's CDR alignment is unchanged by the split.
    to_writer_with_rep_id(&mut bytes, reply, RepresentationIdentifier::CDR_LE)
        .map_err(|e| format!("{e}"))?;
    Ok(RawSample {
        bytes,
        encoding: RepresentationIdentifier::CDR_LE,
    })
}

/// Where a request came from.
struct RequestInfo {
    related: Option<SampleIdentity>,
    writer: GUID,
    sequence: SequenceNumber,
}

type Handler = Box<dyn Fn(&RawSample, &RequestInfo) -> Option<(Layout, RawSample)> + Send>;

struct Endpoint {
    name: &'static str,
    reader: SimpleDataReader<RawSample, RawAdapter>,
    writer: DataWriter<RawSample, RawAdapter>,
    handle: Handler,
    /// Participants whose reply readers the reply writer has matched.
    matched: BTreeSet<Participant>,
    /// Replies waiting for the requester's reply reader to be matched (deadline, requester).
    pending: Vec<(Instant, Participant, RawSample, WriteOptions)>,
}

/// The participant part (GUID prefix) of an entity GUID.
type Participant = [u8; 12];

fn participant(guid: GUID) -> Participant {
    let mut p = [0u8; 12];
    p.copy_from_slice(&guid.to_bytes()[..12]);
    p
}

/// How long a reply waits for the requester's reply reader to be discovered. A client can see
/// the service as available (its own writer and reader matched) before our reply writer has
/// discovered its reader; a volatile reply written then would be lost (rmw_cyclonedds waits
/// the same way).
const REPLY_MATCH_WAIT: Duration = Duration::from_secs(3);

impl Endpoint {
    fn refresh_matches(&mut self) {
        while let Some(status) = self.writer.try_recv_status() {
            if let DataWriterStatus::PublicationMatched { reader, .. } = status {
                self.matched.insert(participant(reader));
            }
        }
    }

    fn send(&self, reply: RawSample, opts: WriteOptions) {
        if let Err(e) = self.writer.write_with_options(reply, opts) {
            log::warn!("{} reply not sent: {e:?}", self.name);
        }
    }

    /// Send the replies whose requester is now matched, or whose wait is over.
    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(deadline, who, _, _)| self.matched.contains(who) || now >= *deadline);
        self.pending = wait;
        for (_, _, reply, opts) in ready {
            self.send(reply, opts);
        }
    }
}

/// How often a malformed request is warned about (the others are counted).
const MALFORMED_WARN_INTERVAL: Duration = Duration::from_secs(5);

/// Requests that decode in neither layout: counted, and warned about at a limited rate (a
/// misbehaving or hostile client must not flood the log and /rosout).
#[derive(Debug)]
struct MalformedRequests {
    count: AtomicU64,
    warn: Mutex<RateLimit>,
}

impl MalformedRequests {
    fn new(interval: Duration) -> Self {
        MalformedRequests {
            count: AtomicU64::new(0),
            warn: Mutex::new(RateLimit::new(interval)),
        }
    }

    /// Count one malformed request, and warn if the rate limit allows.
    fn note(&self, from: GUID, reason: &str) {
        let total = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let allowed = self.warn.lock().ok().and_then(|mut w| w.allow());
        if let Some(suppressed) = allowed {
            log::warn!(
                "malformed parameter service request from {from:?} dropped: {reason} \
                 ({suppressed} more suppressed since the last warning, {total} in all)"
            );
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The running parameter services.
pub struct ParameterServices {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    malformed: Arc<MalformedRequests>,
}

impl std::fmt::Debug for ParameterServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParameterServices").finish_non_exhaustive()
    }
}

fn service_qos() -> QosPolicies {
    // rmw_qos_profile_services_default: reliable, volatile, keep last 10.
    QosPolicyBuilder::new()
        .reliability(Reliability::Reliable {
            max_blocking_time: rustdds::Duration::from_millis(100),
        })
        .durability(Durability::Volatile)
        .history(History::KeepLast { depth: 10 })
        .build()
}

fn value_type(v: &ParameterValue) -> u8 {
    raw::ParameterValue::from(v.clone()).ptype
}

fn descriptor(store: &ParamStore, name: &str) -> raw::ParameterDescriptor {
    match store.table().spec(name) {
        None => raw::ParameterDescriptor {
            name: name.to_string(),
            r#type: 0,
            description: String::new(),
            additional_constraints: String::new(),
            read_only: false,
            dynamic_typing: false,
            floating_point_range: vec![],
            integer_range: vec![],
        },
        Some(s) => raw::ParameterDescriptor {
            name: s.name.clone(),
            r#type: value_type(&s.default),
            description: s.description.clone(),
            additional_constraints: s.constraints.clone(),
            read_only: s.read_only,
            dynamic_typing: false,
            floating_point_range: match s.range {
                Range::Double { from, to } => vec![raw::FloatingPointRange {
                    from_value: from,
                    to_value: to,
                    step: 0.0,
                }],
                _ => vec![],
            },
            integer_range: match s.range {
                Range::Integer { from, to } => vec![raw::IntegerRange {
                    from_value: from,
                    to_value: to,
                    step: 0,
                }],
                _ => vec![],
            },
        },
    }
}

/// `list_parameters` with rcl's prefix/depth rules (depth 0 = unlimited).
fn list(store: &ParamStore, prefixes: &[String], depth: u64) -> ListParametersResult {
    let mut names = Vec::new();
    let mut found_prefixes = Vec::new();
    for name in store.names() {
        let dots = name.matches('.').count() as u64;
        let ok = if prefixes.is_empty() {
            depth == 0 || dots < depth
        } else {
            prefixes.iter().any(|p| {
                name == *p
                    || (name.starts_with(&format!("{p}."))
                        && (depth == 0
                            || (name[p.len() + 1..].matches('.').count() as u64) < depth))
            })
        };
        if ok {
            if let Some((prefix, _)) = name.rsplit_once('.') {
                if !found_prefixes.iter().any(|p| p == prefix) {
                    found_prefixes.push(prefix.to_string());
                }
            }
            names.push(name);
        }
    }
    ListParametersResult {
        names,
        prefixes: found_prefixes,
    }
}

/// `/parameter_events`: what `ros2 param` watchers and rqt_reconfigure follow.
struct Events {
    publisher: ros2_client::Publisher<raw::ParameterEvent>,
    node: String,
}

impl Events {
    fn changed(&self, store: &ParamStore, names: &[String]) {
        if names.is_empty() {
            return;
        }
        let event = raw::ParameterEvent {
            stamp: ros2_client::builtin_interfaces::Time::now(),
            node: self.node.clone(),
            new_parameters: vec![],
            changed_parameters: names
                .iter()
                .map(|n| raw::Parameter {
                    name: n.clone(),
                    value: raw::ParameterValue::from(store.get(n)),
                })
                .collect(),
            deleted_parameters: vec![],
        };
        if let Err(e) = self.publisher.publish(event) {
            log::warn!("/parameter_events not published: {e:?}");
        }
    }
}

fn set_one(store: &ParamStore, p: raw::Parameter, events: &Events) -> raw::SetParametersResult {
    let name = p.name.clone();
    let value = ParameterValue::from(p.value);
    match store.set(&name, value) {
        Ok(()) => {
            events.changed(store, std::slice::from_ref(&name));
            log::info!("parameter {name} set");
            raw::SetParametersResult {
                successful: true,
                reason: String::new(),
            }
        }
        Err(reason) => {
            log::warn!("parameter {name} not set: {reason}");
            raw::SetParametersResult {
                successful: false,
                reason,
            }
        }
    }
}

/// `set_parameters_atomically`: every parameter changes, or none does (values checked and
/// run-time actions asked before anything is applied, see [`ParamStore::set_all`]). `changed`
/// is told the names that changed (for `/parameter_events`).
fn set_atomically(
    store: &ParamStore,
    params: Vec<raw::Parameter>,
    changed: &dyn Fn(&[String]),
) -> raw::SetParametersResult {
    let changes: Vec<(String, ParameterValue)> = params
        .into_iter()
        .map(|p| (p.name, ParameterValue::from(p.value)))
        .collect();
    let names: Vec<String> = changes.iter().map(|(n, _)| n.clone()).collect();
    match store.set_all(changes) {
        Ok(()) => {
            changed(&names);
            log::info!("parameters {} set atomically", names.join(", "));
            raw::SetParametersResult {
                successful: true,
                reason: String::new(),
            }
        }
        Err(reason) => {
            log::warn!("parameters {} not set: {reason}", names.join(", "));
            raw::SetParametersResult {
                successful: false,
                reason,
            }
        }
    }
}

impl ParameterServices {
    /// Requests dropped so far because they decode in neither request layout.
    pub fn malformed_requests(&self) -> u64 {
        self.malformed.count()
    }

    /// Start serving `store` under the node's fully qualified name.
    pub fn start(node: &mut RosNode, store: Arc<ParamStore>) -> Result<Self, RosError> {
        let events = Arc::new(Events {
            publisher: node.publisher("/parameter_events", Some(TopicQos::Reliable))?,
            node: node.settings().fully_qualified_name(),
        });
        let dp = node.context().domain_participant();
        let fqn = node.settings().fully_qualified_name();
        let qos = service_qos();
        let dds = |what: &str, e: &dyn std::fmt::Debug| RosError::Dds(format!("{what}: {e:?}"));
        let subscriber = dp
            .create_subscriber(&qos)
            .map_err(|e| dds("creating the service subscriber", &e))?;
        let publisher = dp
            .create_publisher(&qos)
            .map_err(|e| dds("creating the service publisher", &e))?;

        let malformed = Arc::new(MalformedRequests::new(MALFORMED_WARN_INTERVAL));
        let mut endpoints: Vec<Endpoint> = Vec::new();
        let mut add = |service: &'static str, type_name: &'static str, handle: Handler| {
            let req_topic = dp
                .create_topic(
                    format!("rq{fqn}/{service}Request"),
                    format!("rcl_interfaces::srv::dds_::{type_name}_Request_"),
                    &qos,
                    TopicKind::NoKey,
                )
                .map_err(|e| dds("creating a service request topic", &e))?;
            let rep_topic = dp
                .create_topic(
                    format!("rr{fqn}/{service}Reply"),
                    format!("rcl_interfaces::srv::dds_::{type_name}_Response_"),
                    &qos,
                    TopicKind::NoKey,
                )
                .map_err(|e| dds("creating a service reply topic", &e))?;
            let reader = subscriber
                .create_simple_datareader_no_key::<RawSample, RawAdapter>(&req_topic, None)
                .map_err(|e| dds("creating a service reader", &e))?;
            let writer = publisher
                .create_datawriter_no_key::<RawSample, RawAdapter>(&rep_topic, None)
                .map_err(|e| dds("creating a service writer", &e))?;
            endpoints.push(Endpoint {
                name: service,
                reader,
                writer,
                handle,
                matched: BTreeSet::new(),
                pending: Vec::new(),
            });
            Ok::<(), RosError>(())
        };

        let s = store.clone();
        add(
            "list_parameters",
            "ListParameters",
            endpoint(&malformed, move |r: ListParametersRequest| {
                ListParametersResponse {
                    result: list(&s, &r.prefixes, r.depth),
                }
            }),
        )?;
        let s = store.clone();
        add(
            "get_parameters",
            "GetParameters",
            endpoint(&malformed, move |r: GetParametersRequest| {
                GetParametersResponse {
                    values: r
                        .names
                        .iter()
                        .map(|n| raw::ParameterValue::from(s.get(n)))
                        .collect(),
                }
            }),
        )?;
        let s = store.clone();
        add(
            "get_parameter_types",
            "GetParameterTypes",
            endpoint(&malformed, move |r: GetParameterTypesRequest| {
                GetParameterTypesResponse {
                    values: r.names.iter().map(|n| value_type(&s.get(n))).collect(),
                }
            }),
        )?;
        let s = store.clone();
        add(
            "describe_parameters",
            "DescribeParameters",
            endpoint(&malformed, move |r: DescribeParametersRequest| {
                DescribeParametersResponse {
                    values: r.names.iter().map(|n| descriptor(&s, n)).collect(),
                }
            }),
        )?;
        let (s, ev) = (store.clone(), events.clone());
        add(
            "set_parameters",
            "SetParameters",
            endpoint(&malformed, move |r: SetParametersRequest| {
                SetParametersResponse {
                    results: r
                        .parameter
                        .into_iter()
                        .map(|p| set_one(&s, p, &ev))
                        .collect(),
                }
            }),
        )?;
        let s = store;
        add(
            "set_parameters_atomically",
            "SetParametersAtomically",
            endpoint(&malformed, move |r: SetParametersRequest| {
                SetParametersAtomicallyResponse {
                    result: set_atomically(&s, r.parameter, &|names| events.changed(&s, names)),
                }
            }),
        )?;

        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ros-param-services".into())
            .spawn(move || serve(endpoints, stop2))
            .map_err(|e| dds("starting the parameter service thread", &e))?;
        log::info!("parameter services up under {fqn} (Enhanced and Cyclone request layouts)");
        Ok(ParameterServices {
            stop,
            thread: Some(thread),
            malformed,
        })
    }
}

/// A handler from a typed request -> response function: tells the layout apart, decodes,
/// answers, encodes the reply in the same layout. A malformed request is counted in
/// `malformed` (warned about at a limited rate) and dropped.
fn endpoint<Req, Resp>(
    malformed: &Arc<MalformedRequests>,
    f: impl Fn(Req) -> Resp + Send + 'static,
) -> Handler
where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    let malformed = malformed.clone();
    Box::new(move |sample: &RawSample, info: &RequestInfo| {
        let (layout, req) =
            match decode_request::<Req>(sample, info.related, info.writer, info.sequence) {
                Ok(x) => x,
                Err(e) => {
                    malformed.note(info.writer, &e);
                    return None;
                }
            };
        match encode_reply(layout, &f(req)) {
            Ok(reply) => Some((layout, reply)),
            Err(e) => {
                log::warn!("parameter service reply not encoded: {e}");
                None
            }
        }
    })
}

fn serve(mut endpoints: Vec<Endpoint>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        for ep in &mut endpoints {
            ep.refresh_matches();
            ep.flush_pending();
            loop {
                let dcc = match ep.reader.try_take_one() {
                    Ok(Some(d)) => d,
                    Ok(None) => break,
                    Err(e) => {
                        log::warn!("{} request not read: {e:?}", ep.name);
                        break;
                    }
                };
                idle = false;
                let info = RequestInfo {
                    related: dcc.related_sample_identity(),
                    writer: dcc.writer_guid(),
                    sequence: dcc.sequence_number,
                };
                let sample = dcc.into_value();
                log::debug!(
                    "{} request: {} bytes from {:?}, related_sample_identity {:?}",
                    ep.name,
                    sample.bytes.len(),
                    info.writer,
                    info.related
                );
                if let Some((layout, reply)) = (ep.handle)(&sample, &info) {
                    let related = match layout {
                        Layout::Enhanced(id) => id,
                        Layout::Cyclone(_) => SampleIdentity {
                            writer_guid: info.writer,
                            sequence_number: info.sequence,
                        },
                    };
                    let opts = WriteOptionsBuilder::new()
                        .source_timestamp(Timestamp::now())
                        .related_sample_identity(related)
                        .build();
                    let who = participant(info.writer);
                    ep.refresh_matches();
                    if ep.matched.contains(&who) {
                        ep.send(reply, opts);
                    } else {
                        ep.pending
                            .push((Instant::now() + REPLY_MATCH_WAIT, who, reply, opts));
                    }
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ParameterServices {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<T: Serialize>(header: Option<CycloneHeader>, body: &T) -> RawSample {
        match header {
            Some(h) => encode_reply(Layout::Cyclone(h), body).unwrap(),
            None => encode_reply(
                Layout::Enhanced(SampleIdentity {
                    writer_guid: GUID::from_bytes([0; 16]),
                    sequence_number: SequenceNumber::from(0),
                }),
                body,
            )
            .unwrap(),
        }
    }

    const H: CycloneHeader = CycloneHeader {
        guid: [0x9a, 0x31, 0x7c, 0x05, 0xee, 0x10, 0x42, 0x77],
        seq_high: 0,
        seq_low: 7,
    };

    #[test]
    fn layouts_are_told_apart_for_every_client_style() {
        let writer = GUID::from_bytes([1, 15, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 0, 1, 3]);
        let seq = SequenceNumber::from(3);
        let related = Some(SampleIdentity {
            writer_guid: writer,
            sequence_number: seq,
        });
        let requests = [
            GetParametersRequest { names: vec![] },
            GetParametersRequest {
                names: vec!["source".into()],
            },
            GetParametersRequest {
                names: vec!["points.stride".into(), "heads.detection.enabled".into()],
            },
        ];
        for req in &requests {
            // rmw_cyclonedds: header, no inline id. ros2-client's Cyclone client: header + id.
            for rel in [None, related] {
                let (layout, got) =
                    decode_request::<GetParametersRequest>(&raw(Some(H), req), rel, writer, seq)
                        .unwrap();
                assert_eq!(layout, Layout::Cyclone(H));
                assert_eq!(got.names, req.names);
            }
            // rmw_fastrtps: bare request + inline id; ros2-client / Connext Enhanced: bare.
            for rel in [related, None] {
                let (layout, got) =
                    decode_request::<GetParametersRequest>(&raw(None, req), rel, writer, seq)
                        .unwrap();
                assert!(matches!(layout, Layout::Enhanced(_)), "{layout:?}");
                assert_eq!(got.names, req.names);
            }
        }
        let list = ListParametersRequest {
            prefixes: vec![],
            depth: 0,
        };
        let (layout, _) =
            decode_request::<ListParametersRequest>(&raw(None, &list), None, writer, seq).unwrap();
        assert!(
            matches!(layout, Layout::Enhanced(id) if id.writer_guid == writer && id.sequence_number == seq)
        );
        let garbage = RawSample {
            bytes: vec![0xff; 5],
            encoding: RepresentationIdentifier::CDR_LE,
        };
        assert!(decode_request::<ListParametersRequest>(&garbage, None, writer, seq).is_err());
    }

    /// A store with two live parameters whose action fails for a head that is not loaded, and
    /// records what it applied.
    fn store_with_unloaded_head() -> (ParamStore, Arc<std::sync::Mutex<Vec<String>>>) {
        use super::super::params::{ParamSpec, ParamTable};
        let table = ParamTable::new(vec![
            ParamSpec::new("points.stride", ParameterValue::Integer(4), "s")
                .range(Range::Integer { from: 1, to: 64 }),
            ParamSpec::new("heads.depth.enabled", ParameterValue::Boolean(true), "on"),
        ]);
        let values = table.resolve(&[], &[], "n", "/").unwrap();
        let applied = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = applied.clone();
        let store = ParamStore::new(
            table,
            values,
            Box::new(move |name: &str, _value: &ParameterValue| {
                if name.starts_with("heads.depth.") {
                    return Err("head depth is not loaded (loaded: detection)".to_string());
                }
                let (log, name) = (log.clone(), name.to_string());
                Ok(Box::new(move || log.lock().unwrap().push(name)))
            }),
        );
        (store, applied)
    }

    fn param(name: &str, value: ParameterValue) -> raw::Parameter {
        raw::Parameter {
            name: name.into(),
            value: raw::ParameterValue::from(value),
        }
    }

    #[test]
    fn atomic_set_applies_nothing_when_an_action_fails() {
        let (store, applied) = store_with_unloaded_head();
        let events = std::sync::Mutex::new(Vec::<String>::new());
        let result = set_atomically(
            &store,
            vec![
                param("points.stride", ParameterValue::Integer(8)),
                param("heads.depth.enabled", ParameterValue::Boolean(false)),
            ],
            &|names| events.lock().unwrap().extend(names.iter().cloned()),
        );
        assert!(!result.successful);
        assert!(result.reason.contains("not loaded"), "{}", result.reason);
        assert_eq!(
            store.get("points.stride"),
            ParameterValue::Integer(4),
            "a failed atomic set left an earlier parameter changed"
        );
        assert!(
            applied.lock().unwrap().is_empty(),
            "actions ran for a rejected atomic set: {:?}",
            applied.lock().unwrap()
        );
        assert!(
            events.lock().unwrap().is_empty(),
            "a parameter event for nothing"
        );
        // Without the failing item both apply, and one event names each.
        let ok = set_atomically(
            &store,
            vec![param("points.stride", ParameterValue::Integer(8))],
            &|names| events.lock().unwrap().extend(names.iter().cloned()),
        );
        assert!(ok.successful, "{}", ok.reason);
        assert_eq!(store.get("points.stride"), ParameterValue::Integer(8));
        assert_eq!(*applied.lock().unwrap(), ["points.stride"]);
        assert_eq!(*events.lock().unwrap(), ["points.stride"]);
    }

    #[test]
    fn a_flood_of_malformed_requests_is_warned_about_at_a_limited_rate() {
        use std::sync::atomic::AtomicUsize;
        // Count this module's warnings through the log hook (the /rosout path).
        crate::telemetry::init_logging("warn");
        let warnings = Arc::new(AtomicUsize::new(0));
        let seen = warnings.clone();
        crate::telemetry::set_log_hook(Some(Box::new(move |r: &log::Record| {
            if r.target() == "dinov3_perception::ros::services"
                && r.args().to_string().contains("malformed")
            {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        })));
        let malformed = Arc::new(MalformedRequests::new(Duration::from_secs(3600)));
        let handler = endpoint(&malformed, |r: ListParametersRequest| {
            ListParametersResponse {
                result: ListParametersResult {
                    names: r.prefixes,
                    prefixes: vec![],
                },
            }
        });
        let garbage = RawSample {
            bytes: vec![0xff; 5],
            encoding: RepresentationIdentifier::CDR_LE,
        };
        let info = RequestInfo {
            related: None,
            writer: GUID::from_bytes([7; 16]),
            sequence: SequenceNumber::from(1),
        };
        const FLOOD: usize = 1000;
        for _ in 0..FLOOD {
            assert!(handler(&garbage, &info).is_none(), "garbage was answered");
        }
        crate::telemetry::set_log_hook(None);
        let n = warnings.load(Ordering::SeqCst);
        assert_eq!(n, 1, "{FLOOD} malformed requests gave {n} warnings");
        assert_eq!(malformed.count(), FLOOD as u64, "every one is counted");
    }

    #[test]
    fn cyclone_header_is_16_bytes_and_round_trips() {
        let h = CycloneHeader {
            guid: [1, 2, 3, 4, 5, 6, 7, 8],
            seq_high: 0,
            seq_low: 42,
        };
        let reply = encode_reply(
            Layout::Cyclone(h),
            &GetParameterTypesResponse { values: vec![3, 1] },
        )
        .unwrap();
        assert_eq!(&reply.bytes[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&reply.bytes[12..16], &42u32.to_le_bytes());
        // Body right after the header: sequence length 2, then the two octets.
        assert_eq!(&reply.bytes[16..22], &[2, 0, 0, 0, 3, 1]);
    }
}
