// The link: runs the sans-IO Connection over a transport of binary messages (a
// WebSocket, or an in-memory pair in tests). Every received message goes straight to
// the state machine and its events are dispatched without waiting on application
// code: messages go into per-stream inboxes bounded by the flow-control windows, a
// stream opened by the peer starts its service handler. Whatever the state machine
// queued is written in one batch per turn of the event loop, so small frames from
// many streams coalesce.
//
// A LinkStream is one multiplexed stream of whole messages: send / receive, end our
// half with a status, reset both halves. Waiting is done on Waiters that every change
// of the stream's state wakes; a waiter then looks at the state again, so aborting a
// wait is done by breaking the stream (which wakes it), never by racing promises.

import { OK, concat } from "./codec.js";
import { Connection } from "./connection.js";
import {
  ChanservError,
  ConnectionLost,
  ErrorCode,
  MessageTooLarge,
  RemoteProtocolError,
  errorFromGoaway,
  errorFromStatus,
} from "./errors.js";

/** Writes longer than this go out as several transport messages. */
const MAX_TRANSPORT_MESSAGE = 256 * 1024;
/** Senders wait while the transport holds more than this many unsent bytes. */
const QUEUE_LIMIT = 1 << 20;
const EMPTY = new Uint8Array(0);

/**
 * What a link runs over: a transport of binary messages. `start` is called once with
 * the sink the transport reports to; message boundaries carry no meaning (the decoder
 * takes bytes split anywhere).
 * @typedef {object} Transport
 * @property {(sink: TransportSink) => void} start
 * @property {(data: Uint8Array) => void} send queue one message
 * @property {(code?: number, reason?: string) => void} close
 * @property {number} bufferedAmount bytes queued and not yet sent
 *
 * @typedef {object} TransportSink
 * @property {(data: Uint8Array) => void} data a message arrived
 * @property {(message: string) => void} closed the transport ended (or failed: `message` says why)
 */

/** A set of waiting callers, all woken at once by any change. */
export class Waiters {
  constructor() {
    /** @type {Array<() => void>} */
    this._list = [];
  }

  /** @returns {Promise<void>} settles at the next wake() */
  wait() {
    return new Promise((resolve) => this._list.push(resolve));
  }

  wake() {
    const list = this._list;
    if (list.length === 0) return;
    this._list = [];
    for (const resolve of list) resolve();
  }
}

/** A FIFO with O(1) shift. @template T */
class Queue {
  constructor() {
    /** @type {T[]} */
    this._items = [];
    this._head = 0;
  }

  get length() {
    return this._items.length - this._head;
  }

  /** @param {T} item */
  push(item) {
    this._items.push(item);
  }

  /** @returns {T | undefined} */
  shift() {
    if (this._head === this._items.length) return undefined;
    const item = this._items[this._head];
    /** @type {any} */ (this._items)[this._head] = undefined;
    this._head += 1;
    if (this._head > 64 && this._head * 2 > this._items.length) {
      this._items = this._items.slice(this._head);
      this._head = 0;
    }
    return item;
  }

  clear() {
    this._items = [];
    this._head = 0;
  }
}

/** One multiplexed stream of whole messages on a Link. */
export class LinkStream {
  /**
   * @param {Link} link
   * @param {number} streamId
   * @param {string} service
   * @param {Uint8Array} header
   * @param {number} parent
   * @param {Uint8Array} routeKey
   */
  constructor(link, streamId, service, header, parent, routeKey) {
    this.link = link;
    this.streamId = streamId;
    /** The service it was opened for ("" for a child stream). */
    this.service = service;
    this.header = header;
    this.parent = parent;
    this.routeKey = routeKey;
    /** Whether the peer may send data on it (from the OPEN flags). */
    this.remoteOpen = true;
    /** Whether we may send data on it. */
    this.localOpen = true;
    /** @type {import("./errors.js").Status | null} how the peer ended its half */
    this.remoteStatus = null;
    /** @type {import("./errors.js").Status | null} the peer's RESET, once one came */
    this.resetStatus = null;
    /** @type {Queue<{data: Uint8Array, credit: number}>} */
    this._inbox = new Queue();
    /** @type {Queue<LinkStream>} */
    this._children = new Queue();
    /** @type {ChanservError | null} set when the stream can no longer be used */
    this._error = null;
    /** @type {unknown} what a reader gets after we reset the stream ourselves */
    this._localError = null;
    this._closedLocally = false;
    this._sending = false;
    this._waiters = new Waiters();
    /** @type {(() => void) | null} called once when the stream is finished */
    this.onFinished = null;
    this._finished = false;
  }

