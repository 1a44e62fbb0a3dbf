// post() and serve() against each other over an in-memory transport: the chanserv
// semantics (sources, frames, cancellation, errors, deadlines, source credits) without
// a network or another language. test/e2e.test.js runs the same against Python.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import {
  ConnectionLost,
  DeadlineExceeded,
  RemoteError,
  ServiceNotFound,
  StreamCancelled,
  attach,
} from "../src/index.js";
import { memoryPair } from "./support/memory.js";

const text = (/** @type {Uint8Array} */ bytes) => new TextDecoder().decode(bytes);
const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A wait that never ends (and keeps no timer alive). */
const forever = () => new Promise(() => {});

/**
 * Everything an async iterable yields (Array.fromAsync is newer than Node 20).
 * @template T
 * @param {AsyncIterable<T>} iterable
 */
async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

/** @type {Array<() => Promise<void>>} */
const cleanups = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

/** A serving node and a posting node, linked in memory. */
async function nodes(/** @type {any} */ clientOptions = {}, /** @type {any} */ serverOptions = {}) {
  const [a, b] = memoryPair();
  const [server, client] = await Promise.all([attach(a, { nonce: 0n, ...serverOptions }), attach(b, { dialTimeout: 2000, ...clientOptions })]);
  cleanups.push(() => client.close());
  return { server, client };
}

/**
 * Wait until `predicate()` holds, at most `ms`.
 * @param {() => boolean} predicate
 */
async function until(predicate, ms = 3000) {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await sleep(2);
  }
}

/** @param {AsyncIterable<Uint8Array>} source */
async function all(source) {
  const frames = [];
  for await (const frame of source) frames.push(text(frame));
  return frames;
}

