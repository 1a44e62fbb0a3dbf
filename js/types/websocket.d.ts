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
export function webSocketClass(given: WebSocketConstructor | undefined): Promise<WebSocketConstructor>;
/**
 * Open a WebSocket to `url` and wrap it as a link transport.
 * @param {string} url
 * @param {object} options
 * @param {number} options.timeout ms to wait for the WebSocket to open
 * @param {WebSocketConstructor} [options.WebSocket]
 * @returns {Promise<import("./link.js").Transport & {closedPromise: Promise<void>}>}
 */
export function openWebSocket(url: string, { timeout, WebSocket }: {
    timeout: number;
    WebSocket?: WebSocketConstructor | undefined;
}): Promise<import("./link.js").Transport & {
    closedPromise: Promise<void>;
}>;
/**
 * The constructor of a WebSocket, as browsers and the `ws` package both provide.
 */
export type WebSocketConstructor = new (url: string) => WebSocketLike;
/**
 * The constructor of a WebSocket, as browsers and the `ws` package both provide.
 */
export type WebSocketLike = {
    binaryType: string;
    bufferedAmount: number;
    onopen: ((event: any) => void) | null;
    onmessage: ((event: any) => void) | null;
    onerror: ((event: any) => void) | null;
    onclose: ((event: any) => void) | null;
    send: (data: Uint8Array) => void;
    close: (code?: number, reason?: string) => void;
};
