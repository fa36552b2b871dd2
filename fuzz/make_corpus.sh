#!/usr/bin/env bash
# Regenerates the committed seed corpora in fuzz/corpus/ from short ffmpeg clips.
#
#   fuzz/make_corpus.sh            all seeds
#   fuzz/make_corpus.sh more       only those of mp4, hls, g711 and config
#                                  (written by make_corpus_more.py)
#
# Needs ffmpeg (libx264, libx265, aac, ac3 encoders) and python3. Not run by CI: the
# output is committed (about 360 KB). ffmpeg builds differ, so a rerun changes bytes,
# not what the files exercise. Each corpus file name says what it is.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
C=$HERE/corpus
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
FF=(ffmpeg -hide_banner -nostdin -loglevel error -y)

# ---------------------------------------------------------------- mp4, hls, g711, config
more() {
    # fMP4 HLS renditions (init.mp4 + .m4s): H.264 + AAC with B-frames (edit list,
    # composition offsets), video only, AAC only, HEVC + AC-3 (reported, not decoded).
    "${FF[@]}" -f lavfi -i testsrc2=s=160x120:r=25:d=1 -f lavfi -i sine=f=440:r=48000:d=1 \
        -c:v libx264 -preset veryfast -g 12 -crf 35 -pix_fmt yuv420p -c:a aac -b:a 32k -ac 1 \
        -f hls -hls_time 0.5 -hls_playlist_type vod -hls_segment_type fmp4 \
        -hls_fmp4_init_filename av_init.mp4 -hls_segment_filename "$W/av_seg%d.m4s" "$W/av.m3u8"
    "${FF[@]}" -f lavfi -i testsrc2=s=96x64:r=10:d=1 -c:v libx264 -preset ultrafast -bf 0 -g 5 \
        -pix_fmt yuv420p -an -f hls -hls_time 0.5 -hls_segment_type fmp4 \
        -hls_flags independent_segments -hls_fmp4_init_filename v_init.mp4 \
        -hls_segment_filename "$W/v_seg%d.m4s" "$W/v.m3u8"
    "${FF[@]}" -f lavfi -i sine=f=1000:r=44100:d=0.6 -c:a aac -b:a 32k -ac 2 \
        -f hls -hls_time 0.3 -hls_segment_type fmp4 -hls_fmp4_init_filename a_init.mp4 \
        -hls_segment_filename "$W/a_seg%d.m4s" "$W/a.m3u8"
    "${FF[@]}" -f lavfi -i testsrc2=s=96x64:r=10:d=0.4 -f lavfi -i sine=r=48000:d=0.4 \
        -c:v libx265 -preset ultrafast -x265-params log-level=error -pix_fmt yuv420p \
        -c:a ac3 -b:a 64k -f hls -hls_time 0.4 -hls_segment_type fmp4 -tag:v hvc1 \
        -hls_fmp4_init_filename h_init.mp4 -hls_segment_filename "$W/h_seg%d.m4s" "$W/h.m3u8"
    # One file, every fragment behind the moov (no default-base-is-moof: explicit offsets).
    "${FF[@]}" -f lavfi -i testsrc2=s=96x64:r=10:d=0.6 -f lavfi -i sine=r=8000:d=0.6 \
        -c:v libx264 -preset ultrafast -g 3 -pix_fmt yuv420p -c:a aac -b:a 16k -ac 1 \
        -movflags frag_keyframe+empty_moov -f mp4 "$W/frag.mp4"
    # G.711 payloads: a tone, both laws.
    "${FF[@]}" -f lavfi -i sine=f=1000:r=8000:d=0.02 -c:a pcm_mulaw -f mulaw "$W/tone.ulaw"
    "${FF[@]}" -f lavfi -i sine=f=1000:r=8000:d=0.02 -c:a pcm_alaw -f alaw "$W/tone.alaw"

    rm -rf "$C/mp4" "$C/hls" "$C/g711" "$C/config"
    mkdir -p "$C/mp4" "$C/hls" "$C/g711" "$C/config"
    W="$W" C="$C" R="$HERE/.." python3 "$HERE/make_corpus_more.py"
    du -sh "$C"/mp4 "$C"/hls "$C"/g711 "$C"/config
}
if [[ ${1:-} == more ]]; then
    more
    exit 0
fi

# 2 s 320x240 testsrc2 + 440 Hz sine, H.264 High with B-frames + AAC-LC mono.
"${FF[@]}" -f lavfi -i testsrc2=s=320x240:r=25:d=2 -f lavfi -i sine=f=440:r=48000:d=2 \
    -c:v libx264 -preset veryfast -g 25 -crf 32 -pix_fmt yuv420p -c:a aac -b:a 48k -ac 1 \
    -f mpegts "$W/clip.ts"
