/** @param {number} ms */
export function sleep(ms: number): Promise<any>;
/**
 * Let a timer not keep Node's event loop alive (a no-op in browsers).
 * @param {unknown} timer
 */
export function unrefTimer(timer: unknown): void;
/** @param {unknown} error */
export function describe(error: unknown): string;
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
    /** @type {Array<() => void>} */
    _list: Array<() => void>;
    /** @returns {Promise<void>} settles at the next wake() */
    wait(): Promise<void>;
    wake(): void;
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
    constructor(link: Link, streamId: number, service: string, header: Uint8Array, parent: number, routeKey: Uint8Array);
    link: Link;
    streamId: number;
    /** The service it was opened for ("" for a child stream). */
    service: string;
    header: Uint8Array<ArrayBufferLike>;
    parent: number;
    routeKey: Uint8Array<ArrayBufferLike>;
    /** Whether the peer may send data on it (from the OPEN flags). */
    remoteOpen: boolean;
    /** Whether we may send data on it. */
    localOpen: boolean;
    /** @type {import("./errors.js").Status | null} how the peer ended its half */
    remoteStatus: import("./errors.js").Status | null;
    /** @type {import("./errors.js").Status | null} the peer's RESET, once one came */
    resetStatus: import("./errors.js").Status | null;
    /** @type {Queue<{data: Uint8Array, credit: number}>} */
    _inbox: Queue<{
        data: Uint8Array;
        credit: number;
    }>;
    /** @type {Queue<LinkStream>} */
    _children: Queue<LinkStream>;
    /** @type {ChanservError | null} set when the stream can no longer be used */
    _error: ChanservError | null;
    /** @type {unknown} what a reader gets after we reset the stream ourselves */
    _localError: unknown;
    _closedLocally: boolean;
    _sending: boolean;
    _waiters: Waiters;
    /** @type {(() => void) | null} called once when the stream is finished */
    onFinished: (() => void) | null;
    _finished: boolean;
    /** True once the stream is closed both ways, reset, or broken. */
    get isFinished(): boolean;
    /**
     * Wait for something to change on this stream.
     * @returns {Promise<void>}
     */
    _changed(): Promise<void>;
    /**
     * Send one whole message, waiting for flow-control credit as needed. Resolves once
     * it is queued for the transport. A stream that breaks mid-message is reset.
     * @param {Uint8Array} data
     */
    send(data: Uint8Array): Promise<void>;
    _checkSendable(): void;
    /**
     * Close our sending half, telling the peer how it ended (OK or an error).
     * @param {import("./errors.js").Status} [status]
     */
    end(status?: import("./errors.js").Status): void;
    /**
     * Abort the stream in both directions; a no-op on the wire if it is already gone.
     * `localError` is what readers of this stream get from now on.
     * @param {number} [code]
     * @param {string} [message]
     * @param {string} [kind]
     * @param {unknown} [localError]
     */
    reset(code?: number, message?: string, kind?: string, localError?: unknown): void;
    /** @param {number} credit */
    _consumed(credit: number): void;
    /** Throw what a reader gets once nothing is left: null after a normal end. */
    _ended(): null | undefined;
    /**
     * The next message, or null once the peer ended its half normally; throws the error
     * the stream ended with otherwise.
     * @returns {Promise<Uint8Array | null>}
     */
    receive(): Promise<Uint8Array | null>;
    /**
     * The next child stream the peer opened under this one, or null once the peer ended
     * this stream normally (every child precedes its parent's END on the wire).
     * @returns {Promise<LinkStream | null>}
     */
    receiveChild(): Promise<LinkStream | null>;
    /** Child streams the peer announced and nobody took yet, removed from the queue. */
    _drainChildren(): LinkStream[];
    /**
     * Open a stream under this one (the peer receives it from receiveChild).
     * @param {Uint8Array} header
     * @param {{localOpen?: boolean, remoteOpen?: boolean}} [halves]
     */
    openChild(header: Uint8Array, { localOpen, remoteOpen }?: {
        localOpen?: boolean;
        remoteOpen?: boolean;
    }): Promise<LinkStream>;
    /**
     * Let the peer send at most `window` bytes ahead of what we consumed.
     * @param {number} window
     */
    setReceiveWindow(window: number): void;
    /** @param {ChanservError} error */
    _broken(error: ChanservError): void;
    _finish(): void;
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
    constructor(transport: Transport, { connection, remoteAddr, handlerFor, keepaliveInterval, keepaliveTimeout }?: {
        connection?: ConstructorParameters<typeof Connection>[0];
        remoteAddr?: string | undefined;
        handlerFor?: ((name: string) => StreamHandler | null) | undefined;
        keepaliveInterval?: number | null | undefined;
        keepaliveTimeout?: number | undefined;
    });
    transport: Transport;
    conn: Connection;
    remoteAddr: string;
    _handlerFor: (name: string) => StreamHandler | null;
    /** @type {Map<number, LinkStream>} */
    _streams: Map<number, LinkStream>;
    /** @type {Set<string>} services the peer currently offers */
    peerServices: Set<string>;
    /** @type {Set<string>} those it offers by relaying (it is a router) */
    peerRelayed: Set<string>;
    /** @type {ChanservError | null} why the link ended, once it has */
    error: ChanservError | null;
    windowStalls: number;
    /** @type {number | null} */
    rtt: number | null;
    /** @type {Map<string, number>} */
    _pings: Map<string, number>;
    _flushScheduled: boolean;
    _transportClosed: boolean;
    /** Wakes senders waiting for connection credit. */
    _windowWaiters: Waiters;
    /** Wakes whoever waits for room to open a stream, a service, or the link's end. */
    _linkWaiters: Waiters;
    _lastHeard: number;
    /** @type {ReturnType<typeof setInterval> | null} */
    _keepalive: ReturnType<typeof setInterval> | null;
    /** Settles once the handshake completed (or the link failed before that). */
    ready: Promise<any>;
    _resolveReady: (value: Link) => void;
    _rejectReady: (error: ChanservError) => void;
    /** Resolves with the error that ended the link. */
    closed: Promise<any>;
    _resolveClosed: (error: ChanservError) => void;
    get isAlive(): boolean;
    /** True once either side said GOAWAY: no new streams start on this link. */
    get goingAway(): boolean;
    /** @returns {LinkStatistics} */
    statistics(): LinkStatistics;
    _scheduleFlush(): void;
    _flush(): void;
    /** @param {Uint8Array} data */
    _send(data: Uint8Array): void;
    /** Wait while the transport holds more than QUEUE_LIMIT unsent bytes. */
    _queueRoom(): Promise<void>;
    /** @param {Uint8Array} bytes */
    _receive(bytes: Uint8Array): void;
    /** @param {string} message */
    _receiveEnd(message: string): void;
    /** @param {import("./connection.js").ConnectionEvent} event */
    _dispatch(event: import("./connection.js").ConnectionEvent): void;
    /** @param {import("./connection.js").StreamOpened} event */
    _onOpened(event: import("./connection.js").StreamOpened): void;
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
    openStream(service: string, header: Uint8Array, { parent, routeKey, localOpen, remoteOpen, check }?: {
        parent?: number | undefined;
        routeKey?: Uint8Array<ArrayBufferLike> | undefined;
        localOpen?: boolean | undefined;
        remoteOpen?: boolean | undefined;
        check?: (() => void) | undefined;
    }): Promise<LinkStream>;
    /** @param {LinkStream} stream */
    _maybeRelease(stream: LinkStream): void;
    /**
     * Forget a finished stream; its buffered messages stay readable.
     * @param {LinkStream} stream
     */
    _release(stream: LinkStream): void;
    /** Send a PING; `rtt` is updated when its answer arrives. */
    ping(): void;
    /**
     * @param {number} interval
     * @param {number} timeout
     */
    _tick(interval: number, timeout: number): void;
    /**
     * Tell the peer a service is offered here, or withdrawn.
     * @param {string} name
     * @param {boolean} available
     */
    advertise(name: string, available: boolean): void;
    /**
     * Say goodbye (GOAWAY with `code`), flush, and close the transport.
     * @param {number} [code]
     * @param {string} [message]
     */
    close(code?: number, message?: string): void;
    /** @param {ChanservError} error */
    _fail(error: ChanservError): void;
}
export { ChanservError };
/**
 * What a link runs over: a transport of binary messages. `start` is called once with
 * the sink the transport reports to; message boundaries carry no meaning (the decoder
 * takes bytes split anywhere).
 */
