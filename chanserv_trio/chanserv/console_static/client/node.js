// The chanserv client and server over one link: connect() to a node, post() a request
// to a service and iterate the sources it announces, each a stream of frames; serve()
// a service that nodes across a router can post to. The request envelope, source
// credits, statuses and deadlines are those of chanserv_trio's Client and Server
// (docs/protocol.md, section 15).

import {
  DIALER_NONCE,
  OK,
  SOURCE_WINDOW_TAG,
  decodeCredit,
  decodeRequest,
  encodeCredit,
  encodeRequest,
  sourceWindowOf,
  utf8,
} from "./codec.js";
import {
  ChanservError,
  ConnectionLost,
  DeadlineExceeded,
  ErrorCode,
  RemoteProtocolError,
  ServiceNotFound,
  StreamCancelled,
} from "./errors.js";
import { Link, LinkStream, describe, unrefTimer } from "./link.js";
import { openWebSocket } from "./websocket.js";

/**
 * Anything that can be sent as a body, header or frame: bytes, or text (sent as UTF-8).
 * @typedef {Uint8Array | ArrayBuffer | ArrayBufferView | string} BytesLike
 */

/**
 * @typedef {object} NodeOptions Options of connect() (all optional).
 * @property {number} [dialTimeout] ms to wait for the connection, and for a node
 *   offering a service when posting (default 10000)
 * @property {Uint8Array | string} [credential] presented to the node in the handshake
 * @property {boolean} [compression] ask for LZ4 compression of DATA (used when the
 *   node asks too)
 * @property {Partial<import("./connection.js").Settings>} [settings] the limits and
 *   windows this side announces
 * @property {number | null} [keepaliveInterval] ms between PINGs (null: off)
 * @property {number} [keepaliveTimeout] ms of silence beyond the interval that mean
 *   the node is lost (default 20000)
 * @property {number | null} [sourceBufferSize] default for post(): how many sources
 *   the server may announce ahead of the ones taken (null: no limit)
 * @property {number | null} [frameBufferSize] default for post(): bytes each source
 *   may buffer ahead of its reader (null: the link's stream window)
 * @property {import("./websocket.js").WebSocketConstructor} [WebSocket] the WebSocket
 *   class to use (default: the global one, else the `ws` package)
 */

/**
 * @typedef {object} PostOptions Options of post() (all optional).
 * @property {AbortSignal} [signal] aborting it cancels the request on the server;
 *   the iterations then throw `signal.reason`
 * @property {number | Date} [deadline] when to give up (a Date, or ms since the epoch
 *   as Date.now() counts); the time left travels with the request, so the server
 *   stops then too
 * @property {Record<string, string>} [tags] routing and user tags; `bucket` picks the
 *   node by consistent hashing of its value (the OPEN's route key)
 * @property {number} [dialTimeout] overrides the node's
 * @property {number | null} [sourceBufferSize] overrides the node's
 * @property {number | null} [frameBufferSize] overrides the node's
 */

/**
 * @typedef {object} SourceMeta Where a source came from.
 * @property {string} remoteAddr the node's address, as a URL
 * @property {string} service the service the request was posted to
 * @property {number} streamId the source's stream id on its link
 */

/**
 * @typedef {object} ServedSource One source a served function announces.
 * @property {BytesLike} [header] sent when the source is announced
 * @property {AsyncIterable<BytesLike> | Iterable<BytesLike>} [frames] sent in order
 */

/**
 * @typedef {object} RequestContext What a served function learns besides the body.
 * @property {Record<string, string>} tags the request's tags
 * @property {AbortSignal} signal aborted when the client cancels, the deadline
 *   passes or the link is lost
 * @property {number | null} deadline ms since the epoch, or null for none
 * @property {string} remoteAddr the node the request came through
 */

