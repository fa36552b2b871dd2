#!/usr/bin/python3
"""HLS test origin: a threaded HTTP(S) server for one directory, with run-time fault injection.

    hls_server.py --dir DIR [--port 0] [--tls-cert CERT --tls-key KEY]

Listens on 127.0.0.1 only and prints `READY port=N control_port=M` (flushed) once
listening. `control_port` is a plain-HTTP listener that only answers the control paths; it
equals `port` without TLS (the control paths work on the main port too, over HTTPS with TLS).

Control (JSON bodies; answers 200 with the current rules as JSON, 400 on a bad request):
  POST /__fault {"path": "seg3.ts", "status": 404}      that status for that path
  POST /__fault {"path": "...", "delay_s": 5}           headers at once, body trickled over 5 s
                {"path": "...", "head_delay_s": 5}      wait 5 s before the headers
  POST /__fault {"path": "index.m3u8", "freeze": true}  serve the file as it is now from then on
  POST /__fault {"path": "...", "truncate": 1000}       full Content-Length, 1000 bytes, close
  POST /__fault {"path": "seg7.ts", "corrupt": 7}       MPEG-TS served with bit flips (seed 7) in the
                                                        payload of the video packets (the PID with the
                                                        most packets) that start no PES: TS headers,
                                                        counters, PES headers and length stay intact
  POST /__fault {"path": "seg2.ts", "pad_to": 20000000}  the file padded to that many bytes (MPEG-TS
                                                        null packets for .ts, zero bytes otherwise):
                                                        a huge segment, generated as it is sent
  POST /__fault {"path": "a.m3u8", "redirect_to": "/vod_ts/index.m3u8"}  302 to that location
  POST /__fault {"redirect_loop": true}                 every path redirects to itself
                {"path": "...", "redirect_loop": true}  only that path
  POST /__fault {"path": "...", "times": 2, ...}        the fault applies to 2 requests only
  POST /__fault {"path": "...", "clear": true}          drop that path's rule
  POST /__fault {"clear": true}                         drop all rules
  GET  /__fault                                         the current rules
  GET  /__requests                                      the request log (JSON list)
Range headers are ignored: every file is answered 200 with the whole body (a server that
ignores byte ranges; clients must cope).
A rule's path matches a request path equal to it or ending in "/" + it (query ignored), so
"seg3.ts" hits "/live/seg3.ts"; the longest matching rule wins. A new rule for a path
replaces the old one. Every request is logged to stderr: method, path, status, bytes, seconds.
"""

import argparse
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTROL = "/__fault"
REQUESTS = "/__requests"
MIME = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".aac": "audio/aac",
    ".vtt": "text/vtt",
}
KNOWN = {"path", "status", "delay_s", "head_delay_s", "freeze", "truncate", "redirect_loop",
         "times", "clear", "corrupt", "pad_to", "redirect_to"}


def corrupt_ts(data, seed):
    """Flips bits in the payload of the busiest PID's packets that start no PES (a slice's
    middle, for video), keeping sync bytes, headers, continuity counters and lengths."""
    import random
    rng = random.Random(int(seed))
    counts = {}
    for off in range(0, len(data) - 187, 188):
        if data[off] == 0x47:
            pid = ((data[off + 1] & 0x1F) << 8) | data[off + 2]
            counts[pid] = counts.get(pid, 0) + 1
    if not counts:
        return data
    video = max(counts, key=counts.get)
    out = bytearray(data)
    for off in range(0, len(out) - 187, 188):
        if out[off] != 0x47 or out[off + 1] & 0x40:  # no sync, or payload_unit_start
            continue
        pid = ((out[off + 1] & 0x1F) << 8) | out[off + 2]
        afc = (out[off + 3] >> 4) & 3
        if pid != video or not afc & 1:
            continue
        start = off + 4 + (1 + out[off + 4] if afc == 3 else 0)
        if start >= off + 188:
            continue
        for _ in range(4):
            i = rng.randrange(start, off + 188)
            out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


