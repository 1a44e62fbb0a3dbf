// The connection state machine of the chanserv_trio wire protocol, version 2 (sans-IO:
// no sockets, no timers, no promises). A port of chanserv_trio/wire/_connection.py.
//
// Feed received bytes to receiveData() and act on the events it returns; call
// openStream / sendData / endStream / resetStream to act, then write out what
// takeOutgoing() returns. Both ends run the same class: which stream ids a side opens
// is settled by the role nonces in the two HELLOs (the larger takes the odd ids), so
// it is known only once the peer's HELLO arrived, as is everything about the peer.
//
// Flow control. Each stream has a receive window: every DATA byte is charged to it,
// and the application returns credit with acknowledge() as it consumes whole messages
// (each "message" event says how much). So that a message larger than the window
// still gets through, the chunks of a message in assembly are credited back on
// arrival, but only while the application holds no unconsumed message of that stream;
// once it consumed them all, the chunks that arrived meanwhile are credited. Buffered
// memory per stream is so bounded by the window plus one message. The connection
// window bounds bytes in transit: its credit returns as soon as bytes reach a stream,
// so a stream nobody reads stalls only itself.

import {
  ACCEPTOR_NONCE,
  DIALER_NONCE,
  DataFlags,
  FrameDecoder,
  FrameType,
  HEADER_SIZE,
  HelloField,
  MAX_HELLO_SIZE,
  OK,
  OPEN_ALLOWANCE,
  OpenFlags,
  PROTOCOL_VERSION,
  PingFlags,
  ServiceFlags,
  Setting,
  decodeGoaway,
  decodeHello,
  decodeOpen,
  decodeServiceName,
  decodeStatus,
  decodeU32,
  encodeGoaway,
  encodeHeader,
  encodeHello,
  encodeOpen,
  encodeStatus,
  encodeU32,
  utf8,
} from "./codec.js";
import { ErrorCode, LocalProtocolError, RemoteProtocolError, codeName } from "./errors.js";
import { MIN_COMPRESS_SIZE, compress, decompress } from "./lz4.js";

const MAX_WINDOW = 2 ** 31 - 1;
/** Every peer accepts frames this large (the least max frame payload allowed). */
const MIN_FRAME_PAYLOAD = 1024;
/** The longest exception type name an END or RESET carries. */
const MAX_KIND = 256;
const EMPTY = new Uint8Array(0);

/**
 * @typedef {object} Settings Limits one side announces in HELLO and enforces on what
 *   it receives (the fields of the Python `Settings`, in camelCase).
 * @property {number} initialStreamWindow bytes of unconsumed messages the peer may
 *   send ahead on one stream
 * @property {number} connectionWindow bytes the peer may have in transit in all
 * @property {number} maxFramePayload largest DATA payload in one frame
 * @property {number} maxMessageSize largest message, all chunks joined
 * @property {number} maxOpenPayload largest OPEN header
 * @property {number} maxConcurrentStreams most streams the peer may have open towards us
 * @property {boolean} compression ask for LZ4 compression of DATA payloads
 */

/** @type {Readonly<Settings>} */
export const DEFAULT_SETTINGS = Object.freeze({
  initialStreamWindow: 1 << 20,
  connectionWindow: 16 << 20,
  maxFramePayload: 1 << 20,
  maxMessageSize: 100 << 20,
  maxOpenPayload: 1 << 20,
  maxConcurrentStreams: 16384,
  compression: false,
});

/** @type {ReadonlyArray<[keyof Settings, number]>} */
const WIRE_NAMES = [
  ["initialStreamWindow", Setting.INITIAL_STREAM_WINDOW],
  ["connectionWindow", Setting.CONNECTION_WINDOW],
  ["maxFramePayload", Setting.MAX_FRAME_PAYLOAD],
  ["maxMessageSize", Setting.MAX_MESSAGE_SIZE],
  ["maxOpenPayload", Setting.MAX_OPEN_PAYLOAD],
  ["maxConcurrentStreams", Setting.MAX_CONCURRENT_STREAMS],
];

/**
 * Settings with defaults filled in; a RangeError for a value the protocol forbids.
 * @param {Partial<Settings>} [given]
 * @returns {Settings}
 */
export function makeSettings(given = {}) {
  const settings = { ...DEFAULT_SETTINGS, ...given };
  for (const [name] of WIRE_NAMES) {
    const value = settings[name];
    if (!Number.isInteger(value) || !(Number(value) > 0 && Number(value) <= MAX_WINDOW)) {
      throw new RangeError(`${name} must be between 1 and ${MAX_WINDOW}, not ${value}`);
    }
  }
  if (settings.maxFramePayload < 1024) throw new RangeError("maxFramePayload must be at least 1024");
  return settings;
}

/**
 * The settings as HELLO carries them (COMPRESSION only when asked for).
 * @param {Settings} settings
 * @returns {Array<[number, number]>}
 */
export function settingsToWire(settings) {
  /** @type {Array<[number, number]>} */
  const values = WIRE_NAMES.map(([name, id]) => [id, Number(settings[name])]);
  if (settings.compression) values.push([Setting.COMPRESSION, 1]);
  return values;
}

