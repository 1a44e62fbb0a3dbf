// docs/protocol.md's worked example, parsed out of the page as tests/test_docs.py does:
// every frame decodes with this package's codec, and two of this package's
// Connections, driven through the same script, send exactly the documented bytes.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  FrameDecoder,
  FrameType,
  PROTOCOL_VERSION,
  concat,
  decodeGoaway,
  decodeHello,
  decodeOpen,
  decodeRequest,
  decodeServiceName,
  decodeStatus,
  encodeRequest,
} from "../src/codec.js";
import { ACCEPTOR_NONCE, Connection, DIALER_NONCE } from "../src/connection.js";
import { ErrorCode } from "../src/errors.js";

const PROTOCOL = readFileSync(new URL("../../docs/protocol.md", import.meta.url), "utf-8");
const utf8 = (/** @type {string} */ s) => new TextEncoder().encode(s);
const text = (/** @type {Uint8Array} */ b) => new TextDecoder().decode(b);

/** @returns {Array<{direction: string, name: string, bytes: Uint8Array}>} */
function documentedExample() {
  const start = PROTOCOL.indexOf("<!-- worked-example -->");
  assert.ok(start >= 0, "docs/protocol.md has its worked example");
  const block = PROTOCOL.slice(start).split("```text\n")[1].split("```")[0];
  /** @type {Array<{direction: string, name: string, hex: string[]}>} */
  const frames = [];
  for (const line of block.split("\n")) {
    const heading = /^#(\d+) (.+?): (\w+)$/.exec(line);
    if (heading) {
      assert.equal(Number(heading[1]), frames.length + 1);
      frames.push({ direction: heading[2], name: heading[3], hex: [] });
      continue;
    }
    const hexes = /^\s+((?:[0-9a-f]{2} )*[0-9a-f]{2})(?:\s{2,}.*)?$/.exec(line);
    if (hexes) frames[frames.length - 1].hex.push(...hexes[1].split(" "));
    else assert.equal(line.trim(), "", `unparsed line in the worked example: ${line}`);
  }
  return frames.map(({ direction, name, hex }) => ({ direction, name, bytes: Uint8Array.from(hex.map((h) => parseInt(h, 16))) }));
}

/** The version the page's first HELLO speaks (bytes 14-15 of the frame). */
function documentedVersion() {
  const [hello] = documentedExample();
  return new DataView(hello.bytes.buffer).getUint16(14);
}

const V1_REASON = `docs/protocol.md describes protocol version ${documentedVersion()}; this package speaks version ${PROTOCOL_VERSION}`;
const skipUnlessV2 = documentedVersion() >= PROTOCOL_VERSION ? false : V1_REASON;

/** @param {Uint8Array} bytes */
function decodeOne(bytes) {
  const decoder = new FrameDecoder(1 << 30);
  decoder.feed(bytes);
  const frame = decoder.next();
  assert.ok(frame !== null && decoder.next() === null && decoder.buffered === 0, "exactly one frame");
  return frame;
}

test("every frame of the worked example has the type its heading names", () => {
  const names = Object.fromEntries(Object.entries(FrameType).map(([name, value]) => [value, name]));
  const frames = documentedExample();
  assert.equal(frames.length, 16);
  for (const frame of frames) assert.equal(names[decodeOne(frame.bytes).type], frame.name);
});

test("the worked example decodes with this codec", { skip: skipUnlessV2 }, () => {
  const frames = documentedExample().map((f) => ({ ...f, frame: decodeOne(f.bytes) }));
  const client = decodeHello(frames[0].frame.payload);
  const server = decodeHello(frames[1].frame.payload);
  assert.equal(client.nonce, DIALER_NONCE);
  assert.equal(server.nonce, ACCEPTOR_NONCE);
  assert.equal(decodeServiceName(frames[2].frame.payload), "chanserv");
  const open = decodeOpen(frames[3].frame.payload);
  assert.equal(open.service, "chanserv");
  assert.equal(open.routeKey.length, 0);
  const request = decodeRequest(open.header);
  assert.equal(text(request.body), "hello");
  assert.equal(request.timeout, 5);
  assert.deepEqual(
    [4, 5, 8].map((i) => text(decodeOpen(frames[i].frame.payload).header)),
    ["source @0", "source @1", "source @2"],
  );
  assert.deepEqual(decodeStatus(frames[7].frame.payload), { code: ErrorCode.APPLICATION_ERROR, kind: "ValueError", message: "boom" });
  assert.equal(text(frames[9].frame.payload), "ok I'm ready");
  assert.deepEqual(decodeStatus(frames[12].frame.payload), { code: ErrorCode.CANCEL, kind: "", message: "source closed by the client" });
  assert.deepEqual(decodeGoaway(frames[15].frame.payload), { lastStreamId: 6, code: 0, message: "bye" });
});

