// The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core; no browser is downloaded) against the real camjobd binary.
//
//   node --test dashboard.test.mjs        (scripts/browser-test.sh builds and runs this)
//
// Environment: DASHBOARD_POLLS (status polls in the long run, default 12000), CAMJOBD_BIN
// (default target/release/camjobd), CHROMIUM (default /usr/bin/chromium), ARTIFACTS_DIR
// (screenshots; default target/browser-artifacts).
//
// The tests run in order and share one backend; every wait is a bounded loop with a deadline,
// and every process started here is ended in after(), also when a test fails.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT, BIN, sleep, now, waitFor, freePort, writeCheckedConfig, spawnBackend, stopProcess, apiRequest,
  launchChromium, closeChromium } from "./lib.mjs";

const POLLS = Number(process.env.DASHBOARD_POLLS || 12000);
const ARTIFACTS = process.env.ARTIFACTS_DIR || path.join(ROOT, "target/browser-artifacts");
const WARMUP_POLLS = Math.min(200, Math.floor(POLLS / 2));
const LONG_POLL_MS = 50;   // the accelerated long run
const KILL_POLL_MS = 500;  // the disconnect/reconnect check
const PHONE = { width: 390, height: 844 }, DESKTOP = { width: 1024, height: 768 };
const MAX_PNG_BYTES = 512 * 1024;  // the phone page holds three cameras
const TOKEN = "browser-test-token";  // start/stop need it; GETs (all the polling) do not
const LIVE_FPS = 15;         // the page's cap on its live view (?fps= of the stream it opens)
const STREAM_CLOSE_MS = 5000;  // a closed stream is counted out by camjobd within this (its next write fails)

assert.ok(Number.isInteger(POLLS) && POLLS >= 10, `DASHBOARD_POLLS must be a whole number >= 10 (got ${process.env.DASHBOARD_POLLS})`);

const tmp = mkdtempSync(path.join(os.tmpdir(), "camjobd-browser-"));
let port = 0, backend = null, browser = null;
const figures = {};

after(async () => {
  await closeBrowser().catch(() => {});
  await stopBackend().catch(() => {});
  rmSync(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------- helpers

function writeConfig() {
  const cameras = [
    // Every frame a new snapshot, so the image changes on every poll of the long run.
    // (quality 95: fewer JPEG artefacts, which keeps the screenshots' PNGs small.) Not stored:
    // this camera is about the dashboard, and ten minutes of 50 fps would be a lot of files.
    { name: "cam0", source: { kind: "synthetic", width: 160, height: 120, fps: 50, quality: 95 }, snapshot_interval_ms: 0,
      store: { enabled: false } },
    // Cannot be opened and may not recover: FAILED with a reason right after start.
    { name: "broken", source: { kind: "synthetic", width: 160, height: 120, fps: 10, fault: { fail_open: true } },
      watchdog: { max_recoveries: 0 }, store: { enabled: false } },
    // Stores its snapshots (the newest 200) for the export test, and serves H.264 over RTSP.
    { name: "yard", source: { kind: "synthetic", width: 160, height: 120, fps: 10 }, snapshot_interval_ms: 200,
      store: { enabled: true, max_files: 200 }, video: {} },
  ];
  // Exports read 20 files a second, so that one can be watched and cancelled.
  const config = { http: { bind: `127.0.0.1:${port}`, token: TOKEN }, storage: { dir: path.join(tmp, "data") }, log: { level: "warn" },
    cameras, exports: { max_files_per_s: 20 }, rtsp: { bind: "127.0.0.1:0" }, webrtc: { udp_port: 0 } };
  return writeCheckedConfig(path.join(tmp, "camjobd.json"), config);
}

/** Starts camjobd and waits (bounded) for its dashboard URL. */
async function startBackend() {
  assert.equal(backend, null, "backend already running");
  return spawnBackend(path.join(tmp, "camjobd.json"), b => { backend = b; });
}

/** SIGTERM, wait (bounded) for the exit; SIGKILL if it does not come. */
async function stopBackend() {
  const b = backend;
  backend = null;
  return stopProcess(b);
}

const api = p => apiRequest(port, p);
const cam = (status, name) => status.cameras.find(c => c.camera === name);

/** One Chromium at a time, with a fresh profile directory. */
async function launchBrowser(viewport = DESKTOP) {
  assert.equal(browser, null, "a browser is already running");
  const { ctx, dir } = await launchChromium(tmp, viewport);
  const page = ctx.pages()[0] || await ctx.newPage();
  const errors = [];
  page.on("pageerror", e => { if (errors.length < 20) errors.push(String(e)); });
  browser = { ctx, page, dir, errors };
  return browser;
}

async function closeBrowser() {
  const b = browser;
  browser = null;
  await closeChromium(b);
}

/** Forces a full GC (several passes) and reads Chromium's own counters for the page. */
async function measure(page, cdp) {
  for (let i = 0; i < 3; i++) await cdp.send("HeapProfiler.collectGarbage");
  const { metrics } = await cdp.send("Performance.getMetrics");
  const m = Object.fromEntries(metrics.map(x => [x.name, x.value]));
  const imgs = await page.evaluate(() => document.querySelectorAll("img").length);
  return { nodes: m.Nodes, heapUsed: m.JSHeapUsedSize, imgs, listeners: m.JSEventListeners, documents: m.Documents };
}

const camSel = name => `.cam[data-camera="${name}"]`;
const liveSel = name => `${camSel(name)} .live`;
const isStream = r => new URL(r.url()).pathname.endsWith("/stream.mjpeg");
const streamsActive = async () => (await api("/api/status")).http.streams_active;

/** Waits (bounded) until camjobd counts `n` stream clients; returns the ms it took. */
async function waitStreams(n, timeoutMs, what) {
  const t = now();
  await waitFor(`${what}: http.streams_active ${n}`, timeoutMs, async () => (await streamsActive()) === n, 20);
  return Math.round(now() - t);
}

// A hash of the pixels the camera's <img> shows now, drawn on an OffscreenCanvas (not a DOM
// node, so the node counts stay exact); null before a frame is there.
const FRAME_HASH = name => {
  const img = document.querySelector(`.cam[data-camera="${name}"] img`);
  if (!img || !img.complete || !img.naturalWidth) return null;
  const c = new OffscreenCanvas(img.naturalWidth, img.naturalHeight), g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let h = 2166136261;
  for (let i = 0; i < d.length; i += 4) h = Math.imul(h ^ (d[i] | d[i + 1] << 8 | d[i + 2] << 16), 16777619) >>> 0;
  return h;
};
const frameHash = (page, name) => page.evaluate(FRAME_HASH, name);

/** The camera's <img> and Live toggle as the page has them. */
const liveView = (page, name) => page.evaluate(n => {
  const c = document.querySelector(`.cam[data-camera="${n}"]`), img = c.querySelector("img");
  return { pressed: c.querySelector(".live").getAttribute("aria-pressed"), src: img.getAttribute("src") || "", complete: img.complete,
    w: img.naturalWidth, shown: !c.querySelector(".frame").classList.contains("noimg"), msg: c.querySelector(".msg").textContent,
    cap: c.querySelector(".cap").textContent };
}, name);

/** Every node of the document (elements, texts, comments): the page's DOM must not grow. */
const NODE_COUNT = () => { const w = document.createTreeWalker(document, NodeFilter.SHOW_ALL); let n = 1; while (w.nextNode()) n++; return n; };

/** document.hidden overridden on the document (what a hidden tab reports) plus the event. */
const setHidden = (page, hidden) => page.evaluate(h => {
  if (h) Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
  else delete document.hidden;
  document.dispatchEvent(new Event("visibilitychange"));
}, hidden);
const text = (page, sel) => page.locator(sel).first().textContent({ timeout: 2000 });
const connState = page => page.evaluate(() => document.getElementById("conn").dataset.state);

// Records layout shifts that move something inside a camera card (the image loading must not).
const LAYOUT_SHIFT_PROBE = () => {
  window.__shift = { total: 0, cards: 0 };
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) {
      if (e.hadRecentInput) continue;
      window.__shift.total += e.value;
      if ((e.sources || []).some(s => s.node && s.node.closest && s.node.closest(".cam"))) window.__shift.cards += e.value;
    }
  }).observe({ type: "layout-shift", buffered: true });
};

