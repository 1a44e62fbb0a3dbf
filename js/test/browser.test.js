// A real headless Chromium (Debian's, never a downloaded one) loads the package as ES
// modules from a page this test serves, runs the seed scenario, and the test reads
// what the page shows. First against a node of this package, then against the
// repository's Python node, where a service the page serves also answers a Python
// client through the router.

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize, sep } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { startJsNode } from "./support/jsnode.js";
import { incompatibility, startServer } from "./support/python.js";

const CHROMIUM = process.env.CHANSERV_CHROMIUM || "/usr/bin/chromium";
const PACKAGE = fileURLToPath(new URL("../", import.meta.url));
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8" };
const noBrowser = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHANSERV_CHROMIUM)`;

/** Serve the package's src/ and test/browser/ (and nothing else) on loopback. */
async function startPages() {
  const server = createServer((request, response) => {
    const path = normalize(decodeURIComponent(new URL(request.url ?? "/", "http://x").pathname)).replace(/^[/\\]+/, "");
    const allowed = path.startsWith(`src${sep}`) || path.startsWith(join("test", "browser") + sep);
    const type = TYPES[/** @type {keyof typeof TYPES} */ (extname(path))];
    if (!allowed || type === undefined || path.includes("..")) {
      response.writeHead(404).end();
      return;
    }
    try {
      const body = readFileSync(join(PACKAGE, path));
      response.writeHead(200, { "content-type": type, "cache-control": "no-store" }).end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(undefined)));
  const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
  return { base: `http://127.0.0.1:${port}`, stop: () => new Promise((resolve) => server.close(resolve)) };
}

describe("in a headless Chromium", { skip: noBrowser, timeout: 60000 }, () => {
  /** @type {Awaited<ReturnType<typeof startPages>>} */
  let pages;
  /** @type {import("playwright-core").BrowserContext} */
  let context;
  /** @type {string} */
  let profile;
  /** @type {string[]} */
  const consoleLines = [];

  before(async () => {
    const { chromium } = await import("playwright-core");
    pages = await startPages();
    profile = mkdtempSync(join(tmpdir(), "chanserv-chromium-"));
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30000 });
  });

  after(async () => {
    await context?.close();
    await pages?.stop();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  /**
   * Open the page against `ws`, wait until it says done or failed, and read its cards.
   * @param {string} ws
   * @param {boolean} serve
   */
  async function runPage(ws, serve = false) {
    const page = await context.newPage();
    page.on("console", (message) => consoleLines.push(message.text()));
    page.on("pageerror", (error) => consoleLines.push(String(error)));
    try {
      const query = new URLSearchParams({ ws, ...(serve ? { serve: "1" } : {}) });
      await page.goto(`${pages.base}/test/browser/page.html?${query}`);
      await page.waitForFunction(() => document.body.dataset.status !== "loading", null, { timeout: 20000 });
      const status = await page.textContent("#status");
      const read = (/** @type {string} */ section) =>
        page.$$eval(`${section} article`, (cards) =>
          cards.map((card) => ({
            header: card.querySelector("h2")?.textContent,
            frames: [...card.querySelectorAll("li")].map((item) => item.textContent),
            done: card.getAttribute("data-done"),
          })),
        );
      return { status, sources: await read("#sources"), served: await read("#served") };
    } finally {
      await page.close();
    }
  }

  const seedCards = [0, 1, 2, 3, 4].map((i) => ({ header: `source @${i}`, frames: ["wait for me!", "ok I'm ready"], done: "true" }));

  test("the page runs the seed scenario against a node of this package", async () => {
    const node = await startJsNode();
    try {
      const shown = await runPage(node.url);
      assert.equal(shown.status, "done", consoleLines.join("\n"));
      assert.deepEqual(shown.sources, seedCards);
    } finally {
      await node.stop();
    }
  });

  test("against the Python node: the seed scenario, and the page's service answers a Python client", async (t) => {
    const server = await startServer();
    try {
      const reason = await incompatibility(server.url);
      if (reason !== null) {
        t.skip(reason);
        return;
      }
      const shown = await runPage(server.url, true);
      assert.equal(shown.status, "done", consoleLines.join("\n"));
      assert.deepEqual(shown.sources, seedCards);
      assert.deepEqual(shown.served, [{ header: "python got from the browser: hi", frames: ["chrome", "bye"], done: "true" }]);
    } finally {
      await server.stop();
    }
  });
});