/**
 * A served function: called with each request's body, it yields the sources.
 * @typedef {(body: Uint8Array, context: RequestContext) => AsyncIterable<ServedSource> | Iterable<ServedSource>} SourceFunction
 */

/** @param {unknown} value @param {string} what @returns {Uint8Array} */
export function toBytes(value, what = "a frame") {
  if (value instanceof Uint8Array) return value;
  if (typeof value === "string") return utf8(value);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  const type = value === null ? "null" : typeof value === "object" ? value.constructor?.name ?? "object" : typeof value;
  throw new TypeError(`${what} must be a Uint8Array, ArrayBuffer, typed array or string, not ${type}`);
}

/**
 * @param {number | Date | undefined} deadline
 * @returns {number | null}
 */
function deadlineMs(deadline) {
  if (deadline === undefined || deadline === null) return null;
  const value = deadline instanceof Date ? deadline.getTime() : deadline;
  if (typeof value !== "number" || Number.isNaN(value)) throw new TypeError("deadline must be a Date or a number of ms since the epoch");
  return Number.isFinite(value) ? value : null;
}

/**
 * A promise for `ms` from now, and a way to let it go.
 * @param {number} ms
 */
function delay(ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const promise = new Promise((resolve) => {
    timer = setTimeout(resolve, Math.max(0, ms));
    unrefTimer(timer);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/** One source announced by the server: a header and an async iterable of frames. */
export class Source {
  /**
   * @param {LinkStream} stream
   * @param {SourceMeta} meta
   */
  constructor(stream, meta) {
    this._stream = stream;
    /** The header the server announced the source with. */
    this.header = stream.header;
    /** Where it came from. */
    this.meta = meta;
  }

  /** The frames, in order, each exactly once; the iteration ends normally only when
   * the server finished the source on purpose, and throws a ChanservError otherwise.
   * Leaving it early cancels the source on the server. */
  [Symbol.asyncIterator]() {
    return this;
  }

  /** @returns {Promise<IteratorResult<Uint8Array, undefined>>} */
  async next() {
    const frame = await this._stream.receive();
    if (frame === null) return { done: true, value: undefined };
    return { done: false, value: frame };
  }

  /** @returns {Promise<IteratorResult<Uint8Array, undefined>>} */
  async return() {
    this.cancel();
    return { done: true, value: undefined };
  }

  /** Stop this source: the server's producer for it is cancelled; its siblings go on. */
  cancel() {
    if (this._stream._closedLocally) return;
    this._stream.reset(
      ErrorCode.CANCEL,
      "source closed by the client",
      "",
      new StreamCancelled("source cancelled by the client", ErrorCode.CANCEL),
    );
  }
}

/**
 * The sources of one request, as they are announced: an async iterable that posts the
 * request when the iteration starts. Leaving the iteration early (break, return, an
 * exception in the loop's body), `cancel()`, aborting the signal or the deadline
 * cancel the request and every source still open on the server. When the iteration
 * ends normally or with the server's error, the sources already taken carry on.
 */
export class SourceChannel {
  /**
   * @param {ChanservNode} node
   * @param {string} service
   * @param {BytesLike} body
   * @param {PostOptions} options
   */
  constructor(node, service, body, options) {
    this._node = node;
    this.service = service;
    this._body = toBytes(body, "a request body");
    this._signal = options.signal ?? null;
    this._deadline = deadlineMs(options.deadline);
    this._tags = { ...(options.tags ?? {}) };
    this._dialTimeout = options.dialTimeout ?? node.dialTimeout;
    this._sourceBufferSize = options.sourceBufferSize === undefined ? node.sourceBufferSize : options.sourceBufferSize;
    this._frameBufferSize = options.frameBufferSize === undefined ? node.frameBufferSize : options.frameBufferSize;
    if (this._sourceBufferSize !== null && !(this._sourceBufferSize > 0 && this._sourceBufferSize < 2 ** 31)) {
      throw new RangeError("sourceBufferSize must be between 1 and 2**31 - 1");
    }
    /** @type {LinkStream | null} */
    this._master = null;
    /** @type {Promise<LinkStream> | null} */
    this._starting = null;
    /** @type {Set<Source>} sources taken and not finished */
    this._sources = new Set();
    this._done = false;
    this._iterating = false;
    /** @type {unknown} why we gave up, once we did */
    this._localError = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._timer = null;
    this._onAbort = () => this._giveUp(this._signal?.reason, ErrorCode.CANCEL, "request aborted by the client");
    this._owed = 0;
    this._creditBatch = this._sourceBufferSize === null ? 0 : Math.max(1, this._sourceBufferSize >> 1);
  }

  [Symbol.asyncIterator]() {
    if (this._iterating) throw new TypeError("the sources of a request can be iterated only once");
    this._iterating = true;
    return this;
  }

  /** @returns {Promise<IteratorResult<Source, undefined>>} */
  async next() {
    if (this._done) return { done: true, value: undefined };
    const master = this._master ?? (await (this._starting ??= this._start()));
    let child;
    try {
      child = await master.receiveChild();
    } catch (error) {
      this._failed();
      throw error;
    }
    if (child === null) {
      this._done = true;
      if (this._sourceBufferSize !== null) master.end(); // no credits are needed any more
      this._settle();
      return { done: true, value: undefined };
    }
    return { done: false, value: this._accept(master, child) };
  }

  /** @returns {Promise<IteratorResult<Source, undefined>>} */
  async return() {
    if (!this._done) this.cancel();
    return { done: true, value: undefined };
  }

  /** Cancel the request: whatever still runs for it on the server stops. */
  cancel() {
    this._giveUp(new StreamCancelled("request cancelled by the client", ErrorCode.CANCEL), ErrorCode.CANCEL, "request abandoned by the client");
  }

  /** @returns {Promise<LinkStream>} */
  async _start() {
    const node = this._node;
    const link = node._link;
    try {
      if (this._signal !== null) {
        if (this._signal.aborted) this._onAbort();
        else this._signal.addEventListener("abort", this._onAbort, { once: true });
      }
      if (this._deadline !== null) {
        this._timer = setTimeout(() => this._expire(), Math.max(0, this._deadline - Date.now()));
        unrefTimer(this._timer);
      }
      const check = () => {
        if (this._localError !== null) throw this._localError;
      };
      check();
      await node._waitForService(this.service, Date.now() + this._dialTimeout, check);
      /** @type {Record<string, string>} */
      const tags = { ...this._tags };
      if (this._sourceBufferSize !== null) tags[SOURCE_WINDOW_TAG] = String(this._sourceBufferSize);
      // Made once a node is found, so the time spent waiting for one counts.
      const timeout = this._deadline === null ? null : Math.max(0, this._deadline - Date.now()) / 1000;
      const header = encodeRequest({ body: this._body, timeout, tags });
      const bucket = this._tags.bucket;
      const master = await link.openStream(this.service, header, {
        routeKey: bucket === undefined ? undefined : utf8(bucket),
        localOpen: this._sourceBufferSize !== null,
        remoteOpen: true,
        check,
      });
      this._master = master;
      master.onFinished = () => this._settle();
      check();
      return master;
    } catch (error) {
      this._failed();
      throw error;
    }
  }

  /**
   * @param {LinkStream} master
   * @param {LinkStream} child
   */
  _accept(master, child) {
    if (this._frameBufferSize !== null) child.setReceiveWindow(this._frameBufferSize);
    const source = new Source(child, { remoteAddr: child.link.remoteAddr, service: this.service, streamId: child.streamId });
    this._sources.add(source);
    child.onFinished = () => {
      this._sources.delete(source);
      this._settle();
    };
    if (this._creditBatch) {
      this._owed += 1;
      if (this._owed >= this._creditBatch) {
        const owed = this._owed;
        this._owed = 0;
        // If the request is over, the next next() says how.
        master.send(encodeCredit(owed)).catch(() => {});
      }
    }
    return source;
  }

  _expire() {
    this._giveUp(new DeadlineExceeded("deadline exceeded on the client", ErrorCode.TIMEOUT), ErrorCode.TIMEOUT, "deadline exceeded on the client");
  }

  /**
   * Stop everything still open for the request, and make every reader throw `reason`.
   * @param {unknown} reason
   * @param {number} code
   * @param {string} message
   */
  _giveUp(reason, code, message) {
    if (this._localError !== null) return;
    this._localError = reason;
    const master = this._master;
    if (master !== null) {
      for (const child of master._drainChildren()) child.reset(code, message);
      master.reset(code, message, "", reason);
    }
    for (const source of [...this._sources]) source._stream.reset(code, message, "", reason);
    this._sources.clear();
    this._node._link._linkWaiters.wake(); // a post still waiting for a node stops waiting
    this._settle();
  }

  /** The sources iteration failed: sources announced and not taken can never be read. */
  _failed() {
    this._done = true;
    const master = this._master;
    if (master !== null) {
      for (const child of master._drainChildren()) child.reset(ErrorCode.CANCEL, "request failed before this source was taken");
    }
    this._settle();
  }

  /** Drop the timer and the signal's listener once nothing of the request is open. */
  _settle() {
    if (this._localError === null && (!this._done || this._sources.size)) return;
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    this._signal?.removeEventListener("abort", this._onAbort);
  }
}

/** What is known of a served request while it runs. */
class ServedRequest {
  /**
   * @param {LinkStream} master
   * @param {number | null} deadline
   */
  constructor(master, deadline) {
    this.master = master;
    this.deadline = deadline;
    this.controller = new AbortController();
    /** @type {Set<LinkStream>} children still open */
    this.children = new Set();
    /** @type {Set<AbortController>} one per frames pump still running (so that a
     * thousand sources do not each listen on the request's signal) */
    this.pumps = new Set();
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
  }

  /**
   * Stop the request's work; open children are reset with `code`.
   * @param {unknown} reason
   * @param {number} code
   * @param {string} message
   */
  stop(reason, code, message) {
    if (this.controller.signal.aborted) return;
    for (const child of [...this.children]) child.reset(code, message);
    this.children.clear();
    for (const pump of [...this.pumps]) pump.abort(reason);
    this.pumps.clear();
    this.controller.abort(reason);
    this.clear();
  }

  clear() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}

const ABORTED = Symbol("aborted");

/**
 * `promise`, or ABORTED as soon as `signal` is aborted.
 * @template T
 * @param {Promise<T>} promise
 * @param {AbortSignal} signal
 * @returns {Promise<T | typeof ABORTED>}
 */
function unlessAborted(promise, signal) {
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.resolve(ABORTED);
  }
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(ABORTED);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error) => {
        signal.removeEventListener("abort", onAbort);
        if (signal.aborted) resolve(ABORTED);
        else reject(error);
      },
    );
  });
}

