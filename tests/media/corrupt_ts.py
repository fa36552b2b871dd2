#!/usr/bin/python3
"""Flip random bits in the H.264 payload of an MPEG-TS file (stdlib only).

    corrupt_ts.py IN OUT --start 4.2 --end 4.6 --seed 7 [--skip 64] [--bytes-per-flip 200]

Finds the H.264 video PID via PAT/PMT, reassembles each video PES to learn its
PTS, and for every video PES whose PTS (relative to the first PTS seen in the
file, any PID) lies in [start, end) flips max(1, n // bytes_per_flip) random
bits among the n elementary-stream bytes that follow the first `skip` ES bytes
of that PES. TS headers, adaptation fields and PES headers are never touched,
so the TS layer (sync, PIDs, continuity counters, PCR) stays valid and only the
video decoder sees damage. Output has exactly the input size. Deterministic for
a given --seed. Hits are listed on stderr; exits 1 if no PES was hit.
"""
import argparse
import random
import sys

PKT = 188
STREAM_TYPE_H264 = 0x1B


def packets(data):
    """Yield (offset, pid, pusi, payload_offset) for every TS packet with a payload."""
    for off in range(0, len(data), PKT):
        if data[off] != 0x47:
            sys.exit(f"corrupt_ts: lost sync at byte {off}")
        pusi = bool(data[off + 1] & 0x40)
        pid = ((data[off + 1] & 0x1F) << 8) | data[off + 2]
        afc = (data[off + 3] >> 4) & 0x3
        start = off + 4
        if afc & 0x2:
            start += 1 + data[off + 4]
        if not afc & 0x1 or start >= off + PKT:
            continue
        yield off, pid, pusi, start


def psi_section(data, start, end):
    pointer = data[start]
    sec = data[start + 1 + pointer:end]
    length = ((sec[1] & 0x0F) << 8) | sec[2]
    return sec[:3 + length]


def find_pids(data):
    """Return (video_pid, set of all elementary PIDs) from the first PAT/PMT."""
    pmt_pid = None
    for off, pid, pusi, start in packets(data):
        if pid == 0 and pusi and pmt_pid is None:
            sec = psi_section(data, start, off + PKT)
            progs = sec[8:-4]
            for i in range(0, len(progs), 4):
                prog = (progs[i] << 8) | progs[i + 1]
                if prog != 0:
                    pmt_pid = ((progs[i + 2] & 0x1F) << 8) | progs[i + 3]
                    break
        elif pmt_pid is not None and pid == pmt_pid and pusi:
            sec = psi_section(data, start, off + PKT)
            info_len = ((sec[10] & 0x0F) << 8) | sec[11]
            pos, end = 12 + info_len, len(sec) - 4
            video, pids = None, set()
            while pos < end:
                stype = sec[pos]
                epid = ((sec[pos + 1] & 0x1F) << 8) | sec[pos + 2]
                es_info = ((sec[pos + 3] & 0x0F) << 8) | sec[pos + 4]
                pids.add(epid)
                if stype == STREAM_TYPE_H264 and video is None:
                    video = epid
                pos += 5 + es_info
            if video is None:
                sys.exit("corrupt_ts: PMT has no H.264 stream")
            return video, pids
    sys.exit("corrupt_ts: no PAT/PMT found")


def parse_pts(b):
    return (((b[0] >> 1) & 0x07) << 30) | (b[1] << 22) | ((b[2] >> 1) << 15) | (b[3] << 7) | (b[4] >> 1)


def collect_pes(data, pids):
    """Map pid -> list of PES, each a list of (file_offset, length) payload segments."""
    pes = {p: [] for p in pids}
    for off, pid, pusi, start in packets(data):
        if pid not in pes:
            continue
        if pusi:
            pes[pid].append([])
        if pes[pid]:  # ignore a PES that began before the file did
            pes[pid][-1].append((start, off + PKT - start))
    return pes


def pes_bytes(data, segs):
    return b"".join(data[o:o + n] for o, n in segs)


def pes_header(raw):
    """Return (pts or None, length of the PES header incl. optional fields)."""
    if len(raw) < 9 or raw[:3] != b"\x00\x00\x01":
        return None, None
    hdr_len = 9 + raw[8]
    pts = parse_pts(raw[9:14]) if raw[7] & 0x80 else None
    return pts, hdr_len


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--start", type=float, required=True, help="media time (s), inclusive")
    ap.add_argument("--end", type=float, required=True, help="media time (s), exclusive")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip", type=int, default=64, help="ES bytes left intact at the start of each PES")
    ap.add_argument("--bytes-per-flip", type=int, default=200)
    a = ap.parse_args()

    data = bytearray(open(a.inp, "rb").read())
    if len(data) % PKT:
        sys.exit(f"corrupt_ts: {len(data)} bytes is not a whole number of TS packets")
    video_pid, pids = find_pids(data)
    all_pes = collect_pes(data, pids)

    # Media time origin: the first PTS seen in file order, on any elementary PID.
    first = None
    for off, pid, pusi, start in packets(data):
        if pusi and pid in pids:
            pts, _ = pes_header(bytes(data[start:off + PKT]))
            if pts is not None:
                first = pts
                break
    if first is None:
        sys.exit("corrupt_ts: no PTS found")

    rng = random.Random(a.seed)
    hits = 0
    for segs in all_pes[video_pid]:
        raw = pes_bytes(data, segs)
        pts, hdr_len = pes_header(raw)
        if pts is None:
            continue
        t = ((pts - first) % (1 << 33)) / 90000.0
        if not (a.start - 1e-6 <= t < a.end - 1e-6):
            continue
        # file offsets of the ES bytes eligible for damage
        eligible = []
        pos = 0
        for o, n in segs:
            for i in range(n):
                if pos >= hdr_len + a.skip:
                    eligible.append(o + i)
                pos += 1
        if not eligible:
            continue
        flips = max(1, len(eligible) // a.bytes_per_flip)
        for off in rng.sample(eligible, flips):
            data[off] ^= 1 << rng.randrange(8)
        hits += 1
        print(f"corrupt_ts: hit video PES PTS {pts} (media time {t:.3f} s): "
              f"{len(raw) - hdr_len} ES bytes, {flips} bits flipped", file=sys.stderr)

    if not hits:
        sys.exit(f"corrupt_ts: no video PES with PTS in [{a.start}, {a.end})")
    with open(a.out, "wb") as f:
        f.write(data)
    print(f"corrupt_ts: video PID 0x{video_pid:x}, origin PTS {first} ({first / 90000:.6f} s), "
          f"{hits} PES corrupted, seed {a.seed}", file=sys.stderr)


if __name__ == "__main__":
    main()