/**
 * Settings from a HELLO: missing ids take their defaults, unknown ids are ignored,
 * the last of a repeated id wins; a value out of range is a protocol error.
 * @param {Map<number, bigint>} values
 * @returns {Settings}
 */
export function settingsFromWire(values) {
  /** @type {Settings} */
  const settings = { ...DEFAULT_SETTINGS };
  for (const [name, id] of WIRE_NAMES) {
    const value = values.get(id);
    if (value === undefined) continue;
    if (value < 1n || value > BigInt(MAX_WINDOW)) {
      throw new RemoteProtocolError(`bad HELLO setting: ${name} = ${value}`, ErrorCode.PROTOCOL_ERROR);
    }
    /** @type {Record<string, number | boolean>} */ (settings)[name] = Number(value);
  }
  const compression = values.get(Setting.COMPRESSION);
  if (compression !== undefined) {
    if (compression < 1n || compression > BigInt(MAX_WINDOW)) {
      throw new RemoteProtocolError(`bad HELLO setting: compression = ${compression}`, ErrorCode.PROTOCOL_ERROR);
    }
    settings.compression = compression === 1n;
  }
  if (settings.maxFramePayload < 1024) {
    throw new RemoteProtocolError("bad HELLO setting: maxFramePayload below 1024", ErrorCode.PROTOCOL_ERROR);
  }
  return settings;
}

/**
 * `text` cut to at most `limit` UTF-8 bytes, on a character boundary.
 * @param {string} text
 * @param {number} limit
 */
function clip(text, limit) {
  const data = utf8(text);
  if (data.length <= limit) return text;
  let end = Math.max(limit, 0);
  while (end > 0 && (data[end] & 0xc0) === 0x80) end--; // not inside a character
  return new TextDecoder().decode(data.subarray(0, end));
}

/** What the first bytes of other protocols look like, and what to tell the user. */
const FOREIGN_PREFIXES = [
  ["HTTP/", "the peer answered in HTTP, not chanserv_trio"],
  ["\x16\x03", "the peer speaks TLS, not plain chanserv_trio (use wss://)"],
  ["\x15\x03", "the peer answered with a TLS alert (it expects TLS: use wss://)"],
  ["{", "the peer sent JSON, not chanserv_trio"],
];

/**
 * A message naming the protocol the first bytes received belong to, if not ours.
 * @param {Uint8Array} first
 * @returns {string | null}
 */
function foreignProtocol(first) {
  for (const [prefix, message] of FOREIGN_PREFIXES) {
    if (first.length >= prefix.length && [...prefix].every((char, i) => first[i] === char.charCodeAt(0))) return message;
  }
  return null;
}

/**
 * A random role nonce in [1, 2**64 - 2], for a side that neither dialed nor accepted.
 * @returns {bigint}
 */
export function randomNonce() {
  const bytes = new Uint8Array(8);
  while (true) {
    globalThis.crypto.getRandomValues(bytes);
    const value = new DataView(bytes.buffer).getBigUint64(0);
    if (value !== ACCEPTOR_NONCE && value !== DIALER_NONCE) return value;
  }
}

/**
 * @typedef {{type: "handshake", version: number, fields: Map<number, Uint8Array>}} HandshakeCompleted
 *   the peer's HELLO arrived and was accepted; streams may now be opened
 * @typedef {{type: "opened", streamId: number, parent: number, service: string,
 *   routeKey: Uint8Array, header: Uint8Array, remoteOpen: boolean, localOpen: boolean}} StreamOpened
 *   the peer opened a stream; `remoteOpen`: it may send on it, `localOpen`: we may
 * @typedef {{type: "message", streamId: number, data: Uint8Array, credit: number}} MessageReceived
 *   a whole message arrived; give `credit` to acknowledge() once it is consumed
 * @typedef {{type: "ended", streamId: number, status: import("./errors.js").Status}} StreamEnded
 *   the peer finished its half of a stream
 * @typedef {{type: "reset", streamId: number, status: import("./errors.js").Status}} StreamReset
 *   the stream was aborted both ways
 * @typedef {{type: "window", streamId: number}} WindowOpened
 *   send credit grew on one stream, or on all (`streamId` 0)
 * @typedef {{type: "pong", payload: Uint8Array}} PingAcknowledged
 *   the answer to one of our PINGs
 * @typedef {{type: "service", name: string, available: boolean, relayed: boolean}} ServiceAdvertised
 *   the peer offers (or withdraws) a named service
 * @typedef {{type: "goaway", lastStreamId: number, code: number, message: string}} GoAwayReceived
 *   the peer accepts no new streams (a graceful GOAWAY)
 * @typedef {{type: "terminated", code: number, message: string}} ConnectionTerminated
 *   the connection is over: GOAWAY with an error, or the byte stream ended
 * @typedef {HandshakeCompleted | StreamOpened | MessageReceived | StreamEnded | StreamReset
 *   | WindowOpened | PingAcknowledged | ServiceAdvertised | GoAwayReceived
 *   | ConnectionTerminated} ConnectionEvent
 */

