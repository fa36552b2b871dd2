#!/usr/bin/python3
"""Helpers for make_media.sh (stdlib only).

Sub-commands:
  random OUT --size N --seed S      deterministic pseudo-random bytes, no 0x47 at all
  data-ts OUT --seconds S           MPEG-TS whose PMT carries only a private-data PES stream
  probe FILE ...                    ffprobe-based structural checks (codec, size, GOP, first PTS,
                                    pixel format, field order)
  sps FILE NAME=VALUE ...           fields of the first H.264 SPS (ffmpeg's trace_headers)
  frames FILE --change-at T         resolution change + PTS continuity check
  luma W H ...                      luma statistics of raw gray8 frames read from stdin
  detect LOG ...                    parse ffmpeg black/freeze/silencedetect output and check it
  framediff A B ...                 compare two framemd5 files (clean vs corrupt decode)
  audio ...                         per-channel level and full-scale statistics of decoded
                                    f32le audio read from stdin (clipping, channel loss)

Every check prints a one-line summary and exits non-zero on failure.
"""
import argparse
import json
import random
import re
import struct
import subprocess
import sys
from collections import Counter

TS_PACKET = 188


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------- random


def cmd_random(a):
    rng = random.Random(a.seed)
    data = bytearray(rng.getrandbits(8) for _ in range(a.size))
    # No 0x47 byte anywhere, so there can be no run of sync bytes at any packet
    # spacing (188, 192, 204): a TS probe can never lock onto this file.
    data = data.replace(b"\x47", b"\x46")
    with open(a.out, "wb") as f:
        f.write(data)
    print(f"random: {a.out} {len(data)} bytes, seed {a.seed}, 0x47 count {data.count(0x47)}")


# --------------------------------------------------------------------------- data-only TS


