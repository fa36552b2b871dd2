#!/usr/bin/env bash
# live_hls.sh OUTDIR [MAX_SECONDS]: a live HLS origin that runs until killed, or for at most
# MAX_SECONDS (default 900: it stops by itself if a test run dies without killing it).
#
# ffmpeg paces lavfi testsrc2 (640x360@25) + a 440 Hz tone at real time (-re) into a sliding
# window: OUTDIR/index.m3u8 lists the last 5 segments of 1 s (IDR every 25 frames), older
# segments are deleted. The playlist is rewritten through a temp file and renamed, so a reader
# never sees half a playlist.
#   SIGINT / SIGTERM: ffmpeg ends cleanly and appends #EXT-X-ENDLIST (a live stream that ends)
#   SIGSTOP / SIGKILL: a dead origin (the playlist stops changing, no ENDLIST)
# `exec` makes ffmpeg itself the process the harness signals.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 OUTDIR [MAX_SECONDS]" >&2
    exit 2
fi
out=$1
max=${2:-900}
mkdir -p "$out"
rm -f "$out"/index.m3u8 "$out"/seg*.ts

exec ffmpeg -hide_banner -loglevel warning -nostdin -nostats \
    -re -f lavfi -i "testsrc2=size=640x360:rate=25" \
    -re -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -map 0:v -map 1:a \
    -c:v libx264 -preset ultrafast -tune zerolatency -threads 1 -pix_fmt yuv420p \
    -g 25 -keyint_min 25 -sc_threshold 0 -b:v 800k \
    -c:a aac -b:a 64k -ac 2 -t "$max" \
    -f hls -hls_time 1 -hls_list_size 5 -hls_flags delete_segments+temp_file \
    -hls_segment_filename "$out/seg%d.ts" "$out/index.m3u8"
