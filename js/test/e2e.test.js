// End to end against the repository's Python node (test/server.py) over a real
// WebSocket on loopback: the seed scenario, stalls, cancellation reaching the server,
// every error class, 1,000 sources, a 50 MiB frame, the deadline, compression, and a
// service served here answering a Python client through the router.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  AuthenticationFailed,
  ChanservError,
  ConnectionLost,
  DeadlineExceeded,
  ErrorCode,
  PermissionDenied,
  ProtocolError,
  RemoteError,
  RemoteProtocolError,
  ServerShuttingDown,
  ServiceNotFound,
  StreamCancelled,
  StreamError,
  connect,
} from "../src/index.js";
import { incompatibility, startServer } from "./support/python.js";

const text = (/** @type {Uint8Array} */ bytes) => new TextDecoder().decode(bytes);
const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** @type {string | null} */
let skipReason = null;
/** @type {import("../src/index.js").ChanservNode} */
let node;
let counter = 0;

before(async () => {
  server = await startServer();
  skipReason = await incompatibility(server.url);
  if (skipReason === null) node = await connect(server.url, { dialTimeout: 5000 });
});

after(async () => {
  if (node) await node.close();
  if (server) await server.stop();
});

/**
 * A test that runs only when the Python side speaks our protocol version.
 * @param {string} name
 * @param {() => Promise<void>} fn
 */
function e2e(name, fn) {
  test(name, async (t) => {
    if (skipReason !== null) {
      t.skip(skipReason);
      return;
    }
    await fn();
  });
}

/** @param {AsyncIterable<Uint8Array>} source */
async function frames(source) {
  const out = [];
  for await (const frame of source) out.push(text(frame));
  return out;
}

/**
 * @template T
 * @param {AsyncIterable<T>} iterable
 */
async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

/** @param {object} params */
const json = (params) => JSON.stringify(params);

/**
 * What the server recorded under `id` (waiting for the record to complete if `wait`).
 * @param {string} id
 */
async function probe(id, wait = true) {
  const [source] = await collect(node.post("probe", json({ id, wait })));
  return JSON.parse(text(source.header));
}

const newId = () => `r${++counter}`;