  /** True once the stream is closed both ways, reset, or broken. */
  get isFinished() {
    return this._error !== null || this._closedLocally || !this.link.conn.isOpen(this.streamId);
  }

  /**
   * Wait for something to change on this stream.
   * @returns {Promise<void>}
   */
  _changed() {
    return this._waiters.wait();
  }

  // ------------------------------------------------------------- sending

  /**
   * Send one whole message, waiting for flow-control credit as needed. Resolves once
   * it is queued for the transport. A stream that breaks mid-message is reset.
   * @param {Uint8Array} data
   */
  async send(data) {
    const link = this.link;
    const conn = link.conn;
    const size = data.length;
    const limit = conn.peerSettings.maxMessageSize;
    if (size > limit) throw new MessageTooLarge(`message of ${size} bytes exceeds the peer's limit of ${limit}`);
    if (this._sending) throw new Error("another send is in progress on this stream");
    this._checkSendable();
    this._sending = true;
    let offset = 0;
    try {
      await link._queueRoom();
      this._checkSendable();
      if (conn.trySendMessage(this.streamId, data)) {
        link._scheduleFlush();
        return;
      }
      const maxChunk = conn.peerSettings.maxFramePayload;
      while (true) {
        const n = Math.min(conn.sendWindow(this.streamId), size - offset, maxChunk);
        if (n > 0 || offset === size) {
          const more = offset + n < size;
          conn.sendData(this.streamId, data.subarray(offset, offset + n), more);
          link._scheduleFlush();
          offset += n;
          if (!more) return;
          if (link.transport.bufferedAmount >= QUEUE_LIMIT) {
            await link._queueRoom();
            this._checkSendable();
          }
          continue;
        }
        link.windowStalls += 1;
        if (conn.connectionSendWindow() === 0) await link._windowWaiters.wait();
        else await this._changed();
        this._checkSendable();
      }
    } catch (error) {
      if (offset > 0 && offset < size) this.reset(ErrorCode.CANCEL, "sender stopped in the middle of a message");
      throw error;
    } finally {
      this._sending = false;
    }
  }

  _checkSendable() {
    if (this._closedLocally) throw this._localError ?? new ConnectionLost("stream was closed");
    if (this._error !== null) throw this._error;
    if (!this.link.conn.canSend(this.streamId)) throw new ConnectionLost("this stream's sending half is closed");
  }

  /**
   * Close our sending half, telling the peer how it ended (OK or an error).
   * @param {import("./errors.js").Status} [status]
   */
  end(status = OK) {
    if (this._error !== null || this._closedLocally) return;
    const link = this.link;
    if (link.conn.canSend(this.streamId)) {
      link.conn.endStream(this.streamId, status);
      link._scheduleFlush();
    }
    link._maybeRelease(this);
  }

  /**
   * Abort the stream in both directions; a no-op on the wire if it is already gone.
   * `localError` is what readers of this stream get from now on.
   * @param {number} [code]
   * @param {string} [message]
   * @param {string} [kind]
   * @param {unknown} [localError]
   */
  reset(code = ErrorCode.CANCEL, message = "", kind = "", localError = null) {
    const link = this.link;
    if (!this._closedLocally) {
      this._closedLocally = true;
      this._localError = localError;
      this._inbox.clear();
    }
    if (link.conn.resetStream(this.streamId, { code, kind, message })) link._scheduleFlush();
    link._release(this);
    this._waiters.wake();
  }

  // ----------------------------------------------------------- receiving

  /** @param {number} credit */
  _consumed(credit) {
    const conn = this.link.conn;
    const before = conn.outgoingSize;
    conn.acknowledge(this.streamId, credit);
    if (conn.outgoingSize !== before) this.link._scheduleFlush();
  }

  /** Throw what a reader gets once nothing is left: null after a normal end. */
  _ended() {
    if (this._closedLocally) throw this._localError ?? new ConnectionLost("stream was closed");
    const status = this.remoteStatus;
    if (status !== null) {
      if (status.code === ErrorCode.OK) return null;
      throw errorFromStatus(status);
    }
    if (this._error !== null) throw this._error;
    return undefined;
  }