/** Per-stream protocol state. */
class StreamState {
  /**
   * @param {number} streamId
   * @param {number} parent
   * @param {number} sendWindow
   * @param {number} recvWindow
   */
  constructor(streamId, parent, sendWindow, recvWindow) {
    this.streamId = streamId;
    this.parent = parent;
    /** We may still send DATA/END. */
    this.localOpen = true;
    /** The peer may still send DATA/END. */
    this.remoteOpen = true;
    this.sendWindow = sendWindow;
    this.recvWindow = recvWindow;
    /** Credit owed to the peer but not yet sent in a WINDOW frame. */
    this.pendingCredit = 0;
    /** @type {Uint8Array[]} the non-empty chunks of the message in assembly */
    this.chunks = [];
    this.chunksSize = 0;
    /** A DATA frame with MORE arrived and the message has not completed yet. */
    this.assembling = false;
    /** Bytes of `chunks` already credited back to the peer. */
    this.assemblyCredited = 0;
    /** Bytes of whole messages handed to the application and not yet acknowledged. */
    this.held = 0;
    /** Bytes of `held` already credited back while they were chunks. */
    this.prepaid = 0;
    /** This stream's receive window (the link's initial one unless changed). */
    this.window = recvWindow;
    /** Credit still to be withheld because the window was made smaller. */
    this.debt = 0;
  }
}

/**
 * One end of a connection. `nonce` is the role nonce this side sends: `DIALER_NONCE`
 * for a side that dialed (the default), `ACCEPTOR_NONCE` for one that accepted.
 */
export class Connection {
  /**
   * @param {object} [options]
   * @param {Partial<Settings>} [options.settings] what this side announces and enforces
   * @param {bigint} [options.nonce] the role nonce (default: a dialer's, 2**64 - 1)
   * @param {Uint8Array | null} [options.credential] sent in HELLO field CREDENTIAL
   */
  constructor({ settings = {}, nonce = DIALER_NONCE, credential = null } = {}) {
    this.localSettings = makeSettings(settings);
    /** @type {Settings} the peer's settings; defaults until its HELLO arrives */
    this.peerSettings = { ...DEFAULT_SETTINGS };
    this.nonce = nonce;
    /** @type {bigint | null} */
    this.peerNonce = null;
    this.handshakeDone = false;
    this.closed = false;
    this.version = 0;
    this.compressing = false;
    /** True once we know we take the odd stream ids (after the peer's HELLO). */
    this.odd = false;
    this._decoder = new FrameDecoder(MAX_HELLO_SIZE);
    /** @type {Map<number, StreamState>} */
    this._streams = new Map();
    this._nextLocalId = 0;
    this._highestPeerId = 0;
    this._localOpenCount = 0;
    this._peerOpenCount = 0;
    this._sendWindow = this.peerSettings.connectionWindow;
    this._recvWindow = this.localSettings.connectionWindow;
    this._pendingConnCredit = 0;
    /** @type {Uint8Array[]} */
    this._outgoing = [];
    this._outgoingSize = 0;
    /** @type {{lastStreamId: number, code: number} | null} the peer sent GOAWAY */
    this.peerGoaway = null;
    /** We sent GOAWAY. */
    this.localGoaway = false;
    this.bytesReceived = 0;
    this.bytesSent = 0;
    this.messagesReceived = 0;
    this.messagesSent = 0;
    /** @type {Array<[number, Uint8Array]>} */
    const fields = credential === null ? [] : [[HelloField.CREDENTIAL, credential]];
    this._queue(
      FrameType.HELLO,
      0,
      0,
      encodeHello({ nonce, settings: settingsToWire(this.localSettings), fields }),
    );
  }

  // ---------------------------------------------------------------- queries

  /** Streams not yet closed in both directions. */
  get openStreamCount() {
    return this._streams.size;
  }

  /** Bytes queued for writing. */
  get outgoingSize() {
    return this._outgoingSize;
  }

  /** Whether the peer's concurrency limit (and its GOAWAY) allows another stream now. */
  canOpenStream() {
    return (
      this.handshakeDone &&
      !this.closed &&
      this.peerGoaway === null &&
      this._localOpenCount < this.peerSettings.maxConcurrentStreams
    );
  }

  /** @param {number} streamId whether the stream is still known (not closed both ways) */
  isOpen(streamId) {
    return this._streams.has(streamId);
  }

  /** @param {number} streamId whether our half of the stream is open */
  canSend(streamId) {
    const stream = this._streams.get(streamId);
    return stream !== undefined && stream.localOpen;
  }

  /** @param {number} streamId bytes of DATA we may send on the stream right now */
  sendWindow(streamId) {
    const stream = this._streams.get(streamId);
    if (stream === undefined || !stream.localOpen) return 0;
    return Math.min(stream.sendWindow, this._sendWindow);
  }

  /** The connection-wide send credit left. */
  connectionSendWindow() {
    return this._sendWindow;
  }

  /** Bytes received into streams but not yet acknowledged by the application. */
  bufferedBytes() {
    let total = 0;
    for (const stream of this._streams.values()) total += stream.held + stream.chunksSize;
    return total;
  }

  /** Ids of every stream still open. */
  streamIds() {
    return [...this._streams.keys()];
  }

  // --------------------------------------------------------------- outgoing

