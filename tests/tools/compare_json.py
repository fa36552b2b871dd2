#!/usr/bin/env python3
"""Compares `vqprobe check CLIP --format json` of two binaries on every clip.

Usage: compare_json.py BEFORE_BIN AFTER_BIN MEDIA_DIR [--delivery-times-may-differ]

Runs both binaries on every `*.ts` and `random.bin` in MEDIA_DIR and on a local HLS
VOD made with ffmpeg from MEDIA_DIR/multi_main_360p.ts (skipped, with a note, when
ffmpeg or the clip is missing). The fields that differ on every run (`at`, `id`,
`defect_id`: ids carry a random run hash) are removed; everything else (key order
included) and the exit code must be identical. With --delivery-times-may-differ,
delivery defects (segment_error, ts_error, packet_loss) are compared by kind, state
and metrics other than session_* only: their start_s/end_s/duration_s may move
(issue 10 item 6).

Exits 1 and prints a unified diff per differing input; 0 when all are identical.
Standard library only.
"""

import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile

VOLATILE = ("at", "id", "defect_id")
DELIVERY = ("segment_error", "ts_error", "packet_loss")
DELIVERY_TIMES = ("start_s", "end_s", "duration_s")
TIMEOUT_S = 900


def normalise(value, delivery_times_may_differ):
    """`value` without the volatile fields, recursively."""
    if isinstance(value, list):
        return [normalise(v, delivery_times_may_differ) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    delivery = delivery_times_may_differ and value.get("kind") in DELIVERY
    for k, v in value.items():
        if k in VOLATILE:
            continue
        if delivery and k in DELIVERY_TIMES:
            continue
        if delivery and k == "metrics" and isinstance(v, dict):
            v = {m: x for m, x in v.items() if not m.startswith("session_")}
        out[k] = normalise(v, delivery_times_may_differ)
    return out


def run(binary, clip, delivery_times_may_differ):
    """Exit code and normalised output lines of `binary check clip --format json`."""
    try:
        p = subprocess.run(
            [binary, "check", clip, "--format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ["<timeout>"]
    lines = ["exit code %d" % p.returncode]
    text = p.stdout.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
        lines += json.dumps(normalise(doc, delivery_times_may_differ), indent=1).splitlines()
    except ValueError:
        # One JSON value per line (or not JSON at all): compare line by line.
        for line in text.splitlines():
            try:
                v = normalise(json.loads(line), delivery_times_may_differ)
                lines.append(json.dumps(v, separators=(",", ":")))
            except ValueError:
                lines.append(line)
    return lines


def make_hls(media_dir, work):
    """A local HLS VOD of multi_main_360p.ts, or None (with the reason)."""
    clip = os.path.join(media_dir, "multi_main_360p.ts")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None or not os.path.exists(clip):
        return None, "ffmpeg or %s missing" % clip
    out = os.path.join(work, "hls")
    os.makedirs(out)
    playlist = os.path.join(out, "index.m3u8")
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-i", clip, "-c", "copy", "-f", "hls",
           "-hls_time", "2", "-hls_playlist_type", "vod", playlist]
    if subprocess.run(cmd, check=False).returncode != 0:
        return None, "ffmpeg failed"
    return playlist, None


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    flags = [a for a in argv[1:] if a.startswith("--")]
    if len(args) != 3 or any(f != "--delivery-times-may-differ" for f in flags):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    before, after, media_dir = args
    loose = "--delivery-times-may-differ" in flags
    clips = sorted(
        os.path.join(media_dir, f)
        for f in os.listdir(media_dir)
        if f.endswith(".ts") or f == "random.bin"
    )
    differing = 0
    with tempfile.TemporaryDirectory(prefix="vqprobe-compare-") as work:
        playlist, why = make_hls(media_dir, work)
        if playlist is None:
            print("note: no HLS VOD compared (%s)" % why)
        else:
            clips.append(playlist)
        for clip in clips:
            a = run(before, clip, loose)
            b = run(after, clip, loose)
            name = os.path.relpath(clip, work) if clip == playlist else os.path.basename(clip)
            if a == b:
                print("same      %s (%s, %d lines)" % (name, a[0], len(a) - 1))
                continue
            differing += 1
            print("DIFFERENT %s" % name)
            for line in difflib.unified_diff(a, b, "before", "after", lineterm=""):
                print(line)
    print("%d of %d inputs differ" % (differing, len(clips)))
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
