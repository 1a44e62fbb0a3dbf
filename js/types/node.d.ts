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
export function toBytes(value: unknown, what?: string): Uint8Array;
/**
 * Connect to the node listening at `url` (`ws://` or `wss://`) and complete the
 * handshake within `dialTimeout` ms.
 * @param {string} url
 * @param {NodeOptions} [options]
 * @returns {Promise<ChanservNode>}
 */
export function connect(url: string, options?: NodeOptions): Promise<ChanservNode>;
/**
 * Run a node over a transport you already have (tests, or a transport of your own).
 * `nonce` picks the role: the side with the larger nonce opens odd stream ids (a
 * dialer sends 2**64 - 1, an acceptor 0). Resolves once the handshake is done.
 * @param {import("./link.js").Transport} transport
 * @param {NodeOptions & {remoteAddr?: string, nonce?: bigint}} [options]
 * @returns {Promise<ChanservNode>}
 */
export function attach(transport: import("./link.js").Transport, options?: NodeOptions & {
    remoteAddr?: string;
    nonce?: bigint;
}): Promise<ChanservNode>;
/** One source announced by the server: a header and an async iterable of frames. */
export class Source {
    /**
     * @param {LinkStream} stream
     * @param {SourceMeta} meta
     */
    constructor(stream: LinkStream, meta: SourceMeta);
    _stream: LinkStream;
    /** The header the server announced the source with. */
    header: Uint8Array<ArrayBufferLike>;
    /** Where it came from. */
    meta: SourceMeta;
    /** @returns {Promise<IteratorResult<Uint8Array, undefined>>} */
    next(): Promise<IteratorResult<Uint8Array, undefined>>;
    /** @returns {Promise<IteratorResult<Uint8Array, undefined>>} */
    return(): Promise<IteratorResult<Uint8Array, undefined>>;
    /** Stop this source: the server's producer for it is cancelled; its siblings go on. */
    cancel(): void;
    /** The frames, in order, each exactly once; the iteration ends normally only when
     * the server finished the source on purpose, and throws a ChanservError otherwise.
     * Leaving it early cancels the source on the server. */
    [Symbol.asyncIterator](): this;
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
    constructor(node: ChanservNode, service: string, body: BytesLike, options: PostOptions);
    _node: ChanservNode;
    service: string;
    _body: Uint8Array<ArrayBufferLike>;
    _signal: AbortSignal | null;
    _deadline: number | null;
    _tags: {
        [x: string]: string;
    };
    _dialTimeout: number;
    _sourceBufferSize: number | null;
    _frameBufferSize: number | null;
    /** @type {LinkStream | null} */
    _master: LinkStream | null;
    /** @type {Promise<LinkStream> | null} */
    _starting: Promise<LinkStream> | null;
    /** @type {Set<Source>} sources taken and not finished */
    _sources: Set<Source>;
    _done: boolean;
    _iterating: boolean;
    /** @type {unknown} why we gave up, once we did */
    _localError: unknown;
    /** @type {ReturnType<typeof setTimeout> | null} */
    _timer: ReturnType<typeof setTimeout> | null;
    _onAbort: () => void;
    _owed: number;
    _creditBatch: number;
    /** @returns {Promise<IteratorResult<Source, undefined>>} */
    next(): Promise<IteratorResult<Source, undefined>>;
    /** @returns {Promise<IteratorResult<Source, undefined>>} */
    return(): Promise<IteratorResult<Source, undefined>>;
    /** Cancel the request: whatever still runs for it on the server stops. */
    cancel(): void;
    /** @returns {Promise<LinkStream>} */
    _start(): Promise<LinkStream>;
    /**
     * @param {LinkStream} master
     * @param {LinkStream} child
     */
    _accept(master: LinkStream, child: LinkStream): Source;
    _expire(): void;
    /**
     * Stop everything still open for the request, and make every reader throw `reason`.
     * @param {unknown} reason
     * @param {number} code
     * @param {string} message
     */
    _giveUp(reason: unknown, code: number, message: string): void;
    /** The sources iteration failed: sources announced and not taken can never be read. */
    _failed(): void;
    /** Drop the timer and the signal's listener once nothing of the request is open. */
    _settle(): void;
    [Symbol.asyncIterator](): this;
}
/** A node reached over one link: posts to the services it offers, and serves its own. */
export class ChanservNode {
    /**
     * @param {import("./link.js").Transport} transport
     * @param {NodeOptions & {remoteAddr?: string, nonce?: bigint}} options
     */
    constructor(transport: import("./link.js").Transport, options: NodeOptions & {
        remoteAddr?: string;
        nonce?: bigint;
    });
    dialTimeout: number;
    sourceBufferSize: number | null;
    frameBufferSize: number | null;
    /** @type {Map<string, SourceFunction>} */
    _services: Map<string, SourceFunction>;
    _link: Link;
    _transport: import("./link.js").Transport;
    /** Resolves with the error that ended the link (ConnectionLost after close()). */
    closed: Promise<any>;
    /** The node's address, as a URL. */
    get remoteAddr(): string;
    /** Services the node currently offers. */
    get services(): string[];
    /** Services this side serves. */
    get serving(): string[];
    /** False once the link closed or was lost. */
    get isAlive(): boolean;
    /** Counters of the link. */
    statistics(): import("./link.js").LinkStatistics;
    /** Send a PING; `statistics().rtt` is updated when its answer arrives. */
    ping(): void;
    /**
     * Post `body` to service `service`; iterate the result for the sources it announces.
     * Nothing is sent until the iteration starts. It waits up to `dialTimeout` for the
     * node to offer the service, then throws ServiceNotFound.
     * @param {string} service
     * @param {BytesLike} [body]
     * @param {PostOptions} [options]
     * @returns {SourceChannel}
     */
    post(service: string, body?: BytesLike, options?: PostOptions): SourceChannel;
    /**
     * Wait until the node offers `service`; ServiceNotFound at `until` (ms since epoch).
     * @param {string} service
     * @param {number} until
     * @param {() => void} check throws when the caller gave up
     */
    _waitForService(service: string, until: number, check: () => void): Promise<void>;
    /**
     * Serve `sourceFn` as service `name` to the node (and, through a router, to every
     * node linked to it). For each request, `sourceFn(body, context)` yields the
     * sources: `{header, frames}`, where frames is an async iterable (or iterable) of
     * byte arrays or strings. A throw in `sourceFn` or a frames iterable fails the
     * request or that source with RemoteError on the client.
     * @param {string} name
     * @param {SourceFunction} sourceFn
     */
    serve(name: string, sourceFn: SourceFunction): void;
    /**
     * Withdraw service `name`; requests already running carry on.
     * @param {string} name
     */
    stopServing(name: string): void;
    /**
     * @param {LinkStream} master
     * @param {SourceFunction} sourceFn
     */
    _serveRequest(master: LinkStream, sourceFn: SourceFunction): Promise<void>;
    /**
     * Read the client's source credits until it ends its half of the master stream.
     * @param {LinkStream} master
     * @param {{available: number, waiters: Array<() => void>}} credit
     */
    _collectCredits(master: LinkStream, credit: {
        available: number;
        waiters: Array<() => void>;
    }): Promise<void>;
    /**
     * Send one source's frames on its child stream, then END it.
     * @param {LinkStream} child
     * @param {AsyncIterable<BytesLike> | Iterable<BytesLike>} frames
     * @param {ServedRequest} served
     */
    _pump(child: LinkStream, frames: AsyncIterable<BytesLike> | Iterable<BytesLike>, served: ServedRequest): Promise<void>;
    /**
     * Say goodbye and close the connection. Requests in flight on it fail with
     * ConnectionLost.
     * @returns {Promise<void>}
     */
    close(): Promise<void>;
}
export { OK };
/**
 * Anything that can be sent as a body, header or frame: bytes, or text (sent as UTF-8).
 */
