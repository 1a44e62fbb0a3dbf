// The connection state machine, pushed through pairs of instances with no I/O: roles
// by nonce, streams, chunks, windows, statuses, GOAWAY, compression, and what broken
// input gives.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "./support/fc.js";

import {
  ACCEPTOR_NONCE,
  DIALER_NONCE,
  DataFlags,
  FrameDecoder,
  FrameType,
  HelloField,
  MAGIC,
  concat,
  encodeFrame,
  encodeGoaway,
  encodeHello,
} from "../src/codec.js";
import { Connection } from "../src/connection.js";
import { ErrorCode, LocalProtocolError, RemoteProtocolError } from "../src/errors.js";

/** @param {Connection} conn */
const out = (conn) => concat(conn.takeOutgoing());

/**
 * Hand everything `sender` queued to `receiver`.
 * @param {Connection} sender
 * @param {Connection} receiver
 */
function deliver(sender, receiver) {
  const data = out(sender);
  return data.length ? receiver.receiveData(data) : [];
}

/** A dialer and an acceptor after their handshake. */
function pair(/** @type {any} */ dialer = {}, /** @type {any} */ acceptor = {}) {
  const client = new Connection({ nonce: DIALER_NONCE, ...dialer });
  const server = new Connection({ nonce: ACCEPTOR_NONCE, ...acceptor });
  deliver(client, server);
  deliver(server, client);
  return { client, server };
}

/** @param {Connection} conn */
function frames(conn) {
  const decoder = new FrameDecoder(1 << 30);
  decoder.feed(out(conn));
  const list = [];
  for (let frame = decoder.next(); frame !== null; frame = decoder.next()) list.push(frame);
  return list;
}

/**
 * @param {() => unknown} fn
 * @param {number} code
 */
function throwsProtocol(fn, code = ErrorCode.PROTOCOL_ERROR) {
  assert.throws(fn, (error) => error instanceof RemoteProtocolError && error.code === code);
}

const bytes = (/** @type {number} */ n, fill = 1) => new Uint8Array(n).fill(fill);

describe("handshake and roles", () => {
  test("the side with the larger nonce opens odd ids, the other even ones", () => {
    const { client, server } = pair();
    assert.equal(client.openStream("svc", bytes(1)), 1);
    assert.equal(client.openStream("svc", bytes(1)), 3);
    assert.equal(server.openStream("svc", bytes(1)), 2);
    const a = new Connection({ nonce: 7n });
    const b = new Connection({ nonce: 9n });
    deliver(a, b);
    deliver(b, a);
    assert.equal(b.openStream("x", bytes(0)), 1);
    assert.equal(a.openStream("x", bytes(0)), 2);
  });

  test("equal nonces are a handshake error on both ends", () => {
    const a = new Connection({ nonce: 5n });
    const b = new Connection({ nonce: 5n });
    const helloA = out(a);
    const helloB = out(b);
    for (const [conn, hello] of [[a, helloB], [b, helloA]]) {
      assert.throws(() => /** @type {Connection} */ (conn).receiveData(/** @type {Uint8Array} */ (hello)), /both ends chose the same role/);
      const [goaway] = frames(/** @type {Connection} */ (conn));
      assert.equal(goaway.type, FrameType.GOAWAY);
      assert.equal(new DataView(goaway.payload.buffer).getUint32(4), ErrorCode.PROTOCOL_ERROR);
    }
  });

  test("the handshake event carries the peer's fields; the credential is field 1", () => {
    const client = new Connection({ credential: new TextEncoder().encode("secret") });
    const server = new Connection({ nonce: ACCEPTOR_NONCE });
    const [event] = deliver(client, server);
    assert.equal(event.type, "handshake");
    assert.equal(event.type === "handshake" && new TextDecoder().decode(event.fields.get(HelloField.CREDENTIAL)), "secret");
    assert.equal(event.type === "handshake" && event.version, 2);
  });

  test("nothing is opened before the peer's HELLO", () => {
    const client = new Connection();
    assert.equal(client.canOpenStream(), false);
    assert.throws(() => client.openStream("x", bytes(0)), LocalProtocolError);
  });

  test("a HELLO of version 1 is VERSION_MISMATCH, answered with GOAWAY", () => {
    const conn = new Connection();
    out(conn);
    const v1 = Uint8Array.from([...MAGIC, 0, 1, 0, 0]);
    throwsProtocol(() => conn.receiveData(encodeFrame(FrameType.HELLO, 0, 0, v1)), ErrorCode.VERSION_MISMATCH);
    const [goaway] = frames(conn);
    assert.equal(goaway.type, FrameType.GOAWAY);
    assert.equal(conn.closed, true);
  });

  test("the first frame must be HELLO; a second HELLO is an error", () => {
    const conn = new Connection();
    throwsProtocol(() => conn.receiveData(encodeFrame(FrameType.PING, 0, 0, bytes(8))));
    const { client, server } = pair();
    throwsProtocol(() => client.receiveData(encodeFrame(FrameType.HELLO, 0, 0, encodeHello({ nonce: 0n, settings: [] }))));
    assert.ok(server);
  });

  test("a setting out of range is PROTOCOL_ERROR; unknown settings are ignored", () => {
    const conn = new Connection();
    const bad = encodeHello({ nonce: 0n, settings: [[3, 512]] });
    throwsProtocol(() => conn.receiveData(encodeFrame(FrameType.HELLO, 0, 0, bad)));
    const other = new Connection();
    other.receiveData(encodeFrame(FrameType.HELLO, 0, 0, encodeHello({ nonce: 0n, settings: [[99, 2n ** 63n], [1, 4096]] })));
    assert.equal(other.peerSettings.initialStreamWindow, 4096);
  });

  test("GOAWAY instead of HELLO ends the connection with its code (a refused credential)", () => {
    const client = new Connection();
    const events = client.receiveData(encodeFrame(FrameType.GOAWAY, 0, 0, encodeGoaway(0, ErrorCode.AUTHENTICATION_FAILED, "bad token")));
    assert.deepEqual(events, [{ type: "terminated", code: ErrorCode.AUTHENTICATION_FAILED, message: "bad token" }]);
  });
});

