/**
 * Settings with defaults filled in; a RangeError for a value the protocol forbids.
 * @param {Partial<Settings>} [given]
 * @returns {Settings}
 */
export function makeSettings(given?: Partial<Settings>): Settings;
/**
 * The settings as HELLO carries them (COMPRESSION only when asked for).
 * @param {Settings} settings
 * @returns {Array<[number, number]>}
 */
export function settingsToWire(settings: Settings): Array<[number, number]>;
/**
 * Settings from a HELLO: missing ids take their defaults, unknown ids are ignored,
 * the last of a repeated id wins; a value out of range is a protocol error.
 * @param {Map<number, bigint>} values
 * @returns {Settings}
 */
export function settingsFromWire(values: Map<number, bigint>): Settings;
/**
 * A random role nonce in [1, 2**64 - 2], for a side that neither dialed nor accepted.
 * @returns {bigint}
 */
export function randomNonce(): bigint;
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
export const DEFAULT_SETTINGS: Readonly<Settings>;
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
    constructor({ settings, nonce, credential }?: {
        settings?: Partial<Settings> | undefined;
        nonce?: bigint | undefined;
        credential?: Uint8Array<ArrayBufferLike> | null | undefined;
    });
    localSettings: Settings;
    /** @type {Settings} the peer's settings; defaults until its HELLO arrives */
    peerSettings: Settings;
    nonce: bigint;
    /** @type {bigint | null} */
    peerNonce: bigint | null;
    handshakeDone: boolean;
    closed: boolean;
    version: number;
    compressing: boolean;
    /** True once we know we take the odd stream ids (after the peer's HELLO). */
    odd: boolean;
    _decoder: FrameDecoder;
    /** @type {Map<number, StreamState>} */
    _streams: Map<number, StreamState>;
    _nextLocalId: number;
    _highestPeerId: number;
    _localOpenCount: number;
    _peerOpenCount: number;
    _sendWindow: number;
    _recvWindow: number;
    _pendingConnCredit: number;
    /** @type {Uint8Array[]} */
    _outgoing: Uint8Array[];
    _outgoingSize: number;
    /** @type {{lastStreamId: number, code: number} | null} the peer sent GOAWAY */
    peerGoaway: {
        lastStreamId: number;
        code: number;
    } | null;
    /** We sent GOAWAY. */
    localGoaway: boolean;
    bytesReceived: number;
    bytesSent: number;
    messagesReceived: number;
    messagesSent: number;
    /** Streams not yet closed in both directions. */
    get openStreamCount(): number;
    /** Bytes queued for writing. */
    get outgoingSize(): number;
    /** Whether the peer's concurrency limit (and its GOAWAY) allows another stream now. */
    canOpenStream(): boolean;
    /** @param {number} streamId whether the stream is still known (not closed both ways) */
    isOpen(streamId: number): boolean;
    /** @param {number} streamId whether our half of the stream is open */
    canSend(streamId: number): boolean;
    /** @param {number} streamId bytes of DATA we may send on the stream right now */
    sendWindow(streamId: number): number;
    /** The connection-wide send credit left. */
    connectionSendWindow(): number;
    /** Bytes received into streams but not yet acknowledged by the application. */
    bufferedBytes(): number;
    /** Ids of every stream still open. */
    streamIds(): number[];
    /** Everything queued for the wire, in order; the queue is emptied. */
    takeOutgoing(): Uint8Array<ArrayBufferLike>[];
    /**
     * @param {number} type
     * @param {number} flags
     * @param {number} streamId
     * @param {Uint8Array} [payload]
     */
    _queue(type: number, flags: number, streamId: number, payload?: Uint8Array): void;
    /** The largest payload the peer is sure to accept for a control frame. */
    _peerFrameLimit(): number;
    /**
     * An END or RESET payload, with texts cut so that the peer accepts the frame.
     * @param {import("./errors.js").Status} status
     */
    _statusPayload(status: import("./errors.js").Status): Uint8Array<ArrayBufferLike>;
    _checkUsable(): void;
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
    openStream(service: string, header: Uint8Array, { parent, routeKey, localOpen, remoteOpen }?: {
        parent?: number | undefined;
        routeKey?: Uint8Array<ArrayBufferLike> | undefined;
        localOpen?: boolean | undefined;
        remoteOpen?: boolean | undefined;
    }): number;
    /**
     * Queue one DATA frame; `more` says the message continues in the next one.
     * `data.length` must fit sendWindow() and the peer's max frame payload.
     * @param {number} streamId
     * @param {Uint8Array} data
     * @param {boolean} [more]
     */
    sendData(streamId: number, data: Uint8Array, more?: boolean): void;
    /**
     * Queue `data` as one whole message in one DATA frame if the windows and the peer's
     * frame limit allow it now; return false (queueing nothing) otherwise.
     * @param {number} streamId
     * @param {Uint8Array} data
     */
    trySendMessage(streamId: number, data: Uint8Array): boolean;
    /**
     * A DATA frame, compressed when the link agreed to it and it pays. Large payloads
     * are queued as they are, after their header, without a copy.
     * @param {number} streamId
     * @param {Uint8Array} data
     * @param {number} flags
     */
    _queueData(streamId: number, data: Uint8Array, flags: number): void;
    /**
     * Close our half of the stream with a status (OK or an error).
     * @param {number} streamId
     * @param {import("./errors.js").Status} [status]
     */
    endStream(streamId: number, status?: import("./errors.js").Status): void;
    /**
     * Abort the stream both ways. Returns false (and sends nothing) if already gone.
     * @param {number} streamId
     * @param {import("./errors.js").Status} status
     */
    resetStream(streamId: number, status: import("./errors.js").Status): boolean;
    /**
     * The application consumed `credit` bytes of the stream's messages.
     * @param {number} streamId
     * @param {number} credit
     */
    acknowledge(streamId: number, credit: number): void;
    /**
     * Change how many bytes the peer may send ahead on one stream. A larger window is
     * granted at once; a smaller one takes effect as the application consumes.
     * @param {number} streamId
     * @param {number} window
     */
    setReceiveWindow(streamId: number, window: number): void;
    /**
     * @param {StreamState} stream
     * @param {number} credit
     */
    _returnCredit(stream: StreamState, credit: number): void;
    /**
     * Queue a PING; its echo comes back as a "pong" event.
     * @param {Uint8Array} payload 8 bytes
     */
    ping(payload: Uint8Array): void;
    /**
     * Tell the peer we offer (or no longer offer) a named service.
     * @param {string} name
     * @param {boolean} [available]
     * @param {boolean} [relayed] we offer it by relaying to another node
     */
    advertise(name: string, available?: boolean, relayed?: boolean): void;
    /**
     * Refuse new streams from the peer; with an error code, close the connection.
     * @param {number} [code]
     * @param {string} [message]
     */
    goAway(code?: number, message?: string): void;
    /**
     * Feed received bytes; an empty array means the byte stream ended. Returns the
     * events, in order. On a protocol violation a GOAWAY with the error code is queued,
     * the connection is marked closed and RemoteProtocolError is thrown.
     * @param {Uint8Array} data
     * @returns {ConnectionEvent[]}
     */
    receiveData(data: Uint8Array): ConnectionEvent[];
    /**
     * @param {number} type
     * @param {number} flags
     * @param {number} streamId
     * @param {Uint8Array} payload
     * @param {ConnectionEvent[]} events
     */
    _handleFrame(type: number, flags: number, streamId: number, payload: Uint8Array, events: ConnectionEvent[]): void;
    /**
     * @param {Uint8Array} payload
     * @param {ConnectionEvent[]} events
     */
    _onHello(payload: Uint8Array, events: ConnectionEvent[]): void;
    /** @param {number} streamId */
    _isPeerId(streamId: number): boolean;
    /** @param {number} streamId */
    _wasUsed(streamId: number): boolean;
    /**
     * The stream, or undefined for one that existed and closed; a protocol error for
     * one never opened.
     * @param {number} streamId
     * @param {string} what
     */
    _lookup(streamId: number, what: string): StreamState | undefined;
    /**
     * @param {number} streamId
     * @param {number} code
     * @param {string} message
     */
    _refuse(streamId: number, code: number, message: string): void;
    /**
     * @param {number} flags
     * @param {number} streamId
     * @param {Uint8Array} payload
     * @param {ConnectionEvent[]} events
     */
    _onOpen(flags: number, streamId: number, payload: Uint8Array, events: ConnectionEvent[]): void;
    /**
     * @param {number} flags
     * @param {number} streamId
     * @param {Uint8Array} payload
     * @param {ConnectionEvent[]} events
     */
    _onData(flags: number, streamId: number, payload: Uint8Array, events: ConnectionEvent[]): void;
    /**
     * @param {number} streamId
     * @param {Uint8Array} payload
     * @param {ConnectionEvent[]} events
     */
    _onEnd(streamId: number, payload: Uint8Array, events: ConnectionEvent[]): void;
    /**
     * @param {number} streamId
     * @param {Uint8Array} payload
     * @param {ConnectionEvent[]} events
     */
    _onReset(streamId: number, payload: Uint8Array, events: ConnectionEvent[]): void;
    /**
     * @param {number} streamId
     * @param {Uint8Array} payload
     * @param {ConnectionEvent[]} events
     */
    _onWindow(streamId: number, payload: Uint8Array, events: ConnectionEvent[]): void;
    /**
     * @param {number} streamId
     * @param {Uint8Array} payload
     * @param {ConnectionEvent[]} events
     */
    _onGoaway(streamId: number, payload: Uint8Array, events: ConnectionEvent[]): void;
    /** @param {StreamState} stream */
    _maybeForget(stream: StreamState): void;
    /** @param {StreamState} stream */
    _forget(stream: StreamState): void;
}
/**
 * Limits one side announces in HELLO and enforces on what
 *   it receives (the fields of the Python `Settings`, in camelCase).
 */
