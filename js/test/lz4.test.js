// LZ4 blocks: what the compressor writes the decompressor reads back, bad blocks are
// protocol errors, and the decompressor reads blocks made by the reference library.

import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "./support/fc.js";

import { ErrorCode, RemoteProtocolError } from "../src/errors.js";
import { compress, compressBlock, decompress, decompressBlock } from "../src/lz4.js";

/** Data with repeats in it, so that matches (short, long, overlapping) occur. */
const repetitive = fc
  .array(fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 40 }), fc.tuple(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 2000 }))), { maxLength: 30 })
  .map((parts) => {
    const out = [];
    for (const part of parts) {
      if (part instanceof Uint8Array) out.push(...part);
      else {
        const [back, length] = part;
        for (let i = 0; i < length; i++) out.push(out.length >= back ? out[out.length - back] : i & 255);
      }
    }
    return Uint8Array.from(out);
  });

test("compressing then decompressing gives the original bytes", () => {
  fc.assert(
    fc.property(fc.oneof(repetitive, fc.uint8Array({ maxLength: 3000 })), (data) => {
      const block = compressBlock(data);
      assert.deepEqual(decompressBlock(block, data.length), data);
    }),
    { numRuns: 300 },
  );
});

test("a compressed payload is u32 BE original length, then the block; only when smaller", () => {
  const data = new TextEncoder().encode("abcd".repeat(1000));
  const payload = compress(data);
  assert.ok(payload !== null && payload.length < 100);
  assert.equal(new DataView(payload.buffer).getUint32(0), 4000);
  assert.deepEqual(decompress(payload, 1 << 20), data);
  const noise = Uint8Array.from({ length: 600 }, (_, i) => (i * 2654435761) >>> 24);
  assert.equal(compress(noise), null);
});

test("a block made by the reference LZ4 library decodes (a literal run, then an overlapping match)", () => {
  // lz4.block.compress(b"a" * 40 + b"0123456789", store_size=False)
  const block = Uint8Array.from(Buffer.from("1f61010014a030313233343536373839", "hex"));
  const expected = new TextEncoder().encode("a".repeat(40) + "0123456789");
  assert.deepEqual(decompressBlock(block, expected.length), expected);
});

test("a stated length over the limit is FRAME_SIZE_ERROR", () => {
  const payload = compress(new Uint8Array(4096));
  assert.ok(payload !== null);
  assert.throws(() => decompress(payload, 1024), (e) => e instanceof RemoteProtocolError && e.code === ErrorCode.FRAME_SIZE_ERROR);
});

test("a block that does not decompress to exactly the stated length is PROTOCOL_ERROR", () => {
  const data = new TextEncoder().encode("hello hello hello hello hello");
  const block = compressBlock(data);
  for (const size of [data.length - 1, data.length + 1]) {
    assert.throws(() => decompressBlock(block, size), (e) => e instanceof RemoteProtocolError && e.code === ErrorCode.PROTOCOL_ERROR);
  }
});

test("garbage never throws anything but a protocol error", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat({ max: 5000 }), (block, size) => {
      try {
        decompressBlock(block, size);
      } catch (error) {
        assert.ok(error instanceof RemoteProtocolError, String(error));
      }
    }),
    { numRuns: 500 },
  );
});