// ---------------------------------------------------------------- the tests

test("setup: camjobd starts with a RUNNING and a FAILED camera", { timeout: 60000 }, async () => {
  port = await freePort();
  writeConfig();
  await startBackend();
  const s = await waitFor("cam0 RUNNING and broken FAILED", 10000, async () => {
    const s = await api("/api/status");
    return cam(s, "cam0").job.state === "RUNNING" && cam(s, "broken").job.state === "FAILED" && s;
  }, 100);
  console.log(`camjobd at ${backend.url}; cameras: ${s.cameras.map(c => `${c.camera} ${c.job.state}`).join(", ")}`);
});

test(`long run: ${POLLS} status polls at ?poll_ms=${LONG_POLL_MS}, live view on for the middle third, bounded DOM, heap and requests`, { timeout: 60000 + POLLS * LONG_POLL_MS * 3 }, async () => {
  const { page, ctx, errors } = await launchBrowser(DESKTOP);
  const cdp = await ctx.newCDPSession(page);
  await cdp.send("Performance.enable");
  await page.addInitScript(LAYOUT_SHIFT_PROBE);

  // Requests to /api/ in flight, from the browser's own network events. The live view's stream
  // is the one long request the page holds besides them; it is counted on its own.
  const inFlight = new Set();
  let maxInFlight = 0, statusPolls = 0, images = 0, eventFetches = 0, failed = 0;
  // The live phase: phase before -> opening -> on -> done; what it saw.
  const live = { phase: "before", opened: 0, pollsOn: 0, pollsOff: 0, cam0Images: 0, samples: 0, frames: 0, lastHash: null,
    streamsPeak: 0, onMs: 0, offMs: 0, seconds: 0, serverFrames: 0 };
  const isApi = r => new URL(r.url()).pathname.startsWith("/api/");
  page.on("request", r => {
    if (!isApi(r)) return;
    if (isStream(r)) { live.opened++; return; }
    if (live.phase === "on" && new URL(r.url()).pathname === "/api/cameras/cam0/latest.jpg") live.cam0Images++;
    inFlight.add(r);
    maxInFlight = Math.max(maxInFlight, inFlight.size);
    const p = new URL(r.url()).pathname;
    if (p === "/api/status") statusPolls++;
    else if (p.endsWith("/latest.jpg")) images++;
    else if (p === "/api/events") eventFetches++;
  });
  // Overlap is judged on the browser's own monotonic times (CDP's Network events: request
  // sent, loading finished or failed), not on the order in which Playwright's events reach
  // this process: on a busy machine the next request's "request" can arrive before the last
  // one's "requestfinished", an overlap the page never made.
  const spans = new Map();
  const timedApi = url => { const p = new URL(url).pathname; return p.startsWith("/api/") && !p.endsWith("/stream.mjpeg"); };
  await cdp.send("Network.enable");
  cdp.on("Network.requestWillBeSent", e => { if (timedApi(e.request.url) && !spans.has(e.requestId)) spans.set(e.requestId, [e.timestamp, Infinity]); });
  const ended = e => { const s = spans.get(e.requestId); if (s && s[1] === Infinity) s[1] = e.timestamp; };
  cdp.on("Network.loadingFinished", ended);
  cdp.on("Network.loadingFailed", ended);
  page.on("requestfinished", r => inFlight.delete(r));
  page.on("requestfailed", r => { if (inFlight.delete(r)) failed++; });
  // The most timed requests open at once (an end at the same instant as a start comes first);
  // the count by event order stays as a diagnostic.
  const maxOverlap = () => {
    // A request never seen to end (none so far; the page's own 5 s timeout cancels a load,
    // which CDP reports as failed) is left out rather than counted as open forever.
    const closed = [...spans.values()].filter(([, b]) => b !== Infinity);
    const edges = closed.flatMap(([a, b]) => [[a, 1], [b, -1]]).sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    let n = 0, max = 0;
    for (const [, d] of edges) { n += d; max = Math.max(max, n); }
    return max;
  };


  const t0 = now();
  await page.goto(`${backend.url}?poll_ms=${LONG_POLL_MS}`, { waitUntil: "load" });
  await waitFor(`${WARMUP_POLLS} warm-up polls`, 60000, () => statusPolls >= WARMUP_POLLS, 50);
  // One short live on/off cycle in the warm-up, by the same clicks as the one measured below:
  // the first click injects playwright's own script into the page (~0.8 MB of heap, a dozen
  // listeners) and the first hover and focus of a button make Chromium build a few nodes of
  // its own; none of that is the dashboard's, and none of it grows on the next clicks.
  await page.locator(liveSel("cam0")).click();
  await waitStreams(1, 5000, "live on in the warm-up");
  await waitFor("a live frame in the warm-up", 5000, async () => (await liveView(page, "cam0")).src.includes("/stream.mjpeg") && (await frameHash(page, "cam0")) !== null, 20);
  await page.locator(liveSel("cam0")).click();
  await waitStreams(0, STREAM_CLOSE_MS, "live off in the warm-up");
  await waitFor("the snapshot back in the warm-up", 5000, async () => (await liveView(page, "cam0")).src.includes("/latest.jpg?"), 20);
  live.opened = 0;
  const before = await measure(page, cdp);
  const shiftBefore = await page.evaluate(() => ({ ...window.__shift }));
  const tWarm = now(), pollsWarm = statusPolls;
  console.log(`warm-up: ${statusPolls} polls in ${((tWarm - t0) / 1000).toFixed(1)} s; nodes ${before.nodes}, JS heap used ${before.heapUsed} B, <img> ${before.imgs}, listeners ${before.listeners}`);

  // The long run, with a progress line every 60 s; deadline: 3x the nominal time plus a minute.
  // cam0's Live toggle is on for the middle third of the polls after warm-up (at least 2 s), so
  // the end measurement comes after a whole on/off cycle and a third of snapshots again.
  const deadline = now() + 60000 + POLLS * LONG_POLL_MS * 3;
  const span = Math.max(0, POLLS - pollsWarm), liveFrom = pollsWarm + Math.floor(span / 3), liveTo = pollsWarm + Math.floor(2 * span / 3);
  let nextReport = now() + 60000, tOn = 0, framesOn = 0;
  while (statusPolls < POLLS || live.phase !== "done") {
    assert.ok(now() < deadline, `only ${statusPolls} of ${POLLS} polls before the deadline`);
    assert.ok(backend && !backend.exit, "camjobd exited during the long run");
    if (now() >= nextReport) {
      nextReport += 60000;
      const rate = (statusPolls - pollsWarm) / ((now() - tWarm) / 1000);
      console.log(`  ${statusPolls} polls, ${rate.toFixed(1)}/s, ${images} images, max in flight ${maxOverlap()} (${maxInFlight} by event order), live ${live.phase}`);
    }
    if (live.phase === "before" && statusPolls >= liveFrom) {
      live.phase = "opening";
      live.pollsOn = statusPolls;
      framesOn = (await api("/api/status")).http.stream_frames;
      await page.locator(liveSel("cam0")).click();
      live.onMs = await waitStreams(1, 5000, "live on in the long run");
      await waitFor("the stream's first frame in cam0's <img>", 5000, async () => {
        const v = await liveView(page, "cam0");
        return v.src.includes("/stream.mjpeg") && v.complete && v.w === 160;
      }, 20);
      tOn = now();
      live.phase = "on";
      console.log(`  live on at poll ${statusPolls}: streams_active 1 after ${live.onMs} ms`);
    } else if (live.phase === "on") {
      // Samples: the stream's frames change the picture; camjobd counts one stream.
      const [h, st] = await Promise.all([frameHash(page, "cam0"), api("/api/status")]);
      live.samples++;
      if (h !== null && h !== live.lastHash) { if (live.lastHash !== null) live.frames++; live.lastHash = h; }
      live.streamsPeak = Math.max(live.streamsPeak, st.http.streams_active);
      if (statusPolls >= liveTo && now() - tOn >= 2000) {
        live.phase = "done";
        live.pollsOff = statusPolls;
        live.seconds = (now() - tOn) / 1000;
        await page.locator(liveSel("cam0")).click();
        live.offMs = await waitStreams(0, STREAM_CLOSE_MS, "live off in the long run");
        live.serverFrames = (await api("/api/status")).http.stream_frames - framesOn;
        console.log(`  live off at poll ${statusPolls} after ${live.seconds.toFixed(1)} s: streams_active 0 after ${live.offMs} ms; ` +
          `${live.frames} picture changes in ${live.samples} samples, ${live.serverFrames} frames sent`);
      }
    }
    await sleep(200);
  }
  const after_ = await measure(page, cdp);
  const shiftAfter = await page.evaluate(() => ({ ...window.__shift }));
  const seconds = (now() - t0) / 1000;
  const status = await api("/api/status");
  // The page's own view, read between two image loads (an image may be loading right now).
  const page_ = await waitFor("cam0's image between two loads", 2000, () => page.evaluate(() => {
    const img = document.querySelector('.cam[data-camera="cam0"] img');
    if (!img.complete) return null;
    return { conn: document.getElementById("conn").dataset.state, state: document.querySelector('.cam[data-camera="cam0"] .state').textContent,
      imgLoaded: img.naturalWidth, src: img.getAttribute("src") || "", cards: document.querySelectorAll(".cam").length,
      rows: document.querySelectorAll("#events li").length };
  }), 5);

  const pollsLive = live.pollsOff - live.pollsOn;
  const overlap = maxOverlap();
  Object.assign(figures, { polls: statusPolls, images, eventFetches, maxInFlight: overlap, maxInFlightByEvents: maxInFlight, failed, seconds,
    nodesBefore: before.nodes, nodesAfter: after_.nodes, heapBefore: before.heapUsed, heapAfter: after_.heapUsed,
    livePolls: pollsLive, liveSeconds: Number(live.seconds.toFixed(1)), liveStreamsOpened: live.opened, liveStreamsPeak: live.streamsPeak,
    liveFramesSent: live.serverFrames, livePictureChanges: live.frames, liveOnMs: live.onMs, liveOffMs: live.offMs,
    streamsAtEnd: status.http.streams_active });
  const growth = after_.heapUsed - before.heapUsed;
  console.log(`long run: ${statusPolls} status polls (${((statusPolls - pollsWarm) / ((now() - tWarm) / 1000)).toFixed(1)}/s after warm-up), ` +
    `${images} image loads, ${eventFetches} event fetches, ${failed} failed requests, in ${seconds.toFixed(1)} s`);
  console.log(`  DOM nodes:        ${before.nodes} -> ${after_.nodes}`);
  console.log(`  JS heap used:     ${before.heapUsed} -> ${after_.heapUsed} B (${growth >= 0 ? "+" : ""}${(growth / 1024).toFixed(1)} KiB)`);
  console.log(`  event listeners:  ${before.listeners} -> ${after_.listeners}; documents ${before.documents} -> ${after_.documents}`);
  console.log(`  <img> elements:   ${before.imgs} -> ${after_.imgs} (cameras: ${status.cameras.length}); cards ${page_.cards}; event rows ${page_.rows}`);
  console.log(`  API requests in flight, max: ${overlap} by the browser's own times, ${maxInFlight} by event order (besides the live stream; ${spans.size} requests timed, ${[...spans.values()].filter(([, b]) => b === Infinity).length} not seen to end)`);
  console.log(`  live view: on for ${pollsLive} polls (${live.seconds.toFixed(1)} s): ${live.opened} stream opened, streams_active peak ${live.streamsPeak}, ` +
    `${live.serverFrames} frames sent (${(live.serverFrames / live.seconds).toFixed(1)}/s, cap ${LIVE_FPS}), ${live.frames} picture changes in ${live.samples} samples, ` +
    `${live.cam0Images} cam0 snapshot loads meanwhile; streams_active at the end ${status.http.streams_active}`);
  console.log(`  layout shift inside the cards after warm-up: ${(shiftAfter.cards - shiftBefore.cards).toPrecision(2)} (whole page ${(shiftAfter.total - shiftBefore.total).toPrecision(2)})`);
  console.log(`  cam0 on the page: ${page_.state}, image loaded (${page_.imgLoaded} px wide), connection ${page_.conn}; page errors: ${errors.length}`);

  assert.deepEqual(errors, [], "no script errors on the page");
  assert.ok(statusPolls >= POLLS);
  assert.equal(after_.nodes, before.nodes, "DOM node count after the long run equals the count after warm-up");
  assert.ok(growth < 1024 * 1024, `JS heap grew by ${growth} B (limit 1 MiB)`);
  assert.equal(before.imgs, status.cameras.length, "one <img> per camera after warm-up");
  assert.equal(after_.imgs, status.cameras.length, "one <img> per camera at the end");
  assert.ok(spans.size >= statusPolls, `every request timed (${spans.size} for ${statusPolls} polls)`);
  assert.ok(overlap <= 1, `at most one API request in flight besides the stream (saw ${overlap})`);
  assert.ok(images >= (statusPolls - pollsLive) / 2, `the image followed the snapshots (${images} loads in ${statusPolls} polls, ${pollsLive} of them live)`);
  assert.equal(live.opened, 1, "one stream opened for the whole live phase (no reconnect loop)");
  assert.equal(live.streamsPeak, 1, "camjobd counted exactly one stream while live was on");
  assert.equal(live.cam0Images, 0, "no cam0 snapshot loaded while its live view was on");
  assert.ok(live.frames >= 2, `the live picture changed (${live.frames} changes in ${live.samples} samples)`);
  assert.equal(status.http.streams_active, 0, "no stream left open after live was turned off");
  assert.match(page_.src, /\/latest\.jpg\?/, "cam0 shows polled snapshots again after live off");
  assert.equal(shiftAfter.cards - shiftBefore.cards, 0, "no layout shift inside the cards while images load");
  assert.equal(page_.state, "RUNNING");
  assert.equal(page_.imgLoaded, 160);
  assert.equal(page_.conn, "live");
});