describe("streams and messages", () => {
  test("OPEN carries service, route key and header; NO_SEND and NO_REPLY close halves", () => {
    const { client, server } = pair();
    const id = client.openStream("chanserv", bytes(3, 7), { routeKey: new TextEncoder().encode("k"), localOpen: false });
    const [opened] = deliver(client, server);
    assert.equal(opened.type, "opened");
    if (opened.type !== "opened") return;
    assert.equal(opened.streamId, id);
    assert.equal(opened.service, "chanserv");
    assert.equal(new TextDecoder().decode(opened.routeKey), "k");
    assert.deepEqual([...opened.header], [7, 7, 7]);
    assert.equal(opened.remoteOpen, false);
    assert.equal(opened.localOpen, true);
    const child = server.openStream("", bytes(1), { parent: id, remoteOpen: false });
    const [announced] = deliver(server, client);
    assert.equal(announced.type === "opened" && announced.parent, id);
    assert.equal(announced.type === "opened" && announced.localOpen, false);
    assert.equal(client.canSend(child), false);
  });

  test("a message larger than the frame limit is cut into chunks with MORE and joined", () => {
    const { client, server } = pair({ settings: { initialStreamWindow: 4 << 20 } });
    const id = server.openStream("", bytes(0), { remoteOpen: false });
    deliver(server, client);
    const message = bytes(3_000_000, 9);
    const limit = server.peerSettings.maxFramePayload;
    let offset = 0;
    while (offset < message.length) {
      const n = Math.min(limit, message.length - offset, server.sendWindow(id));
      assert.ok(n > 0);
      server.sendData(id, message.subarray(offset, offset + n), offset + n < message.length);
      offset += n;
    }
    const sent = frames(server);
    assert.deepEqual(sent.map((f) => [f.payload.length, f.flags]), [[1048576, 1], [1048576, 1], [902848, 0]]);
    const events = client.receiveData(concat(sent.map((f) => encodeFrame(f.type, f.flags, f.streamId, f.payload))));
    const messages = events.filter((e) => e.type === "message");
    assert.equal(messages.length, 1);
    assert.equal(messages[0].type === "message" && messages[0].data.length, 3_000_000);
  });

  test("a message larger than the window gets through: chunks are credited on arrival", () => {
    const { client, server } = pair({ settings: { initialStreamWindow: 65536 } });
    const id = server.openStream("", bytes(0), { remoteOpen: false });
    deliver(server, client);
    const size = 300_000;
    let offset = 0;
    /** @type {import("../src/connection.js").ConnectionEvent[]} */
    const events = [];
    while (offset < size) {
      const n = Math.min(server.sendWindow(id), size - offset);
      assert.ok(n > 0, "the sender got credit back");
      server.sendData(id, bytes(n), offset + n < size);
      offset += n;
      events.push(...deliver(server, client));
      deliver(client, server);
    }
    assert.equal(events.filter((e) => e.type === "message").length, 1);
  });

  test("an unread stream stalls only itself: its window runs out, a sibling's does not", () => {
    const { client, server } = pair({ settings: { initialStreamWindow: 65536 } });
    const ignored = server.openStream("", bytes(0), { remoteOpen: false });
    const read = server.openStream("", bytes(0), { remoteOpen: false });
    deliver(server, client);
    server.sendData(ignored, bytes(65536));
    assert.equal(server.sendWindow(ignored), 0);
    for (let i = 0; i < 20; i++) {
      server.sendData(read, bytes(16384));
      for (const event of deliver(server, client)) {
        if (event.type === "message" && event.streamId === read) client.acknowledge(read, event.credit);
      }
      deliver(client, server);
    }
    assert.equal(server.sendWindow(ignored), 0);
    assert.ok(server.sendWindow(read) > 0);
    assert.equal(client.bufferedBytes(), 65536);
  });

  test("END with a status; an empty END payload is OK", () => {
    const { client, server } = pair();
    const id = server.openStream("", bytes(0), { remoteOpen: false });
    server.endStream(id, { code: ErrorCode.APPLICATION_ERROR, kind: "ValueError", message: "boom" });
    const events = deliver(server, client);
    assert.deepEqual(events[1], { type: "ended", streamId: id, status: { code: 8, kind: "ValueError", message: "boom" } });
    const other = server.openStream("", bytes(0), { remoteOpen: false });
    server.endStream(other);
    const last = frames(server).at(-1);
    assert.equal(last?.payload.length, 0);
    assert.equal(client.isOpen(id), false);
  });

  test("DATA after END, END inside a message, and frames on never-opened ids are errors", () => {
    {
      const { client, server } = pair();
      const id = server.openStream("", bytes(0), { remoteOpen: false });
      deliver(server, client);
      const end = encodeFrame(FrameType.END, 0, id);
      client.receiveData(encodeFrame(FrameType.DATA, DataFlags.MORE, id, bytes(3)));
      throwsProtocol(() => client.receiveData(end));
    }
    {
      const { client, server } = pair();
      // The client's half stays open, so the stream is still known after the END.
      const id = server.openStream("", bytes(0));
      server.endStream(id);
      deliver(server, client);
      throwsProtocol(() => client.receiveData(encodeFrame(FrameType.DATA, 0, id, bytes(1))));
    }
    {
      const { client } = pair();
      throwsProtocol(() => client.receiveData(encodeFrame(FrameType.DATA, 0, 8, bytes(1))));
      const { client: again } = pair();
      throwsProtocol(() => again.receiveData(encodeFrame(FrameType.OPEN, 0, 3, new Uint8Array(8))));
    }
  });

  test("RESET closes a stream; what still arrives for it is dropped", () => {
    const { client, server } = pair();
    const id = server.openStream("", bytes(0), { remoteOpen: false });
    deliver(server, client);
    server.sendData(id, bytes(10));
    client.resetStream(id, { code: ErrorCode.CANCEL, kind: "", message: "source closed by the client" });
    const data = out(server);
    assert.deepEqual(client.receiveData(data), []);
    const [reset] = deliver(client, server);
    assert.deepEqual(reset, { type: "reset", streamId: id, status: { code: 6, kind: "", message: "source closed by the client" } });
  });

  test("a child whose parent closed meanwhile is refused with CANCEL", () => {
    const { client, server } = pair();
    const master = client.openStream("svc", bytes(0), { localOpen: false });
    deliver(client, server);
    server.openStream("", bytes(0), { parent: master, remoteOpen: false });
    client.resetStream(master, { code: ErrorCode.CANCEL, kind: "", message: "" });
    out(client);
    assert.deepEqual(deliver(server, client), []);
    const [refusal] = frames(client);
    assert.equal(refusal.type, FrameType.RESET);
  });

  test("too many concurrent streams are refused, not a connection error", () => {
    const { client, server } = pair({}, { settings: { maxConcurrentStreams: 1 } });
    client.openStream("svc", bytes(0));
    deliver(client, server);
    assert.equal(client.canOpenStream(), false);
    server.receiveData(encodeFrame(FrameType.OPEN, 0, 3, new Uint8Array(8)));
    const [refusal] = frames(server);
    assert.equal(refusal.type, FrameType.RESET);
    assert.equal(new DataView(refusal.payload.buffer).getUint32(0), ErrorCode.REFUSED_STREAM);
  });

  test("DATA beyond the stream window is FLOW_CONTROL_ERROR", () => {
    const { client, server } = pair({ settings: { initialStreamWindow: 1024 } });
    const id = server.openStream("", bytes(0), { remoteOpen: false });
    deliver(server, client);
    throwsProtocol(() => client.receiveData(encodeFrame(FrameType.DATA, 0, id, bytes(1025))), ErrorCode.FLOW_CONTROL_ERROR);
  });

  test("status texts are cut to fit the peer's frame limit", () => {
    const { client, server } = pair({}, { settings: { maxFramePayload: 1024 } });
    const id = client.openStream("svc", bytes(0));
    client.resetStream(id, { code: ErrorCode.CANCEL, kind: "k".repeat(300), message: "é".repeat(2000) });
    const [, reset] = frames(client);
    assert.ok(reset.payload.length <= 1024);
    assert.ok(server);
  });
});

