// The dashboard's live view over WebRTC (WHEP) in a real headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core; no browser is downloaded) against the real
// camjobd binary, and the same camera over MJPEG for comparison.
//
//   node --test webrtc.test.mjs        (scripts/browser-test.sh builds and runs this)
//
// Environment: CAMJOBD_BIN (default target/release/camjobd), CHROMIUM (default
// /usr/bin/chromium), WEBRTC_SECONDS (each path's measurement, default 30), DASHBOARD_HTML (a
// dashboard.html the browser gets instead of the binary's, to work on the page without
// rebuilding camjobd; unset, the binary's own page is tested).
//
// Latency is read from the picture: the synthetic camera draws its capture time (Unix ms mod
// 2^40) as a strip of 44 black and white cells along the bottom of every frame. Each frame the
// page presents (requestVideoFrameCallback for the <video>; each animation frame for the MJPEG
// <img>) is drawn to a canvas, its strip read, and Date.now() minus it is the capture→shown
// latency; camjobd and Chromium share the clock. Every packet stays on loopback (camjobd bound
// to 127.0.0.1 offers only 127.0.0.1; --allow-loopback-in-peer-connection lets Chromium use it).
//
// The tests run in order and share one backend; every wait is a bounded loop with a deadline,
// and every process started here is ended in after(), also when a test fails.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { sleep, now, waitFor, freePort, writeCheckedConfig, spawnBackend, stopProcess, apiRequest,
  launchChromium, closeChromium } from "./lib.mjs";

const SECONDS = Number(process.env.WEBRTC_SECONDS || 30);
// Every packet stays on loopback: camjobd bound to 127.0.0.1 offers only that candidate.
const LOOPBACK_RTC = ["--allow-loopback-in-peer-connection"];
const VIEWPORT = { width: 1024, height: 768 };
const FPS = 30;                 // cam0's frame rate
const MIN_DECODED = 0.95;       // of the camera's frames, received and decoded by Chromium over WebRTC
// Of them shown by the <video>: headless Chromium's compositor drops some when the machine is
// busy, and once on an idle one, with every frame received and decoded: 87.0 %, 87.7 %
// and 88.5 % in three of eight 30 s runs, 98.8–100 % in the others; camjobd's part is the decoded count.
const MIN_PRESENTED = 0.80;
const MAX_P50_MS = 150;         // WebRTC capture→presented, median
const FIRST_FRAME_MS = 5000;    // the page's own limit before it falls back to MJPEG
const CLOSE_MS = 10000;         // a closed tab's session is gone within this

assert.ok(Number.isFinite(SECONDS) && SECONDS >= 2, `WEBRTC_SECONDS must be a number >= 2 (got ${process.env.WEBRTC_SECONDS})`);

const tmp = mkdtempSync(path.join(os.tmpdir(), "camjobd-webrtc-"));
let port = 0, backend = null, browser = null, h264 = null;
const figures = {};