export type BytesLike = Uint8Array | ArrayBuffer | ArrayBufferView | string;
/**
 * Options of connect() (all optional).
 */
export type NodeOptions = {
    /**
     * ms to wait for the connection, and for a node
     * offering a service when posting (default 10000)
     */
    dialTimeout?: number | undefined;
    /**
     * presented to the node in the handshake
     */
    credential?: string | Uint8Array<ArrayBufferLike> | undefined;
    /**
     * ask for LZ4 compression of DATA (used when the
     * node asks too)
     */
    compression?: boolean | undefined;
    /**
     * the limits and
     * windows this side announces
     */
    settings?: Partial<import("./connection.js").Settings> | undefined;
    /**
     * ms between PINGs (null: off)
     */
    keepaliveInterval?: number | null | undefined;
    /**
     * ms of silence beyond the interval that mean
     * the node is lost (default 20000)
     */
    keepaliveTimeout?: number | undefined;
    /**
     * default for post(): how many sources
     * the server may announce ahead of the ones taken (null: no limit)
     */
    sourceBufferSize?: number | null | undefined;
    /**
     * default for post(): bytes each source
     * may buffer ahead of its reader (null: the link's stream window)
     */
    frameBufferSize?: number | null | undefined;
    /**
     * the WebSocket
     * class to use (default: the global one, else the `ws` package)
     */
    WebSocket?: import("./websocket.js").WebSocketConstructor | undefined;
};
/**
 * Options of post() (all optional).
 */
