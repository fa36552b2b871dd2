//! The `vqprobe` binary: parses the command line (`vqprobe::cli`), sets up logging, hands
//! over to the library and prints.

use std::io::Write;
use std::process::ExitCode;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use vqprobe::app::{self, check, demo};
use vqprobe::cli::{self, Command};
use vqprobe::publish::OutputFormat;

fn main() -> ExitCode {
    app::tune_allocator();
    let command = match cli::parse(std::env::args_os().skip(1)) {
        // Written, not `print!`ed: `vqprobe --help | head -n 3` must not panic.
        Ok(Command::Help(text)) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            let _ = writeln!(std::io::stdout(), "vqprobe {}", vqprobe::VERSION);
            return ExitCode::SUCCESS;
        }
        Ok(command) => command,
        Err(e) => {
            eprintln!("vqprobe: error: {e}");
            return ExitCode::from(cli::USAGE_EXIT_CODE);
        }
    };
    // The agent logs one line per event and its lifecycle at `info`; the one-shot
    // commands print events on stdout and keep stderr for problems. RUST_LOG wins.
    let default_level = match command {
        Command::Run(_) => "info",
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
    match rt.block_on(run(command)) {
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
        Command::Check(args) => {
            let opts = args.resolve()?;
            let report = check::run(&opts, &mut stdout).await?;
            eprintln!("{}", report.stats.coverage_line());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(opts) => {
            let report = demo::run(&opts, &app::hostname(), &mut stdout).await?;
            match opts.format {
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
        Command::Fleet(f) => {
            use vqprobe::app::fleet::cli as fleet;
            use vqprobe::cli::FleetOp;
            let fleet_name = f.fleet.as_deref();
            let line = match &f.op {
                FleetOp::Add(args) => fleet::add(&f.config, fleet_name, args).await?,
                FleetOp::Remove(id) => fleet::remove(&f.config, fleet_name, id).await?,
                FleetOp::List(format) => {
                    fleet::list(&f.config, fleet_name, *format == OutputFormat::Json).await?
                }
            };
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            if args.check_config {
                println!("{}", app::agent::config::check_file(&args.config)?);
                return Ok(ExitCode::SUCCESS);
            }
            match app::agent::run(&args.config).await? {
                app::agent::Exit::Clean => Ok(ExitCode::SUCCESS),
                // A second signal: now, without waiting for the runtime's threads.
                app::agent::Exit::Now => std::process::exit(130),
            }
        }
        // Answered in `main` before the runtime starts.
        Command::Help(_) | Command::Version => Ok(ExitCode::SUCCESS),
    }
}
