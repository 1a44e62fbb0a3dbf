/** @param {Uint8Array} bytes */
export function lenientText(bytes: Uint8Array): string;
/** @param {string} text */
export function utf8(text: string): Uint8Array<ArrayBuffer>;
/**
 * Join byte arrays into one.
 * @param {readonly Uint8Array[]} parts
 * @returns {Uint8Array}
 */
export function concat(parts: readonly Uint8Array[]): Uint8Array;
/**
 * The 10-byte header of a frame.
 * @param {number} length
 * @param {number} type
 * @param {number} flags
 * @param {number} streamId
 * @returns {Uint8Array}
 */
export function encodeHeader(length: number, type: number, flags: number, streamId: number): Uint8Array;
/**
 * A whole frame (header and payload) in one array.
 * @param {number} type
 * @param {number} flags
 * @param {number} streamId
 * @param {Uint8Array} [payload]
 * @returns {Uint8Array}
 */
export function encodeFrame(type: number, flags: number, streamId: number, payload?: Uint8Array): Uint8Array;
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
export function encodeHello({ nonce, settings, fields, version }: {
    nonce: bigint;
    settings: Iterable<[number, number | bigint]>;
    fields?: Iterable<[number, Uint8Array<ArrayBufferLike>]> | undefined;
    version?: number | undefined;
}): Uint8Array;
/**
 * Decode a HELLO payload. The version is checked right after the magic, before the
 * rest is parsed, so an older peer gets VERSION_MISMATCH rather than a length error.
 * @param {Uint8Array} payload
 * @returns {Hello}
 */
export function decodeHello(payload: Uint8Array): Hello;
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
export function encodeOpen(parent: number, service: string, routeKey: Uint8Array, header: Uint8Array): Uint8Array;
/**
 * @param {Uint8Array} payload
 * @returns {Open}
 */
export function decodeOpen(payload: Uint8Array): Open;
/**
 * The payload of END and RESET frames (an OK status with no texts is empty).
 * @param {import("./errors.js").Status} status
 * @returns {Uint8Array}
 */
export function encodeStatus(status: import("./errors.js").Status): Uint8Array;
/**
 * Parse an END or RESET payload (empty means OK); texts are decoded leniently.
 * @param {Uint8Array} payload
 * @returns {import("./errors.js").Status}
 */
export function decodeStatus(payload: Uint8Array): import("./errors.js").Status;
/**
 * @param {number} lastStreamId
 * @param {number} code
 * @param {string} message
 * @returns {Uint8Array}
 */
export function encodeGoaway(lastStreamId: number, code: number, message: string): Uint8Array;
/**
 * @param {Uint8Array} payload
 * @returns {{lastStreamId: number, code: number, message: string}}
 */
export function decodeGoaway(payload: Uint8Array): {
    lastStreamId: number;
    code: number;
    message: string;
};
/** @param {number} value */
export function encodeU32(value: number): Uint8Array<ArrayBuffer>;
/**
 * A payload that must be exactly one u32 (WINDOW).
 * @param {Uint8Array} payload
 * @param {string} what
 */
export function decodeU32(payload: Uint8Array, what: string): number;
/**
 * @param {Uint8Array} payload
 * @returns {string}
 */
export function decodeServiceName(payload: Uint8Array): string;
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
export function encodeRequest({ body, timeout, tags }: {
    body: Uint8Array;
    timeout?: number | null;
    tags?: Record<string, string>;
}): Uint8Array;
/**
 * Parse a master stream's OPEN header. Throws RemoteProtocolError with
 * PROTOCOL_ERROR (malformed) or VERSION_MISMATCH (another envelope version).
 * @param {Uint8Array} header
 * @returns {Request}
 */
export function decodeRequest(header: Uint8Array): Request;
/**
 * The source window a request asks for, or null; a protocol error if malformed.
 * @param {Request} request
 * @returns {number | null}
 */
export function sourceWindowOf(request: Request): number | null;
/** @param {number} count sources accepted since the last credit */
export function encodeCredit(count: number): Uint8Array<ArrayBuffer>;
/** @param {Uint8Array} message */
export function decodeCredit(message: Uint8Array): number;
export const HEADER_SIZE: 10;
export const MAGIC: Uint8Array<ArrayBuffer>;
export const PROTOCOL_VERSION: 2;
/** A HELLO frame larger than this is refused before the peer's limits are known. */
export const MAX_HELLO_SIZE: 4096;
/** The role nonce of a side that dialed: the larger nonce takes the odd stream ids. */
export const DIALER_NONCE: bigint;
/** The role nonce of a side that accepted. */
export const ACCEPTOR_NONCE: 0n;
/** An OPEN carries besides its header: parent (4), name length (2), the longest name
 * (65535), route key length (2) and the longest route key (65535). */
