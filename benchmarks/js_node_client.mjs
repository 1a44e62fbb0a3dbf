// The js-node peer's client process: the JavaScript package (js/) on Node, driven by
// benchmarks/client_js_node.py. It connects once to the URL in argv[2], then for each
// JSON line {"body": <shape JSON>, "sources": n} on stdin posts the body to "bench",
// reads every source concurrently and answers one JSON line with what came back.

import { createInterface } from "node:readline";

import { connect } from "../js/src/index.js";

const node = await connect(process.argv[2], { dialTimeout: 5000 });
process.stdout.write(JSON.stringify({ ready: true }) + "\n");

/** @param {{body: string, sources: number}} request */
async function fetch({ body, sources }) {
  let frames = 0;
  let bytes = 0;
  /** @type {Array<number | null>} */
  const doneAt = new Array(sources).fill(null);
  const began = performance.now();
  const reading = [];
  for await (const source of node.post("bench", body)) {
    const index = Number(new TextDecoder().decode(source.header));
    reading.push(
      (async () => {
        for await (const frame of source) {
          frames += 1;
          bytes += frame.length;
        }
        doneAt[index] = (performance.now() - began) / 1000;
      })(),
    );
  }
  await Promise.all(reading);
  return { frames, payload_bytes: bytes, elapsed: (performance.now() - began) / 1000, done_at: doneAt };
}

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  try {
    process.stdout.write(JSON.stringify(await fetch(JSON.parse(line))) + "\n");
  } catch (error) {
    process.stdout.write(JSON.stringify({ error: String(error) }) + "\n");
  }
}
await node.close();
