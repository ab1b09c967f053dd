//! The node's parameter services in both ROS 2 request layouts, called with ros2-client's own
//! service clients: `Enhanced` (what rmw_fastrtps / rmw_connextdds clients send) and `Cyclone`
//! (rmw_cyclonedds' in-payload header). The independent check of the Cyclone layout, against
//! Python `cyclonedds`, is in tests/python/test_ros_interop.py.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ros2_client::parameters::raw;
use ros2_client::qos::{History, Reliability, WhenFull};
use ros2_client::rcl_interfaces::*;
use ros2_client::{
    Context, Name, Node, NodeName, NodeOptions, ParameterValue, QosProfile, ServiceMapping,
    ServiceTypeName,
};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A domain per test (apart from the ones `common::bin` uses), so tests do not meet.
fn domain(offset: u16) -> u16 {
    10 + (std::process::id() % 40) as u16 * 2 + offset
}

fn start_node(domain: u16, extra: &[&str]) -> Killed {
    let mut args = vec!["run", "--fps", "5"];
    args.extend_from_slice(extra);
    Killed(
        Command::new(env!("CARGO_BIN_EXE_dinov3_perception"))
            .args(&args)
            .env("ROS_LOCALHOST_ONLY", "1")
            .env("ROS_DOMAIN_ID", domain.to_string())
            .env(
                "RUST_LOG",
                std::env::var("NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(if std::env::var("NODE_LOG").is_ok() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("node starts"),
    )
}

fn client_node(name: &str, domain: u16) -> Node {
    let dp = rustdds::DomainParticipantBuilder::new(domain)
        .with_only_networks([IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .build()
        .unwrap();
    let ctx = Context::from_domain_participant(dp).unwrap();
    let mut node = ctx
        .new_node(
            NodeName::new("/", name).unwrap(),
            NodeOptions::new()
                .enable_rosout(false)
                .start_parameter_services(false),
        )
        .unwrap();
    let spinner = node.spinner().unwrap();
    std::thread::spawn(move || futures::executor::block_on(spinner.spin()));
    node
}

fn qos() -> QosProfile {
    QosProfile::subscription_default()
        .reliability(Reliability::Reliable {
            when_full: WhenFull::Wait(Duration::from_millis(100)),
        })
        .history(History::KeepLast { depth: 10 })
}

/// Call `service` on the node, retrying until it answers (discovery takes a moment).
fn call<Req, Resp>(
    node: &mut Node,
    mapping: ServiceMapping,
    service: &str,
    type_name: &str,
    req: Req,
) -> Resp
where
    Req: ros2_client::Message + Clone + Send + Sync + 'static,
    Resp: ros2_client::Message + Send + Sync + 'static,
{
    let client = node
        .create_client::<Req, Resp>(
            mapping,
            &Name::new("/dinov3_perception", service).unwrap(),
            &ServiceTypeName::new("rcl_interfaces", type_name),
            qos(),
            qos(),
        )
        .unwrap();
    let client = std::sync::Arc::new(client);
    for _attempt in 0..40 {
        let (tx, rx) = mpsc::sync_channel(1);
        let c = client.clone();
        let r = req.clone();
        std::thread::spawn(move || {
            let _ = tx.send(futures::executor::block_on(c.async_call_service(r)));
        });
        if let Ok(Ok(resp)) = rx.recv_timeout(Duration::from_millis(500)) {
            return resp;
        }
    }
    panic!("no answer from {service} ({mapping:?}) in 20 s");
}

/// The current `points.stride`.
/// `set_parameters_atomically` with `params`.
fn set_atomically(
    c: &mut Node,
    mapping: ServiceMapping,
    params: &[(&str, ParameterValue)],
) -> SetParametersAtomicallyResponse {
    call(
        c,
        mapping,
        "set_parameters_atomically",
        "SetParametersAtomically",
        SetParametersRequest {
            parameter: params
                .iter()
                .map(|(name, value)| raw::Parameter {
                    name: name.to_string(),
                    value: value.clone().into(),
                })
                .collect(),
        },
    )
}

fn stride(c: &mut Node, mapping: ServiceMapping) -> ParameterValue {
    let got: GetParametersResponse = call(
        c,
        mapping,
        "get_parameters",
        "GetParameters",
        GetParametersRequest {
            names: vec!["points.stride".into()],
        },
    );
    ParameterValue::from(got.values[0].clone())
}

fn check_layout(mapping: ServiceMapping, client_name: &str, domain: u16) {
    // No heads: every `heads.*` change then fails in its run-time action ("not loaded"),
    // after its value passed the checks.
    let _node = start_node(domain, &["--no-heads"]);
    let mut c = client_node(client_name, domain);
    let list: ListParametersResponse = call(
        &mut c,
        mapping,
        "list_parameters",
        "ListParameters",
        ListParametersRequest {
            prefixes: vec![],
            depth: 0,
        },
    );
    for name in [
        "source",
        "heads.detection.enabled",
        "detection.score_threshold",
        "points.stride",
    ] {
        assert!(
            list.result.names.iter().any(|n| n == name),
            "{name} missing from {:?}",
            list.result.names
        );
    }
    let got: GetParametersResponse = call(
        &mut c,
        mapping,
        "get_parameters",
        "GetParameters",
        GetParametersRequest {
            names: vec!["source".into(), "points.stride".into(), "nope".into()],
        },
    );
    let values: Vec<ParameterValue> = got.values.into_iter().map(ParameterValue::from).collect();
    assert_eq!(
        values,
        vec![
            ParameterValue::String("synthetic".into()),
            ParameterValue::Integer(4),
            ParameterValue::NotSet
        ]
    );
    let set = |name: &str, value: ParameterValue| SetParametersRequest {
        parameter: vec![raw::Parameter {
            name: name.into(),
            value: value.into(),
        }],
    };
    let r: SetParametersResponse = call(
        &mut c,
        mapping,
        "set_parameters",
        "SetParameters",
        set("detection.score_threshold", ParameterValue::Double(2.0)),
    );
    assert!(!r.results[0].successful);
    assert!(
        r.results[0].reason.contains("out of range"),
        "{}",
        r.results[0].reason
    );
    let r: SetParametersResponse = call(
        &mut c,
        mapping,
        "set_parameters",
        "SetParameters",
        set("source", ParameterValue::String("v4l2:/dev/video0".into())),
    );
    assert!(
        r.results[0].reason.contains("read-only"),
        "{}",
        r.results[0].reason
    );
    let r: SetParametersResponse = call(
        &mut c,
        mapping,
        "set_parameters",
        "SetParameters",
        set("points.stride", ParameterValue::Integer(8)),
    );
    assert!(r.results[0].successful, "{}", r.results[0].reason);
    assert_eq!(stride(&mut c, mapping), ParameterValue::Integer(8));
    let d: DescribeParametersResponse = call(
        &mut c,
        mapping,
        "describe_parameters",
        "DescribeParameters",
        DescribeParametersRequest {
            names: vec!["detection.score_threshold".into(), "source".into()],
        },
    );
    assert_eq!(d.values[0].floating_point_range[0].to_value, 1.0);
    assert!(!d.values[0].description.is_empty());
    assert!(d.values[1].read_only);
    let t: GetParameterTypesResponse = call(
        &mut c,
        mapping,
        "get_parameter_types",
        "GetParameterTypes",
        GetParameterTypesRequest {
            names: vec!["debug_image".into(), "fps".into()],
        },
    );
    assert_eq!(t.values, vec![1, 3]);
    // All or nothing: one bad value leaves the good one unchanged.
    let r = set_atomically(
        &mut c,
        mapping,
        &[
            ("points.stride", ParameterValue::Integer(2)),
            ("points.rgb", ParameterValue::Integer(2)),
        ],
    );
    assert!(
        !r.result.successful && r.result.reason.contains("wrong type"),
        "{}",
        r.result.reason
    );
    assert_eq!(stride(&mut c, mapping), ParameterValue::Integer(8));
    // All or nothing includes the run-time actions: the values are fine, but the head is not
    // loaded; the stride set before it in the request must not be applied either.
    let r = set_atomically(
        &mut c,
        mapping,
        &[
            ("points.stride", ParameterValue::Integer(2)),
            ("heads.detection.enabled", ParameterValue::Boolean(false)),
        ],
    );
    assert!(
        !r.result.successful && r.result.reason.contains("not loaded"),
        "{}",
        r.result.reason
    );
    assert_eq!(stride(&mut c, mapping), ParameterValue::Integer(8));
}

#[test]
fn enhanced_layout_clients_are_served() {
    check_layout(ServiceMapping::Enhanced, "enhanced_client", domain(0));
}

#[test]
fn cyclone_layout_clients_are_served() {
    check_layout(ServiceMapping::Cyclone, "cyclone_client", domain(1));
}