/**
 * @param {AsyncIterable<any> | Iterable<any>} iterable
 * @returns {AsyncIterator<any> | Iterator<any>}
 */
function iteratorOf(iterable, what = "frames") {
  const it = /** @type {any} */ (iterable);
  if (it !== null && typeof it === "object" || typeof it === "function") {
    if (typeof it[Symbol.asyncIterator] === "function") return it[Symbol.asyncIterator]();
    if (typeof it[Symbol.iterator] === "function") return it[Symbol.iterator]();
  }
  throw new TypeError(`${what} must be an async iterable or an iterable`);
}

/** @param {AsyncIterator<any> | Iterator<any>} iterator */
function closeQuietly(iterator) {
  try {
    const result = iterator.return?.();
    if (result && typeof (/** @type {any} */ (result).then) === "function") /** @type {Promise<any>} */ (result).catch(() => {});
  } catch {
    // closing is best effort
  }
}

/** @param {unknown} error */
function applicationError(error) {
  if (error instanceof Error) return { code: ErrorCode.APPLICATION_ERROR, kind: error.name || "Error", message: error.message };
  return { code: ErrorCode.APPLICATION_ERROR, kind: "Error", message: String(error) };
}

/** A node reached over one link: posts to the services it offers, and serves its own. */
export class ChanservNode {
  /**
   * @param {import("./link.js").Transport} transport
   * @param {NodeOptions & {remoteAddr?: string, nonce?: bigint}} options
   */
  constructor(transport, options) {
    this.dialTimeout = options.dialTimeout ?? 10000;
    this.sourceBufferSize = options.sourceBufferSize ?? null;
    this.frameBufferSize = options.frameBufferSize ?? null;
    /** @type {Map<string, SourceFunction>} */
    this._services = new Map();
    const credential = options.credential === undefined ? null : toBytes(options.credential, "a credential");
    this._link = new Link(transport, {
      connection: {
        settings: { ...(options.settings ?? {}), ...(options.compression ? { compression: true } : {}) },
        nonce: options.nonce ?? DIALER_NONCE,
        credential,
      },
      remoteAddr: options.remoteAddr ?? "",
      handlerFor: (name) => {
        const fn = this._services.get(name);
        return fn === undefined ? null : (master) => this._serveRequest(master, fn);
      },
      keepaliveInterval: options.keepaliveInterval ?? null,
      keepaliveTimeout: options.keepaliveTimeout ?? 20000,
    });
    this._transport = transport;
    /** Resolves with the error that ended the link (ConnectionLost after close()). */
    this.closed = this._link.closed;
  }