test("closing the browser does not stop the job", { timeout: 60000 }, async () => {
  await closeBrowser();
  const a = cam(await api("/api/status"), "cam0").job;
  const t = now();
  await sleep(10000);  // the check itself: 10 s with no browser at all
  const b = cam(await api("/api/status"), "cam0").job;
  const fps = (b.frames_captured - a.frames_captured) / ((now() - t) / 1000);
  console.log(`no browser for 10 s: cam0 job ${b.id} ${b.state}, frames_captured ${a.frames_captured} -> ${b.frames_captured} (${fps.toFixed(1)} fps)`);
  assert.equal(b.id, a.id, "still the same job");
  assert.equal(b.state, "RUNNING");
  assert.ok(b.frames_captured > a.frames_captured, "frames still increasing");
});

test("reopened, the page shows the current state right after load (first poll immediate)", { timeout: 60000 }, async () => {
  const { page } = await launchBrowser(DESKTOP);
  const t0 = now();
  await page.goto(backend.url, { waitUntil: "load" });  // the default 2 s interval
  const tLoad = now();
  await waitFor("cam0 shown as RUNNING", 1500, async () => (await text(page, `${camSel("cam0")} .state`)) === "RUNNING", 10);
  const shown = now();
  const s = await api("/api/status");
  const shownJob = await text(page, `${camSel("cam0")} .job`);
  figures.firstStateMs = Math.round(shown - t0);
  console.log(`reopened: cam0 RUNNING shown ${Math.round(shown - t0)} ms after navigation started (${Math.round(shown - tLoad)} ms after load; poll interval 2000 ms); job ${shownJob}`);
  assert.equal(shownJob, `#${cam(s, "cam0").job.id}`);
  assert.ok(shown - tLoad < 1500, "shown well before the first interval would have passed");
});