  /** Everything queued for the wire, in order; the queue is emptied. */
  takeOutgoing() {
    const out = this._outgoing;
    this._outgoing = [];
    this.bytesSent += this._outgoingSize;
    this._outgoingSize = 0;
    return out;
  }

  /**
   * @param {number} type
   * @param {number} flags
   * @param {number} streamId
   * @param {Uint8Array} [payload]
   */
  _queue(type, flags, streamId, payload = EMPTY) {
    const frame = new Uint8Array(HEADER_SIZE + payload.length);
    frame.set(encodeHeader(payload.length, type, flags, streamId));
    frame.set(payload, HEADER_SIZE);
    this._outgoing.push(frame);
    this._outgoingSize += frame.length;
  }

  /** The largest payload the peer is sure to accept for a control frame. */
  _peerFrameLimit() {
    return this.handshakeDone ? this.peerSettings.maxFramePayload : MIN_FRAME_PAYLOAD;
  }

  /**
   * An END or RESET payload, with texts cut so that the peer accepts the frame.
   * @param {import("./errors.js").Status} status
   */
  _statusPayload(status) {
    const kind = clip(status.kind, MAX_KIND);
    const room = this._peerFrameLimit() - 6 - utf8(kind).length;
    return encodeStatus({ code: status.code, kind, message: clip(status.message, room) });
  }

  // ---------------------------------------------------------------- actions

  _checkUsable() {
    if (this.closed) throw new LocalProtocolError("connection is closed");
    if (!this.handshakeDone) throw new LocalProtocolError("handshake not complete");
  }

  /**
   * Open a stream and return its id. `localOpen: false`: we will send no data
   * (NO_SEND); `remoteOpen: false`: the peer must send none (NO_REPLY).
   * @param {string} service
   * @param {Uint8Array} header
   * @param {object} [options]
   * @param {number} [options.parent]
   * @param {Uint8Array} [options.routeKey]
   * @param {boolean} [options.localOpen]
   * @param {boolean} [options.remoteOpen]
   * @returns {number}
   */
  openStream(service, header, { parent = 0, routeKey = EMPTY, localOpen = true, remoteOpen = true } = {}) {
    this._checkUsable();
    if (!this.canOpenStream()) throw new LocalProtocolError("no stream may be opened now (limit or GOAWAY)");
    if (header.length > this.peerSettings.maxOpenPayload) {
      throw new LocalProtocolError(
        `header of ${header.length} bytes exceeds the peer's limit of ${this.peerSettings.maxOpenPayload}`,
      );
    }
    if (parent && !this._streams.has(parent)) throw new LocalProtocolError(`parent stream ${parent} is not open`);
    if (utf8(service).length > 0xffff) throw new LocalProtocolError("service name longer than 65535 bytes");
    if (routeKey.length > 0xffff) throw new LocalProtocolError("route key longer than 65535 bytes");
    const streamId = this._nextLocalId;
    this._nextLocalId += 2;
    const stream = new StreamState(
      streamId,
      parent,
      this.peerSettings.initialStreamWindow,
      this.localSettings.initialStreamWindow,
    );
    stream.localOpen = localOpen;
    stream.remoteOpen = remoteOpen;
    this._streams.set(streamId, stream);
    this._localOpenCount += 1;
    const flags = (localOpen ? 0 : OpenFlags.NO_SEND) | (remoteOpen ? 0 : OpenFlags.NO_REPLY);
    this._queue(FrameType.OPEN, flags, streamId, encodeOpen(parent, service, routeKey, header));
    this._maybeForget(stream);
    return streamId;
  }

  /**
   * Queue one DATA frame; `more` says the message continues in the next one.
   * `data.length` must fit sendWindow() and the peer's max frame payload.
   * @param {number} streamId
   * @param {Uint8Array} data
   * @param {boolean} [more]
   */
  sendData(streamId, data, more = false) {
    const stream = this._streams.get(streamId);
    if (stream === undefined || !stream.localOpen) {
      throw new LocalProtocolError(`stream ${streamId} is not open for sending`);
    }
    const size = data.length;
    if (size > stream.sendWindow || size > this._sendWindow) {
      throw new LocalProtocolError("DATA exceeds the flow-control window");
    }
    if (size > this.peerSettings.maxFramePayload) {
      throw new LocalProtocolError("DATA exceeds the peer's max frame payload");
    }
    stream.sendWindow -= size;
    this._sendWindow -= size;
    this._queueData(streamId, data, more ? DataFlags.MORE : 0);
    if (!more) this.messagesSent += 1;
  }

  /**
   * Queue `data` as one whole message in one DATA frame if the windows and the peer's
   * frame limit allow it now; return false (queueing nothing) otherwise.
   * @param {number} streamId
   * @param {Uint8Array} data
   */
  trySendMessage(streamId, data) {
    const stream = this._streams.get(streamId);
    if (stream === undefined || !stream.localOpen) return false;
    const size = data.length;
    if (size > stream.sendWindow || size > this._sendWindow || size > this.peerSettings.maxFramePayload) {
      return false;
    }
    stream.sendWindow -= size;
    this._sendWindow -= size;
    this.messagesSent += 1;
    this._queueData(streamId, data, 0);
    return true;
  }

