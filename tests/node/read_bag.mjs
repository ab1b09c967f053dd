// Reads an MCAP file (a rosbag2 bag in MCAP storage) with the libraries the Foxglove app uses:
// @mcap/core (indexed reader; zstd chunks through fzstd, lz4 through lz4js), each channel's
// ros2msg schema parsed by @foxglove/rosmsg, every message decoded by
// @foxglove/rosmsg2-serialization. Prints one JSON object:
//
//   {"path", "reader": "indexed" | "stream", "profile", "statistics_message_count",
//    "topics": {TOPIC: {"schema", "schema_encoding", "message_encoding", "count",
//       "first_log_time", "last_log_time", "stamps": [[sec, nanosec], ...],
//       "decode_failures", "trailing_bytes", "errors", "schema_error"}}}
//
// Log times are strings of nanoseconds (they do not fit a JSON number). A file without a summary
// section (a bag cut short) is read front to back with the stream reader instead.
//
//   node read_bag.mjs PATH.mcap

import { open, readFile } from "node:fs/promises";

import { McapIndexedReader, McapStreamReader } from "@mcap/core"; // an ES module
import rosmsg from "@foxglove/rosmsg"; // CommonJS: no named exports under Node ESM
import rosmsg2 from "@foxglove/rosmsg2-serialization";
import * as fzstd from "fzstd"; // ES module with named exports only
import lz4 from "lz4js";

const { parse } = rosmsg;
const { MessageReader } = rosmsg2;

const decompressHandlers = {
  zstd: (buffer, decompressedSize) => fzstd.decompress(buffer, new Uint8Array(Number(decompressedSize))),
  lz4: (buffer, decompressedSize) => Uint8Array.from(lz4.decompress(buffer, Number(decompressedSize))),
};

const path = process.argv[2];
if (!path) {
  console.error("usage: node read_bag.mjs PATH.mcap");
  process.exit(2);
}

const channels = new Map(); // channel id -> { topic, reader }
const topics = new Map(); // topic -> summary

function addChannel(channel, schema) {
  if (channels.has(channel.id)) return;
  const topic = {
    schema: schema?.name ?? null, schema_encoding: schema?.encoding ?? null,
    message_encoding: channel.messageEncoding, count: 0, first_log_time: null, last_log_time: null,
    stamps: [], decode_failures: 0, trailing_bytes: 0, errors: [], schema_error: null,
  };
  let reader = null;
  if (!schema) {
    topic.schema_error = "no schema";
  } else if (schema.encoding !== "ros2msg" || channel.messageEncoding !== "cdr") {
    topic.schema_error = `not ros2msg/cdr: ${schema.encoding}/${channel.messageEncoding}`;
  } else {
    try {
      reader = new MessageReader(parse(new TextDecoder().decode(schema.data), { ros2: true }));
    } catch (e) {
      topic.schema_error = String(e);
    }
  }
  channels.set(channel.id, { topic: channel.topic, reader });
  if (!topics.has(channel.topic)) topics.set(channel.topic, topic);
}

function addMessage(message) {
  const ch = channels.get(message.channelId);
  if (!ch) return;
  const topic = topics.get(ch.topic);
  topic.count += 1;
  const t = String(message.logTime);
  if (topic.first_log_time === null) topic.first_log_time = t;
  topic.last_log_time = t;
  if (!ch.reader) return;
  try {
    const decoded = ch.reader.readMessage(message.data);
    if (ch.reader.lastReadHadTrailingBytes()) topic.trailing_bytes += 1;
    const stamp = decoded?.header?.stamp;
    if (stamp) topic.stamps.push([stamp.sec, stamp.nanosec]);
  } catch (e) {
    topic.decode_failures += 1;
    if (topic.errors.length < 3) topic.errors.push(String(e));
  }
}

async function readIndexed() {
  const handle = await open(path, "r");
  try {
    const readable = {
      size: async () => BigInt((await handle.stat()).size),
      read: async (offset, size) => {
        const buffer = new Uint8Array(Number(size));
        const { bytesRead } = await handle.read(buffer, 0, Number(size), Number(offset));
        if (bytesRead !== Number(size)) throw new Error(`short read at ${offset}`);
        return buffer;
      },
    };
    const reader = await McapIndexedReader.Initialize({ readable, decompressHandlers });
    for (const channel of reader.channelsById.values()) {
      addChannel(channel, reader.schemasById.get(channel.schemaId));
    }
    for await (const message of reader.readMessages()) addMessage(message);
    return { reader: "indexed", profile: reader.header.profile, statistics: reader.statistics };
  } finally {
    await handle.close();
  }
}

async function readStream() {
  const reader = new McapStreamReader({ decompressHandlers });
  reader.append(await readFile(path));
  const schemas = new Map();
  let profile = null;
  for (let record; (record = reader.nextRecord()); ) {
    if (record.type === "Header") profile = record.profile;
    if (record.type === "Schema") schemas.set(record.id, record);
    if (record.type === "Channel") addChannel(record, schemas.get(record.schemaId));
    if (record.type === "Message") addMessage(record);
  }
  return { reader: "stream", profile, statistics: undefined };
}

let result;
let indexedError = null;
try {
  result = await readIndexed();
} catch (e) {
  indexedError = String(e);
  channels.clear();
  topics.clear();
  result = await readStream();
}

const out = {
  path, reader: result.reader, indexed_error: indexedError, profile: result.profile,
  statistics_message_count: result.statistics ? String(result.statistics.messageCount) : null,
  topics: Object.fromEntries([...topics.entries()].sort(([a], [b]) => a.localeCompare(b))),
};
process.stdout.write(JSON.stringify(out) + "\n");