def crc32_mpeg2(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc


def psi_packet(pid, table, cc):
    section = table + struct.pack(">I", crc32_mpeg2(table))
    payload = b"\x00" + section  # pointer_field = 0
    payload += b"\xff" * (TS_PACKET - 4 - len(payload))
    hdr = struct.pack(">BHB", 0x47, 0x4000 | pid, 0x10 | (cc & 0xF))
    return hdr + payload


def pes_packets(pid, pts, body, cc):
    """One PES (stream_id 0xBD private_stream_1, PTS only) split into TS packets."""
    p = pts & ((1 << 33) - 1)
    pts_bytes = bytes([
        0x21 | ((p >> 29) & 0x0E),
        (p >> 22) & 0xFF, 0x01 | ((p >> 14) & 0xFE),
        (p >> 7) & 0xFF, 0x01 | ((p << 1) & 0xFE),
    ])
    hdr = b"\x80\x80\x05" + pts_bytes
    pes = b"\x00\x00\x01\xbd" + struct.pack(">H", len(hdr) + len(body)) + hdr + body
    out = []
    first = True
    while pes:
        chunk = pes[:184]
        pes = pes[184:]
        pusi = 0x4000 if first else 0
        first = False
        if len(chunk) < 184:
            # pad with an adaptation field of stuffing bytes
            af_len = 183 - len(chunk)
            af = bytes([af_len]) + ((b"\x00" + b"\xff" * (af_len - 1)) if af_len > 0 else b"")
            hdr4 = struct.pack(">BHB", 0x47, pusi | pid, 0x30 | (cc & 0xF))
            pkt = hdr4 + af + chunk
        else:
            hdr4 = struct.pack(">BHB", 0x47, pusi | pid, 0x10 | (cc & 0xF))
            pkt = hdr4 + chunk
        assert len(pkt) == TS_PACKET, len(pkt)
        out.append(pkt)
        cc += 1
    return out, cc


def cmd_data_ts(a):
    pmt_pid, data_pid = 0x1000, 0x0100
    # PAT: program 1 -> PMT PID
    pat_body = struct.pack(">HH", 1, 0xE000 | pmt_pid)
    pat = struct.pack(">BHHBBB", 0x00, 0xB000 | (5 + len(pat_body) + 4), 1, 0xC1, 0, 0) + pat_body
    # PMT: PCR on the data PID, one stream: type 0x06 (PES private data)
    es = struct.pack(">BHH", 0x06, 0xE000 | data_pid, 0xF000)
    pmt_fixed = struct.pack(">HBBBHH", 1, 0xC1, 0, 0, 0xE000 | data_pid, 0xF000)
    pmt = struct.pack(">BH", 0x02, 0xB000 | (len(pmt_fixed) + len(es) + 4)) + pmt_fixed + es
    cc = {0: 0, pmt_pid: 0, data_pid: 0}
    rng = random.Random(1234)
    pkts = []
    n_pes = int(a.seconds * 10)  # 10 data PES per second
    for i in range(n_pes):
        if i % 4 == 0:  # PAT/PMT every 0.4 s
            pkts.append(psi_packet(0, pat, cc[0]))
            cc[0] += 1
            pkts.append(psi_packet(pmt_pid, pmt, cc[pmt_pid]))
            cc[pmt_pid] += 1
        body = bytes(rng.getrandbits(8) for _ in range(300)).replace(b"\x47", b"\x46")
        new, cc[data_pid] = pes_packets(data_pid, 126000 + i * 9000, body, cc[data_pid])
        pkts.extend(new)
    with open(a.out, "wb") as f:
        f.write(b"".join(pkts))
    print(f"data-ts: {a.out} {len(pkts)} packets, PMT with one stream_type 0x06 PID 0x{data_pid:x}")


# --------------------------------------------------------------------------- ffprobe checks


def ffprobe_json(path, *args):
    cmd = ["ffprobe", "-v", "error", "-of", "json", *args, path]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        fail(f"ffprobe {path}: {res.stderr.strip()}")
    return json.loads(res.stdout)


def cmd_probe(a):
    info = ffprobe_json(a.file, "-show_entries",
                        "stream=index,codec_type,codec_name,profile,width,height,has_b_frames,"
                        "pix_fmt,field_order,"
                        "start_time,duration,sample_rate,channels:format=start_time,duration,format_name")
    fmt = info["format"]
    if fmt.get("format_name") != "mpegts":
        fail(f"{a.file}: format {fmt.get('format_name')}")
    streams = info["streams"]
    video = [s for s in streams if s["codec_type"] == "video"]
    audio = [s for s in streams if s["codec_type"] == "audio"]
    if len(audio) != 1 or audio[0]["codec_name"] != "aac" or audio[0]["sample_rate"] != "48000":
        fail(f"{a.file}: expected one 48 kHz AAC stream, got {audio}")
    starts = {"audio": float(audio[0]["start_time"])}
    msg = []
    if a.codec == "none":
        if video:
            fail(f"{a.file}: unexpected video stream")
    else:
        if len(video) != 1:
            fail(f"{a.file}: expected one video stream, got {len(video)}")
        v = video[0]
        starts["video"] = float(v["start_time"])
        if v["codec_name"] != a.codec:
            fail(f"{a.file}: codec {v['codec_name']} != {a.codec}")
        if a.profile and v.get("profile") != a.profile:
            fail(f"{a.file}: profile {v.get('profile')!r} != {a.profile!r}")
        if a.width and (v["width"], v["height"]) != (a.width, a.height):
            fail(f"{a.file}: size {v['width']}x{v['height']} != {a.width}x{a.height}")
        if a.bframes is not None and (int(v.get("has_b_frames", 0)) > 0) != a.bframes:
            fail(f"{a.file}: has_b_frames={v.get('has_b_frames')} but expected bframes={a.bframes}")
        if a.pix_fmt and v.get("pix_fmt") != a.pix_fmt:
            fail(f"{a.file}: pix_fmt {v.get('pix_fmt')!r} != {a.pix_fmt!r}")
        if a.field_order and v.get("field_order") != a.field_order:
            fail(f"{a.file}: field_order {v.get('field_order')!r} != {a.field_order!r}")
        msg.append(f"{v['codec_name']}/{v.get('profile')} {v['width']}x{v['height']} "
                   f"{v.get('pix_fmt')} field_order={v.get('field_order')} "
                   f"has_b_frames={v.get('has_b_frames')}")
        if a.gop or a.keyframes:
            pk = ffprobe_json(a.file, "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags")
            keys = sorted(round(float(p["pts_time"]) - starts["video"], 3)
                          for p in pk["packets"] if "K" in p["flags"])
            if a.keyframes:
                want = [float(k) for k in a.keyframes.split(",")]
            else:
                want = [round(i * a.gop, 3) for i in range(len(keys))]
            if keys != want:
                fail(f"{a.file}: keyframes at {keys}, expected {want}")
            msg.append("keyframes at " + ",".join(f"{k:g}" for k in keys))
    if abs(starts.get("video", starts["audio"]) - starts["audio"]) > 0.0401:
        fail(f"{a.file}: audio/video first PTS differ: {starts}")
    dur = float(fmt["duration"])
    if a.duration and abs(dur - a.duration) > 0.1:
        fail(f"{a.file}: duration {dur} != {a.duration}")
    msg.append("first PTS " + " ".join(f"{k}={t:.6f}s" for k, t in starts.items()))
    msg.append(f"duration {dur:.3f}s")
    print(f"probe {a.file.split('/')[-1]}: " + "; ".join(msg))


def cmd_sps(a):
    """Checks fields of the file's first H.264 SPS, as ffmpeg's trace_headers reads it."""
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "info", "-i", a.file, "-map", "0:v:0",
           "-c:v", "copy", "-frames:v", "1", "-bsf:v", "trace_headers", "-f", "null", "-"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        fail(f"sps {a.file}: ffmpeg failed: {res.stderr.strip()[-300:]}")
    fields = {}
    in_sps = False
    for line in res.stderr.splitlines():
        if "Sequence Parameter Set" in line:
            in_sps = True
            continue
        if in_sps and ("Parameter Set" in line or "Slice Header" in line or "Supplemental" in line):
            break
        m = re.search(r"\]\s+\d+\s+(\w+)\s+[01]+ = (-?\d+)\s*$", line)
        if in_sps and m:
            fields.setdefault(m.group(1), int(m.group(2)))
    if not fields:
        fail(f"sps {a.file}: no SPS in the trace")
    got = []
    for spec in a.fields:
        name, want = spec.split("=")
        have = fields.get(name)
        if have is None:
            # an absent flag is inferred (e.g. mb_adaptive_frame_field_flag when frames only)
            fail(f"sps {a.file}: {name} absent from the SPS")
        if have != int(want):
            fail(f"sps {a.file}: {name} = {have}, expected {want}")
        got.append(f"{name}={have}")
    print(f"sps {a.file.split('/')[-1]}: " + " ".join(got))


def cmd_frames(a):
    info = ffprobe_json(a.file, "-select_streams", "v:0", "-show_entries", "frame=pts_time,width,height")
    frames = info["frames"]
    t0 = float(frames[0]["pts_time"])
    ts = [float(f["pts_time"]) - t0 for f in frames]
    gaps = {round(y - x, 4) for x, y in zip(ts, ts[1:])}
    if gaps != {round(1 / a.fps, 4)}:
        fail(f"{a.file}: PTS not continuous, frame gaps {sorted(gaps)}")
    sizes = [(f["width"], f["height"]) for f in frames]
    changes = [(round(ts[i], 3), sizes[i - 1], sizes[i]) for i in range(1, len(sizes)) if sizes[i] != sizes[i - 1]]
    if len(changes) != 1 or abs(changes[0][0] - a.change_at) > 1e-6:
        fail(f"{a.file}: resolution changes {changes}, expected one at {a.change_at}")
    t, old, new = changes[0]
    print(f"frames {a.file.split('/')[-1]}: {len(frames)} frames, constant {1 / a.fps:g} s spacing, "
          f"{old[0]}x{old[1]} -> {new[0]}x{new[1]} at media time {t:g} s")


# --------------------------------------------------------------------------- luma statistics


def frame_stats(f):
    n = len(f)
    above = lambda th: len(f.translate(None, bytes(range(th + 1))))  # pixels > th
    return {
        "mean": sum(f) / n, "min": min(f), "max": max(f),
        "gt45": above(45) / n,
        # blackdetect default pix_th=0.10 in limited range: 16 + 0.10 * 219 = 37.9
        "bd_black": 1 - above(37) / n,
    }


def cmd_luma(a):
    fs = a.width * a.height
    data = sys.stdin.buffer.read()
    if not data or len(data) % fs:
        fail(f"luma: got {len(data)} bytes, not a multiple of {fs}")
    stats = [frame_stats(data[i:i + fs]) for i in range(0, len(data), fs)]
    step = a.step
    if a.black:
        b0, b1 = a.black
        inside = [s for i, s in enumerate(stats) if b0 <= i * step / a.fps < b1 - 1e-9]
        outside = [s for i, s in enumerate(stats) if not (b0 <= i * step / a.fps < b1 - 1e-9)]
        lo = min(s["min"] for s in inside)
        hi = max(s["max"] for s in inside)
        if hi > a.black_y + 1 or lo < a.black_y - 1:
            fail(f"luma: black section has Y in [{lo},{hi}], not ~{a.black_y}")
        brightest_outside = min(s["mean"] for s in outside)
        if brightest_outside < 60:
            fail(f"luma: a non-black frame has mean Y {brightest_outside:.1f}")
        print(f"luma: {len(inside)} frames in [{b0},{b1}) have Y in [{lo},{hi}] "
              f"(mean {sum(s['mean'] for s in inside) / len(inside):.2f}); "
              f"other {len(outside)} frames mean Y >= {brightest_outside:.1f}")
    if a.dark:
        means = [s["mean"] for s in stats]
        gt45 = [s["gt45"] for s in stats]
        bd = [s["bd_black"] for s in stats]
        if not (25 <= min(means) and max(means) <= 40):
            fail(f"luma: dark clip mean Y range [{min(means):.1f},{max(means):.1f}] outside 25..40")
        if min(gt45) < 0.05:
            fail(f"luma: dark clip has a frame with only {min(gt45):.3f} of pixels above Y=45")
        if max(bd) >= 0.9:
            fail(f"luma: dark clip frame with {max(bd):.3f} pixels under blackdetect pix_th")
        print(f"luma: {len(stats)} sampled frames, mean Y {min(means):.1f}..{max(means):.1f}, "
              f"max Y {max(s['max'] for s in stats)}, pixels >45: {min(gt45):.1%}..{max(gt45):.1%}, "
              f"pixels under blackdetect pix_th (Y<=37): {min(bd):.1%}..{max(bd):.1%} (black frame needs >=98%)")


def near_share(plane, c, tol):
    """Share of the bytes of `plane` within +-tol of c."""
    lo, hi = max(0, c - tol), min(255, c + tol)
    outside = bytes(v for v in range(256) if not lo <= v <= hi)
    return len(plane.translate(None, outside)) / len(plane)


def cmd_colour(a):
    """Raw yuv420p frames (every STEP-th) on stdin: with --window, every frame inside it
    has at least --share of its Y, U and V samples (each plane on its own) within --tol of
    --yuv, and no frame outside has --share of its luma near that Y; with --none, no frame
    has --share of its luma within +-tol of any one level (a hard negative)."""
    ys = a.width * a.height
    cs = ((a.width + 1) // 2) * ((a.height + 1) // 2)
    fs = ys + 2 * cs
    data = sys.stdin.buffer.read()
    if not data or len(data) % fs:
        fail(f"colour: got {len(data)} bytes, not a multiple of {fs}")
    frames = [(data[i:i + ys], data[i + ys:i + ys + cs], data[i + ys + cs:i + fs]) for i in range(0, len(data), fs)]
    if a.window:
        (w0, w1), (cy, cu, cv) = a.window, a.yuv
        inside = [f for i, f in enumerate(frames) if w0 <= i * a.step / a.fps < w1 - 1e-9]
        outside = [f for i, f in enumerate(frames) if not w0 <= i * a.step / a.fps < w1 - 1e-9]
        least = min(min(near_share(y, cy, a.tol), near_share(u, cu, a.tol), near_share(v, cv, a.tol))
                    for y, u, v in inside)
        most_out = max(near_share(y, cy, a.tol) for y, _, _ in outside)
        if least < a.share:
            fail(f"colour: a frame in [{w0},{w1}) has only {least:.3f} of a plane near {a.yuv}")
        if most_out >= a.share:
            fail(f"colour: a frame outside [{w0},{w1}) has {most_out:.3f} of its luma near Y={cy}")
        print(f"colour: {len(inside)} frames in [{w0},{w1}) have >= {least:.1%} of Y, U and V within "
              f"+-{a.tol} of {tuple(a.yuv)}; outside at most {most_out:.1%} of luma near Y={cy}")
    if a.none:
        best = 0.0
        for y, _, _ in frames:
            hist = [0] * 256
            for v, n in Counter(y).items():
                hist[v] = n
            w = 2 * a.tol + 1
            best = max(best, max(sum(hist[s:s + w]) for s in range(256 - w + 1)) / len(y))
        if best >= a.share:
            fail(f"colour: a frame has {best:.3f} of its luma within +-{a.tol} of one level")
        print(f"colour: {len(frames)} sampled frames, at most {best:.1%} of a frame's luma within "
              f"+-{a.tol} of one level")


# --------------------------------------------------------------------------- detector output


def parse_detectors(text):
    ev = {"black": [], "freeze": [], "silence": []}
    open_ = {}
    for line in text.splitlines():
        m = re.search(r"black_start:(\S+) black_end:(\S+)", line)
        if m:
            ev["black"].append((float(m.group(1)), float(m.group(2))))
            continue
        m = re.search(r"\] lavfi\.freezedetect\.freeze_(start|end): (\S+)", line)
        if m:
            if m.group(1) == "start":
                open_["freeze"] = float(m.group(2))
            else:
                ev["freeze"].append((open_.pop("freeze"), float(m.group(2))))
            continue
        m = re.search(r"silence_start: (\S+)", line)
        if m:
            open_["silence"] = float(m.group(1))
            continue
        m = re.search(r"silence_end: (\S+)", line)
        if m:
            ev["silence"].append((open_.pop("silence"), float(m.group(1))))
    for k, s in open_.items():  # still open at end of stream
        ev[k].append((s, None))
    return ev


def fmt_events(evs):
    return "[" + ", ".join(f"{s:.3f}-{'EOF' if e is None else f'{e:.3f}'}" for s, e in evs) + "]"


def cmd_detect(a):
    """Every reported event must be explained by an --expect or --allow window.

    --expect KIND:S:E  the events of KIND overlapping [S, E] must span S..E (+-tol)
    --allow  KIND:S:E  events of KIND inside [S-tol, E+tol] are tolerated (known
                       ffmpeg behaviour, e.g. freezedetect also fires on black)
    """
    text = open(a.log, errors="replace").read()
    ev = parse_detectors(text)
    summary = " ".join(f"{k}detect={fmt_events(v)}" for k, v in ev.items() if k in a.ran.split(","))
    rms = re.findall(r"RMS level dB: (\S+)", text)
    if rms:
        summary += f" audio_rms={float(rms[-1]):.1f}dBFS"
    print(f"detect {a.name}: {summary}")
    explained = set()
    for spec in a.expect:
        kind, s, e = spec.split(":")
        s, e = float(s), float(e)
        got = [x for x in ev[kind] if x[0] <= e + a.tol and (x[1] is None or x[1] >= s - a.tol)]
        if not got:
            fail(f"{a.name}: {kind}detect reported nothing for {s}-{e}")
        gs = min(x for x, _ in got)
        ge = max(float("inf") if y is None else y for _, y in got)
        if abs(gs - s) > a.tol or abs(ge - e) > a.tol:
            fail(f"{a.name}: {kind}detect {fmt_events(got)} does not match {s}-{e} (tol {a.tol})")
        if a.single and len(got) != 1:
            fail(f"{a.name}: {kind}detect split the event: {fmt_events(got)}")
        explained.update((kind, x) for x in got)
    for spec in a.allow:
        kind, s, e = spec.split(":")
        s, e = float(s), float(e)
        explained.update((kind, x) for x in ev[kind]
                         if x[0] >= s - a.tol and x[1] is not None and x[1] <= e + a.tol)
    for kind, evs in ev.items():
        extra = [x for x in evs if (kind, x) not in explained]
        if extra:
            fail(f"{a.name}: unexpected {kind}detect events {fmt_events(extra)}")


# --------------------------------------------------------------------------- framemd5 diff


def read_framemd5(path):
    out = {}
    tb = None
    for line in open(path):
        if line.startswith("#tb 0:"):
            num, den = line.split(":")[1].strip().split("/")
            tb = int(num) / int(den)
        if line.startswith("#") or not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if parts[0] != "0":
            continue
        out[round(int(parts[2]) * tb, 4)] = parts[5]
    return out


def cmd_framediff(a):
    ref, bad = read_framemd5(a.ref), read_framemd5(a.bad)
    t0 = min(ref)
    ref = {round(t - t0, 4): h for t, h in ref.items()}
    bad = {round(t - t0, 4): h for t, h in bad.items()}
    differ = sorted(t for t in ref if bad.get(t) != ref[t])
    missing = sorted(t for t in ref if t not in bad)
    if not differ:
        fail("framediff: corrupt decode is identical to the clean decode")
    want = sorted(t for t in ref if a.start - 1e-6 <= t < a.end - 1e-6)
    print(f"framediff: {len(differ)} of {len(ref)} decoded frames differ, "
          f"first {differ[0]:g} s, last {differ[-1]:g} s; {len(missing)} frames missing; "
          f"frames {a.end:g} s onward identical: {all(bad.get(t) == ref[t] for t in ref if t >= a.end - 1e-6)}")
    if differ != want:
        fail(f"framediff: differing frames {differ} != expected [{a.start}, {a.end})")


# --------------------------------------------------------------------------- decoded audio

FULL_SCALE = 0.95   # vqprobe's default [detect.clipping] sample_level
SLICE = 0.1         # seconds per statistics slice


def cmd_audio(a):
    import array
    import math
    x = array.array("f")
    x.frombytes(sys.stdin.buffer.read())
    ch = a.channels
    per = int(round(a.rate * SLICE))
    n = len(x) // ch
    if n < a.rate:
        fail(f"audio: only {n} frames decoded")
    slices = []   # (t, [rms dB per channel], near, samples)
    for i0 in range(0, n - per + 1, per):
        sq = [0.0] * ch
        near = 0
        for i in range(i0, i0 + per):
            for c in range(ch):
                v = x[i * ch + c]
                sq[c] += v * v
                near += abs(v) >= FULL_SCALE
        rms = [(-200.0 if s <= 0 else 10 * math.log10(s / per)) for s in sq]
        slices.append((i0 / a.rate, rms, near, per * ch))
    peak = max(abs(v) for v in x)
    notes = [f"peak {peak:.3f} ({20 * math.log10(max(peak, 1e-10)):+.2f} dBFS)"]
    if a.clip:
        s0, s1 = a.clip
        # every 1 s window well inside: at least twice the default ratio (0.1%)
        shares = []
        t = s0 + 0.1
        while t + 1.0 <= s1 - 0.1 + 1e-9:
            w = [s for s in slices if t - 1e-6 <= s[0] < t + 1.0 - 1e-6]
            shares.append(sum(s[2] for s in w) / sum(s[3] for s in w))
            t += SLICE
        if min(shares) < 0.002:
            fail(f"audio: a 1 s window inside [{s0},{s1}) has only {min(shares):.3%} of samples at full scale")
        outside = [s for s in slices if s[0] + SLICE <= s0 - 0.1 or s[0] >= s1 + 0.1]
        hot = [s[0] for s in outside if s[2]]
        if hot:
            fail(f"audio: samples at full scale outside [{s0},{s1}) at {hot[:5]}")
        notes.append(f"1 s windows inside [{s0},{s1}): {min(shares):.3%}..{max(shares):.3%} of samples "
                     f"at |s| >= {FULL_SCALE}, none outside")
    if a.noclip:
        if peak >= FULL_SCALE:
            fail(f"audio: peak {peak:.4f} reaches {FULL_SCALE}")
        notes.append(f"no sample at |s| >= {FULL_SCALE}")
    if a.lost:
        c, s0, s1 = int(a.lost[0]), a.lost[1], a.lost[2]
        inside = [s for s in slices if s0 + 0.1 <= s[0] and s[0] + SLICE <= s1 - 0.1]
        outside = [s for s in slices if s[0] + SLICE <= s0 - 0.1 or s[0] >= s1 + 0.1]
        worst = max(s[1][c] for s in inside)
        if worst >= -60:
            fail(f"audio: channel {c} reaches {worst:.1f} dBFS inside [{s0},{s1})")
        low = min(s[1][c] for s in outside)
        if low < -40:
            fail(f"audio: channel {c} is at {low:.1f} dBFS outside [{s0},{s1})")
        notes.append(f"channel {c}: <= {worst:.1f} dBFS inside [{s0},{s1}), >= {low:.1f} outside")
    others = [c for c in range(ch) if not (a.lost and c == int(a.lost[0]))]
    low = min(s[1][c] for s in slices for c in others)
    if low < -40:
        fail(f"audio: a sounding channel drops to {low:.1f} dBFS")
    notes.append(f"channels {others} >= {low:.1f} dBFS throughout")
    if a.same:
        diff = max(abs(x[i * ch] - x[i * ch + c]) for i in range(n) for c in range(1, ch))
        if diff > 1e-3:
            fail(f"audio: channels differ by up to {diff:.4f}")
        notes.append(f"channels identical (max difference {diff:.1e})")
    print(f"audio {a.name}: " + "; ".join(notes))


# --------------------------------------------------------------------------- loudness
def cmd_loudness(a):
    """ffmpeg's ebur128 meter (its per-100-ms log, the reference) on the audio track:
    the short-term loudness (3 s) where its window lies wholly inside each --span must be
    LUFS +- --tol there, and never above --max-short anywhere."""
    out = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-i", a.file, "-map", "0:a:0",
                          "-af", "ebur128", "-f", "null", "-"], capture_output=True, text=True).stderr
    rows = []
    for m in re.finditer(r"t:\s*([\d.]+)\s+TARGET:.*?M:\s*(-?[\d.]+|-inf)\s+S:\s*(-?[\d.]+|-inf)", out):
        rows.append((float(m.group(1)), float(m.group(2)), float(m.group(3))))
    if not rows:
        fail(f"{a.name}: no ebur128 log")
    for span in a.span:
        start, end, want = (float(x) for x in span.split(":"))
        inside = [s for t, _, s in rows if start + 3.0 <= t <= end + 1e-6]
        if not inside:
            fail(f"{a.name}: no short-term reading inside [{start}, {end}]")
        lo, hi = min(inside), max(inside)
        if lo < want - a.tol or hi > want + a.tol:
            fail(f"{a.name}: short-term over [{start + 3}, {end}] is {lo:.1f}..{hi:.1f} LUFS, want {want} +- {a.tol}")
        print(f"{a.name}: short-term {lo:.1f}..{hi:.1f} LUFS over [{start + 3:.1f}, {end:.1f}] (want {want})")
    top = max(s for t, _, s in rows if t >= 3.0)
    if a.max_short is not None and top > a.max_short:
        fail(f"{a.name}: short-term reaches {top:.1f} LUFS, above {a.max_short}")
    print(f"{a.name}: short-term max {top:.1f} LUFS")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("random")
    s.add_argument("out")
    s.add_argument("--size", type=int, default=1 << 20)
    s.add_argument("--seed", type=int, default=11)
    s = sub.add_parser("data-ts")
    s.add_argument("out")
    s.add_argument("--seconds", type=float, default=4.0)
    s = sub.add_parser("probe")
    s.add_argument("file")
    s.add_argument("--codec", default="h264")
    s.add_argument("--profile")
    s.add_argument("--width", type=int)
    s.add_argument("--height", type=int)
    s.add_argument("--duration", type=float)
    s.add_argument("--gop", type=float, help="keyframes expected every GOP seconds from 0")
    s.add_argument("--keyframes", help="comma-separated list of expected keyframe times")
    s.add_argument("--bframes", type=lambda v: v == "yes")
    s.add_argument("--pix-fmt", help="ffprobe pix_fmt, e.g. yuv420p10le")
    s.add_argument("--field-order", help="ffprobe field_order, e.g. tt or progressive")
    s = sub.add_parser("sps")
    s.add_argument("file")
    s.add_argument("fields", nargs="+", help="NAME=VALUE, e.g. frame_mbs_only_flag=0")
    s = sub.add_parser("frames")
    s.add_argument("file")
    s.add_argument("--change-at", type=float, required=True)
    s.add_argument("--fps", type=float, default=25.0)
    s = sub.add_parser("luma")
    s.add_argument("width", type=int)
    s.add_argument("height", type=int)
    s.add_argument("--fps", type=float, default=25.0)
    s.add_argument("--step", type=int, default=1, help="frames were sampled every STEP frames")
    s.add_argument("--black", type=float, nargs=2)
    s.add_argument("--black-y", type=int, default=16, help="Y of black: 16, or 0 in full range")
    s.add_argument("--dark", action="store_true")
    s = sub.add_parser("colour")
    s.add_argument("width", type=int)
    s.add_argument("height", type=int)
    s.add_argument("--fps", type=float, default=25.0)
    s.add_argument("--step", type=int, default=1, help="frames were sampled every STEP frames")
    s.add_argument("--window", type=float, nargs=2)
    s.add_argument("--yuv", type=int, nargs=3)
    s.add_argument("--tol", type=int, default=6)
    s.add_argument("--share", type=float, default=0.75)
    s.add_argument("--none", action="store_true")
    s = sub.add_parser("detect")
    s.add_argument("log")
    s.add_argument("--name", required=True)
    s.add_argument("--ran", default="black,freeze,silence")
    s.add_argument("--expect", action="append", default=[], help="KIND:START:END")
    s.add_argument("--allow", action="append", default=[], help="KIND:START:END tolerated")
    s.add_argument("--tol", type=float, default=0.1)
    s.add_argument("--single", action="store_true", help="each expected kind must be one event")
    s = sub.add_parser("framediff")
    s.add_argument("ref")
    s.add_argument("bad")
    s.add_argument("--start", type=float, required=True)
    s.add_argument("--end", type=float, required=True)
    s = sub.add_parser("audio")
    s.add_argument("--name", required=True)
    s.add_argument("--channels", type=int, default=2)
    s.add_argument("--rate", type=int, default=48000)
    s.add_argument("--clip", type=float, nargs=2, help="START END: clipped there, nowhere else")
    s.add_argument("--noclip", action="store_true", help="no sample reaches full scale")
    s.add_argument("--lost", type=float, nargs=3, help="CHANNEL START END: silent there only")
    s.add_argument("--same", action="store_true", help="all channels identical")
    s = sub.add_parser("loudness")
    s.add_argument("file")
    s.add_argument("--name", required=True)
    s.add_argument("--span", action="append", default=[], help="START:END:LUFS short-term expected there")
    s.add_argument("--tol", type=float, default=1.0)
    s.add_argument("--max-short", type=float, help="the short-term loudness never above this")
    a = p.parse_args()
    {"random": cmd_random, "data-ts": cmd_data_ts, "probe": cmd_probe, "sps": cmd_sps, "frames": cmd_frames,
     "luma": cmd_luma, "colour": cmd_colour, "detect": cmd_detect, "framediff": cmd_framediff, "audio": cmd_audio,
     "loudness": cmd_loudness}[a.cmd](a)


if __name__ == "__main__":
    main()
