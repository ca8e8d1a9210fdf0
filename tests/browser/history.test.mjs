// Each card's chart of the last day, in a real headless Chromium against the real binary — a
// debug build, whose test knob shortens the history's minute to a second
// (CAMJOBD_TEST_HISTORY_INTERVAL_S; release builds always keep minutes).
//
//   node --test history.test.mjs        (scripts/browser-test.sh builds and runs this)
//
// Environment: CAMJOBD_DEBUG_BIN (default target/debug/camjobd), HISTORY_REFRESHES (chart
// refreshes counted for the bounded-DOM check, default 40), CHROMIUM, ARTIFACTS_DIR.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT, sleep, now, waitFor, freePort, apiRequest, launchChromium, closeChromium } from "./lib.mjs";

const BIN = process.env.CAMJOBD_DEBUG_BIN || path.join(ROOT, "target/debug/camjobd");
const ARTIFACTS = process.env.ARTIFACTS_DIR || path.join(ROOT, "target/browser-artifacts");
const REFRESHES = Number(process.env.HISTORY_REFRESHES || 40);
const POLL_MS = 200;

const tmp = mkdtempSync(path.join(os.tmpdir(), "camjobd-history-"));
let port = 0, backend = null, browser = null;

after(async () => {
  await closeChromium(browser).catch(() => {});
  if (backend && !backend.exit) {
    backend.proc.kill("SIGTERM");
    await Promise.race([backend.exited, sleep(5000)]);
    if (!backend.exit) backend.proc.kill("SIGKILL");
  }
  rmSync(tmp, { recursive: true, force: true });
});

const api = p => apiRequest(port, p);

/** Every node of the document (elements, texts, comments). */
const NODE_COUNT = () => { const w = document.createTreeWalker(document, NodeFilter.SHOW_ALL); let n = 1; while (w.nextNode()) n++; return n; };

/** What cam0's chart shows: the steps of its fps line, the pieces of each state's strip, the
 *  drops marks, its labels and the colour of the RECOVERING strip. */
const CHART = name => {
  const box = document.querySelector(`.cam[data-camera="${name}"] .hist`), d = cls => box.querySelector("." + cls).getAttribute("d") || "";
  const count = (s, re) => (s.match(re) || []).length;
  const rec = box.querySelector(".s-RECOVERING");
  return { steps: count(d("fps"), /H/g), drops: count(d("drops"), /M/g), running: count(d("s-RUNNING"), /Z/g),
    recovering: count(d("s-RECOVERING"), /Z/g), failed: count(d("s-FAILED"), /Z/g), recColour: getComputedStyle(rec).fill,
    ago: box.querySelector(".ago").textContent, now: box.querySelector(".now").textContent, sum: box.querySelector(".sum").textContent,
    title: box.querySelector("title").textContent, paths: box.querySelectorAll("path").length, svgs: box.querySelectorAll("svg").length };
};