describe("connection-wide frames", () => {
  test("PING is answered with ACK and the same bytes", () => {
    const { client, server } = pair();
    client.ping(Uint8Array.of(0, 1, 2, 3, 4, 5, 6, 7));
    deliver(client, server);
    const [pong] = deliver(server, client);
    assert.deepEqual(pong, { type: "pong", payload: Uint8Array.of(0, 1, 2, 3, 4, 5, 6, 7) });
  });

  test("SERVICE offers and withdraws names, RELAYED marks a router's", () => {
    const { client, server } = pair();
    server.advertise("chanserv");
    server.advertise("relayed", true, true);
    server.advertise("chanserv", false);
    assert.deepEqual(deliver(server, client), [
      { type: "service", name: "chanserv", available: true, relayed: false },
      { type: "service", name: "relayed", available: true, relayed: true },
      { type: "service", name: "chanserv", available: false, relayed: false },
    ]);
  });

  test("the end-of-advertisement marker (SERVICE REMOVE|COMPLETE, no name) changes nothing", () => {
    // Python nodes send it after their initial SERVICE frames (docs/protocol.md section 13).
    const { client, server } = pair();
    server.advertise("chanserv");
    const marker = encodeFrame(FrameType.SERVICE, 0x1 | 0x4, 0, new Uint8Array(0));
    assert.deepEqual(client.receiveData(concat([out(server), marker])), [
      { type: "service", name: "chanserv", available: true, relayed: false },
      { type: "service", name: "", available: false, relayed: false },
    ]);
  });

  test("a graceful GOAWAY refuses our streams above its last id", () => {
    const { client, server } = pair();
    const seen = client.openStream("svc", bytes(0));
    deliver(client, server);
    const unseen = client.openStream("svc", bytes(0));
    out(client);
    server.goAway(ErrorCode.OK, "bye");
    const events = deliver(server, client);
    assert.deepEqual(events[0], { type: "goaway", lastStreamId: seen, code: 0, message: "bye" });
    assert.deepEqual(events[1], { type: "reset", streamId: unseen, status: { code: ErrorCode.REFUSED_STREAM, kind: "", message: "peer is going away" } });
    assert.equal(client.canOpenStream(), false);
    assert.equal(client.isOpen(seen), true);
  });

  test("a GOAWAY with an error code terminates the connection", () => {
    const { client, server } = pair();
    server.goAway(ErrorCode.ENHANCE_YOUR_CALM, "");
    assert.deepEqual(deliver(server, client), [{ type: "terminated", code: 12, message: "ENHANCE_YOUR_CALM" }]);
    assert.equal(client.closed, true);
  });

  test("the end of the byte stream is CONNECTION_LOST", () => {
    const { client } = pair();
    assert.deepEqual(client.receiveData(new Uint8Array(0)), [{ type: "terminated", code: 13, message: "peer closed the connection" }]);
  });
});

