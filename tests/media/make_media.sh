#!/usr/bin/env bash
# Generate the vqprobe ground-truth MPEG-TS corpus into OUTDIR (see README.md).
#
#   tests/media/make_media.sh OUTDIR
#
# Idempotent: exits at once if OUTDIR/truth.json exists and OUTDIR/.version holds
# the sha256 of this script and its two Python helpers. Every clip is checked
# after generation (ffprobe structure, ffmpeg blackdetect/freezedetect/
# silencedetect, luma statistics, clean-vs-corrupt decode diff); any failed
# check aborts with a non-zero exit status. A summary goes to OUTDIR/verify.log.
#
# Media time = seconds since the first PTS in the file. All filter graphs start
# at t=0, the AAC priming packet (1024 samples, PTS -21.3 ms) is dropped with the
# `noise` bitstream filter so that audio and video start at the same PTS; hence
# filter time t == media time t for both audio and video.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:?usage: make_media.sh OUTDIR}
PY=/usr/bin/python3
TOOLS=("$PY" "$HERE/media_tools.py")
VERSION=$(cat "$HERE/make_media.sh" "$HERE/corrupt_ts.py" "$HERE/media_tools.py" "$HERE/shift_pts.py" | sha256sum | cut -d' ' -f1)

up_to_date() {
    [[ -f $OUT/truth.json && -f $OUT/.version && "$(cat "$OUT/.version")" == "$VERSION" ]]
}
up_to_date && exit 0

for tool in ffmpeg ffprobe "$PY" flock; do
    command -v "$tool" >/dev/null || { echo "make_media: $tool not found" >&2; exit 1; }
done
ENCODERS=$(ffmpeg -hide_banner -encoders 2>/dev/null)
for enc in libx264 libx265 aac; do
    grep -qw "$enc" <<<"$ENCODERS" || { echo "make_media: ffmpeg lacks the $enc encoder" >&2; exit 1; }
done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock 9                       # parallel test runners: one generates, the others wait
up_to_date && exit 0
rm -f "$OUT/truth.json" "$OUT/.version"
WORK=$OUT/.work
rm -rf "$WORK" && mkdir -p "$WORK"
# keep the intermediates (detector logs, framemd5, clean corrupt source) when a step fails
trap 'if [[ $? -eq 0 ]]; then rm -rf "$WORK"; else echo "make_media: FAILED, see $WORK" >&2; fi' EXIT
: >"$OUT/verify.log"

# ---------------------------------------------------------------- common settings
FF=(ffmpeg -hide_banner -nostdin -loglevel error -y)
FPS=25
X264=(-c:v libx264 -preset veryfast -g 50 -keyint_min 50 -sc_threshold 0 -pix_fmt yuv420p)
X265=(-c:v libx265 -preset ultrafast -pix_fmt yuv420p
      -x265-params log-level=error:keyint=50:min-keyint=50:scenecut=0)
# drop the AAC encoder-delay packet so audio and video share the first PTS
AAC=(-c:a aac -b:a 128k -ar 48000 -ac 2 -bsf:a 'noise=drop=eq(n\,0)')
TS=(-f mpegts)
TONE_GAIN=1.07dB              # sine default amplitude 1/8 (-21.07 dBFS RMS) -> -20 dBFS RMS
QUIET_GAIN=-23.93dB           # -> -45 dBFS RMS
PINK_AMPLITUDE=0.029          # anoisesrc pink noise at about -45 dBFS RMS
STEREO='pan=stereo|c0=c0|c1=c0'

log() { echo "$*" | tee -a "$OUT/verify.log"; }
check() { "$@" | tee -a "$OUT/verify.log"; }

# testsrc2: colour bars with a moving gradient line, moving squares and a timer
vsrc() { echo "testsrc2=s=$1x$2:r=$FPS:d=$3,format=yuv420p"; }

