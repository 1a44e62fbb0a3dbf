// The WebSocket transport: one protocol write per binary message, whole messages read.
// Browsers (and Node 22+) have a global WebSocket; on Node 20 the `ws` package is
// loaded on demand, so a browser never needs it.

import { ConnectionLost } from "./errors.js";
import { describe, unrefTimer } from "./link.js";

/**
 * The constructor of a WebSocket, as browsers and the `ws` package both provide.
 * @typedef {new (url: string) => WebSocketLike} WebSocketConstructor
 *
 * @typedef {object} WebSocketLike
 * @property {string} binaryType
 * @property {number} bufferedAmount
 * @property {((event: any) => void) | null} onopen
 * @property {((event: any) => void) | null} onmessage
 * @property {((event: any) => void) | null} onerror
 * @property {((event: any) => void) | null} onclose
 * @property {(data: Uint8Array) => void} send
 * @property {(code?: number, reason?: string) => void} close
 */

/**
 * The WebSocket constructor to use: the one given, the global one, or `ws`'s.
 * @param {WebSocketConstructor | undefined} given
 * @returns {Promise<WebSocketConstructor>}
 */
export async function webSocketClass(given) {
  if (given !== undefined) return given;
  const global = /** @type {any} */ (globalThis).WebSocket;
  if (typeof global === "function") return global;
  const name = "ws"; // a variable, so that bundlers for browsers leave it alone
  try {
    const module = await import(name);
    return module.WebSocket ?? module.default;
  } catch (error) {
    throw new ConnectionLost(
      `there is no global WebSocket here and the 'ws' package could not be loaded (npm install ws): ${describe(error)}`,
    );
  }
}

/**
 * Why a WebSocket closed, in words.
 * @param {{code?: number, reason?: string}} event
 */
function describeClose(event) {
  const code = event.code ?? 1006;
  const reason = event.reason ? `: ${event.reason}` : "";
  if (code === 1000 || code === 1001) return `WebSocket closed (${code}${reason})`;
  return `WebSocket closed abnormally (${code}${reason})`;
}

/**
 * Open a WebSocket to `url` and wrap it as a link transport.
 * @param {string} url
 * @param {object} options
 * @param {number} options.timeout ms to wait for the WebSocket to open
 * @param {WebSocketConstructor} [options.WebSocket]
 * @returns {Promise<import("./link.js").Transport & {closedPromise: Promise<void>}>}
 */
export async function openWebSocket(url, { timeout, WebSocket }) {
  const WS = await webSocketClass(WebSocket);
  /** @type {WebSocketLike} */
  let ws;
  try {
    ws = new WS(url);
  } catch (error) {
    throw new ConnectionLost(`cannot connect to ${url}: ${describe(error)}`);
  }
  ws.binaryType = "arraybuffer";
  // The node's HELLO may arrive in the same turn as the open event, before the link
  // starts: keep what arrives until then.
  /** @type {unknown[]} */
  let early = [];
  /** @type {((data: unknown) => void) | null} */
  let deliver = null;
  ws.onmessage = (event) => {
    if (deliver === null) early.push(event.data);
    else deliver(event.data);
  };
  /** @type {() => void} */
  let markClosed = () => {};
  /** @type {Promise<void>} */
  const closedPromise = new Promise((resolve) => {
    markClosed = resolve;
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new ConnectionLost(`cannot connect to ${url}: no WebSocket within ${timeout} ms`));
      try {
        ws.close();
      } catch {
        // not open yet
      }
    }, timeout);
    unrefTimer(timer);
    ws.onopen = () => {
      clearTimeout(timer);
      resolve(undefined);
    };
    ws.onerror = () => {}; // the close event that follows says why
    ws.onclose = (event) => {
      clearTimeout(timer);
      markClosed();
      reject(new ConnectionLost(`cannot connect to ${url}: ${describeClose(event)}`));
    };
  });
  return {
    closedPromise,
    start(sink) {
      deliver = (data) => {
        if (typeof data === "string") {
          sink.closed("the peer sent a text message; chanserv_trio links carry binary messages only");
          ws.close(1003, "binary messages only");
          return;
        }
        sink.data(new Uint8Array(/** @type {ArrayBuffer} */ (data)));
      };
      const waiting = early;
      early = [];
      for (const data of waiting) deliver(data);
      ws.onclose = (event) => {
        markClosed();
        sink.closed(describeClose(event));
      };
    },
    send(data) {
      ws.send(data);
    },
    close(code = 1000, reason = "") {
      ws.close(code, reason);
    },
    get bufferedAmount() {
      return ws.bufferedAmount;
    },
  };
}