class State:
    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.lock = threading.Lock()
        self.rules = {}      # rule path ("" = every path) -> rule dict
        self.frozen = {}     # (rule path, request rel path) -> bytes
        self.log = []

    def resolve(self, rel):
        full = os.path.realpath(os.path.join(self.root, rel))
        if full != self.root and not full.startswith(self.root + os.sep):
            return None
        return full

    def control(self, body):
        if not isinstance(body, dict) or set(body) - KNOWN:
            raise ValueError(f"unknown keys {sorted(set(body) - KNOWN)}; known {sorted(KNOWN)}")
        with self.lock:
            key = str(body.get("path", "")).lstrip("/")
            if body.get("clear"):
                if "path" in body:
                    self.rules.pop(key, None)
                    self.frozen = {k: v for k, v in self.frozen.items() if k[0] != key}
                else:
                    self.rules.clear()
                    self.frozen.clear()
                return
            if key == "" and not body.get("redirect_loop"):
                raise ValueError("a rule needs a path (only redirect_loop may go without)")
            rule = {k: v for k, v in body.items() if k != "path"}
            self.rules[key] = rule
            self.frozen = {k: v for k, v in self.frozen.items() if k[0] != key}
            if rule.get("freeze"):
                # Snapshot now every file the rule matches ("index.m3u8" may be in subdirs).
                for rel in self.files_matching(key):
                    try:
                        with open(os.path.join(self.root, rel), "rb") as f:
                            self.frozen[(key, rel)] = f.read()
                    except OSError:
                        pass

    def files_matching(self, key):
        """Paths (relative to the root, "/"-separated) of files that rule `key` matches."""
        found = []
        for d, _dirs, files in os.walk(self.root):
            for name in files:
                rel = os.path.relpath(os.path.join(d, name), self.root).replace(os.sep, "/")
                if rel == key or rel.endswith("/" + key):
                    found.append(rel)
        return found

    def match(self, rel):
        """(rule path, rule) of the longest rule matching `rel`, counting down `times`."""
        with self.lock:
            best = None
            for key in self.rules:
                if key == "" or rel == key or rel.endswith("/" + key):
                    if best is None or len(key) > len(best):
                        best = key
            if best is None:
                return None, None
            rule = dict(self.rules[best])
            if "times" in rule:
                left = self.rules[best]["times"] - 1
                if left <= 0:
                    del self.rules[best]
                else:
                    self.rules[best]["times"] = left
            return best, rule

    def frozen_body(self, key, rel, full):
        with self.lock:
            if (key, rel) in self.frozen:
                return self.frozen[(key, rel)]
            if full and os.path.isfile(full):
                with open(full, "rb") as f:
                    data = f.read()
                self.frozen[(key, rel)] = data
                return data
            return None

    def snapshot(self):
        with self.lock:
            return {("/" + k if k else "*"): v for k, v in self.rules.items()}