test("the FAILED camera shows its reason in a banner", { timeout: 30000 }, async () => {
  const { page } = browser;
  const reason = cam(await api("/api/status"), "broken").job.reason;
  assert.ok(reason && reason.length > 0, "the API gives a reason");
  const banner = page.locator(`${camSel("broken")} .banner`);
  await waitFor("the FAILED banner", 5000, () => banner.isVisible());
  const shown = await banner.textContent();
  console.log(`FAILED banner: "${shown}"`);
  assert.equal(shown, `FAILED: ${reason}`);
  assert.equal(await text(page, `${camSel("broken")} .state`), "FAILED");
});

test("a camera with video shows its RTSP URL to copy; one without shows none", { timeout: 30000 }, async () => {
  const { page } = browser;
  const bind = (await api("/api/status")).rtsp.bind;
  const want = `rtsp://127.0.0.1:${bind.split(":").pop()}/yard`;
  const input = page.locator(`${camSel("yard")} .rtspurl`);
  await waitFor("the RTSP URL", 5000, async () => (await input.inputValue()) === want);
  assert.ok(await input.isVisible(), "shown on the yard card");
  assert.equal(await page.locator(`${camSel("cam0")} .rtsp`).isVisible(), false, "cam0 has no video");
});

test("screenshots of a running and a failed camera, phone and desktop", { timeout: 60000 }, async () => {
  const { page } = browser;
  mkdirSync(ARTIFACTS, { recursive: true });
  const imgLoaded = () => page.evaluate(() => { const i = document.querySelector('.cam[data-camera="cam0"] img'); return i.complete && i.naturalWidth > 0; });
  const shots = [];
  const shot = async (name, target, opts = {}) => {
    const file = path.join(ARTIFACTS, name);
    await target.screenshot({ path: file, animations: "disabled", ...opts });
    const bytes = statSync(file).size;
    shots.push(`${name} ${(bytes / 1024).toFixed(0)} KiB`);
    assert.ok(bytes < MAX_PNG_BYTES, `${name} is ${bytes} B (limit ${MAX_PNG_BYTES})`);
  };
  await page.setViewportSize(PHONE);
  await waitFor("the cam0 image", 5000, imgLoaded);
  await shot("dashboard-running.png", page.locator(camSel("cam0")));
  await shot("dashboard-failed.png", page.locator(camSel("broken")));
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot("dashboard-phone.png", page, { fullPage: true });
  // Phone-width usable: nothing wider than the screen.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow} px wider than a ${PHONE.width} px screen`);
  await page.setViewportSize(DESKTOP);
  await waitFor("the cam0 image", 5000, imgLoaded);
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot("dashboard-desktop.png", page);  // the viewport: both cards and the newest events
  console.log(`screenshots in ${ARTIFACTS}: ${shots.join(", ")}`);
});

test("polling pauses while the page is hidden and resumes at once when shown", { timeout: 30000 }, async () => {
  const { page } = browser;
  let polls = 0;
  const onRequest = r => { if (new URL(r.url()).pathname === "/api/status") polls++; };
  page.on("request", onRequest);
  await page.goto(`${backend.url}?poll_ms=${KILL_POLL_MS}`, { waitUntil: "load" });
  await waitFor("a few polls", 5000, () => polls >= 3);
  await setHidden(page, true);
  await sleep(KILL_POLL_MS);  // a poll already running may finish
  const hiddenFrom = polls;
  await sleep(4 * KILL_POLL_MS);
  const whileHidden = polls - hiddenFrom;
  const t = now();
  await setHidden(page, false);
  await waitFor("a poll right after the page is shown", KILL_POLL_MS / 2, () => polls > hiddenFrom + whileHidden, 5);
  const resumeMs = Math.round(now() - t);
  page.off("request", onRequest);
  console.log(`hidden for ${4 * KILL_POLL_MS} ms at poll_ms=${KILL_POLL_MS}: ${whileHidden} polls; shown again: polled after ${resumeMs} ms`);
  assert.equal(whileHidden, 0, "no poll while hidden");
});