describe("against the Python node", { timeout: 30000 }, () => {
  e2e("the seed scenario: five sources, each with its frames in order", async () => {
    const results = [];
    for await (const source of node.post("chanserv", "hello", { tags: { bucket: "k" } })) {
      assert.equal(source.meta.remoteAddr, server.url);
      results.push(frames(source).then((list) => [text(source.header), list]));
    }
    assert.deepEqual(await Promise.all(results), [0, 1, 2, 3, 4].map((i) => [`source @${i}`, ["wait for me!", "ok I'm ready"]]));
  });

  e2e("a source nobody reads stalls only itself", async () => {
    const id = newId();
    const [ignored, read] = await collect(node.post("scenario", json({ kind: "stall", id })));
    assert.equal((await frames(read)).length, 20);
    await sleep(100);
    const { produced } = await probe(id, false);
    // Held back by the 1 MiB window of the ignored source: 16 frames, and one waiting.
    assert.ok(produced < 20, `the server produced ${produced} of 48 frames`);
    let count = 0;
    for await (const frame of ignored) {
      assert.equal(frame.length, 65536);
      assert.equal(frame[0], count++);
    }
    assert.equal(count, 48);
  });

  e2e("leaving the sources loop early cancels the work on the server", async () => {
    const id = newId();
    for await (const source of node.post("scenario", json({ kind: "hang", id, n: 2 }))) {
      assert.equal(text(source.header), "hang 0");
      break;
    }
    const { ended } = await probe(id);
    assert.ok(ended.length >= 1, JSON.stringify(ended));
  });

  e2e("source.cancel() cancels that source on the server; its sibling goes on", async () => {
    const id = newId();
    const sources = node.post("scenario", json({ kind: "hang", id, n: 2 }));
    const iterator = sources[Symbol.asyncIterator]();
    const first = /** @type {import("../src/index.js").Source} */ ((await iterator.next()).value);
    const second = /** @type {import("../src/index.js").Source} */ ((await iterator.next()).value);
    first.cancel();
    await assert.rejects(first.next(), StreamCancelled);
    const { ended } = await probe(id);
    assert.deepEqual(ended.map((/** @type {any[]} */ e) => e[0]), [0]);
    assert.equal(text(/** @type {Uint8Array} */ ((await second.next()).value)), "tick");
    sources.cancel();
  });

  e2e("aborting the signal cancels the request on the server", async () => {
    const id = newId();
    const controller = new AbortController();
    const reading = (async () => {
      for await (const source of node.post("scenario", json({ kind: "hang", id }), { signal: controller.signal })) {
        for await (const _ of source) controller.abort(new Error("the test aborts"));
      }
    })();
    await assert.rejects(reading, /the test aborts/);
    const { ended } = await probe(id);
    assert.equal(ended.length, 1);
  });

  e2e("the deadline travels with the request and ends it on both sides", async () => {
    const id = newId();
    const started = Date.now();
    await assert.rejects(
      (async () => {
        for await (const source of node.post("scenario", json({ kind: "hang", id }), { deadline: started + 400 })) await frames(source);
      })(),
      DeadlineExceeded,
    );
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 350 && elapsed < 3000, `${elapsed} ms`);
    const { deadline, ended } = await probe(id);
    assert.ok(deadline > 0.2 && deadline <= 0.4, `the server saw a deadline of ${deadline} s`);
    assert.equal(ended.length, 1);
  });

  e2e("the source function's error is RemoteError with the Python kind and message", async () => {
    const taken = [];
    await assert.rejects(
      (async () => {
        for await (const source of node.post("scenario", json({ kind: "fail" }))) taken.push(source);
      })(),
      (error) => error instanceof RemoteError && error.kind === "ValueError" && error.message === "boom",
    );
    await assert.rejects(frames(taken[0]), (error) => error instanceof RemoteError && error.kind === "RuntimeError" && error.message === "frames broke");
  });

  e2e("each stream status gives its error class, on a source and on the request", async () => {
    /** @type {Array<[number, Function]>} */
    const expected = [
      [ErrorCode.CANCEL, StreamCancelled],
      [ErrorCode.TIMEOUT, DeadlineExceeded],
      [ErrorCode.SHUTDOWN, ServerShuttingDown],
      [ErrorCode.SERVICE_NOT_FOUND, ServiceNotFound],
      [ErrorCode.APPLICATION_ERROR, RemoteError],
      [ErrorCode.PERMISSION_DENIED, PermissionDenied],
      [ErrorCode.INTERNAL_ERROR, StreamError],
      [ErrorCode.REFUSED_STREAM, StreamError],
      [77, StreamError],
    ];
    for (const [code, kind] of expected) {
      const [source] = await collect(node.post(`reset-source-${code}`));
      await assert.rejects(frames(source), (error) => error instanceof kind && error instanceof ChanservError, `source, code ${code}`);
      await assert.rejects(collect(node.post(`reset-master-${code}`)), (error) => error instanceof kind, `request, code ${code}`);
    }
    const [source] = await collect(node.post("reset-source-8"));
    await assert.rejects(frames(source), (error) => error instanceof RemoteError && error.kind === "Kind" && error.message === "text");
    const [other] = await collect(node.post("reset-source-77"));
    await assert.rejects(frames(other), (error) => error instanceof StreamError && error.code === 77 && error.message === "text");
  });

  e2e("a service nobody offers is ServiceNotFound after dialTimeout", async () => {
    await assert.rejects(collect(node.post("nobody-serves-this", "", { dialTimeout: 200 })), ServiceNotFound);
  });

  e2e("a node shutting down cuts its sources off with ServerShuttingDown", async () => {
    const [spawned] = await collect(node.post("spawn-doomed"));
    const doomed = await connect(text(spawned.header), { dialTimeout: 5000 });
    try {
      const [source] = await collect(doomed.post("doomed"));
      await assert.rejects(frames(source), ServerShuttingDown);
      assert.ok((await doomed.closed) instanceof ConnectionLost);
    } finally {
      await doomed.close();
    }
  });

  e2e("a link closed by the node is ConnectionLost, one it breaks ProtocolError (not ours to blame)", async () => {
    const dropped = await connect(server.url, { dialTimeout: 5000 });
    await assert.rejects(collect(dropped.post("drop-link")), (error) => error instanceof ConnectionLost && !(error instanceof ProtocolError));
    await dropped.close();
    const broken = await connect(server.url, { dialTimeout: 5000 });
    await assert.rejects(collect(broken.post("break-link")), (error) => error instanceof ProtocolError && !(error instanceof RemoteProtocolError) && error.code === ErrorCode.PROTOCOL_ERROR);
    await broken.close();
  });

  e2e("1,000 sources arrive, each with its frame", async () => {
    let count = 0;
    for await (const source of node.post("scenario", json({ kind: "many", n: 1000 }))) {
      assert.deepEqual(await frames(source), [`f${text(source.header).slice(1)}`]);
      count++;
    }
    assert.equal(count, 1000);
  });

  e2e("with a source window the Python server's announcing follows our credits", async () => {
    const sources = await collect(node.post("scenario", json({ kind: "many", n: 50 }), { sourceBufferSize: 4 }));
    assert.equal(sources.length, 50);
    assert.deepEqual(await frames(sources[49]), ["f49"]);
  });

  e2e("a 50 MiB frame arrives whole", async () => {
    const size = 50 << 20;
    const [source] = await collect(node.post("scenario", json({ kind: "big", n: size })));
    const received = await collect(source);
    assert.equal(received.length, 1);
    const frame = received[0];
    assert.equal(frame.length, size);
    for (let i = 0; i < size; i += 4099) assert.equal(frame[i], i % 251, `byte ${i}`);
    assert.equal(frame[size - 1], (size - 1) % 251);
  });

  e2e("compression is used when both ends ask for it", async (t) => {
    if (!server.compression) return;
    const packed = await connect(server.url, { dialTimeout: 5000, compression: true });
    try {
      const before = packed.statistics().bytesIn;
      const [source] = await collect(packed.post("scenario", json({ kind: "compressible", n: 4 << 20 })));
      const [frame] = await collect(source);
      assert.equal(frame.length, 4 << 20);
      assert.ok(text(frame.subarray(0, 36)) === "chanserv_trio compresses this line. ");
      assert.ok(packed.statistics().bytesIn - before < 1 << 20, "it travelled compressed");
    } finally {
      await packed.close();
    }
  });

  e2e("keepalive pings measure the round trip", async () => {
    const pinging = await connect(server.url, { dialTimeout: 5000, keepaliveInterval: 30 });
    try {
      const end = Date.now() + 3000;
      while (pinging.statistics().rtt === null && Date.now() < end) await sleep(10);
      const { rtt } = pinging.statistics();
      assert.ok(rtt !== null && rtt >= 0 && rtt < 1000, `rtt ${rtt}`);
    } finally {
      await pinging.close();
    }
  });

  e2e("a credential in the handshake is accepted by a node that asks for none", async () => {
    const node2 = await connect(server.url, { dialTimeout: 5000, credential: "token" });
    assert.deepEqual((await collect(node2.post("chanserv"))).length, 5);
    await node2.close();
  });

  e2e("a node that authenticates lets the right credential in with its identity", async () => {
    const user = await connect(server.authUrl, { dialTimeout: 5000, credential: "js-token" });
    try {
      const [source] = await collect(user.post("whoami"));
      assert.equal(text(source.header), "js-user");
      await assert.rejects(
        collect(user.post("guarded")),
        (error) => error instanceof PermissionDenied && error.code === ErrorCode.PERMISSION_DENIED && /'js-user' may not use/.test(error.message),
      );
    } finally {
      await user.close();
    }
  });

  e2e("a node that authenticates refuses a wrong credential with its reason", async () => {
    for (const options of [{ credential: "wrong" }, {}]) {
      await assert.rejects(
        connect(server.authUrl, { dialTimeout: 5000, ...options }),
        (error) => error instanceof AuthenticationFailed && /credential refused|a credential is required/.test(error.message),
      );
    }
  });

  e2e("node.serve answers a Python client through the router", async () => {
    const serving = await connect(server.url, { dialTimeout: 5000, compression: true });
    try {
      serving.serve("js-echo", async function* (body, { tags }) {
        for (let i = 0; i < 3; i++) {
          yield {
            header: `js source ${i} bucket=${tags.bucket}`,
            frames: (async function* () {
              yield `${text(body)} #${i}`;
              yield new Uint8Array(64 * 1024).fill(i);
            })(),
          };
        }
      });
      const sources = await collect(node.post("relay-call", json({ service: "js-echo", body: "hi", bucket: "k" })));
      assert.deepEqual(sources.map((s) => text(s.header)), [0, 1, 2].map((i) => `python got js source ${i} bucket=k`));
      for (const [i, source] of sources.entries()) {
        const [greeting, block] = await collect(source);
        assert.equal(text(greeting), `hi #${i}`);
        assert.equal(block.length, 65536);
        assert.ok(block.every((byte) => byte === i));
      }
    } finally {
      await serving.close();
    }
  });
});
