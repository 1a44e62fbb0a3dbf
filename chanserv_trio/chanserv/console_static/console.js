// The console page: it links to the node over WebSocket with the chanserv-trio client
// (./client/, a copy of js/src), streams the node's statistics from its stats service
// (one JSON snapshot per frame), and shows the links with rate plots, the services and
// who offers them, and a post panel whose sources arrive as cards.

import { ChanservError, connect } from "./client/index.js";

const HISTORY = 60; // samples kept for each rate plot
const SHOWN_FRAMES = 50; // frames listed on a card (all are counted)
const decoder = new TextDecoder("utf-8", { fatal: true });

/** @param {string} id */
const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * @param {string} tag
 * @param {Record<string, string>} [attributes]
 * @param {string} [text]
 */
function element(tag, attributes = {}, text = "") {
  const made = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
  if (text) made.textContent = text;
  return made;
}

/** A frame or header as text: UTF-8 when it is, else hex; long ones cut. @param {Uint8Array} bytes */
function show(bytes, limit = 200) {
  let text;
  try {
    text = decoder.decode(bytes);
  } catch {
    text = [...bytes.subarray(0, limit / 2)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  }
  return text.length > limit ? `${text.slice(0, limit)}… (${bytes.length} bytes)` : text;
}

/** @param {number} n */
function size(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** @param {number} n */
const perSecond = (n) => `${size(Math.round(n))}/s`;

/**
 * One link as the page shows it.
 * @typedef {object} LinkView
 * @property {string} peer
 * @property {number | null} rtt seconds
 * @property {number} bytesIn
 * @property {number} bytesOut
 * @property {number} framesIn
 * @property {number} framesOut
 * @property {number} openStreams
 * @property {number} windowStalls
 * @property {string[]} services
 */

/**
 * A snapshot of the stats service, as the page uses it.
 * @typedef {object} SnapshotView
 * @property {number} time seconds since the epoch
 * @property {string} node the node's id
 * @property {number} bytesIn received by the node since it started (closed links too)
 * @property {number} bytesOut sent by the node since it started
 * @property {Map<string, string[]>} offers each service and who offers it ("this node"
 *   or a peer's key)
 * @property {LinkView[]} links
 */

/** The format the page reads (docs/operations.md); the stats source's header says it. */
export const STATS_FORMAT = "chanserv_trio.stats/1";

/**
 * A snapshot in the stats service's JSON (docs/operations.md) in the page's terms.
 * @param {any} raw
 * @returns {SnapshotView}
 */
export function normalize(raw) {
  if (raw?.format !== STATS_FORMAT) throw new Error(`not a ${STATS_FORMAT} snapshot: ${String(raw?.format)}`);
  const links = (raw.links ?? []).map((/** @type {any} */ link) => {
    const stats = link.statistics ?? {};
    return {
      peer: String(link.node_key ?? link.remote_addr ?? "?"),
      rtt: typeof stats.rtt === "number" ? stats.rtt : null,
      bytesIn: Number(stats.bytes_in ?? 0),
      bytesOut: Number(stats.bytes_out ?? 0),
      framesIn: Number(stats.messages_in ?? 0),
      framesOut: Number(stats.messages_out ?? 0),
      openStreams: Number(stats.open_streams ?? 0),
      windowStalls: Number(stats.window_stalls ?? 0),
      services: [...(link.peer_services ?? [])].map(String),
    };
  });
  const offers = new Map(
    Object.entries(raw.services ?? {})
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, who]) => [name, [...who].map((key) => (key === "local" ? "this node" : String(key)))]),
  );
  return {
    time: Number(raw.time ?? Date.now() / 1000),
    node: String(raw.node?.id ?? "?"),
    bytesIn: Number(raw.totals?.bytes_in ?? 0),
    bytesOut: Number(raw.totals?.bytes_out ?? 0),
    offers,
    links,
  };
}

/**
 * Draw rate samples as lines on a small canvas (the same scale for all series).
 * @param {HTMLCanvasElement} canvas
 * @param {number[][]} series
 */
function plot(canvas, series) {
  const context = canvas.getContext("2d");
  if (context === null) return;
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const top = Math.max(1, ...series.flat());
  const colors = ["#1f77b4", "#ff7f0e"];
  series.forEach((samples, index) => {
    context.strokeStyle = colors[index % colors.length];
    context.lineWidth = 1.5;
    context.beginPath();
    samples.forEach((value, i) => {
      const x = (i / (HISTORY - 1)) * (width - 2) + 1;
      const y = height - 1 - (value / top) * (height - 2);
      if (i === 0) context.moveTo(x, y);
      else context.lineTo(x, y);
    });
    context.stroke();
  });
  canvas.dataset.samples = String(series[0]?.length ?? 0);
  canvas.title = `peak ${perSecond(top)}`;
}

