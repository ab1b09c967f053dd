// A Foxglove WebSocket client built from the libraries the Foxglove app uses: subscribes to every
// channel the server advertises, parses each ros2msg schema with @foxglove/rosmsg, decodes each
// CDR message with @foxglove/rosmsg2-serialization, and prints a JSON summary per topic.
//
//   node live_view.mjs ws://127.0.0.1:8765 [--seconds 20] [--connect-seconds 60] [--min-count 3]
//                      [--counts-only]
//
// It stops when the server closes the connection (the node finished), when every channel has
// --min-count messages, or after --seconds; then prints the summary on stdout and exits 0. A
// connection that never opens within --connect-seconds exits 1. --counts-only (for hour-long
// soaks) still decodes every message but keeps only the counts, so the client's memory stays flat.

import wsProtocol from "@foxglove/ws-protocol"; // CommonJS: no named exports under Node ESM
import rosmsg from "@foxglove/rosmsg";
import rosmsg2 from "@foxglove/rosmsg2-serialization";
import WebSocket from "ws";

const { FoxgloveClient } = wsProtocol;
const { parse } = rosmsg;
const { MessageReader } = rosmsg2;

// The foxglove SDK 0.30 negotiates only these (FoxgloveClient's own constant is the older
// foxglove.websocket.v1); v1 keeps the schema text in each advertisement.
const SUBPROTOCOL = "foxglove.sdk.v1";

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

const url = process.argv[2];
if (!url || !url.startsWith("ws")) {
  console.error("usage: node live_view.mjs ws://HOST:PORT [--seconds S] [--connect-seconds S] [--min-count N]");
  process.exit(2);
}
const seconds = option("--seconds", 20);
const connectSeconds = option("--connect-seconds", 60);
const minCount = option("--min-count", 0);
const countsOnly = process.argv.includes("--counts-only");

const topics = new Map(); // channel id -> summary
const readers = new Map(); // channel id -> MessageReader
const bySubscription = new Map(); // subscription id -> channel id
let serverName = null;
let finished = false;

function summarise(topic, message) {
  const stamp = message?.header?.stamp;
  if (stamp) topic.stamps.push([stamp.sec, stamp.nanosec]);
  if (message && "width" in message && "height" in message && "encoding" in message) {
    topic.images.push({ width: message.width, height: message.height, encoding: message.encoding, step: message.step, bytes: message.data.length });
  }
  if (message && "format" in message && "data" in message && !("encoding" in message)) {
    const first = topic.compressed.length === 0 ? Buffer.from(message.data).toString("base64") : undefined;
    topic.compressed.push({ format: message.format, bytes: message.data.length, first_base64: first });
  }
  if (message && Array.isArray(message.detections)) {
    topic.boxes.push(message.detections.length);
    if (message.detections.length > 0 && topic.first_box === null) {
      const d = message.detections[0];
      topic.first_box = { class_id: d.results[0]?.hypothesis.class_id, score: d.results[0]?.hypothesis.score, size_x: d.bbox.size_x, size_y: d.bbox.size_y };
    }
  }
  if (message && Array.isArray(message.fields) && "point_step" in message) {
    topic.clouds.push({ width: message.width, height: message.height, point_step: message.point_step, fields: message.fields.map((f) => f.name), bytes: message.data.length });
  }
  if (message && Array.isArray(message.status)) {
    for (const s of message.status) {
      topic.statuses.push({ name: s.name, level: s.level, keys: s.values.map((v) => v.key), values: Object.fromEntries(s.values.map((v) => [v.key, v.value])) });
    }
  }
}

function finish(reason) {
  if (finished) return;
  finished = true;
  const out = { server: serverName, reason, topics: {} };
  for (const t of [...topics.values()].sort((a, b) => a.topic.localeCompare(b.topic))) {
    out.topics[t.topic] = t;
  }
  // Exit once the summary is flushed: writes to a pipe are asynchronous in Node.
  process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
}

function connect(deadline) {
  const ws = new WebSocket(url, [SUBPROTOCOL]);
  ws.binaryType = "arraybuffer";
  let opened = false;
  ws.on("error", () => {
    if (!opened) {
      if (Date.now() > deadline) {
        console.error(`no Foxglove WebSocket server at ${url} within ${connectSeconds} s`);
        process.exit(1);
      }
      setTimeout(() => connect(deadline), 200);
    }
  });
  ws.on("open", () => {
    opened = true;
    setTimeout(() => finish("timeout"), seconds * 1000);
  });
  const client = new FoxgloveClient({ ws });
  client.on("serverInfo", (info) => { serverName = info.name; });
  client.on("advertise", (channels) => {
    for (const ch of channels) {
      const topic = {
        topic: ch.topic, schema_name: ch.schemaName, schema_encoding: ch.schemaEncoding ?? null,
        encoding: ch.encoding, count: 0, decode_failures: 0, trailing_bytes: 0, errors: [],
        log_times: [], stamps: [], images: [], compressed: [], boxes: [], first_box: null,
        clouds: [], statuses: [], schema_error: null,
      };
      topics.set(ch.id, topic);
      try {
        readers.set(ch.id, new MessageReader(parse(ch.schema, { ros2: true })));
      } catch (e) {
        topic.schema_error = String(e);
      }
      bySubscription.set(client.subscribe(ch.id), ch.id);
    }
  });
  client.on("message", ({ subscriptionId, timestamp, data }) => {
    const id = bySubscription.get(subscriptionId);
    const topic = topics.get(id);
    if (!topic) return;
    topic.count += 1;
    if (!countsOnly) topic.log_times.push(String(timestamp));
    const reader = readers.get(id);
    if (!reader) return;
    try {
      const message = reader.readMessage(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      if (reader.lastReadHadTrailingBytes()) topic.trailing_bytes += 1;
      if (!countsOnly) summarise(topic, message);
    } catch (e) {
      topic.decode_failures += 1;
      if (topic.errors.length < 3) topic.errors.push(String(e));
    }
    if (minCount > 0 && topics.size > 0 && [...topics.values()].every((t) => t.count >= minCount)) {
      finish("min-count");
    }
  });
  client.on("close", () => { if (opened) finish("closed"); });
}

connect(Date.now() + connectSeconds * 1000);
