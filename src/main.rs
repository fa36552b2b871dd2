//! The `vqprobe` binary: parses the command line and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use vqprobe::app::{self, check, demo};
use vqprobe::config::LevelChoice;
use vqprobe::ingest::rtsp::RtspTransport;
use vqprobe::publish::OutputFormat;

#[derive(Parser, Debug)]
#[command(name = "vqprobe", version = vqprobe::VERSION, about = "Watches video streams like a viewer and reports black, frozen, corrupt and silent pictures")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Analyse one input and print one line per defect event, then exit.
    Check {
        /// A local MPEG-TS file (path or file:// URL), an rtsp:// URL (credentials as
        /// rtsp://user:password@host/...; never printed), or an HLS playlist
        /// (http(s)://…/index.m3u8 or a local .m3u8).
        input: String,
        /// Output format: human-readable text, or JSON lines exactly as published.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Files: analyse at most this many seconds of media. Live sources: run this
        /// many seconds by the wall clock (default: until Ctrl-C).
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Live sources: seconds without media before a `stall` is reported.
        #[arg(long, value_name = "SECS", default_value_t = 2.0)]
        stall_after: f64,
        /// Live sources: seconds allowed to connect (and for each request) before the
        /// source counts as down.
        #[arg(long, value_name = "SECS", default_value_t = 10.0)]
        connect_timeout: f64,
        /// HLS over https://: extra trusted CA certificates (PEM). Certificates are
        /// always verified.
        #[arg(long, value_name = "PATH")]
        ca_file: Option<PathBuf>,
        /// HLS master playlists: the highest-bandwidth variant at or below this many
        /// bits/s (default: the highest bandwidth).
        #[arg(long, value_name = "BPS")]
        max_bandwidth: Option<u64>,
        /// RTP transport for rtsp:// inputs.
        #[arg(long, value_enum, default_value_t = RtspTransport::Tcp)]
        rtsp_transport: RtspTransport,
        /// TOML file with detector settings (the `[detect]` reference in docs/config.md).
        #[arg(long, value_name = "PATH")]
        detect_config: Option<PathBuf>,
        /// Stream id put in events (default: the input's file name).
        #[arg(long)]
        stream_id: Option<String>,
        /// Probe id put in events (default: the host name).
        #[arg(long)]
        probe_id: Option<String>,
        /// How much video to decode: `auto` (the default: key pictures, the rest
        /// parsed but not decoded, and every picture around a suspected defect), or
        /// pinned `full` (every picture), `reference` (no non-reference pictures) or
        /// `key` (key pictures only). Overrides `[decode] level` of --detect-config;
        /// docs/events.md says what each level sees.
        #[arg(long, value_name = "LEVEL", value_parser = ["auto", "full", "reference", "key"])]
        decode_level: Option<String>,
        /// Write a JPEG thumbnail (320 px wide) of each picture defect's start to
        /// DIR/{defect_id}.jpg (created if missing); JSON events then carry its path
        /// in `thumb`.
        #[arg(long, value_name = "DIR")]
        thumbs: Option<PathBuf>,
        /// Write a self-contained HTML report to FILE at the end: the input's
        /// properties, a timeline of the defects, per-second plots of luma, motion,
        /// block edges and sound level with the thresholds, and the thumbnails. Decodes
        /// every picture unless --decode-level says otherwise.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
    /// Run the built-in synthetic stream with scripted defects (no camera, no broker).
    Demo {
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Pace the stream at real time (25 s) instead of as fast as possible.
        #[arg(long)]
        realtime: bool,
        /// Also publish the events to this MQTT broker (mqtt://host:port or
        /// mqtts://...), on vqprobe/{probe}/demo/events.
        #[arg(long, value_name = "URL")]
        mqtt: Option<String>,
        /// Write a self-contained HTML report of the run to FILE (see `check --report`).
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
    /// The agent: watch every stream of the configuration file and publish events over
    /// MQTT until SIGTERM (SIGHUP reloads the file).
    Run {
        /// Configuration file (reference: docs/config.md).
        #[arg(long, value_name = "PATH", default_value = app::agent::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Only load and validate the configuration, then exit (0 when valid).
        #[arg(long)]
        check_config: bool,
    },
    /// Manage a fleet's stream catalog on the broker (docs/fleet.md).
    Fleet {
        #[command(subcommand)]
        op: FleetOp,
    },
}

#[derive(Subcommand, Debug)]
enum FleetOp {
    /// Add (or replace) a stream in the catalog.
    Add {
        id: Option<String>,
        url: Option<String>,
        #[arg(long, value_name = "PATH", default_value = app::agent::config::DEFAULT_PATH)]
        config: PathBuf,
        #[arg(long)]
        fleet: Option<String>,
        #[arg(long)]
        credentials: Option<String>,
        #[arg(long = "loop")]
        looped: bool,
        #[arg(long)]
        pace: Option<String>,
        #[arg(long)]
        rtsp_transport: Option<String>,
        #[arg(long)]
        max_bandwidth: Option<u64>,
        #[arg(long)]
        entry: Option<PathBuf>,
    },
    /// Remove a stream from the catalog.
    Remove {
        id: String,
        #[arg(long, value_name = "PATH", default_value = app::agent::config::DEFAULT_PATH)]
        config: PathBuf,
        #[arg(long)]
        fleet: Option<String>,
    },
    /// List the catalog, its members and who watches what.
    List {
        #[arg(long, value_name = "PATH", default_value = app::agent::config::DEFAULT_PATH)]
        config: PathBuf,
        #[arg(long)]
        fleet: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

fn main() -> ExitCode {
    app::tune_allocator();
    let cli = Cli::parse();
    // The agent logs one line per event and its lifecycle at `info`; the one-shot
    // commands print events on stdout and keep stderr for problems. RUST_LOG wins.
    let default_level = match cli.command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    // RUST_LOG: `level` or `target=level` directives separated by commas, e.g.
    // `info,vqprobe::ingest=debug`. (`Targets` rather than `EnvFilter`: no regex engine
    // in a binary that must stay small; span and field filters are not supported.)
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| match s.parse::<Targets>() {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("vqprobe: ignoring RUST_LOG={s:?}: {e}");
                None
            }
        })
        .unwrap_or_else(|| default_level.parse().unwrap_or_default());
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(filter);
    // Under systemd stderr goes to the journal, which stamps every line itself.
    if journald {
        registry.with(layer.without_time()).init();
    } else {
        registry.with(layer).init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vqprobe: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            // Errors are redacted where they are made; this is the last line of defence.
            eprintln!(
                "vqprobe: {}",
                vqprobe::redact::redact_in_text(&e.to_string())
            );
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Command) -> vqprobe::Result<ExitCode> {
    let mut stdout = std::io::stdout();
    match cmd {
        Command::Check {
            input,
            format,
            duration,
            stall_after,
            connect_timeout,
            ca_file,
            max_bandwidth,
            rtsp_transport,
            detect_config,
            stream_id,
            probe_id,
            decode_level,
            thumbs,
            report,
        } => {
            let opts = check::CheckArgs {
                input,
                format,
                duration,
                stall_after,
                connect_timeout,
                ca_file,
                max_bandwidth,
                rtsp_transport,
                detect_config,
                stream_id,
                probe_id,
                decode_level: decode_level.as_deref().and_then(LevelChoice::parse),
                thumbs,
                report,
            }
            .resolve()?;
            let report = check::run(&opts, &mut stdout).await?;
            eprintln!("{}", report.stats.coverage_line());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            format,
            realtime,
            mqtt,
            report,
        } => {
            let opts = demo::DemoOptions {
                format,
                realtime,
                mqtt,
                report,
            };
            let report = demo::run(&opts, &app::hostname(), &mut stdout).await?;
            match format {
                OutputFormat::Text => println!("{}", report.summary()),
                OutputFormat::Json => eprintln!("{}", report.summary()),
            }
            if report.unacknowledged > 0 {
                eprintln!(
                    "vqprobe: {} events were not acknowledged by the broker within 10 s",
                    report.unacknowledged
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Fleet { op } => {
            use vqprobe::app::fleet::cli;
            let line = match op {
                FleetOp::Add {
                    id,
                    url,
                    config,
                    fleet,
                    credentials,
                    looped,
                    pace,
                    rtsp_transport,
                    max_bandwidth,
                    entry,
                } => {
                    let args = cli::AddArgs {
                        id,
                        url,
                        credentials,
                        looped,
                        pace,
                        rtsp_transport,
                        max_bandwidth,
                        entry,
                    };
                    cli::add(&config, fleet.as_deref(), &args).await?
                }
                FleetOp::Remove { id, config, fleet } => {
                    cli::remove(&config, fleet.as_deref(), &id).await?
                }
                FleetOp::List {
                    config,
                    fleet,
                    format,
                } => cli::list(&config, fleet.as_deref(), format == OutputFormat::Json).await?,
            };
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            check_config,
        } => {
            if check_config {
                println!("{}", app::agent::config::check_file(&config)?);
                return Ok(ExitCode::SUCCESS);
            }
            match app::agent::run(&config).await? {
                app::agent::Exit::Clean => Ok(ExitCode::SUCCESS),
                // A second signal: now, without waiting for the runtime's threads.
                app::agent::Exit::Now => std::process::exit(130),
            }
        }
    }
}