# 1.2 s black picture + digital silence (black, freeze-suppressed-by-black, silence).
"${FF[@]}" -f lavfi -i color=c=black:s=160x120:r=25:d=1.2 -f lavfi -i anullsrc=r=48000:cl=mono \
    -t 1.2 -c:v libx264 -preset veryfast -g 25 -pix_fmt yuv420p -c:a aac -b:a 32k \
    -f mpegts "$W/black_silent.ts"
# 1.5 s of a picture that changes twice a second (freeze), no B-frames, 1 kHz tone.
"${FF[@]}" -f lavfi -i "testsrc2=s=160x120:r=2:d=1.5,fps=25" -f lavfi -i sine=f=1000:r=48000:d=1.5 \
    -c:v libx264 -preset veryfast -g 25 -bf 0 -pix_fmt yuv420p -c:a aac -b:a 32k -ac 1 \
    -f mpegts "$W/frozen.ts"
# HEVC + AC-3: both tracks unsupported.
"${FF[@]}" -f lavfi -i testsrc2=s=160x120:r=25:d=0.4 -f lavfi -i sine=r=48000:d=0.4 \
    -c:v libx265 -preset ultrafast -x265-params log-level=error -pix_fmt yuv420p \
    -c:a ac3 -b:a 64k -f mpegts "$W/hevc_ac3.ts"
# 1920x1088: above the targets' max_pixels (1280*720), refused from its SPS.
"${FF[@]}" -f lavfi -i color=c=gray:s=1920x1088:r=25:d=0.2 -c:v libx264 -preset ultrafast \
    -crf 51 -pix_fmt yuv420p -an -f mpegts "$W/big1080.ts"

for f in clip frozen big1080 black_silent; do
    "${FF[@]}" -i "$W/$f.ts" -c:v copy -bsf:v h264_mp4toannexb -an -f h264 "$W/$f.h264"
done
"${FF[@]}" -i "$W/clip.ts" -c:a copy -vn -f adts "$W/clip.adts"
"${FF[@]}" -i "$W/black_silent.ts" -c:a copy -vn -f adts "$W/silent.adts"
"${FF[@]}" -i "$W/frozen.ts" -c:a copy -vn -f adts "$W/tone1k.adts"

rm -rf "$C/ts_demux" "$C/h264" "$C/adts"
# analyzer/: keep crash-* reproducers (hand-made or minimised findings), redo the rest.
find "$C/analyzer" -maxdepth 1 -type f ! -name 'crash-*' -delete 2>/dev/null || true
mkdir -p "$C/ts_demux" "$C/analyzer" "$C/h264" "$C/adts"

W="$W" C="$C" python3 - <<'EOF'
import os
W, C = os.environ["W"], os.environ["C"]
rd = lambda n: open(os.path.join(W, n), "rb").read()
def w(t, n, b):
    open(os.path.join(C, t, n), "wb").write(b)
# ts_demux: byte 0 = limits profile | k << 2, then k chunk-size bytes, then the TS.
w("ts_demux", "clip_320x240_h264_aac_whole", bytes([0]) + rd("clip.ts"))
w("ts_demux", "black_silent_chunks_7_2pkt_rest", bytes([0 | 3 << 2, 7, 129, 0]) + rd("black_silent.ts"))
w("ts_demux", "hevc_ac3_tinylimits_1byte", bytes([2 | 1 << 2, 1]) + rd("hevc_ac3.ts"))
w("ts_demux", "frozen_4k1k_limits_chunks_100_188", bytes([1 | 2 << 2, 100, 128]) + rd("frozen.ts"))
w("ts_demux", "big1080_64k_limits", bytes([3]) + rd("big1080.ts"))
# analyzer: byte 0 = detector timing profile | end reason << 2, then the TS.
w("analyzer", "clip_320x240_default", bytes([0]) + rd("clip.ts"))
w("analyzer", "black_silent_min0.1", bytes([1]) + rd("black_silent.ts"))
w("analyzer", "frozen_min0_clear0.2", bytes([2]) + rd("frozen.ts"))
w("analyzer", "hevc_ac3_unsupported_min0.5_shutdown", bytes([3 | 4]) + rd("hevc_ac3.ts"))
w("analyzer", "big1080_refused", bytes([1]) + rd("big1080.ts"))
# h264: Annex B byte streams.
w("h264", "clip_320x240_high_bframes", rd("clip.h264"))
w("h264", "frozen_160x120", rd("frozen.h264"))
w("h264", "big1080_refused", rd("big1080.h264"))
w("h264", "black_160x120", rd("black_silent.h264"))
# adts: ADTS frame runs.
w("adts", "sine440_mono_48k", rd("clip.adts"))
w("adts", "silence_mono", rd("silent.adts"))
w("adts", "tone1k_mono", rd("tone1k.adts"))
EOF
du -sh "$C"/*
more
