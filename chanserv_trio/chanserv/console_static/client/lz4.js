// LZ4 compression of DATA payloads, in the package so that browsers need nothing else.
// The block format (no frame, no checksum): a sequence is a token (4 bits literal
// length, 4 bits match length - 4), more length bytes of 255.. when a nibble is 15,
// the literals, a 2-byte little-endian offset and more match length bytes. The last
// sequence is literals only. A compressed DATA payload is u32 BE original length,
// then one block (docs/protocol.md, section 3).

import { ErrorCode, RemoteProtocolError } from "./errors.js";

/** Payloads shorter than this are sent as they are: LZ4 rarely wins on them. */
export const MIN_COMPRESS_SIZE = 512;

const MIN_MATCH = 4;
// The format's end rules, which decoders rely on: the last match starts at least
// MFLIMIT bytes before the end and the last LAST_LITERALS bytes are literals.
const MFLIMIT = 12;
const LAST_LITERALS = 5;
const HASH_BITS = 14;

/**
 * Decode one LZ4 block whose original is exactly `size` bytes.
 * @param {Uint8Array} block
 * @param {number} size
 * @returns {Uint8Array}
 */
export function decompressBlock(block, size) {
  const out = new Uint8Array(size);
  const end = block.length;
  let ip = 0;
  let op = 0;
  const bad = (/** @type {string} */ why) => {
    throw new RemoteProtocolError(`bad LZ4 block: ${why}`, ErrorCode.PROTOCOL_ERROR);
  };
  while (true) {
    if (ip >= end) bad("ends before its last literals");
    const token = block[ip++];
    let literals = token >>> 4;
    if (literals === 15) {
      let byte;
      do {
        if (ip >= end) bad("literal length overruns the block");
        byte = block[ip++];
        literals += byte;
      } while (byte === 255);
    }
    if (ip + literals > end) bad("literals overrun the block");
    if (op + literals > size) bad("expands beyond its stated length");
    out.set(block.subarray(ip, ip + literals), op);
    ip += literals;
    op += literals;
    if (ip === end) break; // the last sequence has no match
    if (ip + 2 > end) bad("offset overruns the block");
    const offset = block[ip] | (block[ip + 1] << 8);
    ip += 2;
    if (offset === 0 || offset > op) bad("match offset out of range");
    let length = (token & 15) + MIN_MATCH;
    if ((token & 15) === 15) {
      let byte;
      do {
        if (ip >= end) bad("match length overruns the block");
        byte = block[ip++];
        length += byte;
      } while (byte === 255);
    }
    if (op + length > size) bad("expands beyond its stated length");
    let from = op - offset;
    if (length <= offset) {
      out.copyWithin(op, from, from + length);
      op += length;
    } else {
      // An overlapping match repeats the last `offset` bytes.
      for (let i = 0; i < length; i++) out[op++] = out[from++];
    }
  }
  if (op !== size) bad("decompresses to the wrong length");
  return out;
}

/**
 * @param {Uint8Array} src
 * @param {number} at
 */
function read32(src, at) {
  return (src[at] | (src[at + 1] << 8) | (src[at + 2] << 16) | (src[at + 3] << 24)) >>> 0;
}

/**
 * Write a length continuation (the part of a length beyond the token's 15).
 * @param {Uint8Array} out
 * @param {number} op
 * @param {number} rest
 */
function writeLength(out, op, rest) {
  while (rest >= 255) {
    out[op++] = 255;
    rest -= 255;
  }
  out[op++] = rest;
  return op;
}

/**
 * Encode `src` as one LZ4 block (greedy, with a hash table of 4-byte sequences).
 * @param {Uint8Array} src
 * @returns {Uint8Array}
 */
export function compressBlock(src) {
  const n = src.length;
  const out = new Uint8Array(n + Math.ceil(n / 255) + 16);
  const table = new Int32Array(1 << HASH_BITS).fill(-1);
  let op = 0;
  let anchor = 0;
  let ip = 0;
  let misses = 0;
  const matchLimit = n - LAST_LITERALS;
  const emit = (/** @type {number} */ literalEnd, /** @type {number} */ offset, /** @type {number} */ matchLength) => {
    const literals = literalEnd - anchor;
    const tokenAt = op++;
    let token = Math.min(literals, 15) << 4;
    if (literals >= 15) op = writeLength(out, op, literals - 15);
    out.set(src.subarray(anchor, literalEnd), op);
    op += literals;
    if (matchLength > 0) {
      out[op++] = offset & 255;
      out[op++] = offset >>> 8;
      const extra = matchLength - MIN_MATCH;
      token |= Math.min(extra, 15);
      if (extra >= 15) op = writeLength(out, op, extra - 15);
    }
    out[tokenAt] = token;
  };
  while (ip < n - MFLIMIT) {
    const sequence = read32(src, ip);
    const slot = Math.imul(sequence, 2654435761) >>> (32 - HASH_BITS);
    const ref = table[slot];
    table[slot] = ip;
    if (ref >= 0 && ip - ref <= 0xffff && read32(src, ref) === sequence) {
      let length = MIN_MATCH;
      while (ip + length < matchLimit && src[ref + length] === src[ip + length]) length++;
      emit(ip, ip - ref, length);
      ip += length;
      anchor = ip;
      misses = 0;
    } else {
      // Step faster through data that does not compress.
      ip += 1 + (misses++ >>> 6);
    }
  }
  emit(n, 0, 0);
  return out.subarray(0, op);
}

/**
 * The compressed DATA payload, or null when compressing would not make it smaller.
 * @param {Uint8Array} data
 * @returns {Uint8Array | null}
 */
export function compress(data) {
  const block = compressBlock(data);
  if (block.length + 4 >= data.length) return null;
  const out = new Uint8Array(4 + block.length);
  new DataView(out.buffer).setUint32(0, data.length);
  out.set(block, 4);
  return out;
}

/**
 * The original bytes of a compressed DATA payload; a protocol error for a payload that
 * claims more than `limit` bytes (FRAME_SIZE_ERROR) or does not decompress to exactly
 * what it claims (PROTOCOL_ERROR).
 * @param {Uint8Array} payload
 * @param {number} limit
 * @returns {Uint8Array}
 */
export function decompress(payload, limit) {
  if (payload.length < 4) {
    throw new RemoteProtocolError("compressed DATA too short", ErrorCode.PROTOCOL_ERROR);
  }
  const size = new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0);
  if (size > limit) {
    throw new RemoteProtocolError(
      `compressed DATA expands to ${size} > ${limit} bytes`,
      ErrorCode.FRAME_SIZE_ERROR,
    );
  }
  return decompressBlock(payload.subarray(4), size);
}