  /** The node's address, as a URL. */
  get remoteAddr() {
    return this._link.remoteAddr;
  }

  /** Services the node currently offers. */
  get services() {
    return [...this._link.peerServices].sort();
  }

  /** Services this side serves. */
  get serving() {
    return [...this._services.keys()].sort();
  }

  /** False once the link closed or was lost. */
  get isAlive() {
    return this._link.isAlive;
  }

  /** Counters of the link. */
  statistics() {
    return this._link.statistics();
  }

  /** Send a PING; `statistics().rtt` is updated when its answer arrives. */
  ping() {
    this._link.ping();
  }

  /**
   * Post `body` to service `service`; iterate the result for the sources it announces.
   * Nothing is sent until the iteration starts. It waits up to `dialTimeout` for the
   * node to offer the service, then throws ServiceNotFound.
   * @param {string} service
   * @param {BytesLike} [body]
   * @param {PostOptions} [options]
   * @returns {SourceChannel}
   */
  post(service, body = new Uint8Array(0), options = {}) {
    return new SourceChannel(this, service, body, options);
  }

  /**
   * Wait until the node offers `service`; ServiceNotFound at `until` (ms since epoch).
   * @param {string} service
   * @param {number} until
   * @param {() => void} check throws when the caller gave up
   */
  async _waitForService(service, until, check) {
    const link = this._link;
    while (true) {
      if (link.error !== null) throw link.error;
      if (link.goingAway) throw new ConnectionLost("the node is going away and accepts no new requests");
      check();
      if (link.peerServices.has(service)) return;
      const left = until - Date.now();
      if (left <= 0) {
        throw new ServiceNotFound(`no linked node offers ${JSON.stringify(service)} (waited ${this.dialTimeout} ms)`);
      }
      const timer = delay(left);
      await Promise.race([link._linkWaiters.wait(), timer.promise]);
      timer.cancel();
    }
  }