describe("compression", () => {
  test("when both HELLOs ask, large DATA travels compressed and arrives as sent", () => {
    const { client, server } = pair({ settings: { compression: true } }, { settings: { compression: true } });
    assert.equal(client.compressing && server.compressing, true);
    const id = server.openStream("", bytes(0), { remoteOpen: false });
    deliver(server, client);
    const message = new TextEncoder().encode("compress me ".repeat(500));
    assert.ok(server.trySendMessage(id, message));
    const [data] = frames(server);
    assert.equal(data.flags & DataFlags.COMPRESSED, DataFlags.COMPRESSED);
    assert.ok(data.payload.length < message.length / 4);
    const [event] = client.receiveData(encodeFrame(data.type, data.flags, data.streamId, data.payload));
    assert.deepEqual(event.type === "message" && event.data, message);
    assert.equal(event.type === "message" && event.credit, message.length);
  });

  test("only one side asking means no compression; a COMPRESSED frame then is an error", () => {
    const { client, server } = pair({ settings: { compression: true } });
    assert.equal(client.compressing, false);
    const id = server.openStream("", bytes(0), { remoteOpen: false });
    deliver(server, client);
    throwsProtocol(() => client.receiveData(encodeFrame(FrameType.DATA, DataFlags.COMPRESSED, id, bytes(10))));
  });
});