  /**
   * A DATA frame, compressed when the link agreed to it and it pays. Large payloads
   * are queued as they are, after their header, without a copy.
   * @param {number} streamId
   * @param {Uint8Array} data
   * @param {number} flags
   */
  _queueData(streamId, data, flags) {
    let payload = data;
    if (this.compressing && data.length >= MIN_COMPRESS_SIZE) {
      const packed = compress(data);
      if (packed !== null) {
        payload = packed;
        flags |= DataFlags.COMPRESSED;
      }
    }
    if (payload.length <= 4096) {
      this._queue(FrameType.DATA, flags, streamId, payload);
      return;
    }
    this._outgoing.push(encodeHeader(payload.length, FrameType.DATA, flags, streamId), payload);
    this._outgoingSize += HEADER_SIZE + payload.length;
  }

  /**
   * Close our half of the stream with a status (OK or an error).
   * @param {number} streamId
   * @param {import("./errors.js").Status} [status]
   */
  endStream(streamId, status = OK) {
    const stream = this._streams.get(streamId);
    if (stream === undefined || !stream.localOpen) {
      throw new LocalProtocolError(`stream ${streamId} is not open for sending`);
    }
    stream.localOpen = false;
    const ok = status.code === ErrorCode.OK && !status.kind && !status.message;
    this._queue(FrameType.END, 0, streamId, ok ? EMPTY : this._statusPayload(status));
    this._maybeForget(stream);
  }

  /**
   * Abort the stream both ways. Returns false (and sends nothing) if already gone.
   * @param {number} streamId
   * @param {import("./errors.js").Status} status
   */
  resetStream(streamId, status) {
    const stream = this._streams.get(streamId);
    if (stream === undefined) return false;
    this._queue(FrameType.RESET, 0, streamId, this._statusPayload(status));
    this._forget(stream);
    return true;
  }

  /**
   * The application consumed `credit` bytes of the stream's messages.
   * @param {number} streamId
   * @param {number} credit
   */
  acknowledge(streamId, credit) {
    const stream = this._streams.get(streamId);
    if (stream === undefined || credit <= 0) return;
    credit = Math.min(credit, stream.held);
    stream.held -= credit;
    const prepaid = Math.min(credit, stream.prepaid);
    stream.prepaid -= prepaid;
    credit -= prepaid;
    if (!stream.held && stream.chunksSize > stream.assemblyCredited) {
      // Nothing left to consume: the message in assembly may now use the window.
      credit += stream.chunksSize - stream.assemblyCredited;
      stream.assemblyCredited = stream.chunksSize;
    }
    this._returnCredit(stream, credit);
  }

  /**
   * Change how many bytes the peer may send ahead on one stream. A larger window is
   * granted at once; a smaller one takes effect as the application consumes.
   * @param {number} streamId
   * @param {number} window
   */
  setReceiveWindow(streamId, window) {
    if (!(Number.isInteger(window) && window > 0 && window <= MAX_WINDOW)) {
      throw new LocalProtocolError(`a window must be between 1 and ${MAX_WINDOW}`);
    }
    const stream = this._streams.get(streamId);
    if (stream === undefined || !stream.remoteOpen) return;
    let change = window - stream.window;
    stream.window = window;
    if (change < 0) {
      stream.debt -= change;
      return;
    }
    const repaid = Math.min(change, stream.debt);
    stream.debt -= repaid;
    change -= repaid;
    if (change) {
      stream.recvWindow += change;
      this._queue(FrameType.WINDOW, 0, streamId, encodeU32(change));
    }
  }

  /**
   * @param {StreamState} stream
   * @param {number} credit
   */
  _returnCredit(stream, credit) {
    if (credit <= 0) return;
    if (stream.debt) {
      const withheld = Math.min(credit, stream.debt);
      stream.debt -= withheld;
      credit -= withheld;
      if (!credit) return;
    }
    stream.pendingCredit += credit;
    if (!stream.remoteOpen) {
      // The peer sends no more: restore the window without telling it.
      stream.recvWindow += stream.pendingCredit;
      stream.pendingCredit = 0;
    } else if (stream.pendingCredit >= stream.window >> 2) {
      const increment = stream.pendingCredit;
      stream.pendingCredit = 0;
      stream.recvWindow += increment;
      this._queue(FrameType.WINDOW, 0, stream.streamId, encodeU32(increment));
    }
  }

  /**
   * Queue a PING; its echo comes back as a "pong" event.
   * @param {Uint8Array} payload 8 bytes
   */
  ping(payload) {
    if (payload.length !== 8) throw new LocalProtocolError("PING payload must be 8 bytes");
    if (!this.closed) this._queue(FrameType.PING, 0, 0, payload);
  }

  /**
   * Tell the peer we offer (or no longer offer) a named service.
   * @param {string} name
   * @param {boolean} [available]
   * @param {boolean} [relayed] we offer it by relaying to another node
   */
  advertise(name, available = true, relayed = false) {
    if (this.closed) return;
    const flags = (available ? 0 : ServiceFlags.REMOVE) | (relayed ? ServiceFlags.RELAYED : 0);
    this._queue(FrameType.SERVICE, flags, 0, utf8(name));
  }