  /**
   * Serve `sourceFn` as service `name` to the node (and, through a router, to every
   * node linked to it). For each request, `sourceFn(body, context)` yields the
   * sources: `{header, frames}`, where frames is an async iterable (or iterable) of
   * byte arrays or strings. A throw in `sourceFn` or a frames iterable fails the
   * request or that source with RemoteError on the client.
   * @param {string} name
   * @param {SourceFunction} sourceFn
   */
  serve(name, sourceFn) {
    if (!name) throw new TypeError("a service needs a name");
    if (this._services.has(name)) throw new Error(`service ${JSON.stringify(name)} is already served`);
    this._services.set(name, sourceFn);
    this._link.advertise(name, true);
  }

  /**
   * Withdraw service `name`; requests already running carry on.
   * @param {string} name
   */
  stopServing(name) {
    if (this._services.delete(name)) this._link.advertise(name, false);
  }

  /**
   * @param {LinkStream} master
   * @param {SourceFunction} sourceFn
   */
  async _serveRequest(master, sourceFn) {
    let request;
    let window;
    try {
      request = decodeRequest(master.header);
      window = sourceWindowOf(request);
    } catch (error) {
      if (!(error instanceof RemoteProtocolError)) throw error;
      master.reset(error.code, error.message);
      return;
    }
    const deadline = request.timeout === null ? null : Date.now() + request.timeout * 1000;
    const served = new ServedRequest(master, deadline);
    const signal = served.controller.signal;
    if (deadline !== null) {
      served.timer = setTimeout(() => {
        const message = "request deadline exceeded on the server";
        served.stop(new DeadlineExceeded(message, ErrorCode.TIMEOUT), ErrorCode.TIMEOUT, message);
        master.end({ code: ErrorCode.TIMEOUT, kind: "", message });
      }, deadline - Date.now());
      unrefTimer(served.timer);
    }
    master.onFinished = () => {
      if (master._error !== null) {
        served.stop(master._error, ErrorCode.CANCEL, "cancelled on the server");
      }
    };
    const credit = { available: window ?? Infinity, waiters: /** @type {Array<() => void>} */ ([]) };
    /** @type {Promise<void> | null} */
    const credits = window === null ? null : this._collectCredits(master, credit);
    /** @type {AsyncIterator<any> | Iterator<any> | null} */
    let iterator = null;
    try {
      iterator = iteratorOf(sourceFn(request.body, { tags: request.tags, signal, deadline, remoteAddr: this.remoteAddr }), "a source function's result");
      while (true) {
        const step = await unlessAborted(Promise.resolve(iterator.next()), signal);
        if (step === ABORTED) {
          closeQuietly(iterator);
          return;
        }
        if (step.done) break;
        const source = step.value;
        if (source === null || typeof source !== "object") {
          throw new TypeError(`a source function must yield {header, frames}, not ${source === null ? "null" : typeof source}`);
        }
        const header = toBytes(source.header ?? new Uint8Array(0), "a source header");
        while (credit.available <= 0) {
          const granted = await unlessAborted(new Promise((resolve) => credit.waiters.push(() => resolve(undefined))), signal);
          if (granted === ABORTED) {
            closeQuietly(iterator);
            return;
          }
        }
        credit.available -= 1;
        const child = await master.openChild(header);
        if (signal.aborted) {
          // Stopped while the source was being announced.
          child.reset(ErrorCode.CANCEL, "cancelled on the server");
          closeQuietly(iterator);
          return;
        }
        served.children.add(child);
        child.onFinished = () => served.children.delete(child);
        this._pump(child, source.frames ?? [], served);
      }
      master.end();
    } catch (error) {
      if (iterator !== null) closeQuietly(iterator);
      if (signal.aborted) return;
      if (error instanceof ChanservError && master.isFinished) {
        served.stop(error, ErrorCode.CANCEL, "cancelled on the server");
        return; // the master stream broke: nothing to tell
      }
      master.end(applicationError(error));
    }
    if (credits !== null) await credits;
    if (served.children.size === 0) served.clear();
    else {
      let open = served.children.size;
      for (const child of served.children) {
        const previous = child.onFinished;
        child.onFinished = () => {
          previous?.();
          if (--open === 0) served.clear();
        };
      }
    }
  }

