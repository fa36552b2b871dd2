#!/usr/bin/python3
"""RTSP test peer: GStreamer's RTSP server (gst-rtsp-server) through GObject introspection.

Run with Debian's /usr/bin/python3 (a pyenv python3 cannot import gi).

    rtsp_server.py --port 0 --mount /clip=file:/abs/clip.ts --mount /live=live \
                   [--mount /loop=loop:/abs/clip.ts] [--mount /v=live-noaudio] \
                   [--digest-auth /clip=user:password]

Listens on 127.0.0.1 only and prints `READY port=N` (flushed) once listening.
Mount specs:
  file:/abs/clip.ts  each client gets its own pipeline from t=0 of the MPEG-TS file
                     (H.264 or H.265 video, AAC audio), re-packetised to RTP and played at
                     real-time pace; the stream ends (EOS, then RTSP session end) with the file.
  loop:/abs/clip.ts  the same file looped forever (ffmpeg -stream_loop -1 -c copy into a pipe),
                     one ffmpeg per client.
  pcmu:/abs/clip.ts  like file:, with the AAC audio decoded and re-encoded as G.711 μ-law
                     (8 kHz mono, RTP payload type 0: PCMU); pcma:/abs/clip.ts the same
                     as A-law (payload type 8: PCMA).
  live               shared live picture (SMPTE bars turned a quarter, scrolling: not a
                     test_pattern; 640x360@25, x264 zerolatency, IDR every
                     2 s) plus a 440 Hz AAC tone; runs forever.
  live-noaudio       the same without audio.
Transports: TCP interleaved and UDP unicast (multicast disabled: nothing leaves loopback).
A missing GStreamer element shows only as a bare 503 on DESCRIBE: run with GST_DEBUG=3.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

Gst.init(None)


def log(msg):
    sys.stderr.write(f"rtsp_server: {msg}\n")
    sys.stderr.flush()


def first_element(*names):
    for n in names:
        if Gst.ElementFactory.find(n) is not None:
            return n
    return None


AAC_ENC = first_element("avenc_aac", "voaacenc", "fdkaacenc")

VIDEO_PAY = {
    "h264": "h264parse ! rtph264pay name=pay{n} pt=96 config-interval=-1",
    "hevc": "h265parse ! rtph265pay name=pay{n} pt=96 config-interval=-1",
}
AUDIO_PAY = {
    "aac": "aacparse ! rtpmp4gpay name=pay{n} pt=97",
}
# AAC from the file, transcoded to G.711 (8 kHz mono, as telephony and many cameras send).
G711_PAY = {
    "pcmu": ("aacparse ! faad ! audioconvert ! audioresample ! audio/x-raw,rate=8000,channels=1 ! "
             "mulawenc ! rtppcmupay name=pay{n} pt=0"),
    "pcma": ("aacparse ! faad ! audioconvert ! audioresample ! audio/x-raw,rate=8000,channels=1 ! "
             "alawenc ! rtppcmapay name=pay{n} pt=8"),
}


def probe_codecs(path):
    """(video codec or None, audio codec or None) of a media file, via ffprobe."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name",
         "-of", "json", path],
        check=True, capture_output=True, text=True).stdout
    video = audio = None
    for s in json.loads(out).get("streams", []):
        if s.get("codec_type") == "video" and video is None:
            video = s.get("codec_name")
        elif s.get("codec_type") == "audio" and audio is None:
            audio = s.get("codec_name")
    return video, audio


def ts_branches(path, audio_as=None):
    """Launch-string branches hanging off a tsdemux named `d` for the file's streams
    (`audio_as`: "pcmu" or "pcma" to transcode the AAC audio to G.711)."""
    video, audio = probe_codecs(path)
    parts, n = [], 0
    if video is not None:
        if video not in VIDEO_PAY:
            raise SystemExit(f"{path}: unsupported video codec {video}")
        parts.append("d. ! queue ! " + VIDEO_PAY[video].format(n=n))
        n += 1
    if audio is not None:
        if audio not in AUDIO_PAY:
            raise SystemExit(f"{path}: unsupported audio codec {audio}")
        pay = G711_PAY[audio_as] if audio_as else AUDIO_PAY[audio]
        parts.append("d. ! queue ! " + pay.format(n=n))
        n += 1
    if n == 0:
        raise SystemExit(f"{path}: no audio or video stream")
    return " ".join(parts)