  /**
   * Refuse new streams from the peer; with an error code, close the connection.
   * @param {number} [code]
   * @param {string} [message]
   */
  goAway(code = ErrorCode.OK, message = "") {
    if (this.closed) return;
    this.localGoaway = true;
    const text = clip(message, this._peerFrameLimit() - 8);
    this._queue(FrameType.GOAWAY, 0, 0, encodeGoaway(this._highestPeerId, code, text));
    if (code !== ErrorCode.OK) this.closed = true;
  }

  // --------------------------------------------------------------- incoming

  /**
   * Feed received bytes; an empty array means the byte stream ended. Returns the
   * events, in order. On a protocol violation a GOAWAY with the error code is queued,
   * the connection is marked closed and RemoteProtocolError is thrown.
   * @param {Uint8Array} data
   * @returns {ConnectionEvent[]}
   */
  receiveData(data) {
    if (this.closed) return [];
    /** @type {ConnectionEvent[]} */
    const events = [];
    if (data.length === 0) {
      this.closed = true;
      events.push({ type: "terminated", code: ErrorCode.CONNECTION_LOST, message: "peer closed the connection" });
      return events;
    }
    if (this.bytesReceived === 0) {
      const foreign = foreignProtocol(data.subarray(0, 8));
      if (foreign !== null) {
        this.bytesReceived += data.length;
        this.goAway(ErrorCode.PROTOCOL_ERROR, foreign);
        throw new RemoteProtocolError(foreign, ErrorCode.PROTOCOL_ERROR);
      }
    }
    this.bytesReceived += data.length;
    this._decoder.feed(data);
    try {
      for (let frame = this._decoder.next(); frame !== null; frame = this._decoder.next()) {
        if (frame.type === FrameType.DATA) {
          this._onData(frame.flags, frame.streamId, frame.payload, events);
          continue;
        }
        this._handleFrame(frame.type, frame.flags, frame.streamId, frame.payload, events);
        if (this.closed) break;
      }
    } catch (error) {
      if (error instanceof RemoteProtocolError) this.goAway(error.code, error.message);
      throw error;
    }
    if (this._pendingConnCredit >= this.localSettings.connectionWindow >> 2) {
      const increment = this._pendingConnCredit;
      this._pendingConnCredit = 0;
      this._recvWindow += increment;
      this._queue(FrameType.WINDOW, 0, 0, encodeU32(increment));
    }
    return events;
  }

  /**
   * @param {number} type
   * @param {number} flags
   * @param {number} streamId
   * @param {Uint8Array} payload
   * @param {ConnectionEvent[]} events
   */
  _handleFrame(type, flags, streamId, payload, events) {
    if (!this.handshakeDone) {
      if (type === FrameType.GOAWAY) {
        // A side that refuses our credential says so before (instead of) its HELLO.
        this._onGoaway(streamId, payload, events);
        return;
      }
      if (type !== FrameType.HELLO) {
        throw new RemoteProtocolError("first frame must be HELLO", ErrorCode.PROTOCOL_ERROR);
      }
      this._onHello(payload, events);
      return;
    }
    switch (type) {
      case FrameType.OPEN:
        this._onOpen(flags, streamId, payload, events);
        return;
      case FrameType.END:
        this._onEnd(streamId, payload, events);
        return;
      case FrameType.RESET:
        this._onReset(streamId, payload, events);
        return;
      case FrameType.WINDOW:
        this._onWindow(streamId, payload, events);
        return;
      case FrameType.PING:
        if (streamId || payload.length !== 8) {
          throw new RemoteProtocolError("malformed PING", ErrorCode.PROTOCOL_ERROR);
        }
        if (flags & PingFlags.ACK) events.push({ type: "pong", payload });
        else this._queue(FrameType.PING, PingFlags.ACK, 0, payload);
        return;
      case FrameType.GOAWAY:
        this._onGoaway(streamId, payload, events);
        return;
      case FrameType.SERVICE: {
        if (streamId) throw new RemoteProtocolError("SERVICE on a stream", ErrorCode.PROTOCOL_ERROR);
        const name = decodeServiceName(payload);
        events.push({
          type: "service",
          name,
          available: !(flags & ServiceFlags.REMOVE),
          relayed: Boolean(flags & ServiceFlags.RELAYED),
        });
        return;
      }
      case FrameType.HELLO:
        throw new RemoteProtocolError("HELLO sent twice", ErrorCode.PROTOCOL_ERROR);
      default:
        throw new RemoteProtocolError(`unknown frame type ${type}`, ErrorCode.PROTOCOL_ERROR);
    }
  }

  /**
   * @param {Uint8Array} payload
   * @param {ConnectionEvent[]} events
   */
  _onHello(payload, events) {
    const hello = decodeHello(payload);
    if (hello.nonce === this.nonce) {
      throw new RemoteProtocolError(
        `both ends chose the same role (nonce ${hello.nonce})`,
        ErrorCode.PROTOCOL_ERROR,
      );
    }
    this.version = Math.min(hello.version, PROTOCOL_VERSION);
    this.peerSettings = settingsFromWire(hello.settings);
    this.peerNonce = hello.nonce;
    this.odd = this.nonce > hello.nonce;
    this._nextLocalId = this.odd ? 1 : 2;
    this._sendWindow = this.peerSettings.connectionWindow;
    this.compressing = this.localSettings.compression && this.peerSettings.compression;
    this.handshakeDone = true;
    const local = this.localSettings;
    this._decoder.maxPayload = Math.max(local.maxFramePayload, local.maxOpenPayload + OPEN_ALLOWANCE);
    events.push({ type: "handshake", version: this.version, fields: hello.fields });
  }