  /**
   * Read the client's source credits until it ends its half of the master stream.
   * @param {LinkStream} master
   * @param {{available: number, waiters: Array<() => void>}} credit
   */
  async _collectCredits(master, credit) {
    while (true) {
      let message;
      try {
        message = await master.receive();
      } catch {
        return;
      }
      if (message === null) return;
      try {
        credit.available += decodeCredit(message);
      } catch (error) {
        const wire = /** @type {RemoteProtocolError} */ (error);
        master.reset(wire.code, wire.message);
        return;
      }
      const waiters = credit.waiters;
      credit.waiters = [];
      for (const wake of waiters) wake();
    }
  }

  /**
   * Send one source's frames on its child stream, then END it.
   * @param {LinkStream} child
   * @param {AsyncIterable<BytesLike> | Iterable<BytesLike>} frames
   * @param {ServedRequest} served
   */
  async _pump(child, frames, served) {
    /** @type {AsyncIterator<any> | Iterator<any> | null} */
    let iterator = null;
    const stopped = new AbortController();
    served.pumps.add(stopped);
    const previous = child.onFinished;
    child.onFinished = () => {
      previous?.();
      stopped.abort();
    };
    try {
      iterator = iteratorOf(frames);
      while (true) {
        const step = await unlessAborted(Promise.resolve(iterator.next()), stopped.signal);
        if (step === ABORTED) {
          closeQuietly(iterator);
          return;
        }
        if (step.done) break;
        await child.send(toBytes(step.value));
      }
      child.end();
    } catch (error) {
      if (iterator !== null) closeQuietly(iterator);
      if (child.isFinished) return; // the stream broke under us: the client knows
      child.end(applicationError(error));
    } finally {
      served.pumps.delete(stopped);
    }
  }

