#!/usr/bin/python3
"""Chaos soak of the agent (issue 9): 8 streams while every peer misbehaves, then an audit.

Not part of `cargo test` (it runs for many minutes). Run it as root (it mounts a tmpfs for
the spool so it can fill the spool's disk) from the repository root:

    cargo build --release
    bash tests/media/make_media.sh target/test-media
    /usr/bin/python3 tests/soak/chaos.py --bin target/release/vqprobe \
        --media target/test-media --minutes 30 --out target/chaos

Streams (8): 3 RTSP (GStreamer's RTSP server from tests/peers: two looped ground-truth clips
and its live pattern), 2 live HLS (ffmpeg's sliding-window HLS of looped clips served by
tests/peers/hls_server.py), 3 looped files at real-time pace. A real mosquitto is the broker
(persistence on, so a stopped broker keeps the subscriber's queue) and a persistent
`mosquitto_sub` records everything.

Faults, repeated in rounds of `--round` seconds (default 300):
  +20 s   RTSP server SIGKILLed, restarted 20 s later on the same port
  +70 s   HLS origin: h1's playlist frozen for 30 s
  +110 s  HLS origin: a segment of h2 served with corrupted video payload
  +140 s  spool disk filled (dd), broker stopped (SIGTERM) for 30 s; disk freed 10 s after
          the broker is back
  +200 s  broker frozen (SIGSTOP) for 20 s
  +240 s  SIGHUP to the agent (config unchanged)

Audit (exit status 1 if any check fails; a JSON summary is written to OUT/summary.json):
  * every event id the agent logged reached the subscriber, and nothing else did
    (duplicates counted: delivery is at least once);
  * every injected fault was reported on the right stream within its window (source_down or
    stall on the RTSP streams; playlist_stale on h1; corruption, ts_error or segment_error on
    h2), and the looped files report their clips' known defects every pass;
  * RSS and open file descriptors flat: the mean of the last fifth of the run within 15%
    (RSS) / 8 fds of the mean of the second fifth;
  * no panic in the agent's log, and the agent exits 0 on SIGTERM.
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "..", "peers")
PROBE = "chaos-01"


def log(msg):
    sys.stderr.write(f"[chaos {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_ready(proc, what, timeout=30):
    """Reads `READY port=N ...` from a peer's stdout; returns the key=value pairs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise SystemExit(f"{what} exited before READY ({proc.returncode})")
            continue
        line = line.decode(errors="replace").strip()
        if line.startswith("READY"):
            return dict(kv.split("=", 1) for kv in line.split()[1:])
    raise SystemExit(f"{what}: no READY within {timeout} s")


