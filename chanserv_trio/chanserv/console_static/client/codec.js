// The frame codec of the chanserv_trio wire protocol, version 2 (sans-IO: no sockets,
// no timers). docs/protocol.md is the specification; chanserv_trio/wire/_codec.py is
// the reference this follows byte for byte.
//
// Every frame is a 10-byte header followed by `length` payload bytes:
//   length u32 BE | type u8 | flags u8 | stream id u32 BE | payload
// FrameDecoder takes bytes split at any point and returns whole frames; anything
// malformed throws RemoteProtocolError carrying the code that goes into GOAWAY.

import { ErrorCode, RemoteProtocolError } from "./errors.js";

export const HEADER_SIZE = 10;
export const MAGIC = Uint8Array.of(0x43, 0x53, 0x54, 0x52); // "CSTR"
export const PROTOCOL_VERSION = 2;
/** A HELLO frame larger than this is refused before the peer's limits are known. */
export const MAX_HELLO_SIZE = 4096;
/** The role nonce of a side that dialed: the larger nonce takes the odd stream ids. */
export const DIALER_NONCE = 2n ** 64n - 1n;
/** The role nonce of a side that accepted. */
export const ACCEPTOR_NONCE = 0n;
/** An OPEN carries besides its header: parent (4), name length (2), the longest name
 * (65535), route key length (2) and the longest route key (65535). */
export const OPEN_ALLOWANCE = 4 + 2 + 0xffff + 2 + 0xffff;

/** The type byte of a frame. */
export const FrameType = Object.freeze({
  HELLO: 0,
  OPEN: 1,
  DATA: 2,
  END: 3,
  RESET: 4,
  WINDOW: 5,
  PING: 6,
  GOAWAY: 7,
  SERVICE: 8,
});

/** OPEN flags: which halves of the new stream start closed. */
export const OpenFlags = Object.freeze({ NO_SEND: 0x1, NO_REPLY: 0x2 });
/** DATA flags. */
export const DataFlags = Object.freeze({ MORE: 0x1, COMPRESSED: 0x2 });
/** PING flags. */
export const PingFlags = Object.freeze({ ACK: 0x1 });
/** SERVICE flags. */
export const ServiceFlags = Object.freeze({ REMOVE: 0x1, RELAYED: 0x2 });

/** Setting ids carried in HELLO. Unknown ids are ignored by receivers. */
export const Setting = Object.freeze({
  INITIAL_STREAM_WINDOW: 1,
  CONNECTION_WINDOW: 2,
  MAX_FRAME_PAYLOAD: 3,
  MAX_MESSAGE_SIZE: 4,
  MAX_OPEN_PAYLOAD: 5,
  MAX_CONCURRENT_STREAMS: 6,
  COMPRESSION: 7,
});