/**
 * Byte counters and the rates seen between successive snapshots.
 * @typedef {{at: number, bytesIn: number, bytesOut: number, in: number[], out: number[]}} Series
 */

/**
 * Add the rates since the last sample to `series` (nothing at the first one).
 * @param {Series | undefined} series
 * @param {number} at
 * @param {number} bytesIn
 * @param {number} bytesOut
 * @returns {Series}
 */
function sample(series, at, bytesIn, bytesOut) {
  if (series === undefined) return { at, bytesIn, bytesOut, in: [], out: [] };
  const dt = at - series.at;
  if (dt > 0) {
    push(series.in, Math.max(0, bytesIn - series.bytesIn) / dt);
    push(series.out, Math.max(0, bytesOut - series.bytesOut) / dt);
  }
  return Object.assign(series, { at, bytesIn, bytesOut });
}

/** Rates between successive snapshots, per link and over the whole node. */
class Rates {
  constructor() {
    /** @type {Map<string, Series>} */
    this.links = new Map();
    /** @type {Series | undefined} */
    this.total = undefined;
  }

  /** @param {SnapshotView} snapshot */
  update(snapshot) {
    const seen = new Set();
    for (const link of snapshot.links) {
      seen.add(link.peer);
      this.links.set(link.peer, sample(this.links.get(link.peer), snapshot.time, link.bytesIn, link.bytesOut));
    }
    for (const peer of [...this.links.keys()]) if (!seen.has(peer)) this.links.delete(peer);
    this.total = sample(this.total, snapshot.time, snapshot.bytesIn, snapshot.bytesOut);
  }
}

/** @param {number[]} samples @param {number} value */
function push(samples, value) {
  samples.push(value);
  if (samples.length > HISTORY) samples.shift();
}

/**
 * A row for a link not shown yet: its cells, and a canvas for its rate plot.
 * @param {HTMLElement} body
 * @param {string} peer
 */
function newRow(body, peer) {
  const row = element("tr", { class: "link", "data-peer": peer });
  for (const name of ["peer", "rtt", "bytes-in", "bytes-out", "frames-in", "frames-out", "streams", "stalls"]) {
    row.append(element("td", { class: name }));
  }
  const cell = element("td", { class: "plot" });
  cell.append(element("canvas", { width: "120", height: "28" }));
  row.append(cell);
  body.append(row);
  return row;
}

/**
 * Show the links: one row each, kept by peer so its plot carries on.
 * @param {SnapshotView} snapshot
 * @param {Rates} rates
 */
function showLinks(snapshot, rates) {
  const body = /** @type {HTMLElement} */ (document.querySelector("#links tbody"));
  /** @type {Map<string | undefined, HTMLElement>} */
  const rows = new Map([...body.querySelectorAll("tr")].map((row) => [row.dataset.peer, row]));
  for (const link of snapshot.links) {
    const row = rows.get(link.peer) ?? newRow(body, link.peer);
    rows.delete(link.peer);
    const cells = /** @type {Record<string, string>} */ ({
      peer: link.peer,
      rtt: link.rtt === null ? "-" : `${(link.rtt * 1000).toFixed(1)} ms`,
      "bytes-in": size(link.bytesIn),
      "bytes-out": size(link.bytesOut),
      "frames-in": String(link.framesIn),
      "frames-out": String(link.framesOut),
      streams: String(link.openStreams),
      stalls: String(link.windowStalls),
    });
    for (const [name, text] of Object.entries(cells)) {
      const cell = /** @type {HTMLElement} */ (row.querySelector(`td.${name}`));
      if (cell.textContent !== text) cell.textContent = text;
    }
    const rate = rates.links.get(link.peer);
    if (rate !== undefined) plot(/** @type {HTMLCanvasElement} */ (row.querySelector("canvas")), [rate.in, rate.out]);
  }
  for (const gone of rows.values()) gone.remove();
  if (rates.total !== undefined) plot(/** @type {HTMLCanvasElement} */ (byId("total-plot")), [rates.total.in, rates.total.out]);
}

/** The services and who offers them. @param {Map<string, string[]>} byName */
function showServices(byName) {
  const list = /** @type {HTMLElement} */ (document.querySelector("#services ul"));
  const items = [...byName].map(([name, who]) => {
    const item = element("li", { "data-service": name });
    item.append(element("span", { class: "name" }, name), " ", element("span", { class: "offered-by" }, `offered by ${who.join(", ")}`));
    return item;
  });
  const signature = JSON.stringify([...byName]);
  if (list.dataset.signature !== signature) {
    list.replaceChildren(...items);
    list.dataset.signature = signature;
  }
  const select = /** @type {HTMLSelectElement} */ (byId("post-service"));
  const names = [...byName.keys()];
  if (JSON.stringify([...select.options].map((option) => option.value)) !== JSON.stringify(names)) {
    const chosen = select.value;
    select.replaceChildren(...names.map((name) => element("option", { value: name }, name)));
    if (names.includes(chosen)) select.value = chosen;
    else if (names.length > 0) select.value = names.find((name) => !name.startsWith("chanserv_trio.")) ?? names[0];
  }
}

