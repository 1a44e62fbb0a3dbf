// The frame codec: every payload type round-trips, the decoder takes bytes split
// anywhere, and garbage gives a protocol error (never another exception).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "./support/fc.js";

import {
  DIALER_NONCE,
  FrameDecoder,
  FrameType,
  HEADER_SIZE,
  MAGIC,
  MAX_HELLO_SIZE,
  NO_DEADLINE,
  PROTOCOL_VERSION,
  decodeCredit,
  decodeGoaway,
  decodeHello,
  decodeOpen,
  decodeRequest,
  decodeStatus,
  decodeU32,
  encodeFrame,
  encodeGoaway,
  encodeHello,
  encodeOpen,
  encodeRequest,
  encodeStatus,
  sourceWindowOf,
} from "../src/codec.js";
import { ErrorCode, RemoteProtocolError } from "../src/errors.js";

const bytes = (/** @type {number} */ max = 64) => fc.uint8Array({ maxLength: max });
const u32 = fc.integer({ min: 0, max: 2 ** 32 - 1 });
const text = (/** @type {number} */ max = 20) => fc.string({ unit: "grapheme", maxLength: max });

/**
 * @param {() => unknown} fn
 * @param {number} code
 */
function throwsProtocol(fn, code = ErrorCode.PROTOCOL_ERROR) {
  assert.throws(fn, (error) => error instanceof RemoteProtocolError && error.code === code);
}

/** A decoder fed `data` in the given pieces returns these frames. */
function decodeSplit(/** @type {Uint8Array} */ data, /** @type {number[]} */ cuts, limit = 1 << 20) {
  const decoder = new FrameDecoder(limit);
  const frames = [];
  let start = 0;
  for (const cut of [...cuts.filter((c) => c > 0 && c < data.length)].sort((a, b) => a - b).concat([data.length])) {
    decoder.feed(data.subarray(start, cut));
    start = cut;
    for (let frame = decoder.next(); frame !== null; frame = decoder.next()) frames.push(frame);
  }
  return { frames, decoder };
}

const frameArbitrary = fc.record({
  type: fc.integer({ min: 0, max: 255 }),
  flags: fc.integer({ min: 0, max: 255 }),
  streamId: u32,
  payload: bytes(300),
});

describe("frames", () => {
  test("a frame is a 10-byte header, big-endian, then the payload", () => {
    const frame = encodeFrame(FrameType.WINDOW, 0, 2, Uint8Array.of(0, 4, 0, 0));
    assert.deepEqual([...frame], [0, 0, 0, 4, 5, 0, 0, 0, 0, 2, 0, 4, 0, 0]);
    assert.equal(HEADER_SIZE, 10);
  });

  test("frames fed split at any offsets come out whole and in order", () => {
    fc.assert(
      fc.property(fc.array(frameArbitrary, { maxLength: 8 }), fc.array(fc.nat({ max: 3000 }), { maxLength: 12 }), (sent, cuts) => {
        const data = new Uint8Array(sent.flatMap((f) => [...encodeFrame(f.type, f.flags, f.streamId, f.payload)]));
        const { frames, decoder } = decodeSplit(data, cuts);
        assert.deepEqual(
          frames.map((f) => ({ ...f, payload: [...f.payload] })),
          sent.map((f) => ({ ...f, payload: [...f.payload] })),
        );
        assert.equal(decoder.buffered, 0);
      }),
    );
  });

  test("a payload handed out owns its bytes: later input cannot change it", () => {
    const decoder = new FrameDecoder(1024);
    const input = encodeFrame(FrameType.DATA, 0, 1, Uint8Array.of(1, 2, 3));
    decoder.feed(input);
    const frame = decoder.next();
    input.fill(0);
    assert.deepEqual([...(frame?.payload ?? [])], [1, 2, 3]);
  });

  test("a length above the limit is FRAME_SIZE_ERROR before any payload is buffered", () => {
    const decoder = new FrameDecoder(MAX_HELLO_SIZE);
    const header = encodeFrame(FrameType.HELLO, 0, 0, new Uint8Array(0));
    new DataView(header.buffer).setUint32(0, MAX_HELLO_SIZE + 1);
    decoder.feed(header);
    throwsProtocol(() => decoder.next(), ErrorCode.FRAME_SIZE_ERROR);
  });

  test("the limit is read per frame, so raising it lets the next frame through", () => {
    const decoder = new FrameDecoder(4);
    decoder.feed(encodeFrame(2, 0, 1, new Uint8Array(4)));
    decoder.feed(encodeFrame(2, 0, 1, new Uint8Array(8)));
    assert.equal(decoder.next()?.payload.length, 4);
    decoder.maxPayload = 8;
    assert.equal(decoder.next()?.payload.length, 8);
  });
});

