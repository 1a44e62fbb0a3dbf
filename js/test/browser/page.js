// The page the Chromium test opens: it loads the package as ES modules (no bundler),
// connects to the node named in ?ws=, runs the seed scenario and shows each source as
// a card with its frames; with ?serve=1 it also serves "browser-echo" and asks the
// node's Python client (service relay-call) to post to it through the router.

import { ChanservError, connect } from "../../src/index.js";

const params = new URLSearchParams(location.search);
const text = (/** @type {Uint8Array} */ bytes) => new TextDecoder().decode(bytes);

/**
 * A card for one source: its header, then its frames as they arrive.
 * @param {HTMLElement} parent
 * @param {import("../../src/index.js").Source} source
 */
async function card(parent, source) {
  const element = document.createElement("article");
  element.className = "source";
  const title = document.createElement("h2");
  title.textContent = text(source.header);
  const list = document.createElement("ol");
  element.append(title, list);
  parent.append(element);
  for await (const frame of source) {
    const item = document.createElement("li");
    item.textContent = text(frame);
    list.append(item);
  }
  element.dataset.done = "true";
}

async function main() {
  const status = /** @type {HTMLElement} */ (document.getElementById("status"));
  const url = params.get("ws");
  if (!url) throw new Error("no ?ws= given");
  status.textContent = `connecting to ${url}`;
  const node = await connect(url, { dialTimeout: 5000 });
  status.textContent = "posting";
  const sources = /** @type {HTMLElement} */ (document.getElementById("sources"));
  const cards = [];
  for await (const source of node.post("chanserv", "hello", { deadline: Date.now() + 10000 })) {
    cards.push(card(sources, source));
  }
  await Promise.all(cards);
  if (params.get("serve")) {
    node.serve("browser-echo", async function* (body) {
      yield { header: `from the browser: ${text(body)}`, frames: [navigator.userAgent.includes("Chrome") ? "chrome" : "other", "bye"] };
    });
    const served = /** @type {HTMLElement} */ (document.getElementById("served"));
    const request = JSON.stringify({ service: "browser-echo", body: "hi" });
    for await (const source of node.post("relay-call", request)) await card(served, source);
  }
  await node.close();
  status.textContent = "done";
  document.body.dataset.status = "done";
}

main().catch((error) => {
  const status = /** @type {HTMLElement} */ (document.getElementById("status"));
  status.textContent = `failed: ${error instanceof ChanservError ? error.name : "Error"}: ${error?.message ?? error}`;
  document.body.dataset.status = "failed";
});
