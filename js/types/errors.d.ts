/**
 * `SHUTDOWN` for a known code, the number for an unknown one.
 * @param {number} code
 * @returns {string}
 */
export function codeName(code: number): string;
/**
 * @typedef {object} Status How a stream ended: the body of END and RESET frames.
 * @property {number} code an ErrorCode (OK for a normal end)
 * @property {string} kind for APPLICATION_ERROR the remote exception's type name
 * @property {string} message human-readable detail
 */
/**
 * The error a non-OK END or RESET status stands for.
 * @param {Status} status
 * @returns {ChanservError}
 */
export function errorFromStatus(status: Status): ChanservError;
/**
 * The error a GOAWAY (or the connection's end) with `code` gives every stream still open.
 * @param {number} code
 * @param {string} message
 * @returns {ChanservError}
 */
export function errorFromGoaway(code: number, message: string): ChanservError;
/** Codes carried by END, RESET and GOAWAY frames (docs/protocol.md, section 9). */
export const ErrorCode: Readonly<{
    OK: 0;
    PROTOCOL_ERROR: 1;
    INTERNAL_ERROR: 2;
    FLOW_CONTROL_ERROR: 3;
    FRAME_SIZE_ERROR: 4;
    REFUSED_STREAM: 5;
    CANCEL: 6;
    SERVICE_NOT_FOUND: 7;
    APPLICATION_ERROR: 8;
    TIMEOUT: 9;
    SHUTDOWN: 10;
    VERSION_MISMATCH: 11;
    ENHANCE_YOUR_CALM: 12;
    CONNECTION_LOST: 13;
    AUTHENTICATION_FAILED: 14;
    PERMISSION_DENIED: 15;
}>;
/** Base of every error chanserv-trio raises on purpose. */
export class ChanservError extends Error {
    /** @param {string} [message] */
    constructor(message?: string);
}
/** The link carrying the stream died; nothing more will arrive on it. */
export class ConnectionLost extends ChanservError {
}
/** The protocol was broken; `code` is the error code sent or received (1 = PROTOCOL_ERROR). */
export class ProtocolError extends ConnectionLost {
    /**
     * @param {string} message
     * @param {number} [code]
     */
    constructor(message: string, code?: number);
    /** @type {number} */
    code: number;
}
/** Our own side tried something the protocol forbids (a bug or misuse). */
export class LocalProtocolError extends ProtocolError {
}
/** The peer broke the protocol; `code` is what goes into GOAWAY. */
export class RemoteProtocolError extends ProtocolError {
}
/** The node we dialed refused our credential (GOAWAY AUTHENTICATION_FAILED). */
export class AuthenticationFailed extends ChanservError {
}
/** No node offered the named service in time (or the node no longer has it). */
export class ServiceNotFound extends ChanservError {
}
/** A message or header is larger than the receiving side accepts. */
export class MessageTooLarge extends ChanservError {
}
/** A stream ended with an error status from the other side. */
export class StreamError extends ChanservError {
    /**
     * @param {string} message
     * @param {number} code
     * @param {string} [kind]
     */
    constructor(message: string, code: number, kind?: string);
    /** @type {number} */
    code: number;
    /** @type {string} */
    kind: string;
}
/** The remote source function or frames iterable raised: `kind` is the remote
 * exception's type name, `message` its text. */
export class RemoteError extends StreamError {
    /**
     * @param {string} kind
     * @param {string} message
     */
    constructor(kind: string, message: string);
}
/** A deadline or one of the configured timeouts ended the stream. */
export class DeadlineExceeded extends StreamError {
}
/** The server is shutting down and ended the stream before it finished. */
export class ServerShuttingDown extends StreamError {
}
/** The other side cancelled the stream (it stopped wanting it). */
export class StreamCancelled extends StreamError {
}
/** The service refused the request (its `allow(identity)` said no). */
export class PermissionDenied extends StreamError {
}
/**
 * How a stream ended: the body of END and RESET frames.
 */
export type Status = {
    /**
     * an ErrorCode (OK for a normal end)
     */
    code: number;
    /**
     * for APPLICATION_ERROR the remote exception's type name
     */
    kind: string;
    /**
     * human-readable detail
     */
    message: string;
};