export type Settings = {
    /**
     * bytes of unconsumed messages the peer may
     * send ahead on one stream
     */
    initialStreamWindow: number;
    /**
     * bytes the peer may have in transit in all
     */
    connectionWindow: number;
    /**
     * largest DATA payload in one frame
     */
    maxFramePayload: number;
    /**
     * largest message, all chunks joined
     */
    maxMessageSize: number;
    /**
     * largest OPEN header
     */
    maxOpenPayload: number;
    /**
     * most streams the peer may have open towards us
     */
    maxConcurrentStreams: number;
    /**
     * ask for LZ4 compression of DATA payloads
     */
    compression: boolean;
};
/**
 * the peer's HELLO arrived and was accepted; streams may now be opened
 */
export type HandshakeCompleted = {
    type: "handshake";
    version: number;
    fields: Map<number, Uint8Array>;
};
/**
 * the peer opened a stream; `remoteOpen`: it may send on it, `localOpen`: we may
 */
export type StreamOpened = {
    type: "opened";
    streamId: number;
    parent: number;
    service: string;
    routeKey: Uint8Array;
    header: Uint8Array;
    remoteOpen: boolean;
    localOpen: boolean;
};
/**
 * a whole message arrived; give `credit` to acknowledge() once it is consumed
 */
export type MessageReceived = {
    type: "message";
    streamId: number;
    data: Uint8Array;
    credit: number;
};
/**
 * the peer finished its half of a stream
 */
