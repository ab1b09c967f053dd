//! The live view (`run --foxglove`): bad addresses are bad input (exit 2, the address and the
//! fix named), and a client that subscribes to everything and then never reads does not stall
//! the pipeline. The client is a raw WebSocket over TCP, written here, so nothing reads for it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::assert_bad_input;

fn node(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dinov3_perception"));
    c.args(args).env("RUST_LOG", "info");
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_port_in_use_names_the_address_and_the_fix() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let o = node(&[
        "run",
        "--no-ros",
        "--max-frames",
        "1",
        "--foxglove",
        &address,
    ])
    .output()
    .unwrap();
    assert_bad_input(
        &o,
        &[
            &format!("another process listens on {address}"),
            "--foxglove 127.0.0.1:PORT",
        ],
    );
}

#[test]
fn an_address_that_is_not_ip_and_port_names_the_parameter() {
    let o = node(&[
        "run",
        "--no-ros",
        "--max-frames",
        "1",
        "--foxglove",
        "robot:8765",
    ])
    .output()
    .unwrap();
    assert_bad_input(&o, &["foxglove.address", "robot:8765", "127.0.0.1:8765"]);
}

/// One WebSocket frame from the server (unmasked): (opcode, payload).
fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload)?;
    Ok((h[0] & 0x0f, payload))
}

/// A masked text frame, as a client must send it.
fn write_text(s: &mut TcpStream, text: &str) {
    let key = [0x37u8, 0xfa, 0x21, 0x3d];
    let bytes = text.as_bytes();
    let mut frame = vec![0x81u8];
    if bytes.len() < 126 {
        frame.push(0x80 | bytes.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(&key);
    frame.extend(bytes.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    s.write_all(&frame).unwrap();
}

/// Connect (retrying while the node loads its model), negotiate `foxglove.sdk.v1`, subscribe
/// to every advertised channel; returns the socket, not to be read again, and the channels.
fn subscribe_and_stall(port: u16) -> (TcpStream, usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("no live view on port {port}: {e}"),
        }
    };
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: foxglove.sdk.v1\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("foxglove.sdk.v1"), "{head}");
    // serverInfo, then the advertisements; the server says nothing more until we subscribe.
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut ids = Vec::new();
    loop {
        match read_frame(&mut s) {
            Ok((1, text)) => {
                let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
                if v["op"] == "advertise" {
                    for c in v["channels"].as_array().unwrap() {
                        ids.push(c["id"].as_u64().unwrap());
                    }
                }
            }
            Ok(_) => {}
            Err(_) if !ids.is_empty() => break,
            Err(e) => panic!("no advertisement: {e}"),
        }
    }
    let subs: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| format!(r#"{{"id":{i},"channelId":{id}}}"#))
        .collect();
    write_text(
        &mut s,
        &format!(
            r#"{{"op":"subscribe","subscriptions":[{}]}}"#,
            subs.join(",")
        ),
    );
    (s, ids.len())
}

#[test]
fn a_client_that_never_reads_does_not_stall_the_pipeline() {
    const FRAMES: u64 = 60;
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut child = node(&[
        "run",
        "--no-ros",
        "--fps",
        "0",
        "--max-frames",
        &FRAMES.to_string(),
        "--foxglove",
        &address,
        "--ros-args",
        "-p",
        "debug_image:=true",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Read the log as it comes (a full pipe would stall the node, not the live view).
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        err.read_to_string(&mut log).unwrap();
        log
    });
    let (socket, channels) = subscribe_and_stall(port);
    assert!(channels >= 10, "{channels} channels advertised");
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the node did not finish {FRAMES} frames with a stalled live-view client");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = reader.join().unwrap();
    drop(socket);
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(
        log.contains(&format!("{FRAMES} processed")),
        "every frame processed:\n{log}"
    );
    // The client really fell behind: the SDK dropped its oldest messages (its own log line).
    assert!(
        log.contains("outbox for client"),
        "the client never fell behind:\n{log}"
    );
    // The live view's own counters are reported, with what went out.
    let line = log
        .lines()
        .find(|l| l.contains("live view: ") && l.contains("messages sent"))
        .unwrap_or_else(|| panic!("no live view summary:\n{log}"));
    let sent: u64 = line
        .split("live view: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(sent > FRAMES, "{line}");
    assert!(line.contains("dropped"), "{line}");
}
