#!/usr/bin/env python3
"""Compare two `vqprobe ... --format json` outputs (JSON lines), e.g. aarch64 under qemu
against x86_64 native, and optionally against the ground truth of a clip.

    compare_events.py REFERENCE CANDIDATE [--truth truth.json --clip NAME] [--tol 0.1]
                      [--truth-tol 0.5] [--min-events 1]

Passes when both files hold the same events in the same order: same `kind` and `state`,
`start_s` and `end_s` within --tol seconds. With --truth, the `end` events of CANDIDATE
must also match the clip's expected defects (kind, start/end within --truth-tol), so two
equally wrong outputs cannot pass. Exits 1 with every mismatch listed.
"""
import argparse
import json
import sys


def load(path):
    events = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                e = json.loads(line)
            except json.JSONDecodeError as err:
                sys.exit(f"{path}:{n}: not JSON ({err}): {line[:200]}")
            for key in ("v", "kind", "state", "start_s"):
                if key not in e:
                    sys.exit(f"{path}:{n}: event without '{key}': {line[:200]}")
            events.append(e)
    return events


def fmt(e):
    end = f"-{e['end_s']:.3f}" if "end_s" in e else ""
    return f"{e['kind']}/{e['state']} {e['start_s']:.3f}{end}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reference")
    ap.add_argument("candidate")
    ap.add_argument("--tol", type=float, default=0.1)
    ap.add_argument("--truth")
    ap.add_argument("--clip")
    ap.add_argument("--truth-tol", type=float, default=0.5)
    ap.add_argument("--min-events", type=int, default=1)
    a = ap.parse_args()

    ref, cand = load(a.reference), load(a.candidate)
    errors = []
    if len(ref) < a.min_events:
        errors.append(f"reference has {len(ref)} events, expected at least {a.min_events}")
    if len(ref) != len(cand):
        errors.append(f"{len(ref)} reference events vs {len(cand)} candidate events")
    for i, (r, c) in enumerate(zip(ref, cand)):
        if (r["kind"], r["state"]) != (c["kind"], c["state"]):
            errors.append(f"event {i}: {fmt(r)} vs {fmt(c)} (kind/state differ)")
            continue
        for key in ("start_s", "end_s"):
            if (key in r) != (key in c):
                errors.append(f"event {i}: {key} present in only one: {fmt(r)} vs {fmt(c)}")
            elif key in r and abs(r[key] - c[key]) > a.tol:
                errors.append(f"event {i}: {key} {r[key]} vs {c[key]} differ by more than {a.tol} s")

    if a.truth:
        clips = json.load(open(a.truth, encoding="utf-8"))["clips"]
        clip = next((c for c in clips if c["file"] == a.clip), None)
        if clip is None:
            sys.exit(f"{a.clip} not in {a.truth}")
        want = [(e["kind"], e["start_s"], e["end_s"]) for e in clip["events"]]
        got = [(e["kind"], e["start_s"], e["end_s"]) for e in cand if e["state"] == "end"]
        ok = len(want) == len(got) and all(
            w[0] == g[0] and abs(w[1] - g[1]) <= a.truth_tol and abs(w[2] - g[2]) <= a.truth_tol
            for w, g in zip(sorted(want), sorted(got))
        )
        if not ok:
            errors.append(f"candidate defects {got} do not match the ground truth {want} (±{a.truth_tol} s)")

    name = a.clip or a.candidate
    if errors:
        print(f"compare_events: {name}: MISMATCH", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        print("  reference: " + "; ".join(fmt(e) for e in ref), file=sys.stderr)
        print("  candidate: " + "; ".join(fmt(e) for e in cand), file=sys.stderr)
        sys.exit(1)
    worst = max(
        [abs(r[k] - c[k]) for r, c in zip(ref, cand) for k in ("start_s", "end_s") if k in r] or [0.0]
    )
    print(f"compare_events: {name}: {len(cand)} events match (max |Δt| {worst:.3f} s): "
          + "; ".join(fmt(e) for e in cand if e["state"] == "end"))


if __name__ == "__main__":
    main()