test("live view: the toggle swaps cam0's snapshot for its stream and back; a hidden page holds no stream", { timeout: 60000 }, async () => {
  const { page, errors } = browser;
  let cam0Snapshots = 0, streamRequests = 0;
  const onRequest = r => {
    if (isStream(r)) streamRequests++;
    else if (new URL(r.url()).pathname === "/api/cameras/cam0/latest.jpg") cam0Snapshots++;
  };
  page.on("request", onRequest);
  await page.goto(`${backend.url}?poll_ms=${KILL_POLL_MS}`, { waitUntil: "load" });
  await waitFor("cam0's snapshot", 5000, async () => { const v = await liveView(page, "cam0"); return v.src.includes("/latest.jpg") && v.complete && v.w === 160; });
  await waitStreams(0, STREAM_CLOSE_MS, "no stream before the test");
  const nodesBefore = await page.evaluate(NODE_COUNT);
  assert.equal((await liveView(page, "cam0")).pressed, "false");

  // On, from the keyboard: the toggle is a button in the tab order.
  const btn = page.locator(liveSel("cam0"));
  assert.equal(await btn.evaluate(b => b.tabIndex >= 0 && !b.disabled && b.tagName), "BUTTON");
  await btn.focus();
  await page.keyboard.press("Enter");
  const framesAt = (await api("/api/status")).http.stream_frames;
  const tOn = now();
  const onMs = await waitStreams(1, 5000, "live on");
  const clients = cam(await api("/api/status"), "cam0").live.stream_clients;
  const first = await waitFor("the stream's first frame in cam0's <img>", 5000, async () => {
    const v = await liveView(page, "cam0");
    return v.pressed === "true" && v.src === `/api/cameras/cam0/stream.mjpeg?fps=${LIVE_FPS}` && v.complete && v.w === 160 && v.shown && v;
  }, 20);
  const firstFrameMs = Math.round(now() - tOn);

  // Frames: the picture in the same <img> changes (pixels hashed every 50 ms for 2 s), at no
  // more than the page's cap (camjobd's count of frames sent), and cam0's snapshots pause.
  const snapsAt = cam0Snapshots, hashes = new Set();
  const tSample = now();
  while (now() - tSample < 2000) { const h = await frameHash(page, "cam0"); if (h !== null) hashes.add(h); await sleep(50); }
  const sent = (await api("/api/status")).http.stream_frames - framesAt, fps = sent / ((now() - tOn) / 1000);
  const snapsWhileLive = cam0Snapshots - snapsAt;

  // Hidden: the stream is closed (the toggle stays on); shown: opened again.
  await setHidden(page, true);
  const hiddenMs = await waitStreams(0, STREAM_CLOSE_MS, "page hidden with live on");
  const hiddenView = await liveView(page, "cam0");
  await setHidden(page, false);
  const shownMs = await waitStreams(1, 5000, "page shown again");
  await waitFor("frames again after the page is shown", 5000, async () => { const v = await liveView(page, "cam0"); return v.src.includes("/stream.mjpeg") && v.complete && v.w === 160; });

  // Screenshots with live on: the card on a phone, the page on a desktop.
  mkdirSync(ARTIFACTS, { recursive: true });
  const shots = [];
  let overflow = 0;
  for (const [name, viewport, target] of [["dashboard-live-phone.png", PHONE, () => page.locator(camSel("cam0"))], ["dashboard-live-desktop.png", DESKTOP, () => page]]) {
    await page.setViewportSize(viewport);
    await page.evaluate(() => window.scrollTo(0, 0));
    await waitFor("a live frame", 5000, async () => (await frameHash(page, "cam0")) !== null);
    const file = path.join(ARTIFACTS, name);
    await target().screenshot({ path: file, animations: "disabled" });
    const bytes = statSync(file).size;
    shots.push(`${name} ${(bytes / 1024).toFixed(0)} KiB`);
    assert.ok(bytes < MAX_PNG_BYTES, `${name} is ${bytes} B (limit ${MAX_PNG_BYTES})`);
    if (viewport === PHONE) overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  }

  // Off, by a click: the stream is closed, and the polled snapshot comes back in the same <img>.
  await btn.click();
  const tOff = now();
  const offMs = await waitStreams(0, STREAM_CLOSE_MS, "live off");
  const back = await waitFor("cam0's snapshot again", 5000, async () => {
    const v = await liveView(page, "cam0");
    return v.pressed === "false" && v.src.includes("/latest.jpg?") && v.complete && v.w === 160 && v.shown && v;
  }, 20);
  const snapshotBackMs = Math.round(now() - tOff);
  const nodesAfter = await page.evaluate(NODE_COUNT);
  page.off("request", onRequest);

  Object.assign(figures, { liveToggleOnMs: onMs, liveFirstFrameMs: firstFrameMs, liveDistinctFrames2s: hashes.size, liveFps: Number(fps.toFixed(1)),
    liveHiddenCloseMs: hiddenMs, liveToggleOffMs: offMs, liveSnapshotBackMs: snapshotBackMs });
  console.log(`live on (keyboard): streams_active 1 after ${onMs} ms (cam0 stream_clients ${clients}), first frame after ${firstFrameMs} ms ` +
    `(${first.w} px, caption "${first.cap}"); ${hashes.size} different pictures in 2 s, ${sent} frames sent (${fps.toFixed(1)}/s, cap ${LIVE_FPS}); ` +
    `${snapsWhileLive} cam0 snapshot loads meanwhile`);
  console.log(`hidden: stream closed after ${hiddenMs} ms (toggle still ${hiddenView.pressed}); shown: reopened after ${shownMs} ms; ` +
    `off (click): streams_active 0 after ${offMs} ms, snapshot back after ${snapshotBackMs} ms; ${streamRequests} stream requests; DOM nodes ${nodesBefore} -> ${nodesAfter}`);
  console.log(`live screenshots in ${ARTIFACTS}: ${shots.join(", ")}; phone overflow ${overflow} px`);
  assert.equal(clients, 1, "camjobd counts the stream for cam0");
  assert.ok(hashes.size >= 3, `the live picture changes (${hashes.size} different pictures in 2 s)`);
  assert.ok(fps <= LIVE_FPS * 1.25 + 1, `frames sent at ${fps.toFixed(1)}/s, over the page's cap of ${LIVE_FPS}`);
  assert.equal(snapsWhileLive, 0, "cam0's snapshot refresh pauses while live");
  assert.equal(hiddenView.pressed, "true", "hiding the page keeps the toggle on");
  assert.equal(streamRequests, 2, "one stream per time shown");
  assert.equal(back.msg, "", "no message after a normal off");
  assert.equal(nodesAfter, nodesBefore, "toggling live adds no node");
  assert.ok(overflow <= 0, `with live on, the page is ${overflow} px wider than a ${PHONE.width} px screen`);
  assert.deepEqual(errors, []);
});

