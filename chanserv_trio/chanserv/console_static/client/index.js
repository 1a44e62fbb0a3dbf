// chanserv-trio: a client of the chanserv_trio protocol for browsers and Node.
// connect() to a node over a WebSocket, post() to a service and iterate the sources it
// announces, each a stream of frames; serve() a service of your own.

export { ChanservNode, Source, SourceChannel, attach, connect } from "./node.js";
export {
  AuthenticationFailed,
  ChanservError,
  ConnectionLost,
  DeadlineExceeded,
  ErrorCode,
  LocalProtocolError,
  MessageTooLarge,
  PermissionDenied,
  ProtocolError,
  RemoteError,
  RemoteProtocolError,
  ServerShuttingDown,
  ServiceNotFound,
  StreamCancelled,
  StreamError,
} from "./errors.js";

/** @typedef {import("./node.js").NodeOptions} NodeOptions */
/** @typedef {import("./node.js").PostOptions} PostOptions */
/** @typedef {import("./node.js").SourceMeta} SourceMeta */
/** @typedef {import("./node.js").ServedSource} ServedSource */
/** @typedef {import("./node.js").RequestContext} RequestContext */
/** @typedef {import("./node.js").SourceFunction} SourceFunction */
/** @typedef {import("./node.js").BytesLike} BytesLike */
/** @typedef {import("./connection.js").Settings} Settings */
/** @typedef {import("./link.js").LinkStatistics} LinkStatistics */
/** @typedef {import("./link.js").Transport} Transport */