class Broker:
    def __init__(self, work):
        self.dir = os.path.join(work, "broker")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(f"listener {self.port} 127.0.0.1\nuser root\nallow_anonymous true\n"
                    f"persistence true\npersistence_location {self.dir}/\nautosave_interval 5\n"
                    f"max_queued_messages 100000\nlog_dest file {self.dir}/mosquitto.log\n")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(["mosquitto", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("mosquitto did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)

    def signal(self, sig):
        self.proc.send_signal(sig)


class Subscriber:
    """mosquitto_sub with a persistent session; keeps every message (topic, payload)."""

    def __init__(self, port, out):
        self.msgs = []
        self.lock = threading.Lock()
        self.out = open(out, "w")
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv311", "-q", "1",
             "-c", "-i", "chaos-audit", "-t", "vqprobe/#", "-F", "%t\t%p"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.out.write(line + "\n")
            self.out.flush()
            topic, _, payload = line.partition("\t")
            with self.lock:
                self.msgs.append((topic, payload))

    def events(self):
        with self.lock:
            msgs = list(self.msgs)
        out = []
        for topic, payload in msgs:
            if topic.endswith("/events"):
                try:
                    out.append(json.loads(payload))
                except ValueError:
                    out.append({"_bad": payload})
        return out


class Rtsp:
    def __init__(self, media, work):
        self.media, self.work = media, work
        self.port = 0
        self.proc = None
        self.start()

    def start(self):
        args = ["/usr/bin/python3", os.path.join(PEERS, "rtsp_server.py"), "--port", str(self.port),
                "--mount", f"/black=loop:{self.media}/black_high_360p.ts",
                "--mount", f"/multi=loop:{self.media}/multi_main_360p.ts",
                "--mount", "/live=live"]
        err = open(os.path.join(self.work, "rtsp_server.log"), "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=err, start_new_session=True)
        self.port = int(read_ready(self.proc, "rtsp_server")["port"])

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


class Hls:
    """Two ffmpeg live HLS producers (h1, h2) and one origin with fault control."""

    def __init__(self, media, work):
        self.root = os.path.join(work, "hls")
        self.ffmpeg = []
        for name, clip in (("h1", "multi_main_360p.ts"), ("h2", "clean_quiet_360p.ts")):
            d = os.path.join(self.root, name)
            os.makedirs(d, exist_ok=True)
            self.ffmpeg.append(subprocess.Popen(
                ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
                 "-i", os.path.join(media, clip), "-c", "copy", "-f", "hls", "-hls_time", "2",
                 "-hls_list_size", "5", "-hls_flags", "delete_segments+temp_file",
                 "-hls_segment_filename", os.path.join(d, "seg%d.ts"),
                 os.path.join(d, "index.m3u8")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(work, f"ffmpeg-{name}.log"), "ab"),
                start_new_session=True))
        for name in ("h1", "h2"):
            deadline = time.time() + 20
            while not os.path.exists(os.path.join(self.root, name, "index.m3u8")):
                if time.time() > deadline:
                    raise SystemExit(f"ffmpeg wrote no {name}/index.m3u8")
                time.sleep(0.2)
        self.origin = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(PEERS, "hls_server.py"), "--dir", self.root],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(os.path.join(work, "hls_server.log"), "ab"))
        self.port = int(read_ready(self.origin, "hls_server")["port"])

    def fault(self, rule):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/__fault",
                                     data=json.dumps(rule).encode(), method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def newest_segment(self, name):
        with open(os.path.join(self.root, name, "index.m3u8")) as f:
            segs = [l.strip() for l in f if l.strip().endswith(".ts")]
        return int(segs[-1][3:-3])

    def stop(self):
        for p in self.ffmpeg:
            os.killpg(p.pid, signal.SIGKILL)
        self.origin.kill()


class Spoolfs:
    """A small tmpfs for the spool, so the harness can fill its disk."""

    def __init__(self, path, size):
        self.path = path
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], check=True)
        self.filler = os.path.join(path, "filler")

    def fill(self):
        subprocess.run(["dd", "if=/dev/zero", f"of={self.filler}", "bs=4k"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def free(self):
        try:
            os.remove(self.filler)
        except FileNotFoundError:
            pass

    def umount(self):
        subprocess.run(["umount", "-l", self.path])


def sample(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--media", required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--round", type=float, default=300, help="seconds per round of faults")
    ap.add_argument("--out", default="target/chaos")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("chaos.py mounts a tmpfs for the spool: run it as root")
    rng = random.Random(args.seed)
    media = os.path.abspath(args.media)
    work = os.path.abspath(args.out)
    subprocess.run(["rm", "-rf", work])
    os.makedirs(work)

    broker = Broker(work)
    sub = Subscriber(broker.port, os.path.join(work, "subscriber.tsv"))
    rtsp = Rtsp(media, work)
    hls = Hls(media, work)
    spool = Spoolfs(os.path.join(work, "spool"), "1m")
    streams = [
        ("r-black", f"rtsp://127.0.0.1:{rtsp.port}/black", {}),
        ("r-multi", f"rtsp://127.0.0.1:{rtsp.port}/multi", {}),
        ("r-live", f"rtsp://127.0.0.1:{rtsp.port}/live", {}),
        ("h1", f"http://127.0.0.1:{hls.port}/h1/index.m3u8", {}),
        ("h2", f"http://127.0.0.1:{hls.port}/h2/index.m3u8", {}),
        ("f-black", f"file://{media}/black_high_360p.ts", {"pace": "realtime", "loop": True}),
        ("f-multi", f"file://{media}/multi_main_360p.ts", {"pace": "realtime", "loop": True}),
        ("f-quiet", f"file://{media}/clean_quiet_360p.ts", {"pace": "realtime", "loop": True}),
    ]
    cfg = [f'probe_id = "{PROBE}"', 'stats_interval = "5s"', 'shutdown_timeout = "20s"',
           "[mqtt]", f'url = "mqtt://127.0.0.1:{broker.port}"', 'keepalive = "3s"',
           'connect_timeout = "2s"', 'backoff_max = "4s"',
           "[spool]", f'dir = "{spool.path}/outbox"', "max_bytes = 4194304"]
    for sid, url, extra in streams:
        cfg += ["[[streams]]", f'id = "{sid}"', f'url = "{url}"']
        cfg += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    cfg_path = os.path.join(work, "vqprobe.toml")
    with open(cfg_path, "w") as f:
        f.write("\n".join(cfg) + "\n")
    agent_log = os.path.join(work, "agent.log")
    agent = subprocess.Popen([os.path.abspath(args.bin), "run", "--config", cfg_path],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=open(agent_log, "wb"), env={**os.environ, "RUST_LOG": "info"})
    t0 = time.time()
    m0 = time.monotonic()
    faults = []          # (kind, stream(s), t_from, t_to) relative to t0
    samples = []         # (t, rss_kib, fds)

    def now():
        return time.time() - t0

    def wait_until(t):
        while now() < t:
            if agent.poll() is not None:
                raise SystemExit(f"agent exited during the soak ({agent.returncode}); see {agent_log}")
            time.sleep(min(1.0, max(0.0, t - now())))
            if not samples or now() - samples[-1][0] >= 10:
                samples.append((now(),) + sample(agent.pid))

    total = args.minutes * 60
    r = 0
    try:
        while True:
            base = 10 + r * args.round
            if base + args.round > total:
                break
            scale = args.round / 300
            at = lambda s: base + s * scale  # noqa: E731

            wait_until(at(20))
            log("RTSP server SIGKILL")
            rtsp.kill()
            t_kill = now()
            wait_until(at(40))
            rtsp.start()
            log(f"RTSP server back on port {rtsp.port}")
            faults.append(("rtsp_down", ["r-black", "r-multi", "r-live"], t_kill, now() + 40))

            wait_until(at(70))
            log("HLS h1 playlist frozen")
            hls.fault({"path": "h1/index.m3u8", "freeze": True})
            t_freeze = now()
            wait_until(at(100))
            hls.fault({"path": "h1/index.m3u8", "clear": True})
            faults.append(("hls_stale", ["h1"], t_freeze, now() + 30))

            wait_until(at(110))
            seg = hls.newest_segment("h2") + 2
            log(f"HLS h2 segment seg{seg}.ts corrupted")
            hls.fault({"path": f"h2/seg{seg}.ts", "corrupt": rng.randrange(1 << 30), "times": 1})
            faults.append(("hls_corrupt", ["h2"], now(), now() + 40))

            wait_until(at(140))
            log("spool disk filled, broker stopped")
            spool.fill()
            broker.stop()
            wait_until(at(170))
            broker.start()
            log("broker back")
            wait_until(at(180))
            spool.free()
            log("spool disk freed")

            wait_until(at(200))
            log("broker SIGSTOP")
            broker.signal(signal.SIGSTOP)
            wait_until(at(220))
            broker.signal(signal.SIGCONT)
            log("broker SIGCONT")

            wait_until(at(240))
            log("agent SIGHUP")
            agent.send_signal(signal.SIGHUP)
            r += 1
        wait_until(total)
        elapsed = now()
        # A pause of the whole machine (a VM snapshot) moves the wall clock but not the
        # monotonic one, which paces the files and the RTSP server: recorded, not hidden.
        clock_jump = elapsed - (time.monotonic() - m0)
        if abs(clock_jump) > 2:
            log(f"wall clock ran {clock_jump:.1f} s ahead of the monotonic clock: the machine was paused")
        log("SIGTERM to the agent")
        agent.send_signal(signal.SIGTERM)
        try:
            code = agent.wait(60)
        except subprocess.TimeoutExpired:
            agent.kill()
            code = "timeout"
        time.sleep(5)
    finally:
        for fn in (rtsp.kill, hls.stop, spool.umount):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - best-effort cleanup
                log(f"cleanup: {e}")
        if agent.poll() is None:
            agent.kill()

    # ------------------------------------------------------------------ audit
    text = open(agent_log, errors="replace").read()
    logged = []
    for line in text.splitlines():
        if line.rstrip().endswith(" event") or " event " in line:
            ids = [w[3:] for w in line.split() if w.startswith("id=")]
            if ids:
                logged.append(ids[0])
    evs = sub.events()
    sub.proc.terminate()
    got_ids = [e.get("id") for e in evs]
    uniq = set(got_ids)
    missing = sorted(set(logged) - uniq)
    unexpected = sorted(uniq - set(logged))
    dups = len(got_ids) - len(uniq)
    by_stream = {}
    for e in {e["id"]: e for e in evs if "id" in e}.values():
        by_stream.setdefault(e["stream"], []).append(e)

    checks = []

    def check(name, ok, detail):
        checks.append({"check": name, "ok": bool(ok), "detail": detail})
        log(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")

    check("delivery", not missing and not unexpected and logged,
          f"{len(logged)} logged, {len(uniq)} received, {len(missing)} missing, "
          f"{len(unexpected)} unexpected, {dups} duplicates")

    def starts(stream, kinds, t_from, t_to):
        """Start events of `kinds` on `stream` whose `at` falls in [t_from, t_to]."""
        found = []
        for e in by_stream.get(stream, []):
            if e.get("kind") in kinds and e.get("state") == "start":
                at = e.get("at_unix")
                if at is None:
                    # `at` is RFC 3339; compare in wall-clock seconds since t0.
                    at = rfc3339(e.get("at", ""))
                if at is not None and t0 + t_from - 1 <= at <= t0 + t_to:
                    found.append(e)
        return found

    want = {"rtsp_down": {"source_down", "stall"},
            "hls_stale": {"playlist_stale", "stall"},
            "hls_corrupt": {"corruption", "ts_error", "segment_error"}}
    # The playlist freeze lasts 30 s: only a report lasting at least half of it counts (ffmpeg's
    # looped h1 briefly stalls its playlist at every loop point, a few seconds, see ROBUSTNESS.md).
    ends = {e.get("defect_id"): e for e in evs if e.get("state") == "end"}

    def lasting(hits, min_s):
        return [e for e in hits
                if (ends.get(e.get("defect_id"), {}).get("duration_s") or 1e9) >= min_s]

    for kind, names, t_from, t_to in faults:
        for s in names:
            hit = starts(s, want[kind], t_from, t_to)
            if kind == "hls_stale":
                hit = lasting(hit, 15.0)
            check(f"{kind}@{t_from:.0f}s {s}", hit,
                  f"{len(hit)} start(s) of {sorted(want[kind])} in [{t_from:.0f}, {t_to:.0f}] s"
                  + (f": {hit[0]['kind']} at start_s={hit[0].get('start_s')}" if hit else ""))
    # Looped files: every full pass reports the clip's defects. The passes are counted from
    # the stream's own media time (its last stats), not the wall clock (see clock_jump).
    media_s = {}
    for topic, payload in sub.msgs:
        if topic.endswith("/stats"):
            try:
                d = json.loads(payload)
            except ValueError:
                continue
            if "stream" in d and "media_s" in d:
                media_s[d["stream"]] = d["media_s"]
    passes = {"f-black": (12.0, [("black", 3.0)]),
              "f-multi": (20.0, [("black", 2.0), ("freeze", 8.0), ("silence", 14.0)])}
    for s, (period, kinds) in passes.items():
        for kind, onset in kinds:
            full = int((media_s.get(s, elapsed) - 5 - onset) // period)
            got = [e for e in by_stream.get(s, []) if e["kind"] == kind and e["state"] == "end"]
            ok_times = [e for e in got if abs(((e["start_s"] - onset) + period / 2) % period
                                              - period / 2) <= 0.5]
            check(f"loop {s} {kind}", len(ok_times) >= full - 1 and len(got) <= full + 2,
                  f"{len(got)} ended, {len(ok_times)} at onset {onset} mod {period} ±0.5 s, "
                  f"~{full} passes")
    quiet = [e for e in by_stream.get("f-quiet", []) if e.get("kind") not in ("stall",)]
    check("clean f-quiet", not quiet, f"{len(quiet)} events on the clean looped clip")
    n = len(samples)
    if n >= 10:
        second = samples[n // 5: 2 * n // 5]
        last = samples[4 * n // 5:]
        mean = lambda xs, i: sum(x[i] for x in xs) / len(xs)  # noqa: E731
        rss2, rss5 = mean(second, 1) / 1024, mean(last, 1) / 1024
        fd2, fd5 = mean(second, 2), mean(last, 2)
        check("rss flat", rss5 <= rss2 * 1.15, f"{rss2:.1f} MiB -> {rss5:.1f} MiB "
              f"(max {max(s[1] for s in samples) / 1024:.1f})")
        check("fds flat", fd5 <= fd2 + 8, f"{fd2:.1f} -> {fd5:.1f} (max {max(s[2] for s in samples)})")
    panics = [l for l in text.splitlines() if "panic" in l.lower()]
    check("no panic", not panics, f"{len(panics)} lines" + (f": {panics[0][:200]}" if panics else ""))
    check("clean exit", code == 0, f"exit {code}")
    summary = {"minutes": args.minutes, "clock_jump_s": round(clock_jump, 1),
               "media_s": media_s, "rounds": r, "streams": len(streams),
               "events_logged": len(logged), "events_received_unique": len(uniq),
               "duplicates": dups, "missing": missing[:20], "faults": len(faults),
               "samples": samples, "checks": checks}
    with open(os.path.join(work, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    failed = [c for c in checks if not c["ok"]]
    print(f"chaos: {len(checks) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


def rfc3339(s):
    """Seconds since the epoch of an RFC 3339 UTC time like 2026-11-28T18:00:00.123Z."""
    import calendar
    try:
        main, _, frac = s.rstrip("Z").partition(".")
        t = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
        return t + (float("0." + frac) if frac else 0.0)
    except ValueError:
        return None


if __name__ == "__main__":
    main()