  /**
   * Say goodbye and close the connection. Requests in flight on it fail with
   * ConnectionLost.
   * @returns {Promise<void>}
   */
  async close() {
    this._link.close(ErrorCode.OK, "node closed by the client");
    const closing = /** @type {{closedPromise?: Promise<void>}} */ (this._transport).closedPromise;
    if (closing !== undefined) {
      const timer = delay(2000);
      await Promise.race([closing, timer.promise]);
      timer.cancel();
    }
  }
}

/**
 * Connect to the node listening at `url` (`ws://` or `wss://`) and complete the
 * handshake within `dialTimeout` ms.
 * @param {string} url
 * @param {NodeOptions} [options]
 * @returns {Promise<ChanservNode>}
 */
export async function connect(url, options = {}) {
  const timeout = options.dialTimeout ?? 10000;
  const started = Date.now();
  const transport = await openWebSocket(url, { timeout, WebSocket: options.WebSocket });
  const node = new ChanservNode(transport, { ...options, remoteAddr: url });
  const timer = delay(timeout - (Date.now() - started));
  try {
    const ready = await Promise.race([node._link.ready, timer.promise.then(() => null)]);
    if (ready === null) {
      const error = new ConnectionLost(`cannot connect to ${url}: no handshake within ${timeout} ms`);
      node._link._fail(error);
      throw error;
    }
  } finally {
    timer.cancel();
  }
  return node;
}

/**
 * Run a node over a transport you already have (tests, or a transport of your own).
 * `nonce` picks the role: the side with the larger nonce opens odd stream ids (a
 * dialer sends 2**64 - 1, an acceptor 0). Resolves once the handshake is done.
 * @param {import("./link.js").Transport} transport
 * @param {NodeOptions & {remoteAddr?: string, nonce?: bigint}} [options]
 * @returns {Promise<ChanservNode>}
 */
export async function attach(transport, options = {}) {
  const node = new ChanservNode(transport, options);
  await node._link.ready;
  return node;
}

export { OK };