test("live view: closing the page with two streams on leaves none open", { timeout: 30000 }, async () => {
  const { ctx, errors } = browser;
  const page = await ctx.newPage();
  page.on("pageerror", e => errors.push(String(e)));
  try {
    await page.goto(`${backend.url}?poll_ms=${KILL_POLL_MS}`, { waitUntil: "load" });
    await waitFor("the cards", 5000, async () => (await page.locator(".cam").count()) === 3);
    // cam0 sends frames; broken (FAILED) sends its placeholder once a second, so camjobd has
    // fewer writes to notice the close with.
    await page.locator(liveSel("cam0")).click();
    await page.locator(liveSel("broken")).click();
    await waitStreams(2, 5000, "two streams on");
    await waitFor("both pictures", 5000, async () => (await frameHash(page, "cam0")) !== null && (await frameHash(page, "broken")) !== null);
    const broken = await liveView(page, "broken");
    const t = now();
    await page.close();
    const closeMs = await waitStreams(0, STREAM_CLOSE_MS, "page closed with two streams on");
    figures.livePageCloseMs = closeMs;
    console.log(`page closed with cam0 and broken live (broken shows the placeholder, ${broken.w} px): streams_active 0 after ${closeMs} ms (${Math.round(now() - t)} ms with the last check)`);
  } finally {
    if (!page.isClosed()) await page.close();
  }
  assert.deepEqual(errors, []);
});

test("a Mainsail-style fetch reader on another origin parses the stream (CORS, Content-Length parts)", { timeout: 30000 }, async () => {
  const { ctx, errors } = browser;
  const page = await ctx.newPage();
  page.on("pageerror", e => errors.push(String(e)));
  try {
    // localhost and 127.0.0.1 are different origins: the fetch is a real CORS request, as
    // Mainsail's is from its own host.
    await page.goto(`http://localhost:${port}/healthz`, { waitUntil: "load" });
    const got = await page.evaluate(async (url) => {
      const abort = new AbortController();
      const r = await fetch(url, { mode: "cors", signal: abort.signal });
      const reader = r.body.getReader();
      let buf = new Uint8Array(0), frames = 0, decoded = 0, bad = 0;
      const text = new TextDecoder("latin1");
      const find = (hay, needle, from = 0) => {
        outer: for (let i = from; i + needle.length <= hay.length; i++) {
          for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
          return i;
        }
        return -1;
      };
      const crlf2 = [13, 10, 13, 10];
      const deadline = performance.now() + 10000;
      while (frames < 20 && performance.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        const joined = new Uint8Array(buf.length + value.length);
        joined.set(buf); joined.set(value, buf.length); buf = joined;
        // Like Mainsail: the part head, its Content-Length, then exactly that many bytes.
        for (;;) {
          const end = find(buf, crlf2);
          if (end < 0) break;
          const head = text.decode(buf.subarray(0, end));
          const m = /content-length:\s*(\d+)/i.exec(head);
          if (!m) { bad++; buf = buf.subarray(end + 4); continue; }
          const len = Number(m[1]);
          if (buf.length < end + 4 + len) break;
          const jpeg = buf.slice(end + 4, end + 4 + len);
          buf = buf.subarray(end + 4 + len);
          frames++;
          if (jpeg[0] === 0xFF && jpeg[1] === 0xD8 && jpeg[len - 2] === 0xFF && jpeg[len - 1] === 0xD9) {
            try { (await createImageBitmap(new Blob([jpeg], { type: "image/jpeg" }))).close(); decoded++; } catch { bad++; }
          } else bad++;
        }
      }
      abort.abort();
      return { status: r.status, type: r.headers.get("content-type"), frames, decoded, bad };
    }, `http://127.0.0.1:${port}/stream?fps=10`);
    figures.fetchReader = got;
    console.log(`fetch reader (CORS): status ${got.status}, ${got.type}; ${got.frames} parts, ${got.decoded} decoded, ${got.bad} bad`);
    assert.equal(got.status, 200);
    assert.match(got.type, /^multipart\/x-mixed-replace;boundary=camjobdframe/);
    assert.equal(got.frames, 20);
    assert.equal(got.decoded, 20);
    assert.equal(got.bad, 0);
    await waitStreams(0, 5000, "the aborted fetch released its stream");
  } finally {
    if (!page.isClosed()) await page.close();
  }
  assert.deepEqual(errors, []);
});

test("backend killed: shown as disconnected; restarted: recovers without a reload", { timeout: 90000 }, async () => {
  const { page } = browser;
  let navigations = 0, statusFailed = 0;
  page.on("framenavigated", f => { if (f === page.mainFrame()) navigations++; });
  page.on("requestfailed", r => { if (new URL(r.url()).pathname === "/api/status") statusFailed++; });
  await page.goto(`${backend.url}?poll_ms=${KILL_POLL_MS}`, { waitUntil: "load" });
  await waitFor("live and RUNNING", 5000, async () => (await connState(page)) === "live" && (await text(page, `${camSel("cam0")} .state`)) === "RUNNING");
  navigations = 0;
  await page.evaluate(() => { window.__sameDocument = true; });
  const jobBefore = await text(page, `${camSel("cam0")} .job`);

  // Kill (SIGTERM), and time how long the page takes to say so.
  const exit = await stopBackend();
  const tDown = now();
  assert.equal(exit.code, 0, `camjobd exits 0 on SIGTERM (got ${JSON.stringify(exit)})`);
  const limit = 2 * KILL_POLL_MS + 500;
  await waitFor("the page to show disconnected", limit, async () => (await connState(page)) === "down", 10);
  const detectMs = Math.round(now() - tDown);
  const connText = await page.locator("#conn").textContent();
  const staleState = await text(page, `${camSel("cam0")} .state`);
  const dimmed = await page.evaluate(() => document.body.classList.contains("stale"));
  console.log(`backend stopped: page showed "${connText}" after ${detectMs} ms (limit ${limit} ms at poll_ms=${KILL_POLL_MS}); last known state ${staleState}, dimmed ${dimmed}`);
  assert.equal(staleState, "RUNNING", "the last known state stays on screen");
  assert.ok(dimmed, "and is marked stale");
  mkdirSync(ARTIFACTS, { recursive: true });
  const discPng = path.join(ARTIFACTS, "dashboard-disconnected.png");
  await page.screenshot({ path: discPng, animations: "disabled", clip: { x: 0, y: 0, width: DESKTOP.width, height: 480 } });
  assert.ok(statSync(discPng).size < MAX_PNG_BYTES, `${discPng} is ${statSync(discPng).size} B`);

  // A short outage (about 1.5 s), then the same port again.
  await sleep(Math.max(0, 1500 - (now() - tDown)));
  await startBackend();
  const tUp = now();
  const failuresAtRestart = statusFailed;
  // The page's next try comes within its current backoff, POLL_MS x 2^failures.
  const window_ = Math.min(30000, KILL_POLL_MS * 2 ** failuresAtRestart) + 1000;
  await waitFor("the page to recover by itself", window_, async () => (await connState(page)) === "live", 20);
  const recoverMs = Math.round(now() - tUp);
  const s = await api("/api/status");
  await waitFor("the new job on the page", 3000, async () => (await text(page, `${camSel("cam0")} .job`)) === `#${cam(s, "cam0").job.id}`);
  const jobAfter = await text(page, `${camSel("cam0")} .job`);
  const same = await page.evaluate(() => window.__sameDocument === true);
  figures.detectMs = detectMs;
  figures.recoverMs = recoverMs;
  console.log(`backend restarted on port ${port} after ${Math.round(tUp - tDown)} ms down (${failuresAtRestart} failed polls): page live again ${recoverMs} ms later ` +
    `(window ${window_} ms), no reload (${navigations} navigations); cam0 job ${jobBefore} -> ${jobAfter}`);
  assert.ok(same && navigations === 0, "recovered without a reload");
  assert.notEqual(jobAfter, jobBefore, "shows the restarted backend's job");
  assert.equal(await text(page, `${camSel("cam0")} .state`), "RUNNING");
  assert.ok(!(await page.evaluate(() => document.body.classList.contains("stale"))), "no longer marked stale");
});