after(async () => {
  await closeBrowser().catch(() => {});
  await stopBackend().catch(() => {});
  rmSync(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------- helpers

function writeConfig() {
  const cameras = [
    { name: "cam0", source: { kind: "synthetic", width: 640, height: 480, fps: FPS }, store: { enabled: false }, video: {} },
    // No video: its live view can only be MJPEG.
    { name: "novideo", source: { kind: "synthetic", width: 160, height: 120, fps: 10 }, store: { enabled: false } },
  ];
  const config = { http: { bind: `127.0.0.1:${port}` }, storage: { dir: path.join(tmp, "data") }, log: { level: "warn" },
    cameras, rtsp: { bind: "127.0.0.1:0" }, webrtc: { udp_port: 0 } };
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

const api = (p, method = "GET") => apiRequest(port, p, method);
const status = () => api("/api/status");
const cam = (s, name) => s.cameras.find(c => c.camera === name);

// In every page, before its own scripts: reads the synthetic camera's time strip from a
// <video> or <img> (its intrinsic size w x h) through a small canvas (the strip's rows only).
const PROBE = () => {
  const CELLS = 44;
  let canvas = null, g = null;
  window.__strip = (src, w, h) => {
    const cell = Math.floor(w / CELLS) & ~1, rows = Math.min(16, Math.floor(h / 8));
    if (!cell || !rows) return null;
    if (!canvas || canvas.width !== w || canvas.height !== rows) {
      canvas = new OffscreenCanvas(w, rows);
      g = canvas.getContext("2d", { willReadFrequently: true });
    }
    g.drawImage(src, 0, h - rows, w, rows, 0, 0, w, rows);
    const y = rows - Math.floor(rows / 2) - 1;  // row h - rows/2 - 1 of the picture
    const d = g.getImageData(0, y, w, 1).data;
    const bit = i => { const o = (i * cell + (cell >> 1)) * 4; return (d[o] + d[o + 1] + d[o + 2]) / 3 > 128; };
    if (!(bit(0) && !bit(1) && !bit(42) && bit(43))) return null;
    let v = 0;
    for (let i = 2; i < 42; i++) v = v * 2 + (bit(i) ? 1 : 0);
    return v;
  };
  // Capture→now in ms, from a strip value (mod 2^40).
  window.__age = (v, at = Date.now()) => ((Math.round(at) - v) % 2 ** 40 + 2 ** 40) % 2 ** 40;
};

/** One Chromium at a time, with a fresh profile directory. */
async function launchBrowser() {
  assert.equal(browser, null, "a browser is already running");
  const { ctx, dir } = await launchChromium(tmp, VIEWPORT, LOOPBACK_RTC);
  await ctx.addInitScript(PROBE);
  if (process.env.DASHBOARD_HTML) {
    await ctx.route(u => u.pathname === "/", r => r.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: readFileSync(process.env.DASHBOARD_HTML, "utf8") }));
  }
  if (process.env.DASHBOARD_HTML) console.log(`(the page from ${process.env.DASHBOARD_HTML}, not the binary's)`);
  const errors = [];
  browser = { ctx, dir, errors };
  return browser;
}

/** A new tab of the browser, its script errors collected. */
async function newPage() {
  const page = await browser.ctx.newPage();
  page.on("pageerror", e => { if (browser && browser.errors.length < 20) browser.errors.push(String(e)); });
  return page;
}

async function closeBrowser() {
  const b = browser;
  browser = null;
  await closeChromium(b);
}

const camSel = name => `.cam[data-camera="${name}"]`;
const liveSel = name => `${camSel(name)} .live`;

/** The camera's card as the page shows it: toggle, <img>, <video>, message and caption. */
const card = (page, name) => page.evaluate(n => {
  const c = document.querySelector(`.cam[data-camera="${n}"]`), img = c.querySelector("img"), v = c.querySelector("video");
  return { pressed: c.querySelector(".live").getAttribute("aria-pressed"), src: img.getAttribute("src") || "", complete: img.complete,
    w: img.naturalWidth, rtc: c.querySelector(".frame").classList.contains("rtc"), videoW: v.videoWidth, hasStream: !!v.srcObject,
    msg: c.querySelector(".msg").textContent, cap: c.querySelector(".cap").textContent };
}, name);

/** Counts the page's WHEP and MJPEG requests, and remembers the WHEP session URLs it was given. */
function watchRequests(page) {
  const seen = { whepPost: 0, whepDelete: 0, mjpeg: {}, sessions: [] };
  page.on("request", r => {
    const p = new URL(r.url()).pathname;
    if (/\/whep$/.test(p) && r.method() === "POST") seen.whepPost++;
    else if (/\/whep\/[0-9a-f]{32}$/.test(p) && r.method() === "DELETE") seen.whepDelete++;
    else if (p.endsWith("/stream.mjpeg")) { const n = p.split("/")[3]; seen.mjpeg[n] = (seen.mjpeg[n] || 0) + 1; }
  });
  page.on("response", r => {
    if (r.request().method() === "POST" && /\/whep$/.test(new URL(r.url()).pathname) && r.status() === 201) seen.sessions.push(r.headers().location);
  });
  return seen;
}

/** The machine's CPU time so far (jiffies: busy, total), to tell a loaded machine in the figures. */
function cpuTimes() {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + (f[4] || 0), total = f.reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch (e) { return null; }
}
const busyPct = (a, b) => a && b && b.total > a.total ? Math.round(100 * (b.busy - a.busy) / (b.total - a.total)) : NaN;

/** Chromium's own counters of the page's WebRTC video (inbound-rtp), through the dashboard's card. */
const rtcStats = (page, name) => page.evaluate(async n => {
  const c = cards.get(n), pc = c && c.rtc && c.rtc.pc;  // (the page script's top-level `cards`)
  if (!pc) return null;
  let r = null;
  (await pc.getStats()).forEach(x => { if (x.type === "inbound-rtp" && x.kind === "video") r = x; });
  const q = c.video.getVideoPlaybackQuality ? c.video.getVideoPlaybackQuality() : {};
  return r && { received: r.framesReceived, decoded: r.framesDecoded, dropped: r.framesDropped, lost: r.packetsLost, nacks: r.nackCount,
    plis: r.pliCount, freezes: r.freezeCount, freezeMs: Math.round(1000 * (r.totalFreezesDuration || 0)),
    jitterBufferMs: r.jitterBufferEmittedCount ? Math.round(1000 * r.jitterBufferDelay / r.jitterBufferEmittedCount) : null,
    decodeMs: r.framesDecoded ? +(1000 * r.totalDecodeTime / r.framesDecoded).toFixed(1) : null, decoder: r.decoderImplementation,
    videoTotal: q.totalVideoFrames, videoDropped: q.droppedVideoFrames };
}, name);

/** Nearest-rank percentile of a list of numbers. */
function pct(list, p) {
  if (!list.length) return NaN;
  const s = [...list].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p / 100 * s.length) - 1))];
}

