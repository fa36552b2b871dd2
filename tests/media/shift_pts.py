#!/usr/bin/python3
"""Shift the audio timestamps of an MPEG-TS file inside a time window (stdlib only).

    shift_pts.py IN OUT --start 4.0 --end 7.0 --shift 0.3 [--origin 1.48] [--allow-none]

Finds the audio PID (the elementary stream that is not the H.264 video) via PAT/PMT,
and for every audio PES whose PTS (relative to the first PTS in the file, any PID, or
to --origin seconds of PTS: for HLS segments of one stream) lies in [start, end) adds `shift` seconds to its PTS (and DTS, if present), rewriting the
5-byte timestamp fields in place. Nothing else changes: TS headers, continuity
counters, PCR, packet order and the audio bytes stay as they were, so the packets still
arrive where the muxer put them, next to the video they belong with, while their
timestamps now claim they are `shift` seconds later: a timestamp desync of known size
over a known interval. Output has exactly the input size. The result is read back and
checked; exits 1 if no PES was shifted or the check fails.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corrupt_ts import PKT, collect_pes, find_pids, packets, parse_pts, pes_bytes, pes_header  # noqa: E402

WRAP = 1 << 33


def encode_ts(orig_first_byte, ts):
    """The 5 bytes of a PTS/DTS field, keeping the original 4-bit prefix."""
    ts %= WRAP
    return bytes([
        (orig_first_byte & 0xF0) | ((ts >> 29) & 0x0E) | 0x01,
        (ts >> 22) & 0xFF,
        ((ts >> 14) & 0xFE) | 0x01,
        (ts >> 7) & 0xFF,
        ((ts << 1) & 0xFE) | 0x01,
    ])


def audio_pes(data):
    video_pid, pids = find_pids(data)
    audio = sorted(pids - {video_pid})
    if not audio:
        sys.exit("shift_pts: no audio PID")
    return audio[0], pids, collect_pes(data, pids)[audio[0]]


def origin(data, pids):
    for off, pid, pusi, start in packets(data):
        if pusi and pid in pids:
            pts, _ = pes_header(bytes(data[start:off + PKT]))
            if pts is not None:
                return pts
    sys.exit("shift_pts: no PTS found")


def audio_pts_list(data):
    _, pids, pes = audio_pes(data)
    out = []
    for segs in pes:
        pts, _ = pes_header(pes_bytes(data, segs))
        out.append(pts)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--start", type=float, required=True, help="media time (s), inclusive")
    ap.add_argument("--end", type=float, required=True, help="media time (s), exclusive")
    ap.add_argument("--shift", type=float, required=True, help="seconds added to the audio PTS")
    ap.add_argument("--origin", type=float, help="PTS (s) of media time 0 (default: the file's first)")
    ap.add_argument("--allow-none", action="store_true", help="copy unchanged if no PES is in the window")
    ap.add_argument("--expect", type=float, nargs=2, metavar=("FROM", "TO"),
                    help="fail unless the shifted sound covers [FROM, TO) within 0.05 s")
    a = ap.parse_args()

    data = bytearray(open(a.inp, "rb").read())
    if len(data) % PKT:
        sys.exit(f"shift_pts: {len(data)} bytes is not a whole number of TS packets")
    audio_pid, pids, pes = audio_pes(data)
    first = round(a.origin * 90000) if a.origin is not None else origin(data, pids)
    delta = round(a.shift * 90000)
    before = audio_pts_list(data)
    shifted = []
    for i, segs in enumerate(pes):
        o, n = segs[0]
        if n < 19:
            sys.exit("shift_pts: PES header split across TS packets")
        pts, _ = pes_header(bytes(data[o:o + n]))
        if pts is None:
            continue
        t = ((pts - first) % WRAP) / 90000.0
        if not (a.start - 1e-6 <= t < a.end - 1e-6):
            continue
        flags = data[o + 7]
        data[o + 9:o + 14] = encode_ts(data[o + 9], pts + delta)
        if flags & 0x40:  # DTS follows the PTS
            dts = parse_pts(data[o + 14:o + 19])
            data[o + 14:o + 19] = encode_ts(data[o + 14], dts + delta)
        shifted.append(i)
    if not shifted and a.allow_none:
        with open(a.out, "wb") as f:
            f.write(data)
        print(f"shift_pts: no audio PES in [{a.start}, {a.end}): copied unchanged", file=sys.stderr)
        return
    if not shifted:
        sys.exit(f"shift_pts: no audio PES with PTS in [{a.start}, {a.end})")
    after = audio_pts_list(data)
    for i, (b, c) in enumerate(zip(before, after)):
        want = (b + delta) % WRAP if i in shifted else b
        if c != want:
            sys.exit(f"shift_pts: check failed at audio PES {i}: {b} -> {c}, want {want}")
    with open(a.out, "wb") as f:
        f.write(data)
    # The shifted sound runs from the first shifted PES to where the next PES starts
    # (audio PES carry several frames: the window snaps to PES boundaries).
    t0 = ((before[shifted[0]] - first) % WRAP) / 90000
    nxt = shifted[-1] + 1
    t1 = ((before[nxt] - first) % WRAP) / 90000 if nxt < len(before) else float("inf")
    print(f"shift_pts: audio PID 0x{audio_pid:x}, {len(shifted)} of {len(pes)} PES shifted by "
          f"{delta} ticks ({a.shift:+.3f} s); shifted sound covers [{t0:.3f}, {t1:.3f}) s", file=sys.stderr)
    if a.expect and (abs(t0 - a.expect[0]) > 0.05 or abs(t1 - a.expect[1]) > 0.05):
        sys.exit(f"shift_pts: covers [{t0:.3f}, {t1:.3f}), expected {a.expect}")


if __name__ == "__main__":
    main()