  /** @param {number} streamId */
  _isPeerId(streamId) {
    return (streamId % 2 === 1) !== this.odd;
  }

  /** @param {number} streamId */
  _wasUsed(streamId) {
    if (this._isPeerId(streamId)) return streamId <= this._highestPeerId;
    return streamId < this._nextLocalId;
  }

  /**
   * The stream, or undefined for one that existed and closed; a protocol error for
   * one never opened.
   * @param {number} streamId
   * @param {string} what
   */
  _lookup(streamId, what) {
    if (streamId === 0) throw new RemoteProtocolError(`${what} on stream 0`, ErrorCode.PROTOCOL_ERROR);
    const stream = this._streams.get(streamId);
    if (stream === undefined && !this._wasUsed(streamId)) {
      throw new RemoteProtocolError(
        `${what} on stream ${streamId}, which was never opened`,
        ErrorCode.PROTOCOL_ERROR,
      );
    }
    return stream;
  }

  /**
   * @param {number} streamId
   * @param {number} code
   * @param {string} message
   */
  _refuse(streamId, code, message) {
    this._queue(FrameType.RESET, 0, streamId, encodeStatus({ code, kind: "", message }));
  }

  /**
   * @param {number} flags
   * @param {number} streamId
   * @param {Uint8Array} payload
   * @param {ConnectionEvent[]} events
   */
  _onOpen(flags, streamId, payload, events) {
    if (streamId === 0 || !this._isPeerId(streamId)) {
      throw new RemoteProtocolError(`OPEN with bad id ${streamId}`, ErrorCode.PROTOCOL_ERROR);
    }
    if (streamId <= this._highestPeerId) {
      throw new RemoteProtocolError(`OPEN reuses id ${streamId}`, ErrorCode.PROTOCOL_ERROR);
    }
    this._highestPeerId = streamId;
    const { parent, service, routeKey, header } = decodeOpen(payload);
    if (header.length > this.localSettings.maxOpenPayload) {
      throw new RemoteProtocolError("OPEN header exceeds the limit", ErrorCode.FRAME_SIZE_ERROR);
    }
    if (this.localGoaway) {
      this._refuse(streamId, ErrorCode.REFUSED_STREAM, "going away");
      return;
    }
    if (this._peerOpenCount >= this.localSettings.maxConcurrentStreams) {
      this._refuse(streamId, ErrorCode.REFUSED_STREAM, "too many concurrent streams");
      return;
    }
    if (parent && !this._streams.has(parent)) {
      if (!this._wasUsed(parent)) {
        throw new RemoteProtocolError(`OPEN with unknown parent ${parent}`, ErrorCode.PROTOCOL_ERROR);
      }
      // The parent closed while this OPEN was in flight: refuse the child quietly.
      this._refuse(streamId, ErrorCode.CANCEL, "parent stream closed");
      return;
    }
    const stream = new StreamState(
      streamId,
      parent,
      this.peerSettings.initialStreamWindow,
      this.localSettings.initialStreamWindow,
    );
    stream.remoteOpen = !(flags & OpenFlags.NO_SEND);
    stream.localOpen = !(flags & OpenFlags.NO_REPLY);
    this._streams.set(streamId, stream);
    this._peerOpenCount += 1;
    events.push({
      type: "opened",
      streamId,
      parent,
      service,
      routeKey,
      header,
      remoteOpen: stream.remoteOpen,
      localOpen: stream.localOpen,
    });
    this._maybeForget(stream);
  }