test("the chart renders each interval's point, shows a stall as RECOVERING and keeps the DOM flat across refreshes", { timeout: 240000 }, async () => {
  port = await freePort();
  const file = path.join(tmp, "camjobd.json");
  // cam0 stalls once after 8 s of frames and delivers again from the first reopen (RECOVERING
  // for a few hundred ms); broken cannot be opened (FAILED, a red strip).
  writeFileSync(file, JSON.stringify({ http: { bind: `127.0.0.1:${port}` }, storage: { dir: path.join(tmp, "data") }, log: { level: "warn" },
    webrtc: { udp_port: 0 },
    cameras: [
      { name: "cam0", source: { kind: "synthetic", width: 160, height: 120, fps: 50, fault: { stall_after_frames: 400, recover_after_reopens: 1 } },
        watchdog: { stall_timeout_ms: 300, backoff_initial_ms: 100, backoff_max_ms: 100 }, store: { enabled: false } },
      { name: "broken", source: { kind: "synthetic", width: 160, height: 120, fps: 10, fault: { fail_open: true } },
        watchdog: { max_recoveries: 0 }, store: { enabled: false } },
    ] }));
  const proc = spawn(BIN, ["--config", file], { stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, CAMJOBD_TEST_HISTORY_INTERVAL_S: "1" } });
  backend = { proc, out: "", err: "", exit: null };
  backend.exited = new Promise(r => proc.once("exit", (code, signal) => { backend.exit = { code, signal }; r(); }));
  proc.stdout.setEncoding("utf8").on("data", d => { backend.out = (backend.out + d).slice(-8192); });
  proc.stderr.setEncoding("utf8").on("data", d => { backend.err = (backend.err + d).slice(-8192); });
  const url = await waitFor("camjobd's dashboard URL", 20000, () => {
    if (backend.exit) throw new Error(`camjobd exited: ${backend.err}`);
    const m = /dashboard at (http:\/\/\S+\/)/.exec(backend.out);
    return m && m[1];
  });
  const first = await api("/api/cameras/cam0/history");
  assert.equal(first.interval_s, 1, "the debug build took the knob");

  browser = await launchChromium(tmp, { width: 1024, height: 900 });
  const page = browser.ctx.pages()[0] || await browser.ctx.newPage();
  const errors = [];
  page.on("pageerror", e => { if (errors.length < 20) errors.push(String(e)); });
  // The page's own history answers for cam0: what the chart must show, and how many came.
  let answers = 0, lastBody = null, maxInFlight = 0;
  const inFlight = new Set();
  page.on("request", r => { if (new URL(r.url()).pathname.startsWith("/api/")) { inFlight.add(r); maxInFlight = Math.max(maxInFlight, inFlight.size); } });
  page.on("requestfinished", r => inFlight.delete(r));
  page.on("requestfailed", r => inFlight.delete(r));
  page.on("response", async r => {
    if (new URL(r.url()).pathname !== "/api/cameras/cam0/history") return;
    try { const b = await r.json(); answers++; lastBody = b; } catch (e) { /* the page navigated away */ }
  });
  await page.goto(`${url}?poll_ms=${POLL_MS}`, { waitUntil: "load" });

  // Points appear one an interval; the chart draws each one the page was given.
  const chart = () => page.evaluate(CHART, "cam0");
  const drawn = await waitFor("5 points drawn", 20000, async () => { const c = await chart(); return c.steps >= 5 && c; }, 100);
  console.log(`chart: ${JSON.stringify(drawn)}`);
  assert.equal(drawn.ago, "24 min ago", "1440 points of 1 s");
  assert.equal(drawn.now, "now");
  assert.match(drawn.sum, /^peak \d+(\.\d+)? fps · \d+ dropped$/);
  const matched = await waitFor("the chart to match the page's last answer", 5000, async () => {
    const c = await chart(), body = lastBody;
    return body && c.steps === body.points.length && { c, n: body.points.length };
  }, 50);
  console.log(`the chart has ${matched.c.steps} steps for ${matched.n} points after ${answers} answers`);
  const broken = await page.evaluate(CHART, "broken");
  assert.ok(broken.failed >= 1 && broken.running === 0, `the FAILED camera's strip is red: ${JSON.stringify(broken)}`);

  // The stall: RECOVERING for a fraction of an interval, drawn in amber.
  const rec = await waitFor("a RECOVERING point in the API", 30000, async () => {
    const h = await api("/api/cameras/cam0/history");
    return h.points.find(p => p.state === "RECOVERING");
  }, 200);
  const shown = await waitFor("the RECOVERING strip on the page, RUNNING on both sides", 10000, async () => {
    const c = await chart();
    return c.recovering >= 1 && c.running >= 2 && c;
  }, 50);
  console.log(`stall: RECOVERING point ${JSON.stringify(rec)}; chart ${JSON.stringify(shown)}`);
  assert.equal(shown.recColour, "rgb(255, 204, 51)", "amber");
  assert.ok(shown.running >= 2, "RUNNING before and after the stall");
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.locator('.cam[data-camera="cam0"] .hist').screenshot({ path: path.join(ARTIFACTS, "dashboard-history.png") });

  // Bounded: the node count after many refreshes equals the count after the first ones.
  const cdp = await browser.ctx.newCDPSession(page);
  await cdp.send("Performance.enable");
  const nodesBefore = await page.evaluate(NODE_COUNT), answersBefore = answers;
  const t0 = now();
  await waitFor(`${REFRESHES} more refreshes`, REFRESHES * 3000 + 20000, () => answers >= answersBefore + REFRESHES, 200);
  const nodesAfter = await page.evaluate(NODE_COUNT), after_ = await chart();
  for (let i = 0; i < 3; i++) await cdp.send("HeapProfiler.collectGarbage");
  const m = Object.fromEntries((await cdp.send("Performance.getMetrics")).metrics.map(x => [x.name, x.value]));
  console.log(`${answers - answersBefore} refreshes in ${((now() - t0) / 1000).toFixed(1)} s: DOM nodes ${nodesBefore} -> ${nodesAfter} ` +
    `(Chromium's count after GC ${m.Nodes}); ${after_.paths} paths, ${after_.steps} steps; max API requests in flight ${maxInFlight}`);
  assert.equal(nodesAfter, nodesBefore, "the DOM does not grow with the refreshes");
  assert.equal(after_.paths, 7);
  assert.equal(after_.svgs, 1);
  assert.ok(after_.steps > matched.c.steps, "the line grew with the points, in the same path");
  assert.ok(maxInFlight <= 1, `one API request in flight (saw ${maxInFlight})`);

  // What a full day costs the page: a ring of 1440 points drawn (the chart of a day-old camjobd).
  const cost = await page.evaluate(() => {
    const c = cards.get("cam0"), t1 = Math.floor(Date.now() / 1000) - 1440;
    const states = ["RUNNING", "RUNNING", "RUNNING", "RECOVERING", "FAILED", "STOPPED"];
    const points = Array.from({ length: 1440 }, (_, i) => ({ t: t1 + i, fps: 45 + (i % 7), frames: 50, drops: i % 50 === 0 ? 3 : 0, state: states[Math.floor(i / 240)] }));
    const body = { camera: "cam0", interval_s: 1, capacity: 1440, points }, json = JSON.stringify(body);
    const runs = 50, t = performance.now();
    for (let i = 0; i < runs; i++) drawHistory(c, JSON.parse(json), Date.now() / 1000);
    const d = c.hist.paths;
    return { ms: (performance.now() - t) / runs, bytes: json.length, fpsPath: d.fps.getAttribute("d").length, steps: (d.fps.getAttribute("d").match(/H/g) || []).length };
  });
  console.log(`a full ring (1440 points, ${cost.bytes} B of JSON): parsed and drawn in ${cost.ms.toFixed(2)} ms; fps path ${cost.fpsPath} chars, ${cost.steps} steps`);
  assert.ok(cost.steps >= 1438, `every point of a full ring drawn (${cost.steps})`);
  assert.equal(await page.evaluate(NODE_COUNT), nodesBefore, "a full ring adds no node either");
  assert.deepEqual(errors, [], "no script errors on the page");
});