def file_launch(path, audio_as=None):
    loc = GLib.strescape(path) if '"' in path else path
    return f'( filesrc location="{loc}" ! tsdemux name=d {ts_branches(path, audio_as)} )'


def live_launch(audio):
    # SMPTE bars made at 360x640, scrolling, turned a quarter: horizontal bands that
    # move, a busy picture that is no defect (upright bars would be a `test_pattern`).
    video = ("videotestsrc is-live=true pattern=smpte horizontal-speed=3 ! "
             "video/x-raw,width=360,height=640,framerate=25/1 ! "
             "videoflip video-direction=90r ! video/x-raw,width=640,height=360 ! videoconvert ! "
             "x264enc tune=zerolatency key-int-max=50 speed-preset=ultrafast threads=1 ! "
             "video/x-h264,profile=constrained-baseline ! "
             "h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1")
    if not audio:
        return f"( {video} )"
    if AAC_ENC is None:
        raise SystemExit("no AAC encoder element (avenc_aac, voaacenc, fdkaacenc)")
    aud = ("audiotestsrc is-live=true wave=sine freq=440 volume=0.1 samplesperbuffer=1024 ! "
           "audio/x-raw,rate=48000,channels=2 ! audioconvert ! audioresample ! "
           f"{AAC_ENC} bitrate=128000 ! aacparse ! rtpmp4gpay name=pay1 pt=97")
    return f"( {video} {aud} )"


class LoopFactory(GstRtspServer.RTSPMediaFactory):
    """One `ffmpeg -re -stream_loop -1 -c copy` per client, fed into a live appsrc.

    tsdemux claims a pipe is seekable, so the PLAY with `Range: npt=0-` that clients send
    makes the media seek, the seek fails and PLAY answers 503: the payloaders' sink pads
    answer SEEKING queries with "not seekable" instead.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.branches = ts_branches(path)
        self.pending = None
        self.connect("media-constructed", self.on_media)

    def do_create_element(self, url):
        proc = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
             "-stream_loop", "-1", "-i", self.path, "-map", "0", "-c", "copy",
             "-f", "mpegts", "pipe:1"],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        LOOP_PROCS.append(proc)
        bin_ = Gst.parse_launch(
            "( appsrc name=src is-live=true format=bytes "
            "caps=video/mpegts,systemstream=true,packetsize=188 "
            f"! tsdemux name=d {self.branches} )")
        self.pending = (proc, bin_.get_by_name("src"))
        n = 0
        while (pay := bin_.get_by_name(f"pay{n}")) is not None:
            pay.get_static_pad("sink").add_probe(Gst.PadProbeType.QUERY_UPSTREAM, deny_seeking)
            n += 1
        return bin_

    def on_media(self, _factory, media):
        pending, self.pending = self.pending, None
        if pending is None:
            return
        proc, src = pending
        threading.Thread(target=feed, args=(proc, src), daemon=True).start()
        media.connect("unprepared", lambda _m: stop_proc(proc))


def deny_seeking(_pad, info):
    """Answers SEEKING queries with "not seekable" (tsdemux claims it can seek a pipe).

    A fresh SEEKING query already says not seekable; the probe only stops it going on
    (the query is not writable from Python, so it is left as it is).
    """
    query = info.get_query()
    if query is not None and query.type == Gst.QueryType.SEEKING:
        return Gst.PadProbeReturn.HANDLED
    return Gst.PadProbeReturn.OK


def feed(proc, src):
    """Copies ffmpeg's TS output into the appsrc until either side goes away."""
    while True:
        data = proc.stdout.read1(188 * 64)
        if not data:
            src.emit("end-of-stream")
            break
        if src.emit("push-buffer", Gst.Buffer.new_wrapped(data)) != Gst.FlowReturn.OK:
            break
    stop_proc(proc)


LOOP_PROCS = []
LOOP_LOCK = threading.Lock()


def stop_proc(proc):
    with LOOP_LOCK:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc in LOOP_PROCS:
            LOOP_PROCS.remove(proc)


