// The errors chanserv-trio raises; all derive from ChanservError. The classes and what
// each stream status turns into are those of the Python package (docs/errors.md).
// This module imports nothing of the package, so every layer may import it.

/** Codes carried by END, RESET and GOAWAY frames (docs/protocol.md, section 9). */
export const ErrorCode = Object.freeze({
  OK: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  FRAME_SIZE_ERROR: 4,
  REFUSED_STREAM: 5,
  CANCEL: 6,
  SERVICE_NOT_FOUND: 7,
  APPLICATION_ERROR: 8,
  TIMEOUT: 9,
  SHUTDOWN: 10,
  VERSION_MISMATCH: 11,
  ENHANCE_YOUR_CALM: 12,
  CONNECTION_LOST: 13,
  AUTHENTICATION_FAILED: 14,
  PERMISSION_DENIED: 15,
});

/**
 * `SHUTDOWN` for a known code, the number for an unknown one.
 * @param {number} code
 * @returns {string}
 */
export function codeName(code) {
  for (const [name, value] of Object.entries(ErrorCode)) {
    if (value === code) return name;
  }
  return String(code);
}

/** Base of every error chanserv-trio raises on purpose. */
export class ChanservError extends Error {
  /** @param {string} [message] */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** The link carrying the stream died; nothing more will arrive on it. */
export class ConnectionLost extends ChanservError {}

/** The protocol was broken; `code` is the error code sent or received (1 = PROTOCOL_ERROR). */
export class ProtocolError extends ConnectionLost {
  /**
   * @param {string} message
   * @param {number} [code]
   */
  constructor(message, code = ErrorCode.PROTOCOL_ERROR) {
    super(message);
    /** @type {number} */
    this.code = code;
  }
}

/** Our own side tried something the protocol forbids (a bug or misuse). */
export class LocalProtocolError extends ProtocolError {}

/** The peer broke the protocol; `code` is what goes into GOAWAY. */
export class RemoteProtocolError extends ProtocolError {}

/** The node we dialed refused our credential (GOAWAY AUTHENTICATION_FAILED). */
export class AuthenticationFailed extends ChanservError {}

/** No node offered the named service in time (or the node no longer has it). */
export class ServiceNotFound extends ChanservError {}

/** A message or header is larger than the receiving side accepts. */
export class MessageTooLarge extends ChanservError {}

/** A stream ended with an error status from the other side. */
export class StreamError extends ChanservError {
  /**
   * @param {string} message
   * @param {number} code
   * @param {string} [kind]
   */
  constructor(message, code, kind = "") {
    super(message);
    /** @type {number} */
    this.code = code;
    /** @type {string} */
    this.kind = kind;
  }
}

/** The remote source function or frames iterable raised: `kind` is the remote
 * exception's type name, `message` its text. */
export class RemoteError extends StreamError {
  /**
   * @param {string} kind
   * @param {string} message
   */
  constructor(kind, message) {
    super(message, ErrorCode.APPLICATION_ERROR, kind);
  }

  toString() {
    return this.message ? `RemoteError: ${this.kind}: ${this.message}` : `RemoteError: ${this.kind}`;
  }
}

/** A deadline or one of the configured timeouts ended the stream. */
export class DeadlineExceeded extends StreamError {}

/** The server is shutting down and ended the stream before it finished. */
export class ServerShuttingDown extends StreamError {}

/** The other side cancelled the stream (it stopped wanting it). */
export class StreamCancelled extends StreamError {}

/** The service refused the request (its `allow(identity)` said no). */
export class PermissionDenied extends StreamError {}

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
export function errorFromStatus(status) {
  const { code, kind, message } = status;
  const text = message || (codeName(code) === String(code) ? `code ${code}` : codeName(code));
  switch (code) {
    case ErrorCode.APPLICATION_ERROR:
      return new RemoteError(kind || "Exception", message);
    case ErrorCode.TIMEOUT:
      return new DeadlineExceeded(text, code, kind);
    case ErrorCode.SHUTDOWN:
      return new ServerShuttingDown(text, code, kind);
    case ErrorCode.CANCEL:
      return new StreamCancelled(text, code, kind);
    case ErrorCode.SERVICE_NOT_FOUND:
      return new ServiceNotFound(text);
    case ErrorCode.CONNECTION_LOST:
      return new ConnectionLost(text);
    case ErrorCode.PERMISSION_DENIED:
      return new PermissionDenied(text, code, kind);
    default:
      return new StreamError(text, code, kind);
  }
}

/**
 * The error a GOAWAY (or the connection's end) with `code` gives every stream still open.
 * @param {number} code
 * @param {string} message
 * @returns {ChanservError}
 */
export function errorFromGoaway(code, message) {
  if (code === ErrorCode.OK || code === ErrorCode.CONNECTION_LOST) {
    return new ConnectionLost(`connection closed by peer: ${message}`);
  }
  if (code === ErrorCode.AUTHENTICATION_FAILED) {
    return new AuthenticationFailed(`the node refused our credential: ${message}`);
  }
  return new ProtocolError(`peer closed the connection: ${message}`, code);
}
