// Drives the console page in a headless Chromium for tests/test_console.py: open the
// console at argv[2], wait until it shows a link to argv[3] with its round trip and
// offers service argv[4], post body argv[5] to it from the post panel, wait for the
// answer and a snapshot after it, and print what the page shows as one JSON object.
// Debian's Chromium (CHANSERV_CHROMIUM), never a downloaded one.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, peer, service, body] = process.argv.slice(2);
const CHROMIUM = process.env.CHANSERV_CHROMIUM || "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const WAIT = { timeout: 15000 };

const { chromium } = await import("playwright-core");
const profile = mkdtempSync(join(tmpdir(), "chanserv-console-"));
const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30000 });
/** @type {string[]} */
const log = [];
try {
  const page = await context.newPage();
  page.on("console", (message) => log.push(message.text()));
  page.on("pageerror", (error) => log.push(String(error)));
  await page.goto(url);
  try {
    await page.waitForFunction(
      ([peer, service]) =>
        document.body.dataset.status === "failed" ||
        (document.querySelector(`#links tr.link[data-peer="${peer}"] td.rtt`)?.textContent?.endsWith("ms") &&
          [.../** @type {HTMLSelectElement} */ (document.getElementById("post-service")).options].some((o) => o.value === service)),
      [peer, service],
      WAIT,
    );
    // Two snapshots or more: every row has a rate sample to plot.
    await page.waitForFunction(() => Number(document.querySelector("#links canvas")?.getAttribute("data-samples") ?? 0) >= 1 || document.body.dataset.status === "failed", null, WAIT);
    await page.selectOption("#post-service", service);
    await page.fill("#post-body", body);
    await page.click("#post-send");
    await page.waitForFunction(() => ["done", "failed"].includes(document.getElementById("post-status")?.dataset.state ?? ""), null, WAIT);
    // A snapshot taken after the post ended (the next one may have been on its way).
    const seen = await page.evaluate(() => Number(document.body.dataset.snapshots));
    await page.waitForFunction((seen) => Number(document.body.dataset.snapshots) >= seen + 2, seen, WAIT);
  } catch (error) {
    log.push(`waiting: ${error}`);
  }
  const shown = await page.evaluate(() => ({
    status: document.body.dataset.status,
    statusText: document.getElementById("status")?.textContent,
    links: [...document.querySelectorAll("#links tr.link")].map((row) => ({
      peer: row.getAttribute("data-peer"),
      cells: Object.fromEntries([...row.querySelectorAll("td")].map((cell) => [cell.className, cell.textContent])),
      samples: Number(row.querySelector("canvas")?.getAttribute("data-samples") ?? 0),
    })),
    services: [...document.querySelectorAll("#services li")].map((item) => ({
      name: item.querySelector(".name")?.textContent,
      offeredBy: item.querySelector(".offered-by")?.textContent,
    })),
    post: { state: document.getElementById("post-status")?.dataset.state, text: document.getElementById("post-status")?.textContent },
    cards: [...document.querySelectorAll("#cards article.card")].map((card) => ({
      header: card.querySelector("h3")?.textContent,
      frames: Number(card.getAttribute("data-frames")),
      done: card.getAttribute("data-done"),
      items: [...card.querySelectorAll("li")].map((item) => item.textContent),
    })),
  }));
  process.stdout.write(JSON.stringify({ ...shown, log }) + "\n");
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