describe("HELLO", () => {
  const settingsArbitrary = fc.array(fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })), { maxLength: 10 });
  const fieldsArbitrary = fc.uniqueArray(fc.tuple(fc.integer({ min: 0, max: 0xffff }), bytes(40)), { maxLength: 4, selector: ([id]) => id });

  test("round trip: version, role nonce, settings (last of an id wins) and fields", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), settingsArbitrary, fieldsArbitrary, (nonce, settings, fields) => {
        const hello = decodeHello(encodeHello({ nonce, settings, fields }));
        assert.equal(hello.version, PROTOCOL_VERSION);
        assert.equal(hello.nonce, nonce);
        assert.deepEqual(hello.settings, new Map(settings));
        assert.deepEqual([...hello.fields].map(([id, value]) => [id, [...value]]), fields.map(([id, value]) => [id, [...value]]));
      }),
    );
  });

  test("the payload is magic, u16 version, u64 nonce, settings, fields", () => {
    const payload = encodeHello({ nonce: DIALER_NONCE, settings: [[1, 1048576]], fields: [[1, Uint8Array.of(0xab)]] });
    const hex = Buffer.from(payload).toString("hex");
    assert.equal(hex, "43535452" + "0002" + "ffffffffffffffff" + "0001" + "0001" + "0000000000100000" + "0001" + "0001" + "0001" + "ab");
    assert.equal(payload.length, 16 + 10 + 2 + 4 + 1);
    assert.deepEqual([...payload.subarray(0, 4)], [...MAGIC]);
  });

  test("a version 1 HELLO is VERSION_MISMATCH, judged before its length", () => {
    // A version 1 HELLO has no nonce and no fields: its length is wrong for version 2.
    const v1 = Uint8Array.from([...MAGIC, 0, 1, 0, 0]);
    throwsProtocol(() => decodeHello(v1), ErrorCode.VERSION_MISMATCH);
  });

  test("a later version is accepted (the peers speak the lower)", () => {
    assert.equal(decodeHello(encodeHello({ nonce: 5n, settings: [], version: 3 })).version, 3);
  });

  test("wrong magic, a bad length, or a field given twice is PROTOCOL_ERROR", () => {
    const good = encodeHello({ nonce: 0n, settings: [[1, 5]], fields: [[1, Uint8Array.of(1)]] });
    const badMagic = good.slice();
    badMagic[0] = 0x48;
    throwsProtocol(() => decodeHello(badMagic));
    throwsProtocol(() => decodeHello(good.subarray(0, good.length - 1)));
    throwsProtocol(() => decodeHello(Uint8Array.from([...good, 0])));
    throwsProtocol(() => decodeHello(good.subarray(0, 5)));
    const twice = encodeHello({ nonce: 0n, settings: [], fields: [[2, Uint8Array.of(1)], [2, Uint8Array.of(2)]] });
    throwsProtocol(() => decodeHello(twice));
  });

  test("garbage never throws anything but a protocol error", () => {
    fc.assert(
      fc.property(bytes(120), (data) => {
        try {
          decodeHello(data);
        } catch (error) {
          assert.ok(error instanceof RemoteProtocolError, String(error));
        }
      }),
    );
  });
});

describe("OPEN", () => {
  test("round trip: parent, service, route key, header", () => {
    fc.assert(
      fc.property(u32, text(), bytes(30), bytes(100), (parent, service, routeKey, header) => {
        const open = decodeOpen(encodeOpen(parent, service, routeKey, header));
        assert.equal(open.parent, parent);
        assert.equal(open.service, service);
        assert.deepEqual([...open.routeKey], [...routeKey]);
        assert.deepEqual([...open.header], [...header]);
      }),
    );
  });

  test("the route key sits between the service name and the header", () => {
    const payload = encodeOpen(1, "s", new TextEncoder().encode("k"), Uint8Array.of(9));
    assert.equal(Buffer.from(payload).toString("hex"), "00000001" + "0001" + "73" + "0001" + "6b" + "09");
  });

  test("too short, an overrunning name or key, or a name not UTF-8 is PROTOCOL_ERROR", () => {
    throwsProtocol(() => decodeOpen(Uint8Array.of(0, 0, 0, 0, 0)));
    throwsProtocol(() => decodeOpen(Uint8Array.of(0, 0, 0, 0, 0, 2, 0x61)));
    throwsProtocol(() => decodeOpen(Uint8Array.of(0, 0, 0, 0, 0, 1, 0x61))); // no key length
    throwsProtocol(() => decodeOpen(Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 3, 1)));
    throwsProtocol(() => decodeOpen(Uint8Array.of(0, 0, 0, 0, 0, 1, 0xff, 0, 0)));
  });

  test("garbage never throws anything but a protocol error", () => {
    fc.assert(
      fc.property(bytes(40), (data) => {
        try {
          decodeOpen(data);
        } catch (error) {
          assert.ok(error instanceof RemoteProtocolError, String(error));
        }
      }),
    );
  });
});

