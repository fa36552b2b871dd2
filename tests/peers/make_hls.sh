#!/usr/bin/env bash
# make_hls.sh OUTDIR SRC.ts: VOD HLS renditions of a ground-truth MPEG-TS clip (H.264 + AAC).
#
#   OUTDIR/vod_ts/index.m3u8     MPEG-TS segments seg0.ts, seg1.ts, ... (-c copy, 2 s each:
#                                the clips have an IDR every 2.0 s)
#   OUTDIR/vod_fmp4/index.m3u8   fMP4: init.mp4 + seg0.m4s, seg1.m4s, ... (-c copy)
#   OUTDIR/master.m3u8           two variants: hi/index.m3u8 (the copy) and lo/index.m3u8
#                                (scaled to half size, re-encoded, IDR every 2 s, same audio)
#
# Idempotent: exits at once when OUTDIR/.done holds the same source, size, mtime and script
# hash. Parallel callers serialise on OUTDIR/.lock. Any failed step exits non-zero.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 OUTDIR SRC.ts" >&2
    exit 2
fi
out=$1
src=$(realpath "$2")
[ -f "$src" ] || { echo "make_hls.sh: no such file $src" >&2; exit 2; }
mkdir -p "$out"
out=$(realpath "$out")

exec 9>"$out/.lock"
flock 9

stamp="$src $(stat -c '%s %Y' "$src") $(sha256sum "$0" | cut -c1-16)"
if [ -f "$out/.done" ] && [ "$(cat "$out/.done")" = "$stamp" ]; then
    exit 0
fi
rm -rf "$out/vod_ts" "$out/vod_fmp4" "$out/hi" "$out/lo" "$out/master.m3u8" "$out/.done"
mkdir -p "$out/vod_ts" "$out/vod_fmp4" "$out/hi" "$out/lo"

ff=(ffmpeg -hide_banner -loglevel error -nostdin -y)

# VOD, MPEG-TS segments.
"${ff[@]}" -i "$src" -map 0 -c copy -f hls -hls_time 2 -hls_playlist_type vod \
    -hls_segment_filename "$out/vod_ts/seg%d.ts" "$out/vod_ts/index.m3u8"

# VOD, fMP4 segments (ADTS AAC needs the bitstream filter for MP4).
"${ff[@]}" -i "$src" -map 0 -c copy -bsf:a aac_adtstoasc -f hls -hls_time 2 \
    -hls_playlist_type vod -hls_segment_type fmp4 -hls_fmp4_init_filename init.mp4 \
    -hls_segment_filename "$out/vod_fmp4/seg%d.m4s" "$out/vod_fmp4/index.m3u8"

# Two variants for a master playlist: the copy, and a half-size re-encode.
"${ff[@]}" -i "$src" -map 0 -c copy -f hls -hls_time 2 -hls_playlist_type vod \
    -hls_segment_filename "$out/hi/seg%d.ts" "$out/hi/index.m3u8"
"${ff[@]}" -i "$src" -map 0 -c:v libx264 -preset veryfast -threads 1 \
    -vf "scale=trunc(iw/4)*2:trunc(ih/4)*2" -b:v 300k -maxrate 300k -bufsize 600k \
    -g 50 -keyint_min 50 -sc_threshold 0 -c:a copy -f hls -hls_time 2 -hls_playlist_type vod \
    -hls_segment_filename "$out/lo/seg%d.ts" "$out/lo/index.m3u8"

# BANDWIDTH = peak segment bit rate, from the segment sizes and EXTINF durations.
peak_bps() {
    local dir=$1
    awk -v dir="$dir" '
        /^#EXTINF:/ { sub(/^#EXTINF:/, ""); sub(/,.*/, ""); d = $0; next }
        /^[^#]/ && d > 0 {
            cmd = "stat -c %s \"" dir "/" $0 "\""; cmd | getline sz; close(cmd)
            r = sz * 8 / d; if (r > peak) peak = r; d = 0
        }
        END { printf "%d\n", peak + 0.5 }' "$dir/index.m3u8"
}
res() {
    ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=s=x:p=0 \
        "$1/seg0.ts" | grep -m1 x
}
codecs() {
    # avc1.PPCCLL from the SPS fields ffprobe reports; mp4a.40.2 = AAC-LC.
    ffprobe -v error -select_streams v:0 -show_entries stream=profile,level -of json "$1/seg0.ts" |
        /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)["streams"][0]
prof = {"Baseline": (66, 0), "Constrained Baseline": (66, 0x40), "Main": (77, 0),
        "High": (100, 0)}.get(s.get("profile"), (100, 0))
print("avc1.%02x%02x%02x,mp4a.40.2" % (prof[0], prof[1], s.get("level", 30)))'
}
{
    echo "#EXTM3U"
    echo "#EXT-X-VERSION:3"
    for v in hi lo; do
        echo "#EXT-X-STREAM-INF:BANDWIDTH=$(peak_bps "$out/$v"),RESOLUTION=$(res "$out/$v"),CODECS=\"$(codecs "$out/$v")\""
        echo "$v/index.m3u8"
    done
} > "$out/master.m3u8"

for f in vod_ts/index.m3u8 vod_fmp4/index.m3u8 vod_fmp4/init.mp4 hi/index.m3u8 lo/index.m3u8; do
    [ -s "$out/$f" ] || { echo "make_hls.sh: $out/$f missing" >&2; exit 1; }
done
grep -q '^#EXT-X-ENDLIST' "$out/vod_ts/index.m3u8"
echo "$stamp" > "$out/.done"
