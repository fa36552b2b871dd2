"""Seeds of the mp4, hls, g711 and config fuzz targets (called by make_corpus.sh)."""
import os
import re
import struct

W, C, R = os.environ["W"], os.environ["C"], os.environ["R"]


def rd(n):
    return open(os.path.join(W, n), "rb").read()


def w(t, n, b):
    open(os.path.join(C, t, n), "wb").write(b)


def u16(b):
    return struct.pack("<H", len(b)) + b


# mp4: profile byte, u16 init length + init, then u16 length + segment (up to 4).
def mp4(name, prof, init, *segs):
    w("mp4", name, bytes([prof]) + u16(init) + b"".join(u16(s) for s in segs))


mp4("h264_aac_bframes_2seg", 0, rd("av_init.mp4"), rd("av_seg0.m4s"), rd("av_seg1.m4s"))
mp4("h264_only_smalllimits", 1, rd("v_init.mp4"), rd("v_seg0.m4s"), rd("v_seg1.m4s"))
mp4("aac_stereo_44k_1sample", 2, rd("a_init.mp4"), rd("a_seg0.m4s"))
mp4("hevc_ac3_other", 3, rd("h_init.mp4"), rd("h_seg0.m4s"))
# frag.mp4: ftyp + moov is the init, the moof/mdat pairs behind it the segments.
f = rd("frag.mp4")
i, boxes = 0, []
while i + 8 <= len(f):
    n = struct.unpack(">I", f[i:i + 4])[0]
    if n < 8:
        break
    boxes.append((f[i + 4:i + 8], f[i:i + n]))
    i += n
init = b"".join(b for k, b in boxes if k in (b"ftyp", b"moov"))
frags, cur = [], b""
for k, b in boxes:
    if k == b"moof" and cur:
        frags.append(cur)
        cur = b""
    if k in (b"moof", b"mdat"):
        cur += b
if cur:
    frags.append(cur)
mp4("onefile_explicit_offsets", 0, init, *[x for x in frags if len(x) < 65536][:4])


# hls: 16-byte header (choice, u64 parameter, 4 live moves, end drop, body length).
def hls(name, choice, param, moves, drop, body, text):
    h = (bytes([choice]) + struct.pack("<Q", param) + bytes(m & 0xFF for m in moves)
         + bytes([drop]) + struct.pack("<H", body))
    w("hls", name, h + text.encode())


for n in ("av", "v", "a", "h"):
    hls(f"fmp4_{n}", 0, 0, [1, 1, 2, -1], 1, 4096, rd(f"{n}.m3u8").decode())
MASTER = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-STREAM-INF:BANDWIDTH=2500000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2"
hi/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360
lo/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=800000
lo2/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI="iframes.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=5000000
file:///etc/passwd
"""
hls("master_highest", 0, 0, [0, 0, 0, 0], 0, 0, MASTER)
hls("master_max_1M", 1, 1_000_000, [0, 0, 0, 0], 0, 0, MASTER)
hls("master_max_too_low", 1, 1000, [0, 0, 0, 0], 0, 0, MASTER)
hls("master_index_2", 2, 2, [0, 0, 0, 0], 0, 0, MASTER)
hls("live_byteranges_map_seq_near_max", 0, 0, [1, 2, -3, 100], 2, 65535, """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:18446744073709551610
#EXT-X-MAP:URI="init.mp4",BYTERANGE="720@0"
#EXTINF:2.0,
#EXT-X-BYTERANGE:75232@720
media.m4s
#EXTINF:2.0,
#EXT-X-BYTERANGE:82112
media.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI="init2.mp4"
#EXTINF:2.0,
#EXT-X-BYTERANGE:69864@0
other.m4s
#EXTINF:2.0,
#EXT-X-BYTERANGE:1000
other.m4s
#EXT-X-KEY:METHOD=NONE
#EXTINF:2.0,
seg5.m4s
""")
hls("live_ts_window_moves", 0, 0, [2, 5, -9, 0], 1, 1000, """#EXTM3U
#EXT-X-TARGETDURATION:4
#EXT-X-MEDIA-SEQUENCE:7
#EXTINF:4.0,
a7.ts
#EXTINF:4.0,
a8.ts
#EXTINF:4.0,
a9.ts
#EXTINF:4.0,
a10.ts
#EXTINF:4.0,
a11.ts
""")


# g711: byte 0 (bit 0 A-law, bits 1-3 channels), u32 rate, i64 PTS, payload.
def g(alaw, ch, rate, pts, p):
    return bytes([alaw | ch << 1]) + struct.pack("<Iq", rate, pts) + p


w("g711", "ulaw_tone_8k_mono", g(0, 1, 8000, 900000, rd("tone.ulaw")))
w("g711", "alaw_tone_8k_stereo", g(1, 2, 8000, 0, rd("tone.alaw")))
w("g711", "alaw_silence_16k_negative_pts", g(1, 1, 16000, -90000, b"\xd5" * 160))
w("g711", "rate0_refused", g(0, 1, 0, 0, b"\x00\x80" * 8))

# config: the packaged example, the docs' TOML examples, hand-made ones.
w("config", "packaging_config.toml", open(os.path.join(R, "packaging", "config.toml"), "rb").read())
doc = open(os.path.join(R, "docs", "config.md")).read()
for k, m in enumerate(re.findall(r"```toml\n(.*?)```", doc, re.S)):
    w("config", f"docs_config_md_{k}.toml", m.encode())
w("config", "minimal.toml", b'probe_id = "p1"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n')
w("config", "full_live_hls_streams.toml", b"""probe_id = "edge-01"
stats_interval = "10s"
shutdown_timeout = "5s"
[mqtt]
url = "mqtts://user:pw@broker.example:8883"
keepalive = "30s"
connect_timeout = "10s"
backoff_max = "1m"
topic_prefix = "site/a"
[spool]
max_bytes = 1048576
[limits]
max_streams = 4
queue_packets = 64
[live]
stall_after = 2.0
backoff_initial = 0.5
backoff_max = 30.0
connect_timeout = 10.0
read_timeout = 10.0
clear_after = 2.0
[hls]
variant = { max_bandwidth = 3000000 }
stale_factor = 1.5
[detect.black]
min_duration = 2.0
[[streams]]
id = "cam-1"
url = "rtsp://admin:secret@10.0.0.5/stream1?token=x"
rtsp_transport = "udp"
[[streams]]
id = "hls.1"
url = "https://origin.example/live/master.m3u8"
max_bandwidth = 1000000
[streams.detect.silence]
threshold_dbfs = -60.0
[[streams]]
id = "file_1"
url = "file:///var/lib/vqprobe/clip.ts"
pace = "fast"
loop = true
""")