const needH264 = () => assert.ok(h264 !== false, "Chromium offers no H.264 in WebRTC (see the first test): nothing to play");

// ---------------------------------------------------------------- tests

test("Debian's Chromium offers H.264 in WebRTC", { timeout: 60000 }, async () => {
  port = await freePort();
  writeConfig();
  await startBackend();
  await launchBrowser();
  const page = await newPage();
  const { offer, ua } = await page.evaluate(async () => {
    const pc = new RTCPeerConnection({ iceServers: [] });
    pc.addTransceiver("video", { direction: "recvonly" });
    const o = await pc.createOffer();
    pc.close();
    return { offer: o.sdp, ua: (/Chrome\/[\d.]+/.exec(navigator.userAgent) || ["?"])[0] };
  });
  await page.close();
  const h = offer.split(/\r?\n/).filter(l => /^a=rtpmap:\d+ H264\//.test(l)).map(l => l.split(/[: ]/)[1]);
  const fmtp = offer.split(/\r?\n/).filter(l => h.some(pt => l.startsWith(`a=fmtp:${pt} `)) && /packetization-mode=1/.test(l));
  h264 = h.length > 0;
  console.log(`${ua}: ${h.length} H.264 payload types offered (${fmtp.length} with packetization-mode=1): ` +
    fmtp.map(l => /profile-level-id=([0-9a-f]+)/i.exec(l)?.[1]).join(" "));
  assert.ok(h264, "the offer names H264 (Debian's Chromium without its H.264 decoder cannot play camjobd's WebRTC)");
  assert.ok(fmtp.length > 0, "with packetization-mode=1 (camjobd's)");
});

test(`the dashboard's live view plays cam0 over WebRTC: ${SECONDS} s of frames, capture→presented latency`, { timeout: 60000 + SECONDS * 2000 }, async () => {
  needH264();
  const page = await newPage();
  const seen = watchRequests(page);
  figures.rtcPage = page;
  await page.goto(`${backend.url}?poll_ms=500`, { waitUntil: "load" });
  await waitFor("cam0 RUNNING", 10000, () => page.evaluate(() => document.querySelector('.cam[data-camera="cam0"]')?.dataset.state === "RUNNING"));
  // Every presented frame of cam0's <video>: its strip read, the latency and counts kept. The
  // callback is registered before the toggle (the card's <video> is there from the start).
  await page.evaluate(() => {
    const c = document.querySelector('.cam[data-camera="cam0"]'), v = c.querySelector("video");
    const m = window.__rtc = { clickAt: null, firstAt: null, counting: false, lat: [], rx: [], frames: 0, same: 0, bad: 0, p0: null, p1: null, last: null, calls: 0, cost: 0 };
    c.querySelector(".live").addEventListener("click", () => { if (m.clickAt === null) m.clickAt = performance.now(); }, { capture: true });
    const onFrame = (t, md) => {
      m.calls++;
      const t0 = performance.now(), at = Date.now(), val = window.__strip(v, md.width, md.height);
      m.cost += performance.now() - t0;
      if (val === null) m.bad++;
      else {
        if (m.firstAt === null) m.firstAt = performance.now();
        if (m.counting) {
          if (m.p0 === null) m.p0 = md.presentedFrames;
          m.p1 = md.presentedFrames;
          if (val === m.last) m.same++;
          else {
            m.frames++;
            if (m.lat.length < 100000) m.lat.push(window.__age(val, at));
            if (md.receiveTime && m.rx.length < 100000) m.rx.push(window.__age(val, performance.timeOrigin + md.receiveTime));
          }
        }
        m.last = val;
      }
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  });
  const before = await status();
  await page.locator(liveSel("cam0")).click();
  const firstMs = await waitFor("cam0's first WebRTC frame in the page", FIRST_FRAME_MS + 2000,
    () => page.evaluate(() => window.__rtc.firstAt !== null && Math.round(window.__rtc.firstAt - window.__rtc.clickAt)), 20);
  const view = await card(page, "cam0");
  const s1 = await waitFor("the session connected in /api/status", 3000, async () => { const s = await status(); return s.webrtc.ice.connected === 1 && s; }, 50);
  console.log(`live on: first frame presented ${firstMs} ms after the click (${view.videoW} px wide, caption "${view.cap}", message "${view.msg}"); ` +
    `status: webrtc sessions ${s1.webrtc.sessions}, ice ${JSON.stringify(s1.webrtc.ice)}, offers ${before.webrtc.offers} -> ${s1.webrtc.offers}, ` +
    `udp ${s1.webrtc.udp}; cam0 stream_clients ${cam(s1, "cam0").live.stream_clients}`);
  assert.ok(view.rtc && view.hasStream, "the card shows its <video>");
  assert.equal(view.cap, "live · WebRTC");
  assert.equal(view.msg, "", "no message: nothing fell back");
  assert.equal(s1.webrtc.sessions, 1);
  assert.equal(s1.webrtc.ice.connected, 1);
  assert.equal(cam(s1, "cam0").live.stream_clients, 0, "no MJPEG stream held besides");

  // The measurement: SECONDS s of presented frames against the camera's own count.
  const a = cam(await status(), "cam0").job.frames_captured;
  const [st0, cpu0] = [await rtcStats(page, "cam0"), cpuTimes()];
  const t0 = now();
  await page.evaluate(() => { window.__rtc.counting = true; });
  await sleep(SECONDS * 1000);
  await page.evaluate(() => { window.__rtc.counting = false; });
  const secs = (now() - t0) / 1000;
  const [st1, cpu1] = [await rtcStats(page, "cam0"), cpuTimes()];
  const s2 = await status();
  const captured = cam(s2, "cam0").job.frames_captured - a;
  const m = await page.evaluate(() => { const m = window.__rtc; return { lat: m.lat, rx: m.rx, frames: m.frames, same: m.same, bad: m.bad, presented: m.p1 - m.p0 + 1, calls: m.calls, cost: m.cost }; });
  const d = k => st0 && st1 && st1[k] != null ? st1[k] - (st0[k] || 0) : "?";
  const w = s2.webrtc;
  const r = { p50: pct(m.lat, 50), p90: pct(m.lat, 90), p99: pct(m.lat, 99), max: Math.max(...m.lat), rx50: pct(m.rx, 50), rx99: pct(m.rx, 99),
    firstMs, frames: m.frames, presented: m.presented, captured, fps: m.frames / secs, secs };
  figures.webrtc = r;
  console.log(`webrtc ${secs.toFixed(1)} s: ${m.frames} distinct frames read (${m.presented} by presentedFrames; ${m.same} repeated, ${m.bad} strips unreadable) ` +
    `of ${captured} captured = ${(100 * m.frames / captured).toFixed(1)} %, ${r.fps.toFixed(1)} fps presented`);
  console.log(`  capture→presented: p50 ${r.p50} ms, p90 ${r.p90} ms, p99 ${r.p99} ms, max ${r.max} ms; capture→received (last packet) p50 ${r.rx50} ms, p99 ${r.rx99} ms`);
  console.log(`  Chromium meanwhile: frames received ${d("received")}, decoded ${d("decoded")}, dropped ${d("dropped")} (<video>: ${d("videoTotal")} total, ${d("videoDropped")} dropped); ` +
    `packets lost ${d("lost")}, NACKs ${d("nacks")}, PLIs ${d("plis")}, freezes ${d("freezes")} (${d("freezeMs")} ms); jitter buffer ${st1 && st1.jitterBufferMs} ms, ` +
    `decode ${st1 && st1.decodeMs} ms/frame${st1 && st1.decoder ? ` (${st1.decoder})` : ""}; the strip probe ${(m.cost / Math.max(1, m.calls)).toFixed(2)} ms/frame; machine CPU ${busyPct(cpu0, cpu1)} % busy (${os.cpus().length} cores)`);
  console.log(`  camjobd: frames_sent ${w.frames_sent}, frames_skipped ${w.frames_skipped}, packets ${w.packets} (${(w.bytes / 1e6).toFixed(1)} MB), ` +
    `packets_dropped ${w.packets_dropped}, packets_unmatched ${w.packets_unmatched}, keyframe_requests ${w.keyframe_requests}; cam0 stream_clients ${cam(s2, "cam0").live.stream_clients}`);
  const decoded = d("decoded");
  assert.ok(typeof decoded === "number" && decoded >= MIN_DECODED * captured, `${decoded} of ${captured} frames decoded by Chromium (at least ${MIN_DECODED * 100} %)`);
  assert.ok(m.frames >= MIN_PRESENTED * captured, `${m.frames} of ${captured} frames presented (at least ${MIN_PRESENTED * 100} %)`);
  assert.ok(m.frames >= MIN_PRESENTED * FPS * SECONDS * 0.98, `${m.frames} frames in ${SECONDS} s at ${FPS} fps`);
  assert.ok(r.p50 <= MAX_P50_MS, `WebRTC p50 latency ${r.p50} ms (limit ${MAX_P50_MS})`);
  assert.equal(w.sessions, 1);
  assert.equal(cam(s2, "cam0").live.stream_clients, 0);
  assert.equal(seen.whepPost, 1, "one offer");
  assert.equal(seen.mjpeg.cam0 || 0, 0, "no MJPEG request for cam0");

  // Hidden: the session is ended (DELETE); shown: a new one plays.
  const setHidden = h => page.evaluate(h => {
    if (h) Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
    else delete document.hidden;
    document.dispatchEvent(new Event("visibilitychange"));
  }, h);
  // The page closes its peer connection (Chromium's DTLS goodbye: ended.closed) and DELETEs
  // the session (ended.deleted); whichever reaches camjobd first ends it.
  const gone = e => e.deleted + e.closed;
  let t = now();
  await setHidden(true);
  const sh = await waitFor("no session while hidden", 5000, async () => { const s = await status(); return s.webrtc.sessions === 0 && s; }, 20);
  const hiddenMs = Math.round(now() - t);
  await page.evaluate(() => { window.__rtc.firstAt = null; });
  t = now();
  await setHidden(false);
  await waitFor("frames again after the page is shown", FIRST_FRAME_MS + 2000, () => page.evaluate(() => window.__rtc.firstAt !== null), 20);
  const shownMs = Math.round(now() - t);
  const s3 = await waitFor("the new session connected", 3000, async () => { const s = await status(); return s.webrtc.ice.connected === 1 && s; }, 50);
  console.log(`hidden: sessions 0 after ${hiddenMs} ms (ended.deleted ${w.ended.deleted} -> ${sh.webrtc.ended.deleted}, ` +
    `ended.closed ${w.ended.closed} -> ${sh.webrtc.ended.closed}); shown: frames again after ${shownMs} ms, ` +
    `sessions ${s3.webrtc.sessions}, caption "${(await card(page, "cam0")).cap}"; requests: ${seen.whepPost} offers, ${seen.whepDelete} deletes`);
  assert.equal(gone(sh.webrtc.ended), gone(w.ended) + 1, "the hidden page ended its session (closed or DELETEd)");
  assert.equal(s3.webrtc.sessions, 1);
  assert.equal(cam(s3, "cam0").live.stream_clients, 0);
  assert.deepEqual(browser.errors, []);
});

test("closing the tab ends its WebRTC session on camjobd", { timeout: 30000 }, async () => {
  needH264();
  const page = figures.rtcPage;
  delete figures.rtcPage;
  assert.ok(page && !page.isClosed(), "the WebRTC page of the previous test");
  const before = (await status()).webrtc;
  assert.equal(before.sessions, 1, "its session is open");
  const t = now();
  await page.close();
  const after_ = await waitFor("webrtc.sessions 0", CLOSE_MS, async () => { const s = await status(); return s.webrtc.sessions === 0 && s.webrtc; }, 50);
  const ms = Math.round(now() - t);
  const moved = Object.keys(after_.ended).filter(k => after_.ended[k] !== before.ended[k]).map(k => `${k} ${before.ended[k]} -> ${after_.ended[k]}`);
  figures.closeMs = ms;
  figures.closeBy = moved.join(", ");
  console.log(`tab closed: webrtc.sessions 0 after ${ms} ms; ended: ${moved.join(", ") || "no counter moved"}`);
  assert.ok(ms <= CLOSE_MS);
});

test(`the same camera over MJPEG (?live=mjpeg): ${SECONDS} s, capture→shown latency`, { timeout: 60000 + SECONDS * 2000 }, async () => {
  needH264();
  const page = await newPage();
  const seen = watchRequests(page);
  await page.goto(`${backend.url}?poll_ms=500&live=mjpeg`, { waitUntil: "load" });
  await waitFor("cam0 RUNNING", 10000, () => page.evaluate(() => document.querySelector('.cam[data-camera="cam0"]')?.dataset.state === "RUNNING"));
  // Each animation frame: the <img>'s picture drawn and its strip read; a new value is a newly
  // shown frame.
  await page.evaluate(() => {
    const c = document.querySelector('.cam[data-camera="cam0"]'), img = c.querySelector("img");
    const m = window.__mj = { clickAt: null, firstAt: null, counting: false, lat: [], frames: 0, last: null, bad: 0, ticks: 0, stop: false };
    c.querySelector(".live").addEventListener("click", () => { if (m.clickAt === null) m.clickAt = performance.now(); }, { capture: true });
    const tick = () => {
      if (m.stop) return;
      m.ticks++;
      if (img.complete && img.naturalWidth && (img.getAttribute("src") || "").includes("/stream.mjpeg")) {
        const at = Date.now(), val = window.__strip(img, img.naturalWidth, img.naturalHeight);
        if (val === null) m.bad++;
        else if (val !== m.last) {
          if (m.firstAt === null) m.firstAt = performance.now();
          if (m.counting) { m.frames++; if (m.lat.length < 100000) m.lat.push(window.__age(val, at)); }
          m.last = val;
        }
      }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  await page.locator(liveSel("cam0")).click();
  const firstMs = await waitFor("cam0's first MJPEG frame in the page", 5000,
    () => page.evaluate(() => window.__mj.firstAt !== null && Math.round(window.__mj.firstAt - window.__mj.clickAt)), 20);
  const view = await card(page, "cam0");
  const s1 = await status();
  console.log(`live on (?live=mjpeg): first frame shown ${firstMs} ms after the click (caption "${view.cap}", message "${view.msg}"); ` +
    `cam0 stream_clients ${cam(s1, "cam0").live.stream_clients}, webrtc sessions ${s1.webrtc.sessions}`);
  assert.equal(view.cap, "live · MJPEG up to 15 fps");
  assert.equal(view.msg, "", "asked for: no message");
  assert.ok(!view.rtc);
  assert.equal(cam(s1, "cam0").live.stream_clients, 1);
  assert.equal(s1.webrtc.sessions, 0);

  const a = cam(await status(), "cam0").job.frames_captured;
  const cpu0 = cpuTimes();
  const t0 = now();
  await page.evaluate(() => { window.__mj.counting = true; });
  await sleep(SECONDS * 1000);
  await page.evaluate(() => { window.__mj.counting = false; window.__mj.stop = true; });
  const secs = (now() - t0) / 1000;
  const captured = cam(await status(), "cam0").job.frames_captured - a;
  const m = await page.evaluate(() => { const m = window.__mj; return { lat: m.lat, frames: m.frames, bad: m.bad, ticks: m.ticks }; });
  const r = { p50: pct(m.lat, 50), p90: pct(m.lat, 90), p99: pct(m.lat, 99), max: Math.max(...m.lat), firstMs, frames: m.frames, captured, fps: m.frames / secs, secs };
  figures.mjpeg = r;
  console.log(`mjpeg ${secs.toFixed(1)} s: ${m.frames} new frames seen in ${m.ticks} animation frames (${m.bad} strips unreadable), ${r.fps.toFixed(1)} fps shown ` +
    `(the page asks for up to 15; ${captured} captured)`);
  console.log(`  capture→shown: p50 ${r.p50} ms, p90 ${r.p90} ms, p99 ${r.p99} ms, max ${r.max} ms; machine CPU ${busyPct(cpu0, cpuTimes())} % busy`);
  await page.locator(liveSel("cam0")).click();
  await waitFor("the MJPEG stream closed", 5000, async () => cam(await status(), "cam0").live.stream_clients === 0, 50);
  await page.close();

  const w = figures.webrtc;
  console.log(`summary: webrtc: p50 ${w.p50} ms p99 ${w.p99} ms, first frame ${w.firstMs} ms, ${w.fps.toFixed(1)} fps presented (${w.frames} of ${w.captured} frames); ` +
    `mjpeg: p50 ${r.p50} ms p99 ${r.p99} ms, first frame ${r.firstMs} ms, ${r.fps.toFixed(1)} fps`);
  assert.ok(m.frames > 0, "MJPEG frames were shown");
  assert.equal(seen.whepPost, 0, "?live=mjpeg makes no WHEP offer");
  assert.ok(w.p50 < r.p50, `WebRTC p50 ${w.p50} ms < MJPEG p50 ${r.p50} ms`);
  assert.deepEqual(browser.errors, []);
});

test("fallback to MJPEG without a reload: a camera without video, a refused offer, a session ended by camjobd", { timeout: 60000 }, async () => {
  needH264();
  const page = await newPage();
  const seen = watchRequests(page);
  let navigations = 0;
  page.on("framenavigated", f => { if (f === page.mainFrame()) navigations++; });
  await page.goto(`${backend.url}?poll_ms=500`, { waitUntil: "load" });
  navigations = 0;
  await waitFor("both cameras RUNNING", 10000, () => page.evaluate(() => [...document.querySelectorAll(".cam")].filter(c => c.dataset.state === "RUNNING").length === 2));
  const mjpegShown = (name, w) => async () => { const v = await card(page, name); return v.pressed === "true" && v.src.includes("/stream.mjpeg") && v.complete && v.w === w && !v.rtc && v; };

  // 1. No video: MJPEG at once, no offer made.
  await page.locator(liveSel("novideo")).click();
  const nv = await waitFor("novideo's MJPEG frames", 5000, mjpegShown("novideo", 160), 20);
  const s1 = await status();
  console.log(`no video: MJPEG (caption "${nv.cap}", message "${nv.msg}"); ${seen.whepPost} offers; novideo stream_clients ${cam(s1, "novideo").live.stream_clients}`);
  assert.equal(seen.whepPost, 0, "no WHEP POST for a camera without video");
  assert.equal(cam(s1, "novideo").live.stream_clients, 1);
  assert.equal(nv.msg, "", "a camera without video is as configured: nothing to explain");
  assert.match(nv.cap, /MJPEG/);
  await page.locator(liveSel("novideo")).click();
  await waitFor("novideo's stream closed", 5000, async () => cam(await status(), "novideo").live.stream_clients === 0, 50);

  // 2. The offer refused (503, as camjobd answers at webrtc.max_sessions): MJPEG in its place.
  const whep = u => u.pathname === "/api/cameras/cam0/whep";
  const busy = { error: { code: "busy", message: "8 WebRTC sessions are open (webrtc.max_sessions); close one or try later" } };
  await page.route(whep, r => r.fulfill({ status: 503, contentType: "application/json", headers: { "Retry-After": "1" }, body: JSON.stringify(busy) }));
  let t = now();
  await page.locator(liveSel("cam0")).click();
  const refused = await waitFor("cam0 on MJPEG after the refusal", 5000, mjpegShown("cam0", 640), 20);
  const refusedMs = Math.round(now() - t);
  const s2 = await status();
  console.log(`offer refused (503 busy): MJPEG frames after ${refusedMs} ms, message "${refused.msg}", caption "${refused.cap}"; ` +
    `webrtc sessions ${s2.webrtc.sessions}, cam0 stream_clients ${cam(s2, "cam0").live.stream_clients}`);
  assert.match(refused.msg, /refused.*max_sessions/);
  assert.equal(refused.cap, "live · MJPEG up to 15 fps");
  assert.equal(s2.webrtc.sessions, 0);
  assert.equal(cam(s2, "cam0").live.stream_clients, 1);
  await page.unroute(whep);
  await page.locator(liveSel("cam0")).click();
  await waitFor("cam0's stream closed", 5000, async () => cam(await status(), "cam0").live.stream_clients === 0, 50);
  const off = await card(page, "cam0");
  assert.equal(off.pressed, "false");

  // 3. A later failure: playing over WebRTC, the session is ended by camjobd (a DELETE from
  //    elsewhere): the page notices and goes on over MJPEG.
  const posts = seen.whepPost;
  await page.locator(liveSel("cam0")).click();
  await waitFor("cam0 on WebRTC", FIRST_FRAME_MS + 2000, async () => { const v = await card(page, "cam0"); return v.rtc && v.videoW === 640 && v.msg === ""; }, 20);
  await waitFor("the session connected", 3000, async () => (await status()).webrtc.ice.connected === 1, 50);
  const url = seen.sessions.at(-1);
  assert.ok(url && seen.whepPost === posts + 1, `a new offer made, answered with a Location (${url})`);
  t = now();
  const del = await api(url, "DELETE");
  assert.equal(del.status, 200, `DELETE ${url}`);
  const later = await waitFor("cam0 on MJPEG after its session ended", 10000, mjpegShown("cam0", 640), 20);
  const laterMs = Math.round(now() - t);
  const s3 = await status();
  console.log(`session DELETEd from outside: MJPEG frames after ${laterMs} ms, message "${later.msg}"; webrtc sessions ${s3.webrtc.sessions}, ` +
    `cam0 stream_clients ${cam(s3, "cam0").live.stream_clients}; ${navigations} navigations`);
  assert.match(later.msg, /^MJPEG: /);
  assert.equal(s3.webrtc.sessions, 0);
  assert.equal(cam(s3, "cam0").live.stream_clients, 1);
  await page.locator(liveSel("cam0")).click();
  await waitFor("cam0's stream closed", 5000, async () => cam(await status(), "cam0").live.stream_clients === 0, 50);
  assert.equal(navigations, 0, "no reload");
  assert.deepEqual(browser.errors, []);
  await page.close();
  await closeBrowser();
  const exit = await stopBackend();
  assert.equal(exit.code, 0, `camjobd exits 0 on SIGTERM (got ${JSON.stringify(exit)})`);
});