test("stop and start from the page: the token is asked for on 401 and kept for the session", { timeout: 60000 }, async () => {
  const { page } = browser;
  const prompts = [];
  const answers = ["wrong-token", TOKEN];
  const onDialog = d => { prompts.push(d.message()); d.type() === "prompt" ? d.accept(answers.shift() ?? "") : d.dismiss(); };
  page.on("dialog", onDialog);
  const state = () => text(page, `${camSel("cam0")} .state`);
  await waitFor("cam0 RUNNING", 5000, async () => (await state()) === "RUNNING");

  await page.locator(`${camSel("cam0")} .stop`).click();
  await waitFor("cam0 STOPPED", 10000, async () => (await state()) === "STOPPED");
  const api1 = cam(await api("/api/status"), "cam0").job;
  const stopPrompts = prompts.length;
  console.log(`Stop: ${stopPrompts} prompts (a wrong token, then the right one): ${JSON.stringify(prompts)}; API: job ${api1.id} ${api1.state} (${api1.reason})`);
  assert.equal(stopPrompts, 2);
  assert.match(prompts[1], /refused/);
  assert.equal(api1.state, "STOPPED");

  await waitFor("the Start button enabled", 5000, () => page.locator(`${camSel("cam0")} .start`).isEnabled());
  await page.locator(`${camSel("cam0")} .start`).click();
  await waitFor("cam0 RUNNING again", 10000, async () => (await state()) === "RUNNING");
  const api2 = cam(await api("/api/status"), "cam0").job;
  console.log(`Start: ${prompts.length - stopPrompts} more prompts (the token is kept for the session); API: job ${api2.id} ${api2.state}; page: job ${await text(page, `${camSel("cam0")} .job`)}`);
  assert.equal(prompts.length, stopPrompts, "no prompt the second time");
  assert.equal(api2.state, "RUNNING");
  assert.ok(api2.id > api1.id, "a new job");
  page.off("dialog", onDialog);
  await closeBrowser();
});