export type StreamEnded = {
    type: "ended";
    streamId: number;
    status: import("./errors.js").Status;
};
/**
 * the stream was aborted both ways
 */
export type StreamReset = {
    type: "reset";
    streamId: number;
    status: import("./errors.js").Status;
};
/**
 * send credit grew on one stream, or on all (`streamId` 0)
 */
export type WindowOpened = {
    type: "window";
    streamId: number;
};
/**
 * the answer to one of our PINGs
 */
export type PingAcknowledged = {
    type: "pong";
    payload: Uint8Array;
};
/**
 * the peer offers (or withdraws) a named service
 */
export type ServiceAdvertised = {
    type: "service";
    name: string;
    available: boolean;
    relayed: boolean;
};
/**
 * the peer accepts no new streams (a graceful GOAWAY)
 */
export type GoAwayReceived = {
    type: "goaway";
    lastStreamId: number;
    code: number;
    message: string;
};
/**
 * the connection is over: GOAWAY with an error, or the byte stream ended
 */
export type ConnectionTerminated = {
    type: "terminated";
    code: number;
    message: string;
};
export type ConnectionEvent = HandshakeCompleted | StreamOpened | MessageReceived | StreamEnded | StreamReset | WindowOpened | PingAcknowledged | ServiceAdvertised | GoAwayReceived | ConnectionTerminated;
import { FrameDecoder } from "./codec.js";
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
declare class StreamState {
    /**
     * @param {number} streamId
     * @param {number} parent
     * @param {number} sendWindow
     * @param {number} recvWindow
     */
    constructor(streamId: number, parent: number, sendWindow: number, recvWindow: number);
    streamId: number;
    parent: number;
    /** We may still send DATA/END. */
    localOpen: boolean;
    /** The peer may still send DATA/END. */
    remoteOpen: boolean;
    sendWindow: number;
    recvWindow: number;
    /** Credit owed to the peer but not yet sent in a WINDOW frame. */
    pendingCredit: number;
    /** @type {Uint8Array[]} the non-empty chunks of the message in assembly */
    chunks: Uint8Array[];
    chunksSize: number;
    /** A DATA frame with MORE arrived and the message has not completed yet. */
    assembling: boolean;
    /** Bytes of `chunks` already credited back to the peer. */
    assemblyCredited: number;
    /** Bytes of whole messages handed to the application and not yet acknowledged. */
    held: number;
    /** Bytes of `held` already credited back while they were chunks. */
    prepaid: number;
    /** This stream's receive window (the link's initial one unless changed). */
    window: number;
    /** Credit still to be withheld because the window was made smaller. */
    debt: number;
}
import { ACCEPTOR_NONCE } from "./codec.js";
import { DIALER_NONCE } from "./codec.js";
export { ACCEPTOR_NONCE, DIALER_NONCE };