describe("statuses, GOAWAY, WINDOW", () => {
  test("status round trip; the empty payload is OK", () => {
    fc.assert(
      fc.property(u32, text(), text(60), (code, kind, message) => {
        assert.deepEqual(decodeStatus(encodeStatus({ code, kind, message })), { code, kind, message });
      }),
    );
    assert.deepEqual(decodeStatus(new Uint8Array(0)), { code: 0, kind: "", message: "" });
  });

  test("a status's texts are decoded leniently; a short or overrunning one is an error", () => {
    const status = decodeStatus(Uint8Array.of(0, 0, 0, 8, 0, 1, 0xff, 0xfe));
    assert.equal(status.kind, "\ufffd");
    throwsProtocol(() => decodeStatus(Uint8Array.of(0, 0, 0, 8, 0)));
    throwsProtocol(() => decodeStatus(Uint8Array.of(0, 0, 0, 8, 0, 5, 0x61)));
  });

  test("GOAWAY round trip and its minimum length", () => {
    fc.assert(
      fc.property(u32, u32, text(), (last, code, message) => {
        assert.deepEqual(decodeGoaway(encodeGoaway(last, code, message)), { lastStreamId: last, code, message });
      }),
    );
    throwsProtocol(() => decodeGoaway(new Uint8Array(7)));
  });

  test("WINDOW is exactly 4 bytes", () => {
    assert.equal(decodeU32(Uint8Array.of(0, 4, 0, 0), "WINDOW"), 262144);
    throwsProtocol(() => decodeU32(Uint8Array.of(0, 4, 0), "WINDOW"));
  });
});

describe("request envelope", () => {
  test("round trip: body, timeout in microseconds, tags", () => {
    const tags = fc.dictionary(text(8), text(8), { maxKeys: 4 });
    fc.assert(
      fc.property(bytes(50), fc.option(fc.integer({ min: 0, max: 10 ** 9 })), tags, (body, micros, given) => {
        const timeout = micros === null ? null : micros / 1e6;
        const request = decodeRequest(encodeRequest({ body, timeout, tags: given }));
        assert.deepEqual([...request.body], [...body]);
        assert.equal(request.timeout === null ? null : Math.round(request.timeout * 1e6), micros);
        assert.deepEqual(Object.entries(request.tags), Object.entries(given));
      }),
    );
  });

  test("no deadline is all ones; a 5 s deadline is 5000000 us", () => {
    const none = encodeRequest({ body: new Uint8Array(0) });
    assert.equal(new DataView(none.buffer).getBigUint64(1), NO_DEADLINE);
    const five = encodeRequest({ body: new TextEncoder().encode("hello"), timeout: 5 });
    assert.equal(Buffer.from(five).toString("hex"), "01" + "00000000004c4b40" + "0000" + "68656c6c6f");
  });

  test("a short envelope or bad tag is PROTOCOL_ERROR, another version VERSION_MISMATCH", () => {
    throwsProtocol(() => decodeRequest(new Uint8Array(10)));
    const bad = encodeRequest({ body: new Uint8Array(0) });
    bad[0] = 2;
    throwsProtocol(() => decodeRequest(bad), ErrorCode.VERSION_MISMATCH);
    const overrun = encodeRequest({ body: new Uint8Array(0), tags: { a: "b" } }).subarray(0, 14);
    throwsProtocol(() => decodeRequest(overrun));
  });

  test("the source window tag must be a positive decimal below 2**31", () => {
    const request = (/** @type {string} */ value) => ({ body: new Uint8Array(0), timeout: null, tags: { "chanserv.source_window": value } });
    assert.equal(sourceWindowOf(request("8")), 8);
    throwsProtocol(() => sourceWindowOf(request("0")));
    throwsProtocol(() => sourceWindowOf(request("-1")));
    throwsProtocol(() => sourceWindowOf(request(String(2 ** 31))));
    assert.equal(decodeCredit(Uint8Array.of(0, 0, 0, 3)), 3);
    throwsProtocol(() => decodeCredit(Uint8Array.of(0, 3)));
  });

  test("garbage never throws anything but a protocol error", () => {
    fc.assert(
      fc.property(bytes(40), (data) => {
        try {
          decodeRequest(data);
        } catch (error) {
          assert.ok(error instanceof RemoteProtocolError, String(error));
        }
      }),
    );
  });
});