# 440 Hz tone, identical on both channels (pan, not -ac 2: that would attenuate by
# 3 dB), in 1024-sample frames (the AAC frame size: smaller frames from the graph
# make ffmpeg 5.1 zero-pad the first AAC frame, delaying all audio by ~11 ms).
# Optional digital silence over [$3, $4) with a per-sample mask.
tone() {
    local dur=$1 gain=${2:-$TONE_GAIN}
    local g="sine=frequency=440:sample_rate=48000:samples_per_frame=1024:duration=$dur,volume=$gain"
    if [[ $# -ge 4 ]]; then
        g+=",aeval=exprs='val(0)*(1-gte(t,$3-1e-5)*lt(t,$4-1e-5))'"
    fi
    echo "$g,$STEREO"
}

# encode OUTFILE VIDEO_GRAPH AUDIO_GRAPH [extra output options...]
encode() {
    local out=$1 vg=$2 ag=$3
    shift 3
    "${FF[@]}" -filter_complex "$vg[v];$ag[a]" -map '[v]' -map '[a]' "${X264[@]}" "$@" "${AAC[@]}" "${TS[@]}" "$out"
}

# detectors FILE NAME [media_tools detect options...]: ffmpeg's own detectors with defaults
detectors() {
    local file=$1 name=$2 graph maps ran
    shift 2
    if [[ -n $(ffprobe -v error -select_streams v -show_entries stream=index -of csv=p=0 "$file") ]]; then
        graph="[0:v:0]blackdetect,freezedetect[vo];[0:a:0]silencedetect,astats=measure_perchannel=none:measure_overall=RMS_level[ao]"
        maps=(-map '[vo]' -map '[ao]')
        ran=black,freeze,silence
    else
        graph="[0:a:0]silencedetect,astats=measure_perchannel=none:measure_overall=RMS_level[ao]"
        maps=(-map '[ao]')
        ran=silence
    fi
    ffmpeg -hide_banner -nostdin -nostats -loglevel info -i "$file" -filter_complex "$graph" \
        "${maps[@]}" -f null - 2>"$WORK/$name.detect.log"
    check "${TOOLS[@]}" detect "$WORK/$name.detect.log" --name "$name" --ran "$ran" "$@"
}

# raw 8-bit luma of every STEP-th decoded frame on stdout
luma_frames() {
    ffmpeg -hide_banner -nostdin -loglevel error -i "$1" -map 0:v:0 \
        -vf "select='not(mod(n\,$2))',extractplanes=y" -fps_mode passthrough -f rawvideo -
}

# ---------------------------------------------------------------- defect clips
clip_black_high_360p() {
    local f=$OUT/black_high_360p.ts
    # frames 75..149 = [3.0, 6.0): full-frame fill, Y=16 U=V=128
    encode "$f" "$(vsrc 640 360 12),drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(n,75,149)'" \
        "$(tone 12)" -profile:v high -bf 3
    check "${TOOLS[@]}" probe "$f" --profile High --width 640 --height 360 --duration 12 --gop 2 --bframes yes
    luma_frames "$f" 1 | check "${TOOLS[@]}" luma 640 360 --black 3 6
    # a black picture is also a still picture: ffmpeg's freezedetect reports it too
    detectors "$f" black_high_360p --expect black:3:6 --allow freeze:3:6
}

clip_freeze_main_720p() {
    local f=$OUT/freeze_main_720p.ts
    # frames 75..174 ([3.0, 7.0)) replaced by frame 74 (shown at 2.96 s); IDRs at 4.0 and 6.0
    encode "$f" "$(vsrc 1280 720 10),split[f0][f1];[f0][f1]freezeframes=first=75:last=174:replace=74" \
        "$(tone 10)" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 1280 --height 720 --duration 10 --gop 2
    detectors "$f" freeze_main_720p --expect freeze:3:7
    # informational: a stricter noise threshold sees the IDR re-encode at 4.0 s
    log "freeze_main_720p: freezedetect n=-70dB -> $(ffmpeg -hide_banner -nostdin -nostats -i "$f" -map 0:v \
        -vf freezedetect=n=-70dB -f null - 2>&1 | grep -E 'freeze_(start|end)' | awk '{print $(NF-1), $NF}' | tr '\n' ' ')"
}

clip_corrupt_baseline_1080p() {
    local f=$OUT/corrupt_baseline_1080p.ts src=$WORK/corrupt_src.ts
    encode "$src" "$(vsrc 1920 1080 10)" "$(tone 10)" -profile:v baseline
    "$PY" "$HERE/corrupt_ts.py" "$src" "$f" --start 4.2 --end 4.6 --seed 7 2>"$WORK/corrupt.log" \
        || { cat "$WORK/corrupt.log" >&2; exit 1; }
    tee -a "$OUT/verify.log" <"$WORK/corrupt.log"
    [[ $(grep -c 'hit video PES' "$WORK/corrupt.log") -eq 10 ]] || { echo "expected 10 PES hit" >&2; exit 1; }
    [[ $(stat -c %s "$src") -eq $(stat -c %s "$f") ]] || { echo "corrupt_ts changed the size" >&2; exit 1; }
    check "${TOOLS[@]}" probe "$f" --profile "Constrained Baseline" --width 1920 --height 1080 \
        --duration 10 --gop 2 --bframes no
    # decoded frames must differ from the clean decode exactly on [4.2, 6.0)
    local x
    for x in src f; do
        ffmpeg -hide_banner -nostdin -loglevel error -i "${!x}" -map 0:v:0 -fps_mode passthrough \
            -f framemd5 "$WORK/corrupt_$x.md5" 2>"$WORK/corrupt_$x.err"
    done
    [[ ! -s $WORK/corrupt_src.err ]] || { cat "$WORK/corrupt_src.err" >&2; exit 1; }
    ! grep -v '^\[h264 @' "$WORK/corrupt_f.err" >&2 || { echo "corrupt clip: non-H.264 errors" >&2; exit 1; }
    check "${TOOLS[@]}" framediff "$WORK/corrupt_src.md5" "$WORK/corrupt_f.md5" --start 4.2 --end 6.0
    log "ffmpeg h264 decoder: $(grep -c 'error while decoding MB' "$WORK/corrupt_f.err" || true) 'error while decoding MB' on the corrupt clip, none on the clean source"
    detectors "$f" corrupt_baseline_1080p
}

clip_silence_high_720p() {
    local f=$OUT/silence_high_720p.ts
    encode "$f" "$(vsrc 1280 720 10)" "$(tone 10 "$TONE_GAIN" 4 7)" -profile:v high -bf 2
    check "${TOOLS[@]}" probe "$f" --profile High --width 1280 --height 720 --duration 10 --gop 2 --bframes yes
    detectors "$f" silence_high_720p --expect silence:4:7
}

clip_multi_main_360p() {
    local f=$OUT/multi_main_360p.ts
    # black frames 50..124 = [2, 5); frozen frames 200..274 = [8, 11) show frame 199 (7.96 s)
    encode "$f" "$(vsrc 640 360 20),drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(n,50,124)',split[f0][f1];[f0][f1]freezeframes=first=200:last=274:replace=199" \
        "$(tone 20 "$TONE_GAIN" 14 17)" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 20 --gop 2
    detectors "$f" multi_main_360p --expect black:2:5 --expect freeze:8:11 --expect silence:14:17 --allow freeze:2:5
}

# Open GOP (non-IDR I pictures with a recovery point), B-frames, a key picture every
# 5 s: the freeze at [11, 14.5) lies between two key pictures (10 and 15), so a probe
# decoding key pictures only cannot see it; `auto` must notice it between keys.
clip_multi_opengop_360p() {
    local f=$OUT/multi_opengop_360p.ts
    # black frames 75..149 = [3, 6); frozen frames 275..362 = [11, 14.52) show frame 274
    encode "$f" "$(vsrc 640 360 22),drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(n,75,149)',split[f0][f1];[f0][f1]freezeframes=first=275:last=362:replace=274" \
        "$(tone 22 "$TONE_GAIN" 17 19.5)" -profile:v high -g 125 -keyint_min 125 -bf 3 -x264-params open-gop=1
    check "${TOOLS[@]}" probe "$f" --profile High --width 640 --height 360 --duration 22 --gop 5
    detectors "$f" multi_opengop_360p --expect black:3:6 --expect freeze:11:14.52 --expect silence:17:19.5 --allow freeze:3:6
}

clip_desync_audio_360p() {
    local f=$OUT/desync_audio_360p.ts src=$WORK/desync_src.ts
    encode "$src" "$(vsrc 640 360 10)" "$(tone 10)" -profile:v main
    # audio PES with PTS in [4, 7) claim to be 0.3 s later; packets stay where they are.
    # PES carry ~8 AAC frames: the shifted sound covers [4.096, 7.168) s.
    "$PY" "$HERE/shift_pts.py" "$src" "$f" --start 4.0 --end 7.0 --shift 0.3 --expect 4.1 7.17 \
        2>&1 | tee -a "$OUT/verify.log"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || exit 1
    [[ $(stat -c %s "$src") -eq $(stat -c %s "$f") ]] || { echo "shift_pts changed the size" >&2; exit 1; }
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 10 --gop 2
    # ffmpeg's picture and sound detectors see nothing: only the timestamps moved
    detectors "$f" desync_audio_360p
}

# decoded_audio FILE NAME [media_tools audio options...]: ffmpeg's AAC decoder, f32 interleaved
# (not clamped: overshoots above 1.0 survive), checked by media_tools
decoded_audio() {
    local file=$1 name=$2
    shift 2
    ffmpeg -hide_banner -nostdin -loglevel error -i "$file" -map 0:a:0 -f f32le - \
        | check "${TOOLS[@]}" audio --name "$name" "$@"
}

# The tone driven +26 dB over [4, 7) (peak 2.8, +9 dB over full scale) and clipped to
# ±1 before AAC: after decoding, ~19% of the samples are at |s| >= 0.95 there (a
# clipped plateau ripples just under 1.0 after lossy coding: none reach 0.98), none elsewhere.
clip_clipping_stereo_720p() {
    local f=$OUT/clipping_stereo_720p.ts
    local g="sine=frequency=440:sample_rate=48000:samples_per_frame=1024:duration=10,volume=$TONE_GAIN"
    g+=",aeval=exprs='max(-1,min(1,val(0)*(1+19*gte(t,4-1e-5)*lt(t,7-1e-5))))',$STEREO"
    encode "$f" "$(vsrc 1280 720 10)" "$g" -profile:v high
    check "${TOOLS[@]}" probe "$f" --profile High --width 1280 --height 720 --duration 10 --gop 2
    decoded_audio "$f" clipping_stereo_720p --clip 4 7
    detectors "$f" clipping_stereo_720p
}

# The right channel digitally silent over [3, 6), the left one a -20 dBFS RMS tone
# throughout: the track is never silent as a whole.
clip_chanloss_stereo_360p() {
    local f=$OUT/chanloss_stereo_360p.ts
    local g="sine=frequency=440:sample_rate=48000:samples_per_frame=1024:duration=10,volume=$TONE_GAIN,$STEREO"
    g+=",aeval=exprs='val(0)|val(1)*(1-gte(t,3-1e-5)*lt(t,6-1e-5))'"
    encode "$f" "$(vsrc 640 360 10)" "$g" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 10 --gop 2
    decoded_audio "$f" chanloss_stereo_360p --lost 1 3 6
    detectors "$f" chanloss_stereo_360p
}

# Loudness (docs/events.md, "loudness"). Levels are set from measurements of these exact
# sources (pink noise, seed 11, amplitude 1, identical channels: -11.6 LUFS; +-1 LU
# checked after AAC by ffmpeg's ebur128 meter, the independent reference).
# Speech-like sound: pink noise in 4 Hz "syllables", digitally silent 1/3 of every 2 s
# (pauses of 0.67 s: never `silence`, which needs 2 s).
SYLLABLES="(0.5-0.5*cos(2*PI*4*t))*gte(sin(PI*t),-0.5)"

# Pink noise ("music-like") at -23 LUFS over [0, 20) except [6, 14): a two-tone chord
# (440 + 660 Hz) at about -6 LUFS peaking at -2.3 dBFS (noise that loud would clip: its
# crest factor is ~12 dB), cross-faded over 20 ms.
clip_loud_passage_360p() {
    local f=$OUT/loud_passage_360p.ts
    local w="min(1,max(0,(t-6)*50))*min(1,max(0,(14-t)*50))"
    local g="anoisesrc=color=pink:amplitude=1:seed=11:sample_rate=48000:nb_samples=1024:duration=20"
    g+=",aeval=exprs='(1-$w)*0.269*val(0)+$w*0.383*(sin(2*PI*440*t)+sin(2*PI*660*t))',$STEREO"
    encode "$f" "$(vsrc 640 360 20)" "$g" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 20 --gop 2
    decoded_audio "$f" loud_passage_360p --noclip
    check "${TOOLS[@]}" loudness "$f" --name loud_passage_360p --span 0:6:-23 --span 6:14:-6 --span 14:20:-23
    detectors "$f" loud_passage_360p
}

# Hard negative: loud but within the -10 LUFS ceiling (pink noise at -14 LUFS over
# [0, 10)), then 30 s of quiet speech-like sound at about -30 LUFS (gated; the 3-s
# short-term reads ~-32 with the pauses): above the -40 LUFS floor.
clip_loudness_ok_360p() {
    local f=$OUT/loudness_ok_360p.ts
    local g="anoisesrc=color=pink:amplitude=1:seed=11:sample_rate=48000:nb_samples=1024:duration=40"
    g+=",aeval=exprs='val(0)*if(lt(t,10),0.759,0.197*$SYLLABLES)',$STEREO"
    encode "$f" "$(vsrc 640 360 40)" "$g" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 40 --gop 2
    check "${TOOLS[@]}" loudness "$f" --name loudness_ok_360p --span 0:10:-14 --span 10:40:-32 --tol 1.5 --max-short -12.5
    detectors "$f" loudness_ok_360p
}

# Too quiet: 40 s of speech-like sound at about -46 LUFS (gated; ~-48 short-term), never
# silence: one `loudness` over the whole clip (the 30-s window reads it from 30 s on).
clip_quiet_speech_360p() {
    local f=$OUT/quiet_speech_360p.ts
    local g="anoisesrc=color=pink:amplitude=1:seed=11:sample_rate=48000:nb_samples=1024:duration=40"
    g+=",aeval=exprs='val(0)*0.0313*$SYLLABLES',$STEREO"
    encode "$f" "$(vsrc 640 360 40)" "$g" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 40 --gop 2
    check "${TOOLS[@]}" loudness "$f" --name quiet_speech_360p --span 0:40:-48 --tol 1.5 --max-short -44
    detectors "$f" quiet_speech_360p
}

# Test patterns (docs/events.md, "test_pattern"). SMPTE RP 219 HD bars (smptehdbars)
# cut in over [4, 16) between live testsrc2 pictures.
clip_bars_hd_720p() {
    local f=$OUT/bars_hd_720p.ts
    local v="testsrc2=s=1280x720:r=$FPS:d=4[b0];smptehdbars=s=1280x720:r=$FPS:d=12[b1]"
    v+=";testsrc2=s=1280x720:r=$FPS:d=4[b2];[b0][b1][b2]concat=n=3:v=1:a=0,format=yuv420p"
    encode "$f" "$v" "$(tone 20)" -profile:v high
    check "${TOOLS[@]}" probe "$f" --profile High --width 1280 --height 720 --duration 20 --gop 2
    # bars are a still picture: ffmpeg's freezedetect reports them
    detectors "$f" bars_hd_720p --allow freeze:4:16
}

# A stream that starts on SD SMPTE bars (EG 1, smptebars, 4:3 picture in 640x480) for
# 11 s, then live content until 15 s.
clip_bars_sd_480p() {
    local f=$OUT/bars_sd_480p.ts
    local v="smptebars=s=640x480:r=$FPS:d=11[b0];testsrc2=s=640x480:r=$FPS:d=4[b1]"
    v+=";[b0][b1]concat=n=2:v=1:a=0,format=yuv420p"
    encode "$f" "$v" "$(tone 15)" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 480 --duration 15 --gop 2
    detectors "$f" bars_sd_480p --allow freeze:0:11
}

# A slate: a still graphic (navy background about 60% of the picture, a white title
# box, a grey lower band, an orange logo), cut in over [4, 4 + $2) between live testsrc2
# pictures. 12 s is a `test_pattern`; 6 s (a title card) is content and gives nothing.
slate_clip() {
    local f=$1 secs=$2
    local s="color=c=0x1a3a6a:s=1280x720:r=$FPS:d=$secs"
    s+=",drawbox=x=200:y=200:w=880:h=200:color=white:t=fill"
    s+=",drawbox=x=0:y=560:w=1280:h=120:color=0x808080:t=fill"
    s+=",drawbox=x=1040:y=40:w=200:h=200:color=0xff8000:t=fill"
    local v="testsrc2=s=1280x720:r=$FPS:d=4[s0];$s[s1];testsrc2=s=1280x720:r=$FPS:d=4[s2]"
    v+=";[s0][s1][s2]concat=n=3:v=1:a=0,format=yuv420p"
    encode "$f" "$v" "$(tone $((secs + 8)))" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 1280 --height 720 --duration $((secs + 8)) --gop 2
}

clip_slate_720p() {
    slate_clip "$OUT/slate_720p.ts" 12
    detectors "$OUT/slate_720p.ts" slate_720p --allow freeze:4:16
}

clip_title_card_720p() {
    slate_clip "$OUT/title_card_720p.ts" 6
    detectors "$OUT/title_card_720p.ts" title_card_720p --allow freeze:4:10
}

# 2160p at 100 fps: ~830 Mpixel/s, about 2.5x what openh264 decodes on one core of a
# small box (4K50 decodes at ~40 fps here), so a live source of it overflows the queue
# (backpressure tests). Key frame every 0.5 s. Level 5.2 is written although the rate
# is above it (x264 would say 6.0, which openh264 refuses). Not in truth.json: what it
# gives depends on the machine.
clip_heavy_2160p100() {
    local f=$OUT/heavy_2160p100.ts
    "${FF[@]}" -filter_complex "testsrc2=s=3840x2160:r=100:d=5,format=yuv420p[v];$(tone 5)[a]" \
        -map '[v]' -map '[a]' -c:v libx264 -preset ultrafast -crf 30 -g 50 -keyint_min 50 \
        -sc_threshold 0 -pix_fmt yuv420p -bf 0 -level:v 5.2 "${AAC[@]}" "${TS[@]}" "$f"
    check "${TOOLS[@]}" probe "$f" --width 3840 --height 2160 --duration 5
}

# ---------------------------------------------------------------- clean clips
clip_clean_dark_720p() {
    local f=$OUT/clean_dark_720p.ts
    # luma squeezed to 16..51 (x0.18 above black), chroma desaturated: dark, never black
    encode "$f" "$(vsrc 1280 720 10),lutyuv=y='16+(val-16)*0.18':u='128+(val-128)*0.4':v='128+(val-128)*0.4'" \
        "$(tone 10)" -profile:v high -bf 3
    check "${TOOLS[@]}" probe "$f" --profile High --width 1280 --height 720 --duration 10 --gop 2 --bframes yes
    luma_frames "$f" 5 | check "${TOOLS[@]}" luma 1280 720 --step 5 --dark
    detectors "$f" clean_dark_720p
}

clip_clean_slow_1080p() {
    local f=$OUT/clean_slow_1080p.ts
    # one still testsrc2 picture (2176 px wide), panned right-to-left by exactly 1 px per frame:
    # the only motion in the clip
    encode "$f" "testsrc2=s=2176x1080:r=$FPS:d=0.04,format=yuv444p,loop=loop=249:size=1,settb=1/$FPS,setpts=N,crop=1920:1080:x=n:y=0:exact=1,format=yuv420p" \
        "$(tone 10 "$QUIET_GAIN")" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 1920 --height 1080 --duration 10 --gop 2
    detectors "$f" clean_slow_1080p
}

clip_clean_quiet_360p() {
    local f=$OUT/clean_quiet_360p.ts
    encode "$f" "$(vsrc 640 360 10)" \
        "anoisesrc=color=pink:amplitude=$PINK_AMPLITUDE:seed=42:sample_rate=48000:nb_samples=1024:duration=10,$STEREO" \
        -profile:v baseline
    check "${TOOLS[@]}" probe "$f" --profile "Constrained Baseline" --width 640 --height 360 --duration 10 --gop 2 --bframes no
    detectors "$f" clean_quiet_360p
}

clip_reschange_360p_720p() {
    local f=$OUT/reschange_360p_720p.ts
    # two video-only encodes with identical settings, joined by the concat demuxer
    # (timestamps offset by exactly 5.0 s), muxed with one continuous 10 s tone
    "${FF[@]}" -filter_complex "$(vsrc 640 360 5)[v]" -map '[v]' "${X264[@]}" -profile:v main "${TS[@]}" "$WORK/rc_a.ts"
    "${FF[@]}" -filter_complex "$(vsrc 1280 720 10),trim=start_frame=125,setpts=PTS-STARTPTS[v]" -map '[v]' \
        "${X264[@]}" -profile:v main "${TS[@]}" "$WORK/rc_b.ts"
    printf "file '%s'\nduration 5.0\nfile '%s'\nduration 5.0\n" "$WORK/rc_a.ts" "$WORK/rc_b.ts" >"$WORK/rc.txt"
    "${FF[@]}" -f concat -safe 0 -i "$WORK/rc.txt" -filter_complex "$(tone 10)[a]" -map 0:v -map '[a]' \
        -c:v copy "${AAC[@]}" "${TS[@]}" "$f"
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 10 --keyframes 0,2,4,5,7,9
    check "${TOOLS[@]}" frames "$f" --change-at 5.0
    detectors "$f" reschange_360p_720p
}

# Loud but never clipped, identical channels (mono in stereo): a 440 Hz tone peaking at
# -1 dBFS over [0, 5), pink noise peaking at -1.9 dBFS over [5, 10) (faded in over 20 ms:
# a jump from the tone to the noise would overshoot after AAC).
clip_clean_loud_360p() {
    local f=$OUT/clean_loud_360p.ts
    local g="anoisesrc=color=pink:amplitude=1:seed=7:sample_rate=48000:nb_samples=1024:duration=10"
    g+=",aeval=exprs='if(lt(t,5-1e-5),0.891*sin(2*PI*440*t),0.95*val(0)*min(1,(t-5)*50))',$STEREO"
    encode "$f" "$(vsrc 640 360 10)" "$g" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 10 --gop 2
    decoded_audio "$f" clean_loud_360p --noclip --same
    detectors "$f" clean_loud_360p
}

# A mono AAC track (one channel): never a channel loss, whatever it carries.
clip_clean_mono_360p() {
    local f=$OUT/clean_mono_360p.ts
    "${FF[@]}" -filter_complex "$(vsrc 640 360 6)[v];sine=frequency=440:sample_rate=48000:samples_per_frame=1024:duration=6,volume=$TONE_GAIN[a]" \
        -map '[v]' -map '[a]' "${X264[@]}" -profile:v main -c:a aac -b:a 64k -ar 48000 -ac 1 \
        -bsf:a 'noise=drop=eq(n\,0)' "${TS[@]}" "$f"
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 6 --gop 2
    [[ $(ffprobe -v error -select_streams a:0 -show_entries stream=channels -of csv=p=0 "$f" | grep . | head -1) == 1 ]] \
        || { echo "clean_mono_360p.ts: not mono" >&2; exit 1; }
    decoded_audio "$f" clean_mono_360p --channels 1 --noclip
    detectors "$f" clean_mono_360p
}

# ---------------------------------------------------------------- one-colour pictures (`uniform`)
# yuv420p frames, every 5th, for media_tools.py colour
yuv_frames() {
    ffmpeg -hide_banner -nostdin -loglevel error -i "$1" -map 0:v:0 \
        -vf "select='not(mod(n\,5))'" -fps_mode passthrough -pix_fmt yuv420p -f rawvideo -
}

# A "no signal" screen: frames 75..224 ([3, 9)) blue 0x1E3CC8 (Y 73, U 194, V 105) with a
# white caption box (12% of the picture) holding a dark bar, inside normal testsrc2.
# It does not change: ffmpeg's freezedetect reports it as a freeze, vqprobe as uniform only.
clip_uniform_blue_360p() {
    local f=$OUT/uniform_blue_360p.ts on="enable='between(n,75,224)'"
    encode "$f" "$(vsrc 640 360 12),drawbox=x=0:y=0:w=iw:h=ih:color=0x1E3CC8:t=fill:$on,drawbox=x=iw*0.3:y=ih*0.44:w=iw*0.4:h=ih*0.12:color=white:t=fill:$on,drawbox=x=iw*0.34:y=ih*0.48:w=iw*0.32:h=ih*0.04:color=0x202020:t=fill:$on" \
        "$(tone 12)" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 12 --gop 2
    yuv_frames "$f" | check "${TOOLS[@]}" colour 640 360 --step 5 --window 3 9 --yuv 73 194 105
    detectors "$f" uniform_blue_360p --allow freeze:3:9
}

# A covered lens: frames 100..274 ([4, 11)) dark brown 0x3A2E22 (Y 57, U 121, V 134: dark
# but over blackdetect's pix_th) with temporal noise (sensor noise; after coding 84% of
# its pixels stay within +-6 levels), inside normal testsrc2, B-frames.
clip_uniform_covered_720p() {
    local f=$OUT/uniform_covered_720p.ts on="enable='between(n,100,274)'"
    encode "$f" "$(vsrc 1280 720 14),drawbox=x=0:y=0:w=iw:h=ih:color=0x3A2E22:t=fill:$on,noise=alls=10:allf=t:$on" \
        "$(tone 14)" -profile:v high
    check "${TOOLS[@]}" probe "$f" --profile High --width 1280 --height 720 --duration 14 --gop 2 --bframes yes
    yuv_frames "$f" | check "${TOOLS[@]}" colour 1280 720 --step 5 --window 4 11 --yuv 57 121 134
    detectors "$f" uniform_covered_720p --allow freeze:4:11
}

# Hard negative: an overcast sky over 88% of the picture (a blue-grey vertical gradient of
# 30 levels, drifting cloud bands of +-10 levels, fine grain) above a dark ground strip.
# Smooth and one hue, but no +-6 luma window holds more than ~42% of a frame.
clip_clean_sky_720p() {
    local f=$OUT/clean_sky_720p.ts
    local sky="color=c=gray:s=320x180:r=$FPS:d=10,format=yuv420p"
    sky+=",geq=lum='150+30*Y/H+10*sin((X+6*T)/13)*sin(Y/9+X/29)+4*sin((X-4*T)/5+Y/4)':cb='134-6*Y/H':cr='124'"
    sky+=",scale=1280:720:flags=bicubic,noise=alls=4:allf=t,drawbox=x=0:y=ih*0.88:w=iw:h=ih*0.12:color=0x303830:t=fill,format=yuv420p"
    encode "$f" "$sky" "$(tone 10)" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 1280 --height 720 --duration 10 --gop 2
    yuv_frames "$f" | check "${TOOLS[@]}" colour 1280 720 --step 5 --none
    detectors "$f" clean_sky_720p
}

# ---------------------------------------------------------------- blur (docs/events.md, "blur")
# blurdetect FILE NAME S E [MIN_RATIO]: ffmpeg's own blurdetect (mean per second, filter time)
# must read the picture at least MIN_RATIO (2) times blurrier on [S+1, E-1] than outside
# [S-1, E+1]; with S = E = 0 the clip must be evenly soft (no second over 1.5x another).
blur_check() {
    local file=$1 name=$2 s=$3 e=$4 min=${5:-2}
    ffmpeg -hide_banner -nostdin -loglevel error -i "$file" -map 0:v:0 -vf "blurdetect,metadata=print:file=-" \
        -f null - 2>/dev/null >"$WORK/$name.blur.log"
    check awk -v s="$s" -v e="$e" -v min="$min" -v name="$name" '
        /pts_time/ { split($0, a, "pts_time:"); t = a[2] + 0 }
        /lavfi.blur=/ { split($0, b, "="); sec = int(t); sum[sec] += b[2]; n[sec]++
            if (t >= s + 1 && t < e - 1) { in_s += b[2]; in_n++ }
            else if (t < s - 1 || t >= e + 1) { out_s += b[2]; out_n++ } }
        END {
            line = ""; lo = 1e9; hi = 0
            for (i = 0; i in n; i++) { m = sum[i] / n[i]; line = line sprintf(" %d:%.1f", i, m)
                if (m < lo) lo = m; if (m > hi) hi = m }
            print "blurdetect " name " per second:" line
            if (s == 0 && e == 0) { if (hi > 1.5 * lo) { print name ": not evenly soft"; exit 1 } ; exit 0 }
            if (in_n == 0 || out_n == 0 || in_s / in_n < min * out_s / out_n) {
                printf "%s: blurdetect %.1f inside vs %.1f outside\n", name, in_s / (in_n + 1e-9), out_s / (out_n + 1e-9); exit 1 }
        }' "$WORK/$name.blur.log"
}

# Focus lost over [4, 16): gaussian blur (sigma 6 px at 720p) switched on at frame 100
# and off at frame 400, sharp again to 20 s. blurdetect reads ~18 inside, ~4.8 outside.
clip_blur_step_720p() {
    local f=$OUT/blur_step_720p.ts
    encode "$f" "$(vsrc 1280 720 20),gblur=sigma=6:enable='between(n,100,399)'" "$(tone 20)" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 1280 --height 720 --duration 20 --gop 2
    blur_check "$f" blur_step_720p 4 16
    detectors "$f" blur_step_720p
}

# Focus lost over [4, 16) on a slow zoom (lavfi `mandelbrot`): gaussian blur (sigma 4 px
# at 360p) on frames 100..399. The blurred zoom changes so little from picture to picture
# that some pictures repeat the one before (within the freeze detector's noise floor)
# without any freeze: blur must judge those repeats, not restart its 10-s wait at each.
# Mandelbrot has large smooth areas, so blurdetect's ratio is lower (~2: ~11.5 inside,
# ~5.8 outside; checked at least 1.6x).
clip_blur_zoom_360p() {
    local f=$OUT/blur_zoom_360p.ts
    encode "$f" "mandelbrot=s=640x360:r=$FPS,trim=duration=20,format=yuv420p,gblur=sigma=4:enable='between(n,100,399)'" \
        "$(tone 20)" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 20 --gop 2
    blur_check "$f" blur_zoom_360p 4 16 1.6
    detectors "$f" blur_zoom_360p
}

# Hard negative: soft focus (sigma 3 px at 360p) from the first frame to the last, the
# usual testsrc2 motion: soft content, not a loss of focus.
clip_soft_focus_360p() {
    local f=$OUT/soft_focus_360p.ts
    encode "$f" "$(vsrc 640 360 20),gblur=sigma=3" "$(tone 20)" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 20 --gop 2
    blur_check "$f" soft_focus_360p 0 0
    detectors "$f" soft_focus_360p
}

# Hard negative: a cut at 6 s from the detailed testsrc2 to a smooth moving colour
# gradient (lavfi `gradients`, a "sky") for 14 s: raw gradients fall, nothing is blurred.
# Its rotation (0.03 rad a frame, 1.5 rad a GOP) is far from periodic with the 2-s key
# interval (at 0.5 rad a frame the key pictures were 8 half-turns apart: a "freeze" to
# a probe decoding key pictures only).
clip_cut_smooth_360p() {
    local f=$OUT/cut_smooth_360p.ts
    encode "$f" "$(vsrc 640 360 6)[c0];gradients=s=640x360:r=$FPS:d=14:speed=0.03:seed=3,format=yuv420p[c1];[c0][c1]concat=n=2:v=1:a=0" \
        "$(tone 20)" -profile:v main
    check "${TOOLS[@]}" probe "$f" --profile Main --width 640 --height 360 --duration 20 --gop 2
    detectors "$f" cut_smooth_360p
}

# ---------------------------------------------------------------- formats openh264 cannot decode
# (interlaced, more than 8 bits, 4:2:2, 4:4:4: refused from the SPS as unsupported_codec)
# and one it can (4:0:0). Pixel format, field order and SPS fields are checked.
X264_ANY_FMT=(-c:v libx264 -preset veryfast -g 50 -keyint_min 50 -sc_threshold 0)

# encode_fmt OUTFILE W H DURATION PIX_FMT VIDEO_FILTERS AUDIO_GRAPH [extra output options...]
# testsrc2 at WxH, then VIDEO_FILTERS (may be empty) in yuv420p, then PIX_FMT.
encode_fmt() {
    local out=$1 w=$2 h=$3 dur=$4 pf=$5 vf=$6 ag=$7
    shift 7
    "${FF[@]}" -filter_complex "$(vsrc "$w" "$h" "$dur")${vf:+,$vf},format=$pf[v];$ag[a]" \
        -map '[v]' -map '[a]' "${X264_ANY_FMT[@]}" -pix_fmt "$pf" "$@" "${AAC[@]}" "${TS[@]}" "$out"
}

fmt_interlaced_mbaff_1080i() {
    local f=$OUT/interlaced_mbaff_1080i.ts
    # x264 --interlaced (MBAFF), top field first, the usual form of a 1080i25 contribution
    # feed; digital silence over [2, 4.5): the audio is still analysed
    encode_fmt "$f" 1920 1080 6 yuv420p "" "$(tone 6 "$TONE_GAIN" 2 4.5)" \
        -profile:v high -flags +ildct+ilme -top 1
    check "${TOOLS[@]}" probe "$f" --profile High --width 1920 --height 1080 --duration 6 --gop 2 \
        --pix-fmt yuv420p --field-order tt
    check "${TOOLS[@]}" sps "$f" frame_mbs_only_flag=0 mb_adaptive_frame_field_flag=1 chroma_format_idc=1 \
        bit_depth_luma_minus8=0
    detectors "$f" interlaced_mbaff_1080i --expect silence:2:4.5
}

fmt_interlaced_fake_576i() {
    local f=$OUT/interlaced_fake_576i.ts
    # x264 --fake-interlaced: the SPS allows field pictures (frame_mbs_only_flag 0) without
    # MBAFF, the pictures are coded as frames. x264 cannot code field pictures (PAFF); this
    # is the nearest it comes, and the SPS is all the probe reads.
    encode_fmt "$f" 720 576 5 yuv420p "" "$(tone 5)" -profile:v high -x264-params fake-interlaced=1:pic-struct=1
    check "${TOOLS[@]}" probe "$f" --profile High --width 720 --height 576 --duration 5 --gop 2 --pix-fmt yuv420p
    check "${TOOLS[@]}" sps "$f" frame_mbs_only_flag=0 mb_adaptive_frame_field_flag=0 chroma_format_idc=1
    detectors "$f" interlaced_fake_576i
}

fmt_high10_360p() {
    local f=$OUT/high10_360p.ts
    encode_fmt "$f" 640 360 5 yuv420p10le "" "$(tone 5)" -profile:v high10
    check "${TOOLS[@]}" probe "$f" --profile "High 10" --width 640 --height 360 --duration 5 --gop 2 \
        --pix-fmt yuv420p10le --field-order progressive
    check "${TOOLS[@]}" sps "$f" profile_idc=110 chroma_format_idc=1 bit_depth_luma_minus8=2 \
        bit_depth_chroma_minus8=2 frame_mbs_only_flag=1
    detectors "$f" high10_360p
}

fmt_high422_360p() {
    local f=$OUT/high422_360p.ts
    # 8-bit 4:2:2: refused for the chroma format alone
    encode_fmt "$f" 640 360 5 yuv422p "" "$(tone 5)" -profile:v high422
    check "${TOOLS[@]}" probe "$f" --profile "High 4:2:2" --width 640 --height 360 --duration 5 --gop 2 \
        --pix-fmt yuv422p --field-order progressive
    check "${TOOLS[@]}" sps "$f" profile_idc=122 chroma_format_idc=2 bit_depth_luma_minus8=0 \
        bit_depth_chroma_minus8=0 frame_mbs_only_flag=1
    detectors "$f" high422_360p
}

fmt_high444_360p() {
    local f=$OUT/high444_360p.ts
    encode_fmt "$f" 640 360 5 yuv444p "" "$(tone 5)" -profile:v high444
    check "${TOOLS[@]}" probe "$f" --profile "High 4:4:4 Predictive" --width 640 --height 360 --duration 5 \
        --gop 2 --pix-fmt yuv444p --field-order progressive
    check "${TOOLS[@]}" sps "$f" profile_idc=244 chroma_format_idc=3 bit_depth_luma_minus8=0 \
        bit_depth_chroma_minus8=0 frame_mbs_only_flag=1
    detectors "$f" high444_360p
}

fmt_mono_black_360p() {
    local f=$OUT/mono_black_360p.ts
    # 4:0:0 (x264 i400, High profile): openh264 decodes it, so it is not refused. Black
    # frames 50..124 = [2.0, 5.0) show that its pictures are decoded and analysed. ffmpeg's
    # gray is full range: the SPS says so (VUI), black is Y=0, and ffmpeg's h264 decoder
    # outputs it as yuvj420p with neutral chroma.
    encode_fmt "$f" 640 360 6 gray "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(n,50,124)'" \
        "$(tone 6)" -profile:v high
    check "${TOOLS[@]}" probe "$f" --profile High --width 640 --height 360 --duration 6 --gop 2 \
        --pix-fmt yuvj420p --field-order progressive
    check "${TOOLS[@]}" sps "$f" profile_idc=100 chroma_format_idc=0 bit_depth_luma_minus8=0 frame_mbs_only_flag=1 \
        video_full_range_flag=1
    luma_frames "$f" 1 | check "${TOOLS[@]}" luma 640 360 --black 2 5 --black-y 0
    detectors "$f" mono_black_360p --expect black:2:5 --allow freeze:2:5
}

# ---------------------------------------------------------------- bad inputs
bad_truncated() {
    head -c 300100 "$OUT/silence_high_720p.ts" >"$OUT/truncated.ts"
    local n
    n=$(stat -c %s "$OUT/truncated.ts")
    (( n == 300100 && n % 188 != 0 )) || { echo "truncated.ts: bad size $n" >&2; exit 1; }
    log "truncated.ts: $n bytes = $((n / 188)) packets + $((n % 188)) bytes, from silence_high_720p.ts"
}

bad_random() {
    check "${TOOLS[@]}" random "$OUT/random.bin" --size 1048576 --seed 11
}

bad_audio_only() {
    local f=$OUT/audio_only.ts
    "${FF[@]}" -filter_complex "$(tone 6)[a]" -map '[a]' "${AAC[@]}" "${TS[@]}" "$f"
    check "${TOOLS[@]}" probe "$f" --codec none --duration 6
    detectors "$f" audio_only
}

bad_hevc() {
    local f=$OUT/hevc.ts
    "${FF[@]}" -filter_complex "$(vsrc 640 360 6)[v];$(tone 6)[a]" -map '[v]' -map '[a]' \
        "${X265[@]}" "${AAC[@]}" "${TS[@]}" "$f"
    check "${TOOLS[@]}" probe "$f" --codec hevc --profile Main --width 640 --height 360 --duration 6 --gop 2
    detectors "$f" hevc
}

bad_empty_pmt() {
    local f=$OUT/empty_pmt.ts types
    check "${TOOLS[@]}" data-ts "$f" --seconds 4
    types=$(ffprobe -v error -show_entries stream=codec_type -of csv=p=0 "$f" | grep . | sort -u | tr '\n' ' ')
    [[ $types == "data " ]] || { echo "empty_pmt.ts: ffprobe sees stream types '$types'" >&2; exit 1; }
    log "empty_pmt.ts: ffprobe stream types: $types"
}

write_truth() {
    cat >"$OUT/truth.json" <<'EOF'
{"clips": [
  {"file": "black_high_360p.ts", "profile": "high", "width": 640, "height": 360, "duration_s": 12.0,
   "events": [{"kind": "black", "start_s": 3.0, "end_s": 6.0}]},
  {"file": "freeze_main_720p.ts", "profile": "main", "width": 1280, "height": 720, "duration_s": 10.0,
   "events": [{"kind": "freeze", "start_s": 3.0, "end_s": 7.0}]},
  {"file": "corrupt_baseline_1080p.ts", "profile": "baseline", "width": 1920, "height": 1080, "duration_s": 10.0,
   "events": [{"kind": "corruption", "start_s": 4.2, "end_s": 6.0}]},
  {"file": "silence_high_720p.ts", "profile": "high", "width": 1280, "height": 720, "duration_s": 10.0,
   "events": [{"kind": "silence", "start_s": 4.0, "end_s": 7.0}]},
  {"file": "multi_main_360p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 20.0,
   "events": [{"kind": "black", "start_s": 2.0, "end_s": 5.0},
              {"kind": "freeze", "start_s": 8.0, "end_s": 11.0},
              {"kind": "silence", "start_s": 14.0, "end_s": 17.0}]},
  {"file": "clean_dark_720p.ts", "profile": "high", "width": 1280, "height": 720, "duration_s": 10.0, "events": []},
  {"file": "clean_slow_1080p.ts", "profile": "main", "width": 1920, "height": 1080, "duration_s": 10.0, "events": []},
  {"file": "clean_quiet_360p.ts", "profile": "baseline", "width": 640, "height": 360, "duration_s": 10.0, "events": []},
  {"file": "reschange_360p_720p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 10.0, "events": []},
  {"file": "desync_audio_360p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 10.0,
   "events": [{"kind": "av_desync", "start_s": 4.1, "end_s": 7.17}]},
  {"file": "multi_opengop_360p.ts", "profile": "high", "width": 640, "height": 360, "duration_s": 22.0,
   "events": [{"kind": "black", "start_s": 3.0, "end_s": 6.0},
              {"kind": "freeze", "start_s": 11.0, "end_s": 14.52},
              {"kind": "silence", "start_s": 17.0, "end_s": 19.5}]},
  {"file": "mono_black_360p.ts", "profile": "high", "width": 640, "height": 360, "duration_s": 6.0,
   "events": [{"kind": "black", "start_s": 2.0, "end_s": 5.0}]},
  {"file": "clipping_stereo_720p.ts", "profile": "high", "width": 1280, "height": 720, "duration_s": 10.0,
   "events": [{"kind": "clipping", "start_s": 4.0, "end_s": 7.0},
              {"kind": "loudness", "start_s": 4.0, "end_s": 7.0}]},
  {"file": "chanloss_stereo_360p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 10.0,
   "events": [{"kind": "channel_loss", "start_s": 3.0, "end_s": 6.0}]},
  {"file": "clean_loud_360p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 10.0,
   "events": [{"kind": "loudness", "start_s": 0.0, "end_s": 5.0}]},
  {"file": "clean_mono_360p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 6.0, "events": []},
  {"file": "loud_passage_360p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 20.0,
   "events": [{"kind": "loudness", "start_s": 6.0, "end_s": 14.0}]},
  {"file": "loudness_ok_360p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 40.0, "events": []},
  {"file": "quiet_speech_360p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 40.0,
   "events": [{"kind": "loudness", "start_s": 0.0, "end_s": 40.0}]},
  {"file": "bars_hd_720p.ts", "profile": "high", "width": 1280, "height": 720, "duration_s": 20.0,
   "events": [{"kind": "test_pattern", "form": "bars", "start_s": 4.0, "end_s": 16.0}]},
  {"file": "bars_sd_480p.ts", "profile": "main", "width": 640, "height": 480, "duration_s": 15.0,
   "events": [{"kind": "test_pattern", "form": "bars", "start_s": 0.0, "end_s": 11.0}]},
  {"file": "slate_720p.ts", "profile": "main", "width": 1280, "height": 720, "duration_s": 20.0,
   "events": [{"kind": "test_pattern", "form": "slate", "start_s": 4.0, "end_s": 16.0}]},
  {"file": "title_card_720p.ts", "profile": "main", "width": 1280, "height": 720, "duration_s": 14.0, "events": []},
  {"file": "uniform_blue_360p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 12.0,
   "events": [{"kind": "uniform", "start_s": 3.0, "end_s": 9.0}]},
  {"file": "uniform_covered_720p.ts", "profile": "high", "width": 1280, "height": 720, "duration_s": 14.0,
   "events": [{"kind": "uniform", "start_s": 4.0, "end_s": 11.0}]},
  {"file": "clean_sky_720p.ts", "profile": "main", "width": 1280, "height": 720, "duration_s": 10.0, "events": []},
  {"file": "blur_step_720p.ts", "profile": "main", "width": 1280, "height": 720, "duration_s": 20.0,
   "events": [{"kind": "blur", "start_s": 4.0, "end_s": 16.0}]},
  {"file": "blur_zoom_360p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 20.0,
   "events": [{"kind": "blur", "start_s": 4.0, "end_s": 16.0}]},
  {"file": "soft_focus_360p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 20.0, "events": []},
  {"file": "cut_smooth_360p.ts", "profile": "main", "width": 640, "height": 360, "duration_s": 20.0, "events": []}
 ],
 "bad": [
  {"file": "truncated.ts", "expect": "events", "events": [], "note": "cut mid-packet after 0.92 s: the incomplete last picture is dropped, no defect"},
  {"file": "random.bin", "expect": "error", "message_contains": "not an MPEG-TS"},
  {"file": "audio_only.ts", "expect": "events", "events": []},
  {"file": "hevc.ts", "expect": "events", "events": [{"kind": "unsupported_codec"}]},
  {"file": "interlaced_mbaff_1080i.ts", "expect": "events",
   "events": [{"kind": "silence", "start_s": 2.0, "end_s": 4.5},
              {"kind": "unsupported_codec", "reason": "h264_interlaced", "start_s": 0.0, "end_s": 6.0}]},
  {"file": "interlaced_fake_576i.ts", "expect": "events",
   "events": [{"kind": "unsupported_codec", "reason": "h264_interlaced", "start_s": 0.0, "end_s": 5.0}]},
  {"file": "high10_360p.ts", "expect": "events",
   "events": [{"kind": "unsupported_codec", "reason": "h264_high10", "start_s": 0.0, "end_s": 5.0}]},
  {"file": "high422_360p.ts", "expect": "events",
   "events": [{"kind": "unsupported_codec", "reason": "h264_422", "start_s": 0.0, "end_s": 5.0}]},
  {"file": "high444_360p.ts", "expect": "events",
   "events": [{"kind": "unsupported_codec", "reason": "h264_444", "start_s": 0.0, "end_s": 5.0}]},
  {"file": "empty_pmt.ts", "expect": "error", "message_contains": "no video and no audio"}
 ]}
EOF
    "$PY" -m json.tool "$OUT/truth.json" >/dev/null
}

# ---------------------------------------------------------------- main
START=$SECONDS
for step in clip_black_high_360p clip_freeze_main_720p clip_corrupt_baseline_1080p \
            clip_silence_high_720p clip_multi_main_360p clip_clean_dark_720p \
            clip_clean_slow_1080p clip_clean_quiet_360p clip_reschange_360p_720p \
            clip_desync_audio_360p clip_multi_opengop_360p clip_heavy_2160p100 \
            clip_clipping_stereo_720p clip_chanloss_stereo_360p clip_clean_loud_360p clip_clean_mono_360p \
            clip_loud_passage_360p clip_loudness_ok_360p clip_quiet_speech_360p \
            clip_bars_hd_720p clip_bars_sd_480p clip_slate_720p clip_title_card_720p \
            clip_uniform_blue_360p clip_uniform_covered_720p clip_clean_sky_720p \
            fmt_interlaced_mbaff_1080i fmt_interlaced_fake_576i fmt_high10_360p fmt_high422_360p \
            fmt_high444_360p fmt_mono_black_360p \
            bad_truncated bad_random bad_audio_only bad_hevc bad_empty_pmt \
            clip_blur_step_720p clip_blur_zoom_360p clip_soft_focus_360p clip_cut_smooth_360p; do
    t0=$SECONDS
    "$step"
    log "== $step done ($((SECONDS - t0)) s)"
done
write_truth
echo "$VERSION" >"$OUT/.version"
log "make_media: corpus ready in $OUT ($((SECONDS - START)) s)"