  /**
   * @param {number} flags
   * @param {number} streamId
   * @param {Uint8Array} payload
   * @param {ConnectionEvent[]} events
   */
  _onData(flags, streamId, payload, events) {
    if (!this.handshakeDone) throw new RemoteProtocolError("first frame must be HELLO", ErrorCode.PROTOCOL_ERROR);
    const local = this.localSettings;
    if (flags & DataFlags.COMPRESSED) {
      if (!this.compressing) {
        throw new RemoteProtocolError("compressed DATA on a link that did not agree to it", ErrorCode.PROTOCOL_ERROR);
      }
      payload = decompress(payload, local.maxFramePayload);
    }
    const size = payload.length;
    if (size > local.maxFramePayload) {
      throw new RemoteProtocolError("DATA exceeds max frame payload", ErrorCode.FRAME_SIZE_ERROR);
    }
    if (size > this._recvWindow) {
      throw new RemoteProtocolError("DATA exceeds the connection window", ErrorCode.FLOW_CONTROL_ERROR);
    }
    this._recvWindow -= size;
    this._pendingConnCredit += size;
    const stream = this._streams.get(streamId);
    if (stream === undefined) {
      this._lookup(streamId, "DATA");
      return; // closed or reset on our side: drop it
    }
    if (!stream.remoteOpen) {
      throw new RemoteProtocolError(`DATA on stream ${streamId} after its end`, ErrorCode.PROTOCOL_ERROR);
    }
    if (size > stream.recvWindow) {
      throw new RemoteProtocolError(`DATA exceeds the window of stream ${streamId}`, ErrorCode.FLOW_CONTROL_ERROR);
    }
    const total = stream.chunksSize + size;
    if (total > local.maxMessageSize) {
      throw new RemoteProtocolError(
        `message exceeds max message size (${local.maxMessageSize})`,
        ErrorCode.FRAME_SIZE_ERROR,
      );
    }
    stream.recvWindow -= size;
    if (flags & DataFlags.MORE) {
      stream.assembling = true;
      if (size) {
        stream.chunks.push(payload);
        stream.chunksSize = total;
      }
      if (!stream.held) {
        // Credit the chunk back at once, or a message larger than the window could
        // never complete.
        stream.assemblyCredited += size;
        this._returnCredit(stream, size);
      }
      return;
    }
    let message = payload;
    if (stream.chunks.length) {
      stream.chunks.push(payload);
      message = new Uint8Array(total);
      let offset = 0;
      for (const chunk of stream.chunks) {
        message.set(chunk, offset);
        offset += chunk.length;
      }
      stream.chunks = [];
    }
    stream.chunksSize = 0;
    stream.assembling = false;
    stream.held += total;
    stream.prepaid += stream.assemblyCredited;
    stream.assemblyCredited = 0;
    this.messagesReceived += 1;
    events.push({ type: "message", streamId, data: message, credit: total });
  }

  /**
   * @param {number} streamId
   * @param {Uint8Array} payload
   * @param {ConnectionEvent[]} events
   */
  _onEnd(streamId, payload, events) {
    const status = decodeStatus(payload);
    const stream = this._lookup(streamId, "END");
    if (stream === undefined) return;
    if (!stream.remoteOpen) throw new RemoteProtocolError(`END twice on stream ${streamId}`, ErrorCode.PROTOCOL_ERROR);
    if (stream.assembling) {
      throw new RemoteProtocolError(`END inside a message on stream ${streamId}`, ErrorCode.PROTOCOL_ERROR);
    }
    stream.remoteOpen = false;
    events.push({ type: "ended", streamId, status });
    this._maybeForget(stream);
  }

  /**
   * @param {number} streamId
   * @param {Uint8Array} payload
   * @param {ConnectionEvent[]} events
   */
  _onReset(streamId, payload, events) {
    const status = decodeStatus(payload);
    const stream = this._lookup(streamId, "RESET");
    if (stream === undefined) return;
    this._forget(stream);
    events.push({ type: "reset", streamId, status });
  }

  /**
   * @param {number} streamId
   * @param {Uint8Array} payload
   * @param {ConnectionEvent[]} events
   */
  _onWindow(streamId, payload, events) {
    const increment = decodeU32(payload, "WINDOW");
    if (increment === 0) throw new RemoteProtocolError("WINDOW increment of 0", ErrorCode.PROTOCOL_ERROR);
    if (streamId === 0) {
      this._sendWindow += increment;
      if (this._sendWindow > MAX_WINDOW) {
        throw new RemoteProtocolError("connection window overflow", ErrorCode.FLOW_CONTROL_ERROR);
      }
      events.push({ type: "window", streamId: 0 });
      return;
    }
    const stream = this._lookup(streamId, "WINDOW");
    if (stream === undefined) return;
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) {
      throw new RemoteProtocolError("stream window overflow", ErrorCode.FLOW_CONTROL_ERROR);
    }
    events.push({ type: "window", streamId });
  }

  /**
   * @param {number} streamId
   * @param {Uint8Array} payload
   * @param {ConnectionEvent[]} events
   */
  _onGoaway(streamId, payload, events) {
    if (streamId) throw new RemoteProtocolError("GOAWAY on a stream", ErrorCode.PROTOCOL_ERROR);
    const { lastStreamId, code, message } = decodeGoaway(payload);
    this.peerGoaway = { lastStreamId, code };
    if (code !== ErrorCode.OK || !this.handshakeDone) {
      this.closed = true;
      events.push({ type: "terminated", code, message: message || codeName(code) });
      return;
    }
    events.push({ type: "goaway", lastStreamId, code, message });
    // Our streams the peer will never process are refused now.
    const refused = { code: ErrorCode.REFUSED_STREAM, kind: "", message: "peer is going away" };
    for (const stream of [...this._streams.values()]) {
      const id = stream.streamId;
      if (!this._isPeerId(id) && id > lastStreamId) {
        this._forget(stream);
        events.push({ type: "reset", streamId: id, status: refused });
      }
    }
  }

  // ----------------------------------------------------------------- upkeep

  /** @param {StreamState} stream */
  _maybeForget(stream) {
    if (!stream.localOpen && !stream.remoteOpen) this._forget(stream);
  }

  /** @param {StreamState} stream */
  _forget(stream) {
    if (!this._streams.delete(stream.streamId)) return;
    if (this._isPeerId(stream.streamId)) this._peerOpenCount -= 1;
    else this._localOpenCount -= 1;
  }
}

export { ACCEPTOR_NONCE, DIALER_NONCE };
