#!/usr/bin/env python3
"""A WHEP viewer on aiortc (an independent WebRTC stack, from PyPI): it offers to receive video,
plays the camera for a while, decodes every frame, reads the synthetic camera's time strip and
prints one JSON line of figures. Its ICE uses 127.0.0.1 only (tests keep every packet on
loopback).

    whep_client.py URL [--seconds S] [--token T] [--trickle] [--audio] [--no-delete]

URL is the WHEP endpoint (http://127.0.0.1:PORT/api/cameras/cam0/whep). --trickle sends the
candidates by PATCH after the answer (as Mainsail does) instead of in the offer; --audio offers
audio and video send-receive (Mainsail's offer). Exit status 0 when frames were decoded.
"""

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
import urllib.error
import urllib.request

import aioice.ice

# Loopback only: the host candidates aiortc gathers.
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402

CELLS, BITS = 44, 40


def read_strip(frame):
    """The capture time (Unix ms mod 2^40) the synthetic camera drew, or None."""
    plane = frame.planes[0]
    w, h, stride = frame.width, frame.height, plane.line_size
    data = bytes(plane)
    cell, rows = (w // CELLS) & ~1, min(h // 8, 16)
    if cell == 0 or rows == 0:
        return None
    y = h - rows // 2 - 1

    def bit(i):
        return data[y * stride + i * cell + cell // 2] > 128

    if not (bit(0) and not bit(1) and not bit(42) and bit(43)):
        return None
    v = 0
    for i in range(2, 42):
        v = v << 1 | int(bit(i))
    return v


def request(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


def candidate_lines(sdp):
    return [l for l in sdp.splitlines() if l.startswith("a=candidate:")]


async def play(args):
    auth = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    direction = "sendrecv" if args.audio else "recvonly"
    pc.addTransceiver("video", direction=direction)
    if args.audio:
        pc.addTransceiver("audio", direction=direction)
    out = {"frames": 0, "latency_ms": [], "sizes": set()}
    t0 = time.monotonic()
    first = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track):
        if track.kind != "video":
            return

        async def reader():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                now_ms = time.time() * 1000
                out["frames"] += 1
                out["sizes"].add(f"{frame.width}x{frame.height}")
                if not first.done():
                    first.set_result(time.monotonic() - t0)
                t = read_strip(frame)
                if t is not None:
                    out["latency_ms"].append((int(now_ms) - t) % (1 << BITS))

        asyncio.ensure_future(reader())

    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    candidates = candidate_lines(sdp)
    if args.trickle:
        # Mainsail's shape: the offer without candidates, then one PATCH per candidate.
        sdp = "\r\n".join(l for l in sdp.split("\r\n") if not l.startswith("a=candidate:") and l != "a=end-of-candidates")
    status, headers, answer = request("POST", args.url, sdp.encode(), {"Content-Type": "application/sdp", **auth})
    if status != 201:
        print(json.dumps({"error": f"POST {status}: {answer.strip()}"}))
        return 1
    location = headers.get("location", "")
    etag = headers.get("etag")
    session_url = re.sub(r"/api/.*$", "", args.url) + location
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    patches = []
    if args.trickle:
        ufrag = re.search(r"a=ice-ufrag:(\S+)", sdp).group(1)
        pwd = re.search(r"a=ice-pwd:(\S+)", sdp).group(1)
        for c in candidates:
            frag = f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n{c}\r\n"
            st, _, _ = request("PATCH", session_url, frag.encode(),
                               {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag or "*", **auth})
            patches.append(st)
    try:
        first_s = await asyncio.wait_for(asyncio.shield(first), timeout=args.seconds + 10)
    except asyncio.TimeoutError:
        first_s = None
    if first_s is not None:
        await asyncio.sleep(max(0.0, args.seconds - (time.monotonic() - t0 - first_s)))
    deleted = None
    if not args.no_delete:
        deleted, _, _ = request("DELETE", session_url, headers=auth)
    await pc.close()
    lat = sorted(out["latency_ms"])
    result = {
        "frames": out["frames"],
        "sizes": sorted(out["sizes"]),
        "first_frame_s": first_s,
        "fps": out["frames"] / args.seconds if first_s is not None else 0,
        "strips": len(lat),
        "latency_p50_ms": statistics.median(lat) if lat else None,
        "latency_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        "location": location,
        "etag": etag,
        "patches": patches,
        "delete": deleted,
    }
    print(json.dumps(result))
    return 0 if out["frames"] > 0 else 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--token")
    p.add_argument("--trickle", action="store_true")
    p.add_argument("--audio", action="store_true")
    p.add_argument("--no-delete", action="store_true")
    sys.exit(asyncio.run(play(p.parse_args())))


if __name__ == "__main__":
    main()
