// Two link transports joined in memory: what one sends, the other receives on a later
// turn of the event loop, in order, as a WebSocket would deliver it.

/**
 * @returns {[import("../src/link.js").Transport, import("../src/link.js").Transport]}
 */
export function memoryPair() {
  /** @type {any[]} */
  const sinks = [null, null];
  /** @type {Array<Array<() => void>>} things to deliver to a side not started yet */
  const early = [[], []];
  let closing = false;
  let closed = false;
  // A socket keeps Node's event loop alive while it is open; so does this pair.
  const alive = setInterval(() => {}, 1 << 30);
  const deliver = (/** @type {number} */ side, /** @type {() => void} */ action) => {
    if (sinks[side] === null) early[side].push(action);
    else setImmediate(action);
  };
  const make = (/** @type {number} */ side) => ({
    start(/** @type {any} */ sink) {
      sinks[side] = sink;
      for (const action of early[side]) setImmediate(action);
      early[side] = [];
    },
    send(/** @type {Uint8Array} */ data) {
      if (closing) return;
      const copy = data.slice();
      const other = 1 - side;
      deliver(other, () => !closed && sinks[other].data(copy));
    },
    close() {
      if (closing) return;
      closing = true;
      // After whatever was sent before, as a WebSocket close follows its data.
      for (const end of [0, 1]) {
        deliver(end, () => {
          closed = true;
          clearInterval(alive);
          sinks[end].closed("memory transport closed");
        });
      }
    },
    bufferedAmount: 0,
  });
  return [make(0), make(1)];
}
