/**
 * Decode one LZ4 block whose original is exactly `size` bytes.
 * @param {Uint8Array} block
 * @param {number} size
 * @returns {Uint8Array}
 */
export function decompressBlock(block: Uint8Array, size: number): Uint8Array;
/**
 * Encode `src` as one LZ4 block (greedy, with a hash table of 4-byte sequences).
 * @param {Uint8Array} src
 * @returns {Uint8Array}
 */
export function compressBlock(src: Uint8Array): Uint8Array;
/**
 * The compressed DATA payload, or null when compressing would not make it smaller.
 * @param {Uint8Array} data
 * @returns {Uint8Array | null}
 */
export function compress(data: Uint8Array): Uint8Array | null;
/**
 * The original bytes of a compressed DATA payload; a protocol error for a payload that
 * claims more than `limit` bytes (FRAME_SIZE_ERROR) or does not decompress to exactly
 * what it claims (PROTOCOL_ERROR).
 * @param {Uint8Array} payload
 * @param {number} limit
 * @returns {Uint8Array}
 */
export function decompress(payload: Uint8Array, limit: number): Uint8Array;
/** Payloads shorter than this are sent as they are: LZ4 rarely wins on them. */
export const MIN_COMPRESS_SIZE: 512;