export const OPEN_ALLOWANCE: number;
/** The type byte of a frame. */
export const FrameType: Readonly<{
    HELLO: 0;
    OPEN: 1;
    DATA: 2;
    END: 3;
    RESET: 4;
    WINDOW: 5;
    PING: 6;
    GOAWAY: 7;
    SERVICE: 8;
}>;
/** OPEN flags: which halves of the new stream start closed. */
export const OpenFlags: Readonly<{
    NO_SEND: 1;
    NO_REPLY: 2;
}>;
/** DATA flags. */
export const DataFlags: Readonly<{
    MORE: 1;
    COMPRESSED: 2;
}>;
/** PING flags. */
export const PingFlags: Readonly<{
    ACK: 1;
}>;
/** SERVICE flags. */
export const ServiceFlags: Readonly<{
    REMOVE: 1;
    RELAYED: 2;
}>;
/** Setting ids carried in HELLO. Unknown ids are ignored by receivers. */
export const Setting: Readonly<{
    INITIAL_STREAM_WINDOW: 1;
    CONNECTION_WINDOW: 2;
    MAX_FRAME_PAYLOAD: 3;
    MAX_MESSAGE_SIZE: 4;
    MAX_OPEN_PAYLOAD: 5;
    MAX_CONCURRENT_STREAMS: 6;
    COMPRESSION: 7;
}>;
/** Field ids carried in HELLO after the settings. Unknown ids are ignored. */
export const HelloField: Readonly<{
    CREDENTIAL: 1;
    RESUME_TOKEN: 2;
}>;
/** @type {import("./errors.js").Status} */
export const OK: import("./errors.js").Status;
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
    constructor(maxPayload: number);
    /** @type {number} */
    maxPayload: number;
    /** @type {Uint8Array[]} */
    _chunks: Uint8Array[];
    _offset: number;
    _buffered: number;
    /** @type {{length: number, type: number, flags: number, streamId: number} | null} */
    _header: {
        length: number;
        type: number;
        flags: number;
        streamId: number;
    } | null;
    /** Bytes received but not yet returned as frames. */
    get buffered(): number;
    /** @param {Uint8Array} data */
    feed(data: Uint8Array): void;
    /**
     * Remove `n` buffered bytes (n <= buffered) and return them in an array of their own.
     * @param {number} n
     * @returns {Uint8Array}
     */
    _take(n: number): Uint8Array;
    /** @param {number} n bytes of _chunks[0] consumed */
    _advance(n: number): void;
    /**
     * The next complete frame, or null when more bytes are needed. Throws
     * RemoteProtocolError (FRAME_SIZE_ERROR) on a length above `maxPayload`.
     * @returns {Frame | null}
     */
    next(): Frame | null;
}
/** A reserved tag: the client lets the server announce at most this many sources
 * ahead of those it took, and grants more with 4-byte credit messages. */
export const SOURCE_WINDOW_TAG: "chanserv.source_window";
export const ENVELOPE_VERSION: 1;
export const NO_DEADLINE: bigint;
/**
 * A HELLO payload, decoded.
 */
export type Hello = {
    /**
     * the protocol version the sender speaks
     */
    version: number;
    /**
     * the sender's role nonce
     */
    nonce: bigint;
    /**
     * setting id -> value (unknown ids kept)
     */
    settings: Map<number, bigint>;
    /**
     * field id -> bytes (unknown ids kept)
     */
    fields: Map<number, Uint8Array>;
};
/**
 * An OPEN payload, decoded.
 */
export type Open = {
    /**
     * 0 for a top-level stream
     */
    parent: number;
    /**
     * the service name ("" for child streams)
     */
    service: string;
    /**
     * opaque; empty for none
     */
    routeKey: Uint8Array;
    /**
     * opaque header bytes
     */
    header: Uint8Array;
};
/**
 * A decoded request envelope.
 */
export type Request = {
    /**
     * the request body
     */
    body: Uint8Array;
    /**
     * seconds the client is willing to wait, or null
     */
    timeout: number | null;
    /**
     * routing and user tags
     */
    tags: Record<string, string>;
};
/**
 * One decoded frame.
 */
export type Frame = {
    /**
     * the frame type (unknown types are the caller's to judge)
     */
    type: number;
    /**
     * flag bits, interpreted per type
     */
    flags: number;
    /**
     * 0 for connection-wide frames
     */
    streamId: number;
    /**
     * the payload bytes (owned: never a view of input)
     */
    payload: Uint8Array;
};