/**
 * Read the stats service's snapshots forever, starting again after a failure.
 * @param {import("./client/index.js").ChanservNode} node
 * @param {string} service
 */
async function watch(node, service) {
  const rates = new Rates();
  const status = byId("status");
  while (node.isAlive) {
    try {
      for await (const source of node.post(service, JSON.stringify({ interval: 0.5, count: null }))) {
        const header = JSON.parse(new TextDecoder().decode(source.header));
        if (header?.format !== STATS_FORMAT) throw new Error(`${service} does not answer in ${STATS_FORMAT}`);
        for await (const frame of source) {
          const snapshot = normalize(JSON.parse(new TextDecoder().decode(frame)));
          rates.update(snapshot);
          showLinks(snapshot, rates);
          showServices(snapshot.offers);
          status.textContent = `live: node ${snapshot.node} at ${node.remoteAddr}, ${snapshot.links.length} link(s)`;
          document.body.dataset.status = "live";
          document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots ?? 0) + 1);
        }
      }
    } catch (error) {
      if (!node.isAlive) break;
      status.textContent = `statistics interrupted (${describe(error)}); asking again`;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  throw new Error(`the link to ${node.remoteAddr} is lost`);
}

/** @param {unknown} error */
function describe(error) {
  if (error instanceof ChanservError) return `${error.name}: ${error.message}`;
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/**
 * A card for one source: its header, its frame count, bytes and rate, its frames.
 * @param {import("./client/index.js").Source} source
 */
async function card(source) {
  const made = element("article", { class: "card", "data-frames": "0", "data-done": "false" });
  const meta = element("p", { class: "meta" });
  const list = element("ol", { class: "frame-list" });
  made.append(element("h3", { class: "header" }, show(source.header)), meta, list);
  byId("cards").append(made);
  const started = performance.now();
  let frames = 0;
  let bytes = 0;
  const update = (/** @type {string} */ state) => {
    const seconds = Math.max((performance.now() - started) / 1000, 1e-3);
    meta.textContent = `${frames} frame(s), ${size(bytes)}, ${(frames / seconds).toFixed(1)} frames/s, ${perSecond(bytes / seconds)} · ${state}`;
    made.dataset.frames = String(frames);
  };
  update("streaming");
  try {
    for await (const frame of source) {
      frames += 1;
      bytes += frame.length;
      if (frames <= SHOWN_FRAMES) list.append(element("li", {}, show(frame)));
      update("streaming");
    }
    update("done");
    made.dataset.done = "true";
  } catch (error) {
    update(describe(error));
    made.dataset.done = "error";
  }
}

/**
 * The post panel: post the body to the chosen service; each source becomes a card.
 * @param {import("./client/index.js").ChanservNode} node
 */
function postPanel(node) {
  const form = /** @type {HTMLFormElement} */ (byId("post-form"));
  const cancel = /** @type {HTMLButtonElement} */ (byId("post-cancel"));
  const state = byId("post-status");
  /** @type {AbortController | null} */
  let running = null;
  cancel.addEventListener("click", () => running?.abort());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    running?.abort();
    const controller = new AbortController();
    running = controller;
    const service = /** @type {HTMLSelectElement} */ (byId("post-service")).value;
    const body = /** @type {HTMLTextAreaElement} */ (byId("post-body")).value;
    byId("cards").replaceChildren();
    state.textContent = `posting to ${service}`;
    state.dataset.state = "posting";
    cancel.disabled = false;
    const cards = [];
    try {
      for await (const source of node.post(service, body, { signal: controller.signal })) cards.push(card(source));
      await Promise.all(cards);
      if (running === controller) {
        state.textContent = `${service}: ${cards.length} source(s)`;
        state.dataset.state = "done";
      }
    } catch (error) {
      if (running === controller) {
        state.textContent = `${service}: ${describe(error)}`;
        state.dataset.state = "failed";
      }
    } finally {
      if (running === controller) {
        running = null;
        cancel.disabled = true;
      }
    }
  });
}

async function main() {
  const status = byId("status");
  const config = await (await fetch("/config.json", { cache: "no-store" })).json();
  const url = new URL(config.ws);
  if (["0.0.0.0", "[::]"].includes(url.hostname)) url.hostname = location.hostname;
  status.textContent = `connecting to ${url}`;
  const node = await connect(url.toString(), { dialTimeout: 5000 });
  document.body.dataset.status = "connected";
  postPanel(node);
  await watch(node, config.stats);
}

main().catch((error) => {
  byId("status").textContent = `failed: ${describe(error)}`;
  document.body.dataset.status = "failed";
});