describe("broken input", () => {
  test("garbage after the handshake gives a protocol error and nothing else", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (garbage) => {
        const { client } = pair();
        try {
          client.receiveData(garbage);
        } catch (error) {
          assert.ok(error instanceof RemoteProtocolError, String(error));
          assert.equal(client.closed, true);
        }
      }),
      { numRuns: 400 },
    );
  });

  test("random well-formed frames give a protocol error and nothing else", () => {
    const frame = fc.record({
      type: fc.integer({ min: 0, max: 9 }),
      flags: fc.integer({ min: 0, max: 3 }),
      streamId: fc.integer({ min: 0, max: 6 }),
      payload: fc.uint8Array({ maxLength: 24 }),
    });
    fc.assert(
      fc.property(fc.array(frame, { maxLength: 10 }), (list) => {
        const { client, server } = pair();
        client.openStream("svc", bytes(0));
        server.openStream("", bytes(0));
        deliver(client, server);
        deliver(server, client);
        try {
          for (const f of list) client.receiveData(encodeFrame(f.type, f.flags, f.streamId, f.payload));
        } catch (error) {
          assert.ok(error instanceof RemoteProtocolError, String(error));
        }
      }),
      { numRuns: 400 },
    );
  });

  test("a conversation fed split at any offsets gives the same events", () => {
    const { server } = pair();
    const talker = new Connection({ nonce: ACCEPTOR_NONCE });
    talker.advertise("chanserv");
    const script = new Connection({ nonce: DIALER_NONCE });
    deliver(script, talker);
    const id = talker.openStream("", bytes(5, 3), { remoteOpen: false });
    talker.sendData(id, bytes(2000, 4), true);
    talker.sendData(id, bytes(10, 5));
    talker.endStream(id, { code: ErrorCode.APPLICATION_ERROR, kind: "E", message: "m" });
    talker.ping(bytes(8));
    const data = out(talker);
    const strip = (/** @type {any[]} */ events) => JSON.stringify(events, (_, v) => (v instanceof Uint8Array ? [...v] : v instanceof Map ? [...v] : v));
    const whole = new Connection({ nonce: DIALER_NONCE });
    out(whole);
    const expected = strip(whole.receiveData(data));
    fc.assert(
      fc.property(fc.array(fc.nat({ max: data.length }), { maxLength: 10 }), (cuts) => {
        const conn = new Connection({ nonce: DIALER_NONCE });
        const events = [];
        let start = 0;
        for (const cut of [...cuts].sort((a, b) => a - b).concat([data.length])) {
          if (cut > start) events.push(...conn.receiveData(data.subarray(start, cut)));
          start = Math.max(start, cut);
        }
        assert.equal(strip(events), expected);
      }),
    );
    assert.ok(server);
  });
});

test("a peer speaking another protocol is told apart from a broken one", () => {
  for (const [first, named] of [["HTTP/1.1 400 Bad Request\r\n", /HTTP/], ["\x16\x03\x01\x02\x00", /TLS/], ['{"hello": 1}', /JSON/]]) {
    const conn = new Connection();
    assert.throws(
      () => conn.receiveData(Uint8Array.from([...first].map((c) => c.charCodeAt(0)))),
      (error) => error instanceof RemoteProtocolError && error.code === ErrorCode.PROTOCOL_ERROR && named.test(error.message),
    );
  }
});
