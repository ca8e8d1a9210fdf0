// What the browser tests share: waiting, ports, the camjobd process, the API and Chromium.
// Each test file keeps its own state (one backend, one browser at a time) and passes it in.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.CAMJOBD_BIN || path.join(ROOT, "target/release/camjobd");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export const sleep = ms => new Promise(r => setTimeout(r, ms));
export const now = () => performance.now();

/** Waits until fn() returns a truthy value (returned), checking every `every` ms; throws after timeoutMs. */
export async function waitFor(what, timeoutMs, fn, every = 25) {
  const deadline = now() + timeoutMs;
  let last;
  for (;;) {
    try { last = await fn(); } catch (e) { last = e; }
    if (last && !(last instanceof Error)) return last;
    if (now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` + (last instanceof Error ? `: ${last.message}` : ""));
    await sleep(every);
  }
}

/** A free TCP port on 127.0.0.1: bind port 0, read it, close (the backend reuses it, also after a restart). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

/** Writes `config` to `file` and has camjobd (`bin`) check it (`--check-config`). */
export function writeCheckedConfig(file, config, bin = BIN) {
  writeFileSync(file, JSON.stringify(config, null, 2));
  const check = spawnSync(bin, ["--check-config", "--config", file], { encoding: "utf8", timeout: 10000 });
  assert.equal(check.status, 0, `camjobd --check-config failed: ${check.stderr}`);
  return file;
}

/** Starts camjobd (`bin`) with `configFile`; `onSpawn(b)` gets the process record at once (so
 *  that the caller can end it if the wait fails), then this waits (bounded) for "... dashboard
 *  at http://ADDR/" on stdout. */
export async function spawnBackend(configFile, onSpawn, bin = BIN) {
  const proc = spawn(bin, ["--config", configFile], { stdio: ["ignore", "pipe", "pipe"] });
  const b = { proc, out: "", err: "", url: null, exit: null };
  b.exited = new Promise(resolve => proc.once("exit", (code, signal) => { b.exit = { code, signal }; resolve(b.exit); }));
  proc.stdout.setEncoding("utf8").on("data", d => { b.out = (b.out + d).slice(-8192); });
  proc.stderr.setEncoding("utf8").on("data", d => { b.err = (b.err + d).slice(-8192); });
  onSpawn(b);
  await waitFor("camjobd to print its dashboard URL", 15000, () => {
    if (b.exit) throw new Error(`camjobd exited ${JSON.stringify(b.exit)}: ${b.err}`);
    const m = /dashboard at (http:\/\/\S+\/)/.exec(b.out);
    return m && (b.url = m[1]);
  });
  return b;
}

/** SIGTERM, wait (bounded) for the exit; SIGKILL if it does not come. */
export async function stopProcess(b) {
  if (!b) return null;
  if (!b.exit) b.proc.kill("SIGTERM");
  const exit = await Promise.race([b.exited, sleep(5000).then(() => null)]);
  if (exit) return exit;
  b.proc.kill("SIGKILL");
  await Promise.race([b.exited, sleep(5000)]);
  throw new Error("camjobd did not exit within 5 s of SIGTERM");
}

/** A request to camjobd's API on `port`: GET answers 200 and its JSON is returned; another
 *  method's response is returned as it is. One retry on a dropped connection: camjobd closes a
 *  keep-alive connection idle for http.idle_timeout_ms (5 s), and node's fetch can send on it
 *  just as it closes ("other side closed"; seen after a long synchronous pause of the test).
 *  A timeout is not retried. */
export async function apiRequest(port, p, method = "GET") {
  const go = () => fetch(`http://127.0.0.1:${port}${p}`, { method, signal: AbortSignal.timeout(3000) });
  const r = await go().catch(e => { if (e.cause && e.cause.code === "UND_ERR_SOCKET") return go(); throw e; });
  if (method !== "GET") return r;
  assert.equal(r.status, 200, `GET ${p}`);
  return r.json();
}

/** Chromium with a fresh profile directory under `tmp`: `{ ctx, dir }`. */
export async function launchChromium(tmp, viewport, extraArgs = []) {
  const dir = mkdtempSync(path.join(tmp, "chromium-profile-"));
  const ctx = await chromium.launchPersistentContext(dir,
    { executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, ...extraArgs], viewport, timeout: 30000 });
  return { ctx, dir };
}

/** Closes a browser from launchChromium (bounded) and removes its profile. */
export async function closeChromium(b) {
  if (!b) return;
  await Promise.race([b.ctx.close(), sleep(10000)]);
  // Not rmSync: after the long run the profile holds thousands of cached snapshots, and seconds
  // of a blocked event loop let camjobd's idle close of a pooled connection go unseen.
  await rm(b.dir, { recursive: true, force: true });
}