class MountAuth(GstRtspServer.RTSPAuth):
    """Digest auth for the factories marked `vq_protected`; the other mounts stay open.

    There is no default token, so an unauthenticated request for a protected mount gets
    401 with a Digest challenge (a default token would make it a bare 404).
    """

    def do_check(self, ctx, check):
        if check.startswith("auth.check.media.factory.") and not getattr(
                ctx.factory, "vq_protected", False):
            return True
        return GstRtspServer.RTSPAuth.do_check(self, ctx, check)


def make_factory(spec):
    if spec.startswith(("file:", "pcmu:", "pcma:")):
        kind, _, path = spec.partition(":")
        if not os.path.isfile(path):
            raise SystemExit(f"no such file: {path}")
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(file_launch(path, None if kind == "file" else kind))
        f.set_shared(False)
        f.set_eos_shutdown(False)
    elif spec.startswith("loop:"):
        path = spec[len("loop:"):]
        if not os.path.isfile(path):
            raise SystemExit(f"no such file: {path}")
        f = LoopFactory(path)
        f.set_shared(False)
    elif spec in ("live", "live-noaudio"):
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(live_launch(spec == "live"))
        f.set_shared(True)
    else:
        raise SystemExit(f"bad mount spec {spec!r}")
    f.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
    return f


def exit_with_parent():
    """Exits when the parent (the test harness) dies, so no server outlives a killed test."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                for p in list(LOOP_PROCS):
                    p.kill()
                os._exit(0)
    threading.Thread(target=watch, daemon=True).start()


def main():
    exit_with_parent()
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mount", action="append", default=[], metavar="PATH=SPEC")
    ap.add_argument("--digest-auth", action="append", default=[], metavar="PATH=USER:PASSWORD")
    args = ap.parse_args()
    if not args.mount:
        ap.error("at least one --mount")

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    # UDP unicast RTP/RTCP ports: take them on loopback too.
    pool = GstRtspServer.RTSPAddressPool()
    base = 20000 + 2 * random.randrange(10000)  # spread parallel servers apart
    pool.add_range("127.0.0.1", "127.0.0.1", base, 60000, 0)

    auth_mounts = {}
    for a in args.digest_auth:
        path, _, cred = a.partition("=")
        user, sep, password = cred.partition(":")
        if not path.startswith("/") or not sep or not user:
            ap.error(f"bad --digest-auth {a!r}")
        auth_mounts[path] = (user, password)

    auth = None
    if auth_mounts:
        auth = MountAuth()
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        for path, (user, password) in auth_mounts.items():
            tok = GstRtspServer.RTSPToken()
            tok.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user:" + user)
            auth.add_digest(user, password, tok)
        server.set_auth(auth)

    mounts = server.get_mount_points()
    seen = set()
    for m in args.mount:
        path, sep, spec = m.partition("=")
        if not sep or not path.startswith("/"):
            ap.error(f"bad --mount {m!r}")
        f = make_factory(spec)
        f.set_address_pool(pool)
        if path in auth_mounts:
            role = "user:" + auth_mounts[path][0]
            perms = GstRtspServer.RTSPPermissions()
            perms.add_permission_for_role(role, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
            perms.add_permission_for_role(role, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
            f.set_permissions(perms)
            f.vq_protected = True
        mounts.add_factory(path, f)
        seen.add(path)
        log(f"mount {path} = {spec}")
    for path in auth_mounts:
        if path not in seen:
            ap.error(f"--digest-auth for unknown mount {path}")

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        log(f"cannot listen on 127.0.0.1:{args.port}")
        sys.exit(2)
    port = server.get_bound_port()

    # Sessions of clients that vanish without TEARDOWN time out; clean them regularly.
    pool_ = server.get_session_pool()
    GLib.timeout_add_seconds(2, lambda: (pool_.cleanup(), True)[1])

    def on_client(_srv, client):
        log("client connected")
    server.connect("client-connected", on_client)

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda *a: (loop.quit(), False)[1])

    sys.stdout.write(f"READY port={port}\n")
    sys.stdout.flush()
    log(f"listening on rtsp://127.0.0.1:{port} (aac encoder: {AAC_ENC})")
    loop.run()
    for p in list(LOOP_PROCS):
        stop_proc(p)


if __name__ == "__main__":
    main()