/** Field ids carried in HELLO after the settings. Unknown ids are ignored. */
export const HelloField = Object.freeze({ CREDENTIAL: 1, RESUME_TOKEN: 2 });

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const lenientDecoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** @param {Uint8Array} bytes */
function view(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** @param {string} message @returns {never} */
function malformed(message) {
  throw new RemoteProtocolError(message, ErrorCode.PROTOCOL_ERROR);
}

/**
 * UTF-8 that must be valid; a protocol error naming `what` otherwise.
 * @param {Uint8Array} bytes
 * @param {string} what
 */
function strictText(bytes, what) {
  try {
    return strictDecoder.decode(bytes);
  } catch {
    return malformed(`${what} not UTF-8`);
  }
}

/** @param {Uint8Array} bytes */
export function lenientText(bytes) {
  return lenientDecoder.decode(bytes);
}

/** @param {string} text */
export function utf8(text) {
  return encoder.encode(text);
}

/**
 * Join byte arrays into one.
 * @param {readonly Uint8Array[]} parts
 * @returns {Uint8Array}
 */
export function concat(parts) {
  if (parts.length === 1) return parts[0];
  let size = 0;
  for (const part of parts) size += part.length;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * The 10-byte header of a frame.
 * @param {number} length
 * @param {number} type
 * @param {number} flags
 * @param {number} streamId
 * @returns {Uint8Array}
 */
export function encodeHeader(length, type, flags, streamId) {
  const header = new Uint8Array(HEADER_SIZE);
  const dv = view(header);
  dv.setUint32(0, length);
  header[4] = type;
  header[5] = flags;
  dv.setUint32(6, streamId);
  return header;
}

/**
 * A whole frame (header and payload) in one array.
 * @param {number} type
 * @param {number} flags
 * @param {number} streamId
 * @param {Uint8Array} [payload]
 * @returns {Uint8Array}
 */
export function encodeFrame(type, flags, streamId, payload = new Uint8Array(0)) {
  const frame = new Uint8Array(HEADER_SIZE + payload.length);
  frame.set(encodeHeader(payload.length, type, flags, streamId));
  frame.set(payload, HEADER_SIZE);
  return frame;
}

// ------------------------------------------------------------------ HELLO

/**
 * @typedef {object} Hello A HELLO payload, decoded.
 * @property {number} version the protocol version the sender speaks
 * @property {bigint} nonce the sender's role nonce
 * @property {Map<number, bigint>} settings setting id -> value (unknown ids kept)
 * @property {Map<number, Uint8Array>} fields field id -> bytes (unknown ids kept)
 */

/**
 * The payload of a HELLO frame.
 * @param {object} hello
 * @param {bigint} hello.nonce
 * @param {Iterable<[number, number | bigint]>} hello.settings
 * @param {Iterable<[number, Uint8Array]>} [hello.fields]
 * @param {number} [hello.version]
 * @returns {Uint8Array}
 */
export function encodeHello({ nonce, settings, fields = [], version = PROTOCOL_VERSION }) {
  const settingList = [...settings];
  const fieldList = [...fields];
  let size = 16 + 10 * settingList.length + 2;
  for (const [, value] of fieldList) {
    if (value.length > 0xffff) throw new RangeError("a HELLO field is longer than 65535 bytes");
    size += 4 + value.length;
  }
  const out = new Uint8Array(size);
  const dv = view(out);
  out.set(MAGIC, 0);
  dv.setUint16(4, version);
  dv.setBigUint64(6, BigInt.asUintN(64, nonce));
  dv.setUint16(14, settingList.length);
  let offset = 16;
  for (const [id, value] of settingList) {
    dv.setUint16(offset, id);
    dv.setBigUint64(offset + 2, BigInt(value));
    offset += 10;
  }
  dv.setUint16(offset, fieldList.length);
  offset += 2;
  for (const [id, value] of fieldList) {
    dv.setUint16(offset, id);
    dv.setUint16(offset + 2, value.length);
    out.set(value, offset + 4);
    offset += 4 + value.length;
  }
  return out;
}

/**
 * Decode a HELLO payload. The version is checked right after the magic, before the
 * rest is parsed, so an older peer gets VERSION_MISMATCH rather than a length error.
 * @param {Uint8Array} payload
 * @returns {Hello}
 */
export function decodeHello(payload) {
  if (payload.length < 6) malformed("HELLO frame too short");
  for (let i = 0; i < 4; i++) {
    if (payload[i] !== MAGIC[i]) malformed("peer does not speak chanserv_trio");
  }
  const dv = view(payload);
  const version = dv.getUint16(4);
  if (version < PROTOCOL_VERSION) {
    throw new RemoteProtocolError(
      `peer speaks version ${version}, we need ${PROTOCOL_VERSION}`,
      ErrorCode.VERSION_MISMATCH,
    );
  }
  if (payload.length < 16) malformed("HELLO frame too short");
  const nonce = dv.getBigUint64(6);
  const count = dv.getUint16(14);
  let offset = 16;
  if (offset + 10 * count + 2 > payload.length) malformed("HELLO has the wrong length");
  /** @type {Map<number, bigint>} */
  const settings = new Map();
  for (let i = 0; i < count; i++) {
    settings.set(dv.getUint16(offset), dv.getBigUint64(offset + 2));
    offset += 10;
  }
  const fieldCount = dv.getUint16(offset);
  offset += 2;
  /** @type {Map<number, Uint8Array>} */
  const fields = new Map();
  for (let i = 0; i < fieldCount; i++) {
    if (offset + 4 > payload.length) malformed("HELLO has the wrong length");
    const id = dv.getUint16(offset);
    const length = dv.getUint16(offset + 2);
    offset += 4;
    if (offset + length > payload.length) malformed("HELLO has the wrong length");
    if (fields.has(id)) malformed(`HELLO field ${id} given twice`);
    fields.set(id, payload.slice(offset, offset + length));
    offset += length;
  }
  if (offset !== payload.length) malformed("HELLO has the wrong length");
  return { version, nonce, settings, fields };
}

// ------------------------------------------------------------------- OPEN

/**
 * @typedef {object} Open An OPEN payload, decoded.
 * @property {number} parent 0 for a top-level stream
 * @property {string} service the service name ("" for child streams)
 * @property {Uint8Array} routeKey opaque; empty for none
 * @property {Uint8Array} header opaque header bytes
 */

/**
 * The payload of an OPEN frame.
 * @param {number} parent
 * @param {string} service
 * @param {Uint8Array} routeKey
 * @param {Uint8Array} header
 * @returns {Uint8Array}
 */
export function encodeOpen(parent, service, routeKey, header) {
  const name = utf8(service);
  if (name.length > 0xffff) throw new RangeError("service name longer than 65535 bytes");
  if (routeKey.length > 0xffff) throw new RangeError("route key longer than 65535 bytes");
  const out = new Uint8Array(8 + name.length + routeKey.length + header.length);
  const dv = view(out);
  dv.setUint32(0, parent);
  dv.setUint16(4, name.length);
  out.set(name, 6);
  let offset = 6 + name.length;
  dv.setUint16(offset, routeKey.length);
  out.set(routeKey, offset + 2);
  offset += 2 + routeKey.length;
  out.set(header, offset);
  return out;
}

/**
 * @param {Uint8Array} payload
 * @returns {Open}
 */
export function decodeOpen(payload) {
  if (payload.length < 6) malformed("OPEN frame too short");
  const dv = view(payload);
  const parent = dv.getUint32(0);
  const nameEnd = 6 + dv.getUint16(4);
  if (nameEnd > payload.length) malformed("OPEN service name overruns frame");
  const service = strictText(payload.subarray(6, nameEnd), "OPEN service name");
  if (nameEnd + 2 > payload.length) malformed("OPEN frame too short for its route key");
  const keyEnd = nameEnd + 2 + dv.getUint16(nameEnd);
  if (keyEnd > payload.length) malformed("OPEN route key overruns frame");
  return {
    parent,
    service,
    routeKey: payload.slice(nameEnd + 2, keyEnd),
    header: payload.slice(keyEnd),
  };
}

// ------------------------------------------------------------ END / RESET

/** @type {import("./errors.js").Status} */
export const OK = Object.freeze({ code: ErrorCode.OK, kind: "", message: "" });

/**
 * The payload of END and RESET frames (an OK status with no texts is empty).
 * @param {import("./errors.js").Status} status
 * @returns {Uint8Array}
 */
export function encodeStatus(status) {
  const kind = utf8(status.kind);
  const message = utf8(status.message);
  const out = new Uint8Array(6 + kind.length + message.length);
  const dv = view(out);
  dv.setUint32(0, status.code);
  dv.setUint16(4, kind.length);
  out.set(kind, 6);
  out.set(message, 6 + kind.length);
  return out;
}

/**
 * Parse an END or RESET payload (empty means OK); texts are decoded leniently.
 * @param {Uint8Array} payload
 * @returns {import("./errors.js").Status}
 */
export function decodeStatus(payload) {
  if (payload.length === 0) return OK;
  if (payload.length < 6) malformed("status too short");
  const dv = view(payload);
  const code = dv.getUint32(0);
  const end = 6 + dv.getUint16(4);
  if (end > payload.length) malformed("status kind overruns frame");
  return {
    code,
    kind: lenientText(payload.subarray(6, end)),
    message: lenientText(payload.subarray(end)),
  };
}

// ------------------------------------------------------- GOAWAY, WINDOW

/**
 * @param {number} lastStreamId
 * @param {number} code
 * @param {string} message
 * @returns {Uint8Array}
 */
export function encodeGoaway(lastStreamId, code, message) {
  const text = utf8(message);
  const out = new Uint8Array(8 + text.length);
  const dv = view(out);
  dv.setUint32(0, lastStreamId);
  dv.setUint32(4, code);
  out.set(text, 8);
  return out;
}

/**
 * @param {Uint8Array} payload
 * @returns {{lastStreamId: number, code: number, message: string}}
 */
export function decodeGoaway(payload) {
  if (payload.length < 8) malformed("GOAWAY frame too short");
  const dv = view(payload);
  return {
    lastStreamId: dv.getUint32(0),
    code: dv.getUint32(4),
    message: lenientText(payload.subarray(8)),
  };
}

/** @param {number} value */
export function encodeU32(value) {
  const out = new Uint8Array(4);
  view(out).setUint32(0, value);
  return out;
}

/**
 * A payload that must be exactly one u32 (WINDOW).
 * @param {Uint8Array} payload
 * @param {string} what
 */
export function decodeU32(payload, what) {
  if (payload.length !== 4) malformed(`${what} payload must be 4 bytes`);
  return view(payload).getUint32(0);
}

/**
 * @param {Uint8Array} payload
 * @returns {string}
 */
export function decodeServiceName(payload) {
  return strictText(payload, "SERVICE name");
}

// ------------------------------------------------------------- decoding

/**
 * @typedef {object} Frame One decoded frame.
 * @property {number} type the frame type (unknown types are the caller's to judge)
 * @property {number} flags flag bits, interpreted per type
 * @property {number} streamId 0 for connection-wide frames
 * @property {Uint8Array} payload the payload bytes (owned: never a view of input)
 */

/**
 * Turns a byte stream into frames; bytes may be fed split at any offset.
 *
 * `maxPayload` bounds every frame's payload and is read per frame (the caller raises
 * it once HELLO is handled), so a hostile length can never make the decoder hold more
 * than one header plus `maxPayload` bytes beyond what it was fed. A frame spread over
 * several fed pieces is joined once, when it is whole.
 */
export class FrameDecoder {
  /** @param {number} maxPayload */
  constructor(maxPayload) {
    /** @type {number} */
    this.maxPayload = maxPayload;
    /** @type {Uint8Array[]} */
    this._chunks = [];
    this._offset = 0; // into _chunks[0]
    this._buffered = 0;
    /** @type {{length: number, type: number, flags: number, streamId: number} | null} */
    this._header = null;
  }

  /** Bytes received but not yet returned as frames. */
  get buffered() {
    return this._buffered + (this._header ? HEADER_SIZE : 0);
  }

  /** @param {Uint8Array} data */
  feed(data) {
    if (data.length === 0) return;
    this._chunks.push(data);
    this._buffered += data.length;
  }

  /**
   * Remove `n` buffered bytes (n <= buffered) and return them in an array of their own.
   * @param {number} n
   * @returns {Uint8Array}
   */
  _take(n) {
    const first = this._chunks[0];
    if (n === 0) return new Uint8Array(0);
    if (first.length - this._offset >= n) {
      const out = first.slice(this._offset, this._offset + n);
      this._advance(n);
      return out;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this._chunks[0];
      const piece = Math.min(chunk.length - this._offset, n - filled);
      out.set(chunk.subarray(this._offset, this._offset + piece), filled);
      filled += piece;
      this._advance(piece);
    }
    return out;
  }

  /** @param {number} n bytes of _chunks[0] consumed */
  _advance(n) {
    this._offset += n;
    this._buffered -= n;
    if (this._offset === this._chunks[0].length) {
      this._chunks.shift();
      this._offset = 0;
    }
  }

  /**
   * The next complete frame, or null when more bytes are needed. Throws
   * RemoteProtocolError (FRAME_SIZE_ERROR) on a length above `maxPayload`.
   * @returns {Frame | null}
   */
  next() {
    let header = this._header;
    if (header === null) {
      if (this._buffered < HEADER_SIZE) return null;
      const bytes = this._take(HEADER_SIZE);
      const dv = view(bytes);
      header = { length: dv.getUint32(0), type: bytes[4], flags: bytes[5], streamId: dv.getUint32(6) };
      this._header = header;
    }
    if (header.length > this.maxPayload) {
      throw new RemoteProtocolError(
        `frame of ${header.length} bytes exceeds the limit of ${this.maxPayload}`,
        ErrorCode.FRAME_SIZE_ERROR,
      );
    }
    if (this._buffered < header.length) return null;
    this._header = null;
    return {
      type: header.type,
      flags: header.flags,
      streamId: header.streamId,
      payload: this._take(header.length),
    };
  }
}

// ------------------------------------------------------- request envelope

/** A reserved tag: the client lets the server announce at most this many sources
 * ahead of those it took, and grants more with 4-byte credit messages. */
export const SOURCE_WINDOW_TAG = "chanserv.source_window";
export const ENVELOPE_VERSION = 1;
export const NO_DEADLINE = 2n ** 64n - 1n;

/**
 * @typedef {object} Request A decoded request envelope.
 * @property {Uint8Array} body the request body
 * @property {number | null} timeout seconds the client is willing to wait, or null
 * @property {Record<string, string>} tags routing and user tags
 */

/**
 * The OPEN header of a master stream.
 * @param {{body: Uint8Array, timeout?: number | null, tags?: Record<string, string>}} request
 *   `timeout` in seconds (null or Infinity: no deadline)
 * @returns {Uint8Array}
 */
export function encodeRequest({ body, timeout = null, tags = {} }) {
  let micros = NO_DEADLINE;
  if (timeout !== null && Number.isFinite(timeout)) {
    micros = BigInt(Math.max(0, Math.round(timeout * 1_000_000)));
    if (micros >= NO_DEADLINE) micros = NO_DEADLINE - 1n;
  }
  const entries = Object.entries(tags);
  /** @type {Uint8Array[]} */
  const parts = [new Uint8Array(11)];
  const dv = view(parts[0]);
  parts[0][0] = ENVELOPE_VERSION;
  dv.setBigUint64(1, micros);
  dv.setUint16(9, entries.length);
  for (const pair of entries) {
    for (const text of pair) {
      const raw = utf8(text);
      if (raw.length > 0xffff) throw new RangeError("a tag key or value is longer than 65535 bytes");
      const length = new Uint8Array(2);
      view(length).setUint16(0, raw.length);
      parts.push(length, raw);
    }
  }
  parts.push(body);
  return concat(parts);
}

/**
 * Parse a master stream's OPEN header. Throws RemoteProtocolError with
 * PROTOCOL_ERROR (malformed) or VERSION_MISMATCH (another envelope version).
 * @param {Uint8Array} header
 * @returns {Request}
 */
export function decodeRequest(header) {
  if (header.length < 11) malformed("request envelope too short");
  const dv = view(header);
  const version = header[0];
  if (version !== ENVELOPE_VERSION) {
    throw new RemoteProtocolError(
      `request envelope version ${version} is not supported`,
      ErrorCode.VERSION_MISMATCH,
    );
  }
  const micros = dv.getBigUint64(1);
  const count = dv.getUint16(9);
  let offset = 11;
  /** @type {Record<string, string>} */
  const tags = Object.create(null); // a tag named "__proto__" is only a tag
  for (let i = 0; i < count; i++) {
    const texts = [];
    for (let j = 0; j < 2; j++) {
      if (offset + 2 > header.length) malformed("malformed request tags");
      const length = dv.getUint16(offset);
      offset += 2;
      if (offset + length > header.length) malformed("tag overruns envelope");
      texts.push(strictText(header.subarray(offset, offset + length), "request tag"));
      offset += length;
    }
    tags[texts[0]] = texts[1];
  }
  const timeout = micros === NO_DEADLINE ? null : Number(micros) / 1_000_000;
  return { body: header.slice(offset), timeout, tags };
}

/**
 * The source window a request asks for, or null; a protocol error if malformed.
 * @param {Request} request
 * @returns {number | null}
 */
export function sourceWindowOf(request) {
  const text = request.tags[SOURCE_WINDOW_TAG];
  if (text === undefined) return null;
  if (!/^[0-9]+$/.test(text) || !(Number(text) > 0 && Number(text) < 2 ** 31)) {
    malformed(`bad ${SOURCE_WINDOW_TAG}: ${JSON.stringify(text)}`);
  }
  return Number(text);
}

/** @param {number} count sources accepted since the last credit */
export function encodeCredit(count) {
  return encodeU32(count);
}

/** @param {Uint8Array} message */
export function decodeCredit(message) {
  if (message.length !== 4) malformed("a source credit is 4 bytes");
  return view(message).getUint32(0);
}
