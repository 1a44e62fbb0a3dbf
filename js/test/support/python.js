// Start js/test/server.py (the repository's Python node) and learn its URL.

import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";

import { ProtocolError, connect } from "../../src/index.js";

export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const SERVER = fileURLToPath(new URL("../server.py", import.meta.url));

/**
 * The Python node, started with the interpreter in CHANSERV_PYTHON (pytest sets its
 * own) or `python`, from the repository root so that it imports this repository.
 * @returns {Promise<{url: string, authUrl: string, compression: boolean, stop: () => Promise<void>, output: () => string}>}
 */
export async function startServer(timeoutMs = 20000) {
  const python = process.env.CHANSERV_PYTHON || "python";
  const child = spawn(python, [SERVER], { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, PYTHONUNBUFFERED: "1" } });
  let stdout = "";
  let stderr = "";
  child.stderr.setEncoding("utf-8").on("data", (chunk) => (stderr += chunk));
  const line = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server.py printed no URL within ${timeoutMs} ms:\n${stderr}`)), timeoutMs);
    child.stdout.setEncoding("utf-8").on("data", (chunk) => {
      stdout += chunk;
      const end = stdout.indexOf("\n");
      if (end >= 0) {
        clearTimeout(timer);
        resolve(stdout.slice(0, end));
      }
    });
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server.py exited with ${code} before printing its URL:\n${stderr}`));
    });
  });
  const { url, auth_url: authUrl, compression } = JSON.parse(/** @type {string} */ (line));
  return {
    url,
    authUrl,
    compression,
    output: () => stderr,
    async stop() {
      if (child.exitCode !== null) return;
      child.stdin.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await once(child, "exit");
      clearTimeout(timer);
    },
  };
}

/**
 * Why end-to-end tests cannot run against this server, or null when they can: a
 * Python side that does not speak protocol version 2 fails our handshake.
 * @param {string} url
 * @returns {Promise<string | null>}
 */
export async function incompatibility(url) {
  try {
    const node = await connect(url, { dialTimeout: 5000 });
    await node.close();
    return null;
  } catch (error) {
    if (error instanceof ProtocolError) {
      return `the repository's Python side does not speak this package's protocol version (${error.message})`;
    }
    throw error;
  }
}