test("two Connections driven through the example's script send its bytes", { skip: skipUnlessV2 }, () => {
  const client = new Connection({ nonce: DIALER_NONCE });
  const server = new Connection({ nonce: ACCEPTOR_NONCE });
  /** @type {Array<{direction: string, bytes: Uint8Array}>} */
  const sent = [];
  const send = (/** @type {Connection} */ from, /** @type {Connection} */ to, /** @type {string} */ direction) => {
    const data = concat(from.takeOutgoing());
    const decoder = new FrameDecoder(1 << 30);
    decoder.feed(data);
    let offset = 0;
    for (let frame = decoder.next(); frame !== null; frame = decoder.next()) {
      const size = 10 + frame.payload.length;
      sent.push({ direction, bytes: data.slice(offset, offset + size) });
      offset += size;
    }
    return to.receiveData(data);
  };
  send(client, server, "client -> server");
  server.advertise("chanserv");
  send(server, client, "server -> client");
  client.openStream("chanserv", encodeRequest({ body: utf8("hello"), timeout: 5 }), { localOpen: false });
  const [opened] = send(client, server, "client -> server");
  assert.equal(opened.type, "opened");
  const master = opened.type === "opened" ? opened.streamId : 0;
  const first = server.openStream("", utf8("source @0"), { parent: master, remoteOpen: false });
  const second = server.openStream("", utf8("source @1"), { parent: master, remoteOpen: false });
  server.sendData(first, utf8("wait for me!"));
  server.endStream(second, { code: ErrorCode.APPLICATION_ERROR, kind: "ValueError", message: "boom" });
  const third = server.openStream("", utf8("source @2"), { parent: master, remoteOpen: false });
  server.sendData(first, utf8("ok I'm ready"));
  server.endStream(first);
  server.endStream(master);
  send(server, client, "server -> client");
  client.resetStream(third, { code: ErrorCode.CANCEL, kind: "", message: "source closed by the client" });
  client.ping(Uint8Array.of(0, 1, 2, 3, 4, 5, 6, 7));
  send(client, server, "client -> server");
  send(server, client, "server -> client");
  client.goAway(ErrorCode.OK, "bye");
  send(client, server, "client -> server");
  const documented = documentedExample();
  assert.equal(sent.length, documented.length);
  documented.forEach((doc, i) => {
    assert.equal(sent[i].direction, doc.direction, `frame #${i + 1}`);
    assert.equal(Buffer.from(sent[i].bytes).toString("hex"), Buffer.from(doc.bytes).toString("hex"), `frame #${i + 1}`);
  });
});

test("the window and chunking notes of the example hold for this package", () => {
  const client = new Connection({ nonce: DIALER_NONCE });
  const server = new Connection({ nonce: ACCEPTOR_NONCE });
  server.receiveData(concat(client.takeOutgoing()));
  client.receiveData(concat(server.takeOutgoing()));
  const id = server.openStream("", new Uint8Array(0), { remoteOpen: false });
  server.sendData(id, new Uint8Array(262144));
  const events = client.receiveData(concat(server.takeOutgoing()));
  const message = events.find((e) => e.type === "message");
  assert.ok(message && message.type === "message");
  client.acknowledge(id, message.credit);
  const window = Buffer.from(concat(client.takeOutgoing())).toString("hex").replace(/(..)(?!$)/g, "$1 ");
  assert.ok(PROTOCOL.split(/\s+/).join(" ").includes(`\`${window}\``), window);
  const limit = client.localSettings.maxFramePayload;
  const flat = PROTOCOL.split(/\s+/).join(" ");
  assert.ok(flat.includes(`DATA frames of ${limit} bytes with flags \`01\``));
  assert.ok(flat.includes(`DATA frame of ${3_000_000 - 2 * limit} bytes with flags \`00\``));
});
