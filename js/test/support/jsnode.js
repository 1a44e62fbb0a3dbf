// A node of this package listening for WebSockets (with the `ws` package's server):
// the far end for tests that need none of Python, such as the browser's first check.

import { WebSocketServer } from "ws";

import { attach } from "../../src/index.js";

const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The seed scenario: five sources, each "wait for me!" then "ok I'm ready". */
export async function* seed() {
  for (let i = 0; i < 5; i++) {
    yield {
      header: `source @${i}`,
      frames: (async function* () {
        yield "wait for me!";
        await sleep(20 * (i + 1));
        yield "ok I'm ready";
      })(),
    };
  }
}

/**
 * Listen on ws://127.0.0.1:<free port>/ and serve `chanserv` (the seed scenario) on
 * every connection.
 * @returns {Promise<{url: string, stop: () => Promise<void>}>}
 */
export async function startJsNode() {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.once("listening", resolve));
  /** @type {Array<import("../../src/index.js").ChanservNode>} */
  const nodes = [];
  server.on("connection", (ws) => {
    ws.binaryType = "arraybuffer";
    /** @type {import("../../src/link.js").Transport} */
    const transport = {
      start(sink) {
        ws.on("message", (data) => sink.data(new Uint8Array(/** @type {ArrayBuffer} */ (data))));
        ws.on("close", (code) => sink.closed(`WebSocket closed (${code})`));
      },
      send: (data) => ws.send(data),
      close: (code, reason) => ws.close(code, reason),
      get bufferedAmount() {
        return ws.bufferedAmount;
      },
    };
    attach(transport, { nonce: 0n, remoteAddr: "browser" }).then((node) => {
      nodes.push(node);
      node.serve("chanserv", seed);
    }, () => {});
  });
  const address = /** @type {import("node:net").AddressInfo} */ (server.address());
  return {
    url: `ws://127.0.0.1:${address.port}/`,
    async stop() {
      for (const node of nodes) await node.close();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