test("exports from the page: progress bar, cancel, download; the timelapse plays in Chromium", { timeout: 120000 }, async () => {
  const { page, errors } = await launchBrowser(DESKTOP);
  page.on("dialog", d => d.type() === "prompt" ? d.accept(TOKEN) : d.dismiss());
  await page.goto(`${backend.url}?poll_ms=200`, { waitUntil: "load" });
  await waitFor("the yard camera's card", 5000, () => page.locator(camSel("yard")).count());
  await waitFor("the export rows built", 5000, async () => (await page.locator("#exports li").count()) === 5);
  const nodes = () => page.evaluate(() => document.getElementsByTagName("*").length);
  const nodesBefore = await nodes();
  const row = id => page.locator("#exports li").filter({ hasText: `#${id} ` });
  const newest = async () => (await api("/api/exports")).active.concat((await api("/api/exports")).finished).reduce((m, x) => Math.max(m, x.id), 0);

  // A timelapse of the last hour of the yard camera, started from the form.
  await page.selectOption("#excam", "yard");
  await page.selectOption("#exrange", "3600");
  await page.selectOption("#exkind", "timelapse");
  await page.locator("#exgo").click();
  await waitFor("the export queued", 10000, async () => /export #\d+ queued/.test(await page.locator("#exmsg").textContent()));
  const tl = await newest();
  // The bar moves while it runs, and reaches 100 with a download link.
  const bars = [];
  const done = await waitFor("the timelapse to finish", 60000, async () => {
    const r = row(tl);
    if (!(await r.count())) return false;
    // Bar, state and link read at once: read one after another, the row could change between
    // them (a SUCCEEDED row seen after a bar of 90).
    const [bar, cls, href] = await r.evaluate(li => [li.querySelector("progress").value, li.className, li.querySelector("a").getAttribute("href")]);
    bars.push(bar);
    return cls === "ex-SUCCEEDED" && href;
  }, 100);
  const x = await api(`/api/exports/${tl}`);
  console.log(`timelapse #${tl}: ${x.done} frames from ${x.snapshots} snapshots, ${x.bytes} B in ${(x.ended_at - x.started_at).toFixed(1)} s; bar values seen ${[...new Set(bars)].join(",")}`);
  assert.ok(bars.every((v, i) => i === 0 || v >= bars[i - 1]), "the progress bar went back");
  assert.ok(bars.some(v => v > 0 && v < 100), "the bar showed progress between 0 and 100");
  assert.equal(bars.at(-1), 100);
  // Chromium decodes every frame of the GIF, and plays it in an <img>.
  const gif = await page.evaluate(async href => {
    const data = await (await fetch(href)).arrayBuffer();
    const dec = new ImageDecoder({ data, type: "image/gif" });
    await dec.tracks.ready;
    const frames = dec.tracks.selectedTrack.frameCount;
    const last = await dec.decode({ frameIndex: frames - 1 });
    const img = new Image();
    img.src = href;
    await img.decode();
    return { frames, animated: dec.tracks.selectedTrack.animated, lastWidth: last.image.displayWidth, img: img.naturalWidth, bytes: data.byteLength };
  }, done);
  console.log(`Chromium: ${JSON.stringify(gif)}`);
  assert.equal(gif.frames, x.done, "every frame decodes");
  assert.ok(gif.animated && gif.frames >= 2);
  assert.equal(gif.lastWidth, 160);
  assert.equal(gif.img, 160);
  assert.equal(gif.bytes, x.bytes);

  // An archive, cancelled from its row while it runs.
  await page.selectOption("#exkind", "archive");
  await page.locator("#exgo").click();
  await waitFor("a second export", 10000, async () => (await newest()) > tl);
  const ar = await newest();
  await waitFor("the archive RUNNING with a cancel button", 10000, async () =>
    (await row(ar).getAttribute("class")) === "ex-RUNNING" && row(ar).locator("button").isEnabled());
  await row(ar).locator("button").click();
  await waitFor("the archive CANCELLED on the page", 10000, async () => (await row(ar).getAttribute("class")) === "ex-CANCELLED");
  assert.equal((await api(`/api/exports/${ar}`)).state, "CANCELLED");
  const nodesAfter = await nodes();
  console.log(`exports on the page: DOM elements ${nodesBefore} -> ${nodesAfter} with two exports listed`);
  assert.equal(nodesAfter, nodesBefore, "listing exports adds no element");
  assert.deepEqual(errors, []);
  await page.locator("#exsec").screenshot({ path: path.join(ARTIFACTS, "dashboard-exports.png") });
  await closeBrowser();
  console.log(`figures: ${JSON.stringify(figures)}`);
});

test("http.protect_reads: the page asks for the token once, then status, images and the live view load; refused, it says locked", { timeout: 60000 }, async () => {
  // A second camjobd of its own, reads protected, and one stream client at most (to see the
  // page's live view refused while another client holds the one place).
  const p2 = await freePort();
  const file = path.join(tmp, "protected.json");
  writeFileSync(file, JSON.stringify({ http: { bind: `127.0.0.1:${p2}`, token: TOKEN, protect_reads: true, max_stream_clients: 1 },
    storage: { dir: path.join(tmp, "data-protected") }, log: { level: "warn" },
    cameras: [{ name: "cam0", source: { kind: "synthetic", width: 160, height: 120, fps: 10 }, snapshot_interval_ms: 200 }] }));
  const proc = spawn(BIN, ["--config", file], { stdio: ["ignore", "ignore", "ignore"] });
  const exited = new Promise(resolve => proc.once("exit", resolve));
  try {
    const url = `http://127.0.0.1:${p2}/?poll_ms=200`;
    await waitFor("the protected camjobd to answer", 15000, async () => {
      try { return (await fetch(`http://127.0.0.1:${p2}/healthz`)).status === 200; } catch (e) { return false; }
    }, 100);
    const denied = await fetch(`http://127.0.0.1:${p2}/api/status`);
    assert.equal(denied.status, 401);

    let { page, errors } = await launchBrowser(DESKTOP);
    const prompts = [];
    page.on("dialog", d => { prompts.push(d.message()); d.accept(TOKEN); });
    await page.goto(url, { waitUntil: "load" });
    const shown = await waitFor("RUNNING and the image loaded through the cookie", 15000, () => page.evaluate(() => {
      const c = document.querySelector('.cam[data-camera="cam0"]'), img = c && c.querySelector("img");
      return c && c.dataset.state === "RUNNING" && img.complete && img.naturalWidth > 0 && { w: img.naturalWidth, conn: document.getElementById("conn").dataset.state };
    }), 50);
    console.log(`protected page: ${prompts.length} prompt(s) (${JSON.stringify(prompts)}), then ${JSON.stringify(shown)}`);
    assert.equal(prompts.length, 1);
    assert.equal(shown.w, 160);

    // The live view while another client holds the one stream place: camjobd answers 503, the
    // page turns the toggle off and says why, in the card's message (no node added).
    const auth = { Authorization: `Bearer ${TOKEN}` };
    const streams2 = async () => (await (await fetch(`http://127.0.0.1:${p2}/api/status`, { headers: auth, signal: AbortSignal.timeout(3000) })).json()).http;
    const nodesBefore = await page.evaluate(NODE_COUNT);
    const holder = new AbortController();
    const held = await fetch(`http://127.0.0.1:${p2}/api/cameras/cam0/stream.mjpeg?fps=1`, { headers: auth, signal: holder.signal });
    assert.equal(held.status, 200, "the other client streams");
    await page.locator(liveSel("cam0")).click();
    const refused = await waitFor("the toggle off again with a message", 10000, async () => {
      const v = await liveView(page, "cam0");
      return v.pressed === "false" && v.msg !== "" && v;
    }, 50);
    const rejected = (await streams2()).streams_rejected;
    const backToSnapshot = await waitFor("the snapshot back after the refusal", 5000, async () => {
      const v = await liveView(page, "cam0");
      return v.src.includes("/latest.jpg?") && v.complete && v.w === 160 && v.shown && v;
    }, 50);
    holder.abort();
    await held.body?.cancel().catch(() => {});
    await waitFor("the other client's stream closed", STREAM_CLOSE_MS, async () => (await streams2()).streams_active === 0, 50);
    // Free again: the page's stream loads with the cookie alone (an <img> sends no header).
    await page.locator(liveSel("cam0")).click();
    await waitFor("the live view through the cookie", 5000, async () => {
      const v = await liveView(page, "cam0");
      return v.pressed === "true" && v.src.includes("/stream.mjpeg") && v.complete && v.w === 160;
    }, 50);
    const liveStreams = (await streams2()).streams_active;
    await page.locator(liveSel("cam0")).click();
    await waitFor("the page's stream closed", STREAM_CLOSE_MS, async () => (await streams2()).streams_active === 0, 50);
    const nodesAfter = await page.evaluate(NODE_COUNT);
    console.log(`live view refused (stream place held): toggle ${refused.pressed}, message "${refused.msg}", streams_rejected ${rejected}, ` +
      `snapshot back (${backToSnapshot.w} px); then live through the cookie: streams_active ${liveStreams}; DOM nodes ${nodesBefore} -> ${nodesAfter}`);
    assert.ok(rejected >= 1, "camjobd refused the page's stream");
    assert.match(refused.msg, /live view unavailable/);
    assert.equal(liveStreams, 1);
    assert.equal(nodesAfter, nodesBefore, "the refusal and its message add no node");
    assert.deepEqual(errors, []);
    await closeBrowser();

    // A fresh browser whose user cancels the prompt: the page says it is locked, and stays bounded.
    ({ page, errors } = await launchBrowser(DESKTOP));
    page.on("dialog", d => d.dismiss());
    await page.goto(url, { waitUntil: "load" });
    const msg = await waitFor("the locked message", 10000, async () => {
      const t = await page.locator("#conn").textContent();
      return /locked/.test(t) && t;
    }, 50);
    console.log(`refused: "${msg}"`);
    await closeBrowser();
  } finally {
    proc.kill("SIGTERM");
    await Promise.race([exited, sleep(5000)]);
  }
});