def make_handler(state, control_only):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "vqprobe-hls-peer/1"

        def log_message(self, fmt, *args):  # replaced by log_request_done
            pass

        def setup(self):
            super().setup()
            self.t0 = time.monotonic()

        def finish_log(self, status, nbytes, note=""):
            dur = time.monotonic() - self.t0
            path = urllib.parse.urlsplit(self.path).path
            line = f"hls_server: {self.command} {path} {status} {nbytes}B {dur:.3f}s{note}"
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
            with state.lock:
                state.log.append({"method": self.command, "path": path, "status": status,
                                  "bytes": nbytes, "duration_s": round(dur, 4),
                                  "t": time.time(), "fault": note.strip()})
                del state.log[:-10000]

        def simple(self, status, body, ctype="text/plain", extra=None, note=""):
            data = body if isinstance(body, bytes) else body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-cache")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.finish_log(status, len(data) if self.command != "HEAD" else 0, note)

        def do_POST(self):
            self.t0 = time.monotonic()
            path = urllib.parse.urlsplit(self.path).path
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            if path != CONTROL:
                return self.simple(405, "POST only on " + CONTROL + "\n")
            try:
                state.control(json.loads(raw or b"{}"))
            except (ValueError, TypeError) as e:
                return self.simple(400, f"bad fault request: {e}\n")
            sys.stderr.write(f"hls_server: fault {raw.decode(errors='replace')}\n")
            self.simple(200, json.dumps(state.snapshot()) + "\n", "application/json")

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            self.t0 = time.monotonic()
            split = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(split.path)
            if path == CONTROL:
                return self.simple(200, json.dumps(state.snapshot()) + "\n", "application/json")
            if path == REQUESTS:
                with state.lock:
                    body = json.dumps(state.log)
                return self.simple(200, body + "\n", "application/json")
            if control_only:
                return self.simple(404, "control port: only " + CONTROL + " and " + REQUESTS + "\n")
            rel = path.lstrip("/")
            full = state.resolve(rel)
            key, rule = state.match(rel)
            rule = rule or {}
            note = f" fault={json.dumps(rule, separators=(',', ':'))}" if rule else ""

            if rule.get("head_delay_s"):
                time.sleep(float(rule["head_delay_s"]))
            if rule.get("redirect_to"):
                return self.simple(302, "redirect\n", extra={"Location": rule["redirect_to"]},
                                   note=note)
            if rule.get("redirect_loop"):
                return self.simple(302, "redirect loop\n", extra={"Location": self.path}, note=note)
            if "status" in rule:
                st = int(rule["status"])
                return self.simple(st, f"injected status {st}\n", note=note)

            data = state.frozen_body(key, rel, full) if rule.get("freeze") else None
            if data is None:
                if full is None or not os.path.isfile(full):
                    return self.simple(404, "not found\n", note=note)
                try:
                    with open(full, "rb") as f:
                        data = f.read()
                except OSError:  # e.g. a live segment deleted under us
                    return self.simple(404, "not found\n", note=note)

            if "corrupt" in rule:
                data = corrupt_ts(data, rule["corrupt"])
            ext = os.path.splitext(rel)[1].lower()
            pad = max(0, int(rule.get("pad_to", 0)) - len(data))
            self.send_response(200)
            self.send_header("Content-Type", MIME.get(ext, "application/octet-stream"))
            self.send_header("Content-Length", str(len(data) + pad))
            if ext == ".m3u8":
                self.send_header("Cache-Control", "no-cache")
            if "truncate" in rule:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return self.finish_log(200, 0, note)

            sent = 0
            try:
                if "truncate" in rule:
                    cut = max(0, min(int(rule["truncate"]), len(data)))
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    sent = cut
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                elif rule.get("delay_s"):
                    delay = float(rule["delay_s"])
                    pieces = 20
                    step = max(1, -(-len(data) // pieces))
                    for i in range(0, max(len(data), 1), step):
                        time.sleep(delay / pieces)
                        chunk = data[i:i + step]
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        sent += len(chunk)
                else:
                    self.wfile.write(data)
                    sent = len(data)
                    if pad:
                        unit = (b"\x47\x1f\xff\x10" + b"\xff" * 184) if ext == ".ts" else b"\0" * 188
                        block = unit * 1024
                        while pad > 0:
                            piece = block[:pad]
                            self.wfile.write(piece)
                            sent += len(piece)
                            pad -= len(piece)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError) as e:
                self.close_connection = True
                note += f" client-gone={type(e).__name__}"
            self.finish_log(200, sent, note)

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        sys.stderr.write(f"hls_server: connection error: {type(exc).__name__}: {exc}\n")


def exit_with_parent():
    """Exits when the parent (the test harness) dies, so no server outlives a killed test."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)
    threading.Thread(target=watch, daemon=True).start()


def main():
    exit_with_parent()
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    if not os.path.isdir(args.dir):
        ap.error(f"no such directory {args.dir}")

    state = State(args.dir)
    httpd = Server(("127.0.0.1", args.port), make_handler(state, False))
    servers = [httpd]
    control_port = httpd.server_address[1]
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        # Handshake in the connection's own thread, not in accept().
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True,
                                       do_handshake_on_connect=False)
        ctl = Server(("127.0.0.1", 0), make_handler(state, True))
        servers.append(ctl)
        control_port = ctl.server_address[1]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    scheme = "https" if args.tls_cert else "http"
    sys.stdout.write(f"READY port={httpd.server_address[1]} control_port={control_port}\n")
    sys.stdout.flush()
    sys.stderr.write(f"hls_server: serving {state.root} on {scheme}://127.0.0.1:"
                     f"{httpd.server_address[1]} (control http://127.0.0.1:{control_port}{CONTROL})\n")
    sys.stderr.flush()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