export type PostOptions = {
    /**
     * aborting it cancels the request on the server;
     * the iterations then throw `signal.reason`
     */
    signal?: AbortSignal | undefined;
    /**
     * when to give up (a Date, or ms since the epoch
     * as Date.now() counts); the time left travels with the request, so the server
     * stops then too
     */
    deadline?: number | Date | undefined;
    /**
     * routing and user tags; `bucket` picks the
     * node by consistent hashing of its value (the OPEN's route key)
     */
    tags?: Record<string, string> | undefined;
    /**
     * overrides the node's
     */
    dialTimeout?: number | undefined;
    /**
     * overrides the node's
     */
    sourceBufferSize?: number | null | undefined;
    /**
     * overrides the node's
     */
    frameBufferSize?: number | null | undefined;
};
/**
 * Where a source came from.
 */
export type SourceMeta = {
    /**
     * the node's address, as a URL
     */
    remoteAddr: string;
    /**
     * the service the request was posted to
     */
    service: string;
    /**
     * the source's stream id on its link
     */
    streamId: number;
};
/**
 * One source a served function announces.
 */
export type ServedSource = {
    /**
     * sent when the source is announced
     */
    header?: BytesLike | undefined;
    /**
     * sent in order
     */
    frames?: AsyncIterable<BytesLike> | Iterable<BytesLike> | undefined;
};
/**
 * What a served function learns besides the body.
 */
export type RequestContext = {
    /**
     * the request's tags
     */
    tags: Record<string, string>;
    /**
     * aborted when the client cancels, the deadline
     * passes or the link is lost
     */
    signal: AbortSignal;
    /**
     * ms since the epoch, or null for none
     */
    deadline: number | null;
    /**
     * the node the request came through
     */
    remoteAddr: string;
};
/**
 * A served function: called with each request's body, it yields the sources.
 */
export type SourceFunction = (body: Uint8Array, context: RequestContext) => AsyncIterable<ServedSource> | Iterable<ServedSource>;
import { LinkStream } from "./link.js";
import { Link } from "./link.js";
/** What is known of a served request while it runs. */
declare class ServedRequest {
    /**
     * @param {LinkStream} master
     * @param {number | null} deadline
     */
    constructor(master: LinkStream, deadline: number | null);
    master: LinkStream;
    deadline: number | null;
    controller: AbortController;
    /** @type {Set<LinkStream>} children still open */
    children: Set<LinkStream>;
    /** @type {Set<AbortController>} one per frames pump still running (so that a
     * thousand sources do not each listen on the request's signal) */
    pumps: Set<AbortController>;
    /** @type {ReturnType<typeof setTimeout> | null} */
    timer: ReturnType<typeof setTimeout> | null;
    /**
     * Stop the request's work; open children are reset with `code`.
     * @param {unknown} reason
     * @param {number} code
     * @param {string} message
     */
    stop(reason: unknown, code: number, message: string): void;
    clear(): void;
}
import { OK } from "./codec.js";