describe("post and serve in memory", { timeout: 20000 }, () => {
  test("the seed scenario: five sources, each with its frames in order", async () => {
    const { server, client } = await nodes();
    server.serve("chanserv", async function* (body) {
      assert.equal(text(body), "hello");
      for (let i = 0; i < 5; i++) {
        yield {
          header: `source @${i}`,
          frames: (async function* () {
            yield "wait for me!";
            await sleep(5 * (i + 1));
            yield "ok I'm ready";
          })(),
        };
      }
    });
    const results = [];
    for await (const source of client.post("chanserv", "hello")) {
      results.push(all(source).then((frames) => [text(source.header), frames]));
    }
    assert.deepEqual(await Promise.all(results), [0, 1, 2, 3, 4].map((i) => [`source @${i}`, ["wait for me!", "ok I'm ready"]]));
  });

  test("a source nobody reads stalls only itself; it is whole once read", async () => {
    const { server, client } = await nodes();
    let produced = 0;
    server.serve("stall", function* () {
      yield {
        header: "ignored",
        frames: (function* () {
          for (; produced < 48; produced++) yield new Uint8Array(64 * 1024).fill(produced);
        })(),
      };
      yield { header: "read", frames: Array.from({ length: 20 }, (_, i) => `small ${i}`) };
    });
    const sources = [];
    for await (const source of client.post("stall")) sources.push(source);
    const [ignored, read] = sources;
    assert.equal((await all(read)).length, 20);
    await sleep(20);
    // The ignored source's producer is held by its window (1 MiB = 16 frames), not 48.
    assert.ok(produced <= 18, `produced ${produced}`);
    let count = 0;
    for await (const frame of ignored) {
      assert.equal(frame[0], count++);
    }
    assert.equal(count, 48);
  });

  test("frameBufferSize sets how far each source may run ahead of its reader", async () => {
    const { server, client } = await nodes({ frameBufferSize: 64 * 1024 });
    let produced = 0;
    server.serve("ahead", () => [
      {
        header: "x",
        frames: (function* () {
          for (; produced < 256; produced++) yield new Uint8Array(16 * 1024);
        })(),
      },
    ]);
    const [source] = await collect(client.post("ahead"));
    let count = 0;
    for await (const _ of source) {
      count += 1;
      if (count === 128) {
        // A smaller window takes effect as the link's first 1 MiB is read: from then on
        // the producer is at most 64 KiB (4 frames), and one in hand, ahead.
        await sleep(30);
        assert.ok(produced - count <= 4 + 2, `${produced - count} frames ahead of the reader`);
      }
    }
    assert.equal(count, 256);
  });

  test("leaving the sources loop early cancels the request on the server", async () => {
    const { server, client } = await nodes();
    let stopped = 0;
    /** @type {AbortSignal | null} */
    let requestSignal = null;
    server.serve("endless", async function* (_body, { signal }) {
      requestSignal = signal;
      for (let i = 0; ; i++) {
        yield {
          header: `s${i}`,
          frames: (async function* () {
            try {
              for (;;) {
                yield "tick";
                await sleep(2);
              }
            } finally {
              stopped += 1;
            }
          })(),
        };
        await sleep(5);
      }
    });
    for await (const source of client.post("endless")) {
      assert.equal(text(source.header), "s0");
      break;
    }
    await until(() => requestSignal !== null && /** @type {AbortSignal} */ (requestSignal).aborted && stopped >= 1);
  });

  test("source.cancel() stops that source on the server, and its siblings go on", async () => {
    const { server, client } = await nodes();
    let cancelled = "";
    server.serve("two", function* () {
      for (const name of ["a", "b"]) {
        yield {
          header: name,
          frames: (async function* () {
            try {
              for (let i = 0; i < (name === "a" ? Infinity : 5); i++) {
                yield `${name}${i}`;
                await sleep(2);
              }
            } finally {
              if (name === "a") cancelled = name;
            }
          })(),
        };
      }
    });
    const [a, b] = await collect(client.post("two"));
    a.cancel();
    await assert.rejects(a.next(), StreamCancelled);
    assert.deepEqual(await all(b), ["b0", "b1", "b2", "b3", "b4"]);
    await until(() => cancelled === "a");
  });

  test("aborting the signal cancels the request on the server and throws its reason", async () => {
    const { server, client } = await nodes();
    let aborted = false;
    server.serve("slow", async function* (_body, { signal }) {
      signal.addEventListener("abort", () => (aborted = true));
      yield { header: "x", frames: (async function* () { for (;;) { yield "."; await sleep(5); } })() };
      await forever();
    });
    const controller = new AbortController();
    const sources = client.post("slow", "", { signal: controller.signal });
    const reading = (async () => {
      for await (const source of sources) for await (const _ of source) controller.abort(new Error("enough"));
    })();
    await assert.rejects(reading, /enough/);
    await until(() => aborted);
  });

  test("the source function's error is RemoteError on the sources, a frames error on its source", async () => {
    const { server, client } = await nodes();
    server.serve("fails", function* () {
      yield { header: "bad", frames: (function* () { yield "one"; throw new RangeError("frames broke"); })() };
      throw new TypeError("boom");
    });
    const taken = [];
    await assert.rejects(
      (async () => {
        for await (const source of client.post("fails")) taken.push(source);
      })(),
      (error) => error instanceof RemoteError && error.kind === "TypeError" && error.message === "boom",
    );
    await assert.rejects(all(taken[0]), (error) => error instanceof RemoteError && error.kind === "RangeError" && error.message === "frames broke");
  });

  test("a service nobody offers is ServiceNotFound after dialTimeout", async () => {
    const { client } = await nodes({ dialTimeout: 100 });
    const started = Date.now();
    await assert.rejects(collect(client.post("nobody")), ServiceNotFound);
    assert.ok(Date.now() - started >= 90);
  });

  test("the deadline travels with the request: the server stops too", async () => {
    const { server, client } = await nodes();
    /** @type {number | null} */
    let seen = null;
    let stopped = false;
    server.serve("deadline", async function* (_body, context) {
      seen = context.deadline;
      context.signal.addEventListener("abort", () => (stopped = true));
      yield { header: "x", frames: (async function* () { yield "first"; await forever(); })() };
    });
    const deadline = Date.now() + 150;
    await assert.rejects(
      (async () => {
        for await (const source of client.post("deadline", "", { deadline })) await all(source);
      })(),
      DeadlineExceeded,
    );
    assert.ok(seen !== null && Math.abs(seen - deadline) < 100, `server deadline ${seen} vs ${deadline}`);
    await until(() => stopped);
  });

  test("with a source window the server announces only that many ahead", async () => {
    const { server, client } = await nodes({ sourceBufferSize: 2 });
    let announced = 0;
    server.serve("many", function* () {
      for (let i = 0; i < 10; i++) {
        announced = i + 1;
        yield { header: String(i), frames: [String(i)] };
      }
    });
    const sources = client.post("many");
    const iterator = sources[Symbol.asyncIterator]();
    const first = await iterator.next();
    await sleep(20);
    assert.ok(announced <= 4, `announced ${announced}`);
    const rest = [];
    for (let step = await iterator.next(); !step.done; step = await iterator.next()) rest.push(step.value);
    assert.equal(rest.length, 9);
    assert.equal(first.done, false);
    assert.deepEqual(await all(rest[8]), ["9"]);
  });

  test("1,000 sources arrive, each with its frame", async () => {
    const { server, client } = await nodes();
    server.serve("thousand", function* () {
      for (let i = 0; i < 1000; i++) yield { header: `h${i}`, frames: [`f${i}`] };
    });
    let count = 0;
    for await (const source of client.post("thousand")) {
      assert.deepEqual(await all(source), [`f${text(source.header).slice(1)}`]);
      count++;
    }
    assert.equal(count, 1000);
  });

  test("a 5 MiB frame crosses whole, chunked under the window, compressed when agreed", async () => {
    const { server, client } = await nodes({ compression: true }, { compression: true });
    const big = new Uint8Array(5 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i >> 10) & 255;
    server.serve("big", () => [{ header: "big", frames: [big] }]);
    const before = client.statistics().bytesIn;
    const [frame] = await collect((await collect(client.post("big")))[0]);
    assert.deepEqual(frame, big);
    assert.ok(client.statistics().bytesIn - before < big.length / 10, "it travelled compressed");
  });

  test("closing the link fails what is still being read with ConnectionLost", async () => {
    const { server, client } = await nodes();
    server.serve("forever", async function* () {
      yield { header: "x", frames: (async function* () { yield "."; await forever(); })() };
    });
    const [source] = await collect(client.post("forever"));
    assert.equal(text(/** @type {Uint8Array} */ ((await source.next()).value)), ".");
    const pending = source.next();
    await server.close();
    await assert.rejects(pending, ConnectionLost);
  });
});
