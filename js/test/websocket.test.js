// connect() over real WebSockets on loopback, with Node 20's missing global WebSocket
// filled by the `ws` package: a node of this package at the far end, and far ends that
// fail in each way connecting can fail.

import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, describe, test } from "node:test";
import { WebSocketServer } from "ws";

import { encodeFrame, encodeGoaway, FrameType } from "../src/codec.js";
import { AuthenticationFailed, ConnectionLost, ErrorCode, RemoteProtocolError, connect } from "../src/index.js";
import { startJsNode } from "./support/jsnode.js";

const text = (/** @type {Uint8Array} */ bytes) => new TextDecoder().decode(bytes);

/** @type {Array<() => Promise<unknown>>} */
const cleanups = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/**
 * A WebSocket server on loopback that treats each connection with `onConnection`.
 * @param {(ws: import("ws").WebSocket) => void} onConnection
 */
async function wsServer(onConnection) {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.once("listening", resolve));
  server.on("connection", onConnection);
  cleanups.push(() => {
    for (const client of server.clients) client.terminate();
    return new Promise((resolve) => server.close(resolve));
  });
  return `ws://127.0.0.1:${/** @type {import("node:net").AddressInfo} */ (server.address()).port}/`;
}

describe("connect over WebSocket", { timeout: 20000 }, () => {
  test("the global WebSocket is missing on Node 20, and ws takes its place", async () => {
    assert.equal(typeof globalThis.WebSocket === "function" || process.versions.node.startsWith("20"), true);
    const far = await startJsNode();
    cleanups.push(() => far.stop());
    const node = await connect(far.url, { dialTimeout: 5000 });
    try {
      const results = [];
      for await (const source of node.post("chanserv", "hello")) {
        const frames = [];
        for await (const frame of source) frames.push(text(frame));
        results.push([text(source.header), frames]);
      }
      assert.deepEqual(results, [0, 1, 2, 3, 4].map((i) => [`source @${i}`, ["wait for me!", "ok I'm ready"]]));
      assert.equal(node.remoteAddr, far.url);
      assert.deepEqual(node.services, ["chanserv"]);
    } finally {
      await node.close();
    }
  });

  test("nobody listening is ConnectionLost", async () => {
    const probe = createServer();
    await new Promise((resolve) => probe.listen(0, "127.0.0.1", () => resolve(undefined)));
    const { port } = /** @type {import("node:net").AddressInfo} */ (probe.address());
    await new Promise((resolve) => probe.close(resolve));
    await assert.rejects(connect(`ws://127.0.0.1:${port}/`, { dialTimeout: 2000 }), ConnectionLost);
  });

  test("a server that never answers the upgrade is ConnectionLost after dialTimeout", async () => {
    /** @type {import("node:net").Socket[]} */
    const sockets = [];
    const silent = createServer((socket) => sockets.push(socket));
    await new Promise((resolve) => silent.listen(0, "127.0.0.1", () => resolve(undefined)));
    cleanups.push(() => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => silent.close(resolve));
    });
    const { port } = /** @type {import("node:net").AddressInfo} */ (silent.address());
    const started = Date.now();
    await assert.rejects(connect(`ws://127.0.0.1:${port}/`, { dialTimeout: 200 }), /no WebSocket within 200 ms/);
    assert.ok(Date.now() - started < 2000);
  });

  test("a WebSocket that never says HELLO is ConnectionLost after dialTimeout", async () => {
    const url = await wsServer(() => {});
    await assert.rejects(connect(url, { dialTimeout: 200 }), (error) => error instanceof ConnectionLost && /no handshake within 200 ms/.test(error.message));
  });

  test("a node that refuses the credential is AuthenticationFailed", async () => {
    /** @type {Uint8Array[]} */
    const seen = [];
    const url = await wsServer((ws) => {
      ws.on("message", (data) => {
        seen.push(new Uint8Array(/** @type {Buffer} */ (data)));
        ws.send(encodeFrame(FrameType.GOAWAY, 0, 0, encodeGoaway(0, ErrorCode.AUTHENTICATION_FAILED, "unknown token")));
        ws.close(1000);
      });
    });
    await assert.rejects(connect(url, { dialTimeout: 2000, credential: "wrong" }), (error) => error instanceof AuthenticationFailed && /unknown token/.test(error.message));
    assert.ok(Buffer.from(seen[0]).includes(Buffer.from("wrong")), "the credential went out in our HELLO");
  });

  test("a far end that is not chanserv_trio is RemoteProtocolError, naming what it speaks", async () => {
    const url = await wsServer((ws) => ws.send(new TextEncoder().encode("HTTP/1.1 200 OK\r\n\r\n")));
    await assert.rejects(connect(url, { dialTimeout: 2000 }), (error) => error instanceof RemoteProtocolError && error.code === ErrorCode.PROTOCOL_ERROR && /HTTP/.test(error.message));
  });

  test("a text message ends the link", async () => {
    const url = await wsServer((ws) => ws.send("hello"));
    await assert.rejects(connect(url, { dialTimeout: 2000 }), (error) => error instanceof ConnectionLost && /text message/.test(error.message));
  });
});