  /**
   * The next message, or null once the peer ended its half normally; throws the error
   * the stream ended with otherwise.
   * @returns {Promise<Uint8Array | null>}
   */
  async receive() {
    while (true) {
      if (!this._closedLocally) {
        const item = this._inbox.shift();
        if (item !== undefined) {
          this._consumed(item.credit);
          return item.data;
        }
      }
      const ended = this._ended();
      if (ended !== undefined) return ended;
      await this._changed();
    }
  }

  /**
   * The next child stream the peer opened under this one, or null once the peer ended
   * this stream normally (every child precedes its parent's END on the wire).
   * @returns {Promise<LinkStream | null>}
   */
  async receiveChild() {
    while (true) {
      const child = this._closedLocally ? undefined : this._children.shift();
      if (child !== undefined) return child;
      const ended = this._ended();
      if (ended !== undefined) return ended;
      if (!this.link.conn.isOpen(this.streamId)) return null;
      await this._changed();
    }
  }

  /** Child streams the peer announced and nobody took yet, removed from the queue. */
  _drainChildren() {
    /** @type {LinkStream[]} */
    const out = [];
    for (let child = this._children.shift(); child !== undefined; child = this._children.shift()) out.push(child);
    return out;
  }

  /**
   * Open a stream under this one (the peer receives it from receiveChild).
   * @param {Uint8Array} header
   * @param {{localOpen?: boolean, remoteOpen?: boolean}} [halves]
   */
  openChild(header, { localOpen = true, remoteOpen = false } = {}) {
    if (this._error !== null) return Promise.reject(this._error);
    return this.link.openStream("", header, { parent: this.streamId, localOpen, remoteOpen });
  }

  /**
   * Let the peer send at most `window` bytes ahead of what we consumed.
   * @param {number} window
   */
  setReceiveWindow(window) {
    const conn = this.link.conn;
    const before = conn.outgoingSize;
    conn.setReceiveWindow(this.streamId, window);
    if (conn.outgoingSize !== before) this.link._scheduleFlush();
  }

  // --------------------------------------------------- called by the link

  /** @param {ChanservError} error */
  _broken(error) {
    if (this._error === null) this._error = error;
    this._waiters.wake();
    this._finish();
  }

  _finish() {
    if (this._finished) return;
    this._finished = true;
    const callback = this.onFinished;
    this.onFinished = null;
    if (callback !== null) callback();
  }
}

/**
 * @typedef {(stream: LinkStream) => Promise<void>} StreamHandler
 *   runs for each top-level stream the peer opens to a service we offer
 */

/**
 * @typedef {object} LinkStatistics A snapshot of one link's counters.
 * @property {number} openStreams streams open (not yet closed both ways)
 * @property {number} bytesIn bytes received from the transport
 * @property {number} bytesOut bytes handed to the transport
 * @property {number} messagesIn whole messages received
 * @property {number} messagesOut whole messages sent
 * @property {number} bytesBuffered received bytes not yet consumed by the application
 * @property {number} bytesQueued bytes queued for the transport, not yet sent
 * @property {number} windowStalls times a sender had to wait for flow-control credit
 * @property {number | null} rtt last round-trip time in milliseconds, or null
 */

