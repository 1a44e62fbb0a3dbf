// The declarations in types/ are what `npm run build` makes from the JSDoc in src/
// (so the committed ones cannot fall behind), and src/ plus a TypeScript user of the
// published API type-check (`npm run check`).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const PACKAGE = fileURLToPath(new URL("../", import.meta.url));
const TSC = createRequire(import.meta.url).resolve("typescript/bin/tsc");

/** @param {string[]} args */
function tsc(args) {
  try {
    execFileSync(process.execPath, [TSC, ...args], { cwd: PACKAGE, encoding: "utf-8", timeout: 60000 });
  } catch (error) {
    const failure = /** @type {{stdout?: string}} */ (error);
    assert.fail(`tsc ${args.join(" ")} failed:\n${failure.stdout ?? error}`);
  }
}

test("the committed declarations are what the build makes", { timeout: 90000 }, () => {
  const out = mkdtempSync(join(tmpdir(), "chanserv-types-"));
  try {
    tsc(["-p", "tsconfig.build.json", "--outDir", out]);
    const committed = readdirSync(join(PACKAGE, "types")).sort();
    assert.deepEqual(readdirSync(out).sort(), committed);
    for (const name of committed) {
      assert.equal(readFileSync(join(out, name), "utf-8"), readFileSync(join(PACKAGE, "types", name), "utf-8"), `types/${name} is stale: run npm run build`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("the sources and a TypeScript user of the API type-check", { timeout: 90000 }, () => {
  tsc(["-p", "tsconfig.json"]);
});
