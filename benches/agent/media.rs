//! The benchmark's clips: 30 s MPEG-TS files made once by ffmpeg and cached under
//! `target/bench-media`. Owns the two kinds of content and their encoder settings; it
//! runs nothing but ffmpeg and touches no other file.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Length of every clip (the streams loop it).
pub const CLIP_SECS: u32 = 30;

/// The two kinds of content of issue 11.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// libx264 High, 3 B-frames, 2 s closed GOP, ~3 Mbps at 720p.
    Broadcast,
    /// libx264 Baseline (no B-frames), IPPP, 3 s GOP, ~2 Mbps at 720p.
    Camera,
}

impl Content {
    pub fn tag(self) -> &'static str {
        match self {
            Content::Broadcast => "broadcast",
            Content::Camera => "camera",
        }
    }

    /// One line for the report.
    pub fn describe(self, height: u32) -> String {
        match self {
            Content::Broadcast => format!(
                "(a) broadcast-like {height}p25: libx264 High, 3 B-frames, 2 s GOP \
                 (`-g 50 -keyint_min 50 -sc_threshold 0`), {} kbit/s",
                broadcast_kbps(height)
            ),
            Content::Camera => format!(
                "(b) camera-like {height}p25: libx264 Baseline, IPPP (no B-frames), 3 s GOP \
                 (`-g 75 -keyint_min 75 -sc_threshold 0`), {} kbit/s",
                camera_kbps(height)
            ),
        }
    }
}

fn broadcast_kbps(height: u32) -> u32 {
    match height {
        0..=400 => 1000,
        401..=800 => 3000,
        _ => 6000,
    }
}

fn camera_kbps(height: u32) -> u32 {
    broadcast_kbps(height) * 2 / 3
}

fn width(height: u32) -> u32 {
    height * 16 / 9
}

/// The clip of `content` at `height` (16:9, 25 fps): moving test pattern with temporal
/// noise (a realistic bitrate), AAC sine tone. With `defects`, a black picture at 5–8 s
/// and silence at 15–18 s, so every stream emits events (and `auto` escalates) once per
/// loop; without, nothing to report (the steady-state cost).
pub fn ensure(dir: &Path, content: Content, height: u32, defects: bool) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!(
        "agent2_{}_{height}p25_{CLIP_SECS}s_{}.ts",
        content.tag(),
        if defects {
            "black5-8_silence15-18"
        } else {
            "clean"
        }
    ));
    if path.exists() {
        return path;
    }
    eprintln!("making {} ...", path.display());
    let tmp = path.with_extension("part.ts");
    let (kbps, x264): (u32, &[&str]) = match content {
        Content::Broadcast => (
            broadcast_kbps(height),
            &[
                "-profile:v",
                "high",
                "-bf",
                "3",
                "-g",
                "50",
                "-keyint_min",
                "50",
                "-sc_threshold",
                "0",
            ],
        ),
        Content::Camera => (
            camera_kbps(height),
            &[
                "-profile:v",
                "baseline",
                "-bf",
                "0",
                "-g",
                "75",
                "-keyint_min",
                "75",
                "-sc_threshold",
                "0",
            ],
        ),
    };
    let size = format!("{}x{height}", width(height));
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=25"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args(["-t", &CLIP_SECS.to_string(), "-map", "0:v", "-map", "1:a"])
        .args(if defects {
            [
                "-vf",
                "noise=alls=10:allf=t+u,drawbox=c=black:t=fill:enable='between(t,5,8)'",
                "-af",
                "volume=0:enable='between(t,15,18)'",
            ]
        } else {
            ["-vf", "noise=alls=10:allf=t+u", "-af", "anull"]
        })
        .args(["-c:v", "libx264", "-preset", "fast", "-pix_fmt", "yuv420p"])
        .args(x264)
        .args(["-b:v", &format!("{kbps}k"), "-maxrate", &format!("{kbps}k")])
        .args(["-bufsize", &format!("{}k", kbps * 2)])
        .args(["-c:a", "aac", "-b:a", "128k", "-f", "mpegts"])
        .arg(&tmp)
        .status()
        .expect("ffmpeg");
    assert!(st.success(), "ffmpeg failed making {}", path.display());
    std::fs::rename(&tmp, &path).unwrap();
    path
}