/** One connection to a node, running the protocol over a transport. */
export class Link {
  /**
   * @param {Transport} transport
   * @param {object} options
   * @param {ConstructorParameters<typeof Connection>[0]} [options.connection]
   * @param {string} [options.remoteAddr]
   * @param {(name: string) => StreamHandler | null} [options.handlerFor]
   * @param {number | null} [options.keepaliveInterval] ms between PINGs (null: off)
   * @param {number} [options.keepaliveTimeout] ms of silence beyond the interval that
   *   mean the peer is lost
   */
  constructor(transport, { connection, remoteAddr = "", handlerFor = () => null, keepaliveInterval = null, keepaliveTimeout = 20000 } = {}) {
    this.transport = transport;
    this.conn = new Connection(connection);
    this.remoteAddr = remoteAddr;
    this._handlerFor = handlerFor;
    /** @type {Map<number, LinkStream>} */
    this._streams = new Map();
    /** @type {Set<string>} services the peer currently offers */
    this.peerServices = new Set();
    /** @type {Set<string>} those it offers by relaying (it is a router) */
    this.peerRelayed = new Set();
    /** @type {ChanservError | null} why the link ended, once it has */
    this.error = null;
    this.windowStalls = 0;
    /** @type {number | null} */
    this.rtt = null;
    /** @type {Map<string, number>} */
    this._pings = new Map();
    this._flushScheduled = false;
    this._transportClosed = false;
    /** Wakes senders waiting for connection credit. */
    this._windowWaiters = new Waiters();
    /** Wakes whoever waits for room to open a stream, a service, or the link's end. */
    this._linkWaiters = new Waiters();
    this._lastHeard = Date.now();
    /** @type {ReturnType<typeof setInterval> | null} */
    this._keepalive = null;
    /** @type {(value: Link) => void} */
    let resolveReady = () => {};
    /** @type {(error: ChanservError) => void} */
    let rejectReady = () => {};
    /** Settles once the handshake completed (or the link failed before that). */
    this.ready = new Promise((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    this.ready.catch(() => {}); // the dialer reads it; nobody else need
    this._resolveReady = resolveReady;
    this._rejectReady = rejectReady;
    /** @type {(error: ChanservError) => void} */
    let resolveClosed = () => {};
    /** Resolves with the error that ended the link. */
    this.closed = new Promise((resolve) => {
      resolveClosed = resolve;
    });
    this._resolveClosed = resolveClosed;
    transport.start({
      data: (bytes) => this._receive(bytes),
      closed: (message) => this._receiveEnd(message),
    });
    this._scheduleFlush(); // our HELLO
    if (keepaliveInterval) {
      this._keepalive = setInterval(() => this._tick(keepaliveInterval, keepaliveTimeout), keepaliveInterval);
      unrefTimer(this._keepalive);
    }
  }

  get isAlive() {
    return this.error === null;
  }

  /** True once either side said GOAWAY: no new streams start on this link. */
  get goingAway() {
    return this.conn.peerGoaway !== null || this.conn.localGoaway;
  }

  /** @returns {LinkStatistics} */
  statistics() {
    const conn = this.conn;
    return {
      openStreams: conn.openStreamCount,
      bytesIn: conn.bytesReceived,
      bytesOut: conn.bytesSent,
      messagesIn: conn.messagesReceived,
      messagesOut: conn.messagesSent,
      bytesBuffered: conn.bufferedBytes(),
      bytesQueued: conn.outgoingSize + (this.transport.bufferedAmount || 0),
      windowStalls: this.windowStalls,
      rtt: this.rtt,
    };
  }

  // ------------------------------------------------------------- writing

  _scheduleFlush() {
    if (this._flushScheduled) return;
    this._flushScheduled = true;
    queueMicrotask(() => this._flush());
  }

  _flush() {
    this._flushScheduled = false;
    const chunks = this.conn.takeOutgoing();
    if (chunks.length === 0 || this._transportClosed) return;
    /** @type {Uint8Array[]} */
    let batch = [];
    let size = 0;
    const sendBatch = () => {
      if (batch.length) this._send(concat(batch));
      batch = [];
      size = 0;
    };
    for (const chunk of chunks) {
      if (chunk.length >= MAX_TRANSPORT_MESSAGE) {
        sendBatch();
        for (let start = 0; start < chunk.length; start += MAX_TRANSPORT_MESSAGE) {
          this._send(chunk.subarray(start, start + MAX_TRANSPORT_MESSAGE));
        }
        continue;
      }
      if (size + chunk.length > MAX_TRANSPORT_MESSAGE) sendBatch();
      batch.push(chunk);
      size += chunk.length;
    }
    sendBatch();
  }

  /** @param {Uint8Array} data */
  _send(data) {
    try {
      this.transport.send(data);
    } catch (error) {
      this._fail(new ConnectionLost(`sending failed: ${describe(error)}`));
    }
  }

  /** Wait while the transport holds more than QUEUE_LIMIT unsent bytes. */
  async _queueRoom() {
    while (this.error === null && (this.transport.bufferedAmount || 0) >= QUEUE_LIMIT) {
      await sleep(2);
    }
  }

  // ------------------------------------------------------------- reading

  /** @param {Uint8Array} bytes */
  _receive(bytes) {
    if (this.error !== null || bytes.length === 0) return;
    this._lastHeard = Date.now();
    let events;
    try {
      events = this.conn.receiveData(bytes);
    } catch (error) {
      if (error instanceof RemoteProtocolError) {
        this._flush(); // the GOAWAY the state machine queued
        this._fail(new RemoteProtocolError(`peer broke the protocol: ${error.message}`, error.code));
      } else {
        // A bug of ours: end the link rather than leave it in an unknown state.
        this.conn.goAway(ErrorCode.INTERNAL_ERROR, "internal error");
        this._flush();
        this._fail(new ConnectionLost(`internal error: ${describe(error)}`));
      }
      return;
    }
    for (const event of events) this._dispatch(event);
    if (this.conn.outgoingSize) this._scheduleFlush();
  }

  /** @param {string} message */
  _receiveEnd(message) {
    this._transportClosed = true;
    if (this.error !== null) return;
    this.conn.receiveData(EMPTY); // its only event says what `message` says better
    this._fail(new ConnectionLost(`connection closed by peer: ${message}`));
  }

  /** @param {import("./connection.js").ConnectionEvent} event */
  _dispatch(event) {
    switch (event.type) {
      case "message": {
        const stream = this._streams.get(event.streamId);
        if (stream === undefined || stream._closedLocally) {
          this.conn.acknowledge(event.streamId, event.credit);
          return;
        }
        stream._inbox.push({ data: event.data, credit: event.credit });
        stream._waiters.wake();
        return;
      }
      case "window": {
        if (event.streamId === 0) {
          this._windowWaiters.wake();
          return;
        }
        this._streams.get(event.streamId)?._waiters.wake();
        return;
      }
      case "opened":
        this._onOpened(event);
        return;
      case "ended": {
        const stream = this._streams.get(event.streamId);
        if (stream === undefined) return;
        stream.remoteStatus = event.status;
        stream._waiters.wake();
        this._maybeRelease(stream);
        return;
      }
      case "reset": {
        const stream = this._streams.get(event.streamId);
        if (stream === undefined) return;
        stream.resetStatus = event.status;
        if (stream.remoteStatus === null) stream.remoteStatus = event.status;
        stream._broken(errorFromStatus(event.status));
        this._release(stream);
        return;
      }
      case "service": {
        if (event.available) {
          this.peerServices.add(event.name);
          if (event.relayed) this.peerRelayed.add(event.name);
          else this.peerRelayed.delete(event.name);
        } else {
          this.peerServices.delete(event.name);
          this.peerRelayed.delete(event.name);
        }
        this._linkWaiters.wake();
        return;
      }
      case "pong": {
        const key = hex(event.payload);
        const sent = this._pings.get(key);
        if (sent !== undefined) {
          this._pings.delete(key);
          this.rtt = now() - sent;
        }
        return;
      }
      case "handshake":
        this._resolveReady(this);
        this._linkWaiters.wake();
        return;
      case "goaway":
        this._linkWaiters.wake();
        return;
      case "terminated":
        this._fail(errorFromGoaway(event.code, event.message));
        return;
    }
  }

  /** @param {import("./connection.js").StreamOpened} event */
  _onOpened(event) {
    const stream = new LinkStream(this, event.streamId, event.service, event.header, event.parent, event.routeKey);
    stream.remoteOpen = event.remoteOpen;
    stream.localOpen = event.localOpen;
    this._streams.set(event.streamId, stream);
    if (event.parent) {
      const parent = this._streams.get(event.parent);
      if (parent === undefined || parent._closedLocally) {
        stream.reset(ErrorCode.CANCEL, "parent stream closed");
        return;
      }
      parent._children.push(stream);
      parent._waiters.wake();
      return;
    }
    const handler = this._handlerFor(event.service);
    if (handler === null || this.conn.localGoaway) {
      stream.reset(ErrorCode.SERVICE_NOT_FOUND, `no service named ${JSON.stringify(event.service)} here`);
      return;
    }
    handler(stream).then(
      () => {
        stream.end();
        if (this.conn.isOpen(stream.streamId) && stream.remoteStatus === null) {
          // The handler is done; the peer may still be sending, which nobody will read.
          stream.reset(ErrorCode.CANCEL, "handler finished");
        }
      },
      (error) => stream.reset(ErrorCode.INTERNAL_ERROR, describe(error)),
    );
  }

  // ------------------------------------------------------------- streams

  /**
   * Open a stream to the peer, waiting while its concurrency limit is reached.
   * `until()` is asked after every wake-up whether the caller gave up (it throws).
   * @param {string} service
   * @param {Uint8Array} header
   * @param {object} [options]
   * @param {number} [options.parent]
   * @param {Uint8Array} [options.routeKey]
   * @param {boolean} [options.localOpen]
   * @param {boolean} [options.remoteOpen]
   * @param {() => void} [options.check] throws when the caller no longer wants the stream
   * @returns {Promise<LinkStream>}
   */
  async openStream(service, header, { parent = 0, routeKey = EMPTY, localOpen = true, remoteOpen = true, check = () => {} } = {}) {
    const conn = this.conn;
    const limit = conn.peerSettings.maxOpenPayload;
    if (header.length > limit) {
      throw new MessageTooLarge(`header of ${header.length} bytes exceeds the peer's limit of ${limit}`);
    }
    while (!conn.canOpenStream()) {
      if (this.error !== null) throw this.error;
      if (conn.peerGoaway !== null) throw new ConnectionLost("peer is going away and accepts no new streams");
      check();
      await this._linkWaiters.wait();
    }
    check();
    if (parent && !this._streams.has(parent)) throw new ConnectionLost("parent stream is closed");
    const streamId = conn.openStream(service, header, { parent, routeKey, localOpen, remoteOpen });
    const stream = new LinkStream(this, streamId, service, header, parent, routeKey);
    stream.localOpen = localOpen;
    stream.remoteOpen = remoteOpen;
    this._streams.set(streamId, stream);
    this._scheduleFlush();
    if (!localOpen && !remoteOpen) this._release(stream);
    return stream;
  }

  /** @param {LinkStream} stream */
  _maybeRelease(stream) {
    if (!this.conn.isOpen(stream.streamId)) this._release(stream);
  }

  /**
   * Forget a finished stream; its buffered messages stay readable.
   * @param {LinkStream} stream
   */
  _release(stream) {
    if (this._streams.get(stream.streamId) === stream) {
      this._streams.delete(stream.streamId);
      stream._waiters.wake();
      this._linkWaiters.wake();
    }
    stream._finish();
  }

  // ------------------------------------------------------------ lifetime

  /** Send a PING; `rtt` is updated when its answer arrives. */
  ping() {
    if (this.error !== null) return;
    const payload = new Uint8Array(8);
    globalThis.crypto.getRandomValues(payload);
    this._pings.set(hex(payload), now());
    this.conn.ping(payload);
    this._scheduleFlush();
  }

  /**
   * @param {number} interval
   * @param {number} timeout
   */
  _tick(interval, timeout) {
    const silent = Date.now() - this._lastHeard;
    if (silent >= interval + timeout) {
      this._fail(new ConnectionLost(`peer silent for ${(silent / 1000).toFixed(1)} s (keepalive)`));
      return;
    }
    this.ping();
  }

  /**
   * Tell the peer a service is offered here, or withdrawn.
   * @param {string} name
   * @param {boolean} available
   */
  advertise(name, available) {
    if (this.error !== null) return;
    this.conn.advertise(name, available);
    this._scheduleFlush();
  }

  /**
   * Say goodbye (GOAWAY with `code`), flush, and close the transport.
   * @param {number} [code]
   * @param {string} [message]
   */
  close(code = ErrorCode.OK, message = "link closed") {
    if (this.error !== null) return;
    this.conn.goAway(code, message);
    this._flush();
    this._fail(new ConnectionLost(message));
  }

  /** @param {ChanservError} error */
  _fail(error) {
    if (this.error !== null) return;
    this.error = error;
    this._rejectReady(error);
    if (this._keepalive !== null) clearInterval(this._keepalive);
    for (const stream of [...this._streams.values()]) stream._broken(error);
    this._streams.clear();
    this._windowWaiters.wake();
    this._linkWaiters.wake();
    if (!this._transportClosed) {
      this._transportClosed = true;
      try {
        this.transport.close(1000, "");
      } catch {
        // already closing
      }
    }
    this._resolveClosed(error);
  }
}

/** @param {Uint8Array} bytes */
function hex(bytes) {
  let out = "";
  for (const byte of bytes) out += byte.toString(16).padStart(2, "0");
  return out;
}

function now() {
  return globalThis.performance?.now() ?? Date.now();
}

/** @param {number} ms */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Let a timer not keep Node's event loop alive (a no-op in browsers).
 * @param {unknown} timer
 */
export function unrefTimer(timer) {
  const handle = /** @type {{unref?: () => void}} */ (timer);
  if (typeof handle === "object" && handle !== null && typeof handle.unref === "function") handle.unref();
}

/** @param {unknown} error */
export function describe(error) {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

export { ChanservError };