export type Transport = {
    start: (sink: TransportSink) => void;
    /**
     * queue one message
     */
    send: (data: Uint8Array) => void;
    close: (code?: number, reason?: string) => void;
    /**
     * bytes queued and not yet sent
     */
    bufferedAmount: number;
};
/**
 * What a link runs over: a transport of binary messages. `start` is called once with
 * the sink the transport reports to; message boundaries carry no meaning (the decoder
 * takes bytes split anywhere).
 */
export type TransportSink = {
    /**
     * a message arrived
     */
    data: (data: Uint8Array) => void;
    /**
     * the transport ended (or failed: `message` says why)
     */
    closed: (message: string) => void;
};
/**
 * runs for each top-level stream the peer opens to a service we offer
 */
export type StreamHandler = (stream: LinkStream) => Promise<void>;
/**
 * A snapshot of one link's counters.
 */
export type LinkStatistics = {
    /**
     * streams open (not yet closed both ways)
     */
    openStreams: number;
    /**
     * bytes received from the transport
     */
    bytesIn: number;
    /**
     * bytes handed to the transport
     */
    bytesOut: number;
    /**
     * whole messages received
     */
    messagesIn: number;
    /**
     * whole messages sent
     */
    messagesOut: number;
    /**
     * received bytes not yet consumed by the application
     */
    bytesBuffered: number;
    /**
     * bytes queued for the transport, not yet sent
     */
    bytesQueued: number;
    /**
     * times a sender had to wait for flow-control credit
     */
    windowStalls: number;
    /**
     * last round-trip time in milliseconds, or null
     */
    rtt: number | null;
};
/** A FIFO with O(1) shift. @template T */
declare class Queue<T> {
    /** @type {T[]} */
    _items: T[];
    _head: number;
    get length(): number;
    /** @param {T} item */
    push(item: T): void;
    /** @returns {T | undefined} */
    shift(): T | undefined;
    clear(): void;
}
import { ChanservError } from "./errors.js";
import { Connection } from "./connection.js";
