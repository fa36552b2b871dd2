//! The command line: [`parse`] turns the arguments into a [`Command`] or a [`UsageError`];
//! the binary prints (help, version, errors) and runs the command.
//!
//! Hand-written on `lexopt` (a tokenizer: `--opt value`, `--opt=value`, `--`): clap was
//! about 190 KiB of the edge binary's 6-MiB budget (docs/PERFORMANCE.md, "Binary size").
//!
//! Adding a command: its help text (`const`, kept next to the others), one function
//! `fn name(p: &mut Parser) -> Result<Command, UsageError>` reading its options, and one
//! arm in [`parse`]. A command with commands of its own (`fleet add|remove|list`) reads
//! its next positional value in its function and dispatches to one function per nested
//! command in the same way, with a `Ctx` naming `"fleet add"` for the error hint.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use lexopt::{Arg, Parser};

use crate::app::agent::config::DEFAULT_PATH;
use crate::app::check::CheckArgs;
use crate::app::demo::DemoOptions;
use crate::config::LevelChoice;

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// `check INPUT [options]`.
    Check(CheckArgs),
    /// `demo [options]`.
    Demo(DemoOptions),
    /// `run [--config PATH] [--check-config]`.
    Run(RunArgs),
    /// `fleet add|remove|list [--config PATH] [--fleet NAME] …`.
    Fleet(FleetCommand),
    /// `--help`, `-h` or `help [COMMAND]`: print this text on stdout, exit 0.
    Help(&'static str),
    /// `--version` or `-V`: print `vqprobe {VERSION}` on stdout, exit 0.
    Version,
}

/// `vqprobe run`'s options.
#[derive(Debug, Clone, PartialEq)]
pub struct RunArgs {
    /// `--config PATH` (default [`DEFAULT_PATH`]).
    pub config: PathBuf,
    /// `--check-config`: only load and validate the file.
    pub check_config: bool,
}

/// `vqprobe fleet …`: the catalog operation, the configuration file whose broker
/// settings it uses (default [`DEFAULT_PATH`]) and the fleet (default its `[fleet] name`).
#[derive(Debug, Clone)]
pub struct FleetCommand {
    pub config: PathBuf,
    pub fleet: Option<String>,
    pub op: FleetOp,
}

/// What `vqprobe fleet` does.
#[derive(Debug, Clone)]
pub enum FleetOp {
    /// `add ID URL [options]` or `add --entry FILE`.
    Add(crate::app::fleet::cli::AddArgs),
    /// `remove ID`.
    Remove(String),
    /// `list [--format text|json]`.
    List(crate::publish::OutputFormat),
}

/// A command line that cannot be parsed. The binary prints `vqprobe: error: {self}` on
/// stderr (one line, with the hint to the command's help) and exits 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    /// What is wrong, naming the option or argument.
    pub message: String,
    /// The command whose help the hint names (`check`, `fleet add`); empty at the top.
    pub command: &'static str,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.command.is_empty() { "" } else { " " };
        write!(
            f,
            "{} (see vqprobe{sep}{} --help)",
            self.message, self.command
        )
    }
}

impl std::error::Error for UsageError {}

/// The exit code of a usage error (clap's, and the shell convention).
pub const USAGE_EXIT_CODE: u8 = 2;

/// `vqprobe --help`.
pub const HELP: &str = "\
Watches video streams like a viewer and reports black, frozen, corrupt and silent pictures

Usage: vqprobe <COMMAND>

Commands:
  check  Analyse one input and print one line per defect event, then exit
  demo   Run the built-in synthetic stream with scripted defects (no camera, no broker)
  run    The agent: watch every stream of the configuration file and publish events
         over MQTT until SIGTERM (SIGHUP reloads the file)
  fleet  Manage a fleet's stream catalog on the broker: add, remove, list
         (docs/fleet.md)
  help   Print this message or the help of the given command

Options:
  -h, --help     Print help
  -V, --version  Print version

`vqprobe COMMAND --help` describes the command's options.
";

/// `vqprobe check --help`.
pub const CHECK_HELP: &str = "\
Analyse one input and print one line per defect event, then exit

Usage: vqprobe check [OPTIONS] <INPUT>

Arguments:
  <INPUT>
          A local MPEG-TS file (path or file:// URL), an rtsp:// URL (credentials as
          rtsp://user:password@host/...; never printed), or an HLS playlist
          (http(s)://…/index.m3u8 or a local .m3u8)

Options:
      --format <FORMAT>
          Output format: human-readable text, or JSON lines exactly as published
          [default: text] [possible values: text, json]
      --duration <SECS>
          Files: analyse at most this many seconds of media. Live sources: run this many
          seconds by the wall clock (default: until Ctrl-C)
      --stall-after <SECS>
          Live sources: seconds without media before a `stall` is reported
          [default: 2]
      --connect-timeout <SECS>
          Live sources: seconds allowed to connect (and for each request) before the
          source counts as down
          [default: 10]
      --ca-file <PATH>
          HLS over https://: extra trusted CA certificates (PEM). Certificates are always
          verified
      --max-bandwidth <BPS>
          HLS master playlists: the highest-bandwidth variant at or below this many
          bits/s (default: the highest bandwidth)
      --rtsp-transport <RTSP_TRANSPORT>
          RTP transport for rtsp:// inputs: `tcp` interleaved in the RTSP TCP connection
          (robust through NAT and firewalls), or `udp` (retina: experimental, no reordering)
          [default: tcp] [possible values: tcp, udp]
      --detect-config <PATH>
          TOML file with detector settings (the `[detect]` reference in docs/config.md)
      --stream-id <STREAM_ID>
          Stream id put in events (default: the input's file name)
      --probe-id <PROBE_ID>
          Probe id put in events (default: the host name)
      --decode-level <LEVEL>
          How much video to decode: `auto` (the default: key pictures, the rest parsed
          but not decoded, and every picture around a suspected defect), or pinned `full`
          (every picture), `reference` (no non-reference pictures) or `key` (key pictures
          only). Overrides `[decode] level` of --detect-config; docs/events.md says what
          each level sees
          [possible values: auto, full, reference, key]
      --thumbs <DIR>
          Write a JPEG thumbnail (320 px wide) of each picture defect's start to
          DIR/{defect_id}.jpg (created if missing); JSON events then carry its path in
          `thumb`
      --report <FILE>
          Write a self-contained HTML report to FILE at the end: the input's properties,
          a timeline of the defects, per-second plots of luma, motion, block edges and
          sound level with the thresholds, and the thumbnails. Decodes every picture
          unless --decode-level says otherwise
  -h, --help
          Print help
";

/// `vqprobe demo --help`.
pub const DEMO_HELP: &str = "\
Run the built-in synthetic stream with scripted defects (no camera, no broker)

Usage: vqprobe demo [OPTIONS]

Options:
      --format <FORMAT>
          Output format: human-readable text, or JSON lines exactly as published (the
          summary then goes to stderr)
          [default: text] [possible values: text, json]
      --realtime
          Pace the stream at real time (64 s) instead of as fast as possible
      --mqtt <URL>
          Also publish the events to this MQTT broker (mqtt://host:port or mqtts://...),
          on vqprobe/{probe}/demo/events
      --report <FILE>
          Write a self-contained HTML report of the run to FILE (see `check --report`)
  -h, --help
          Print help
";

/// `vqprobe run --help`.
pub const RUN_HELP: &str = "\
The agent: watch every stream of the configuration file and publish events over MQTT
until SIGTERM (SIGHUP reloads the file)

Usage: vqprobe run [OPTIONS]

Options:
      --config <PATH>
          Configuration file (reference: docs/config.md)
          [default: /etc/vqprobe/config.toml]
      --check-config
          Only load and validate the configuration, then exit (0 when valid)
  -h, --help
          Print help
";

/// `vqprobe fleet --help`.
pub const FLEET_HELP: &str = "\
Manage a fleet's stream catalog on the broker (docs/fleet.md): retained messages on
{prefix}/fleet/{name}/streams/{id} that every member of the fleet reads

Usage: vqprobe fleet <add|remove|list> [OPTIONS]

Commands:
  add     Validate a stream entry and add (or replace) it in the catalog
  remove  Remove a stream from the catalog (and its error report)
  list    Show the catalog, who watches each stream, errors and the members

Options (every command):
      --config <PATH>
          Configuration file whose [mqtt] settings reach the broker, and whose
          [fleet] name is the default fleet [default: /etc/vqprobe/config.toml]
      --fleet <NAME>
          The fleet (default: the file's [fleet] name)
  -h, --help
          Print help

`vqprobe fleet COMMAND --help` describes the command's options.
";

/// `vqprobe fleet add --help`.
pub const FLEET_ADD_HELP: &str = "\
Validate a stream entry as the members will and add (or replace) it in the catalog
(retained, QoS 1, acknowledged by the broker)

Usage: vqprobe fleet add [OPTIONS] <ID> <URL>
       vqprobe fleet add [OPTIONS] --entry <FILE>

Arguments:
  <ID>   The stream's id (letters, digits, '-', '_', '.')
  <URL>  rtsp://host/path, http(s)://.../index.m3u8 or file:///clip.ts, without
         user info: name a credential instead

Options:
      --config <PATH>            [default: /etc/vqprobe/config.toml]
      --fleet <NAME>             The fleet (default: the file's [fleet] name)
      --credentials <NAME>       A [credentials.NAME] every member defines
      --loop                     file:// only: start again at the end
      --pace <PACE>              file:// only: realtime or fast
      --rtsp-transport <T>       tcp or udp
      --max-bandwidth <BPS>      HLS: the highest variant at or below this
      --entry <FILE>             The whole entry as JSON (the fields of a
                                 [[streams]] entry; - reads standard input)
  -h, --help                     Print help
";

/// `vqprobe fleet remove --help`.
pub const FLEET_REMOVE_HELP: &str = "\
Remove a stream from the catalog and clear its error report; its member stops it

Usage: vqprobe fleet remove [OPTIONS] <ID>

Options:
      --config <PATH>  [default: /etc/vqprobe/config.toml]
      --fleet <NAME>   The fleet (default: the file's [fleet] name)
  -h, --help           Print help
";

/// `vqprobe fleet list --help`.
pub const FLEET_LIST_HELP: &str = "\
Show the catalog: each stream, the members that watch it (from their retained
statuses), its error report; and the members online with their capacity

Usage: vqprobe fleet list [OPTIONS]

Options:
      --config <PATH>    [default: /etc/vqprobe/config.toml]
      --fleet <NAME>     The fleet (default: the file's [fleet] name)
      --format <FORMAT>  text or json [default: text]
  -h, --help             Print help
";

/// Parses the arguments after the program name (`std::env::args_os().skip(1)`).
pub fn parse<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut p = Parser::from_args(args);
    let top = Ctx("");
    match top.next(&mut p)? {
        None => Err(top.error("no command given: check, demo, run or fleet")),
        Some(Arg::Short('h') | Arg::Long("help")) => top.help(&mut p, HELP),
        Some(Arg::Short('V') | Arg::Long("version")) => match p.optional_value() {
            None => Ok(Command::Version),
            Some(v) => Err(top.error(format!(
                "--version takes no value (got '{}')",
                v.to_string_lossy()
            ))),
        },
        Some(Arg::Value(cmd)) => match cmd.to_str() {
            Some("check") => check(&mut p),
            Some("demo") => demo(&mut p),
            Some("run") => run(&mut p),
            Some("fleet") => fleet(&mut p),
            Some("help") => help(&mut p),
            _ => Err(top.error(format!(
                "unknown command '{}': check, demo, run or fleet",
                cmd.to_string_lossy()
            ))),
        },
        Some(arg) => Err(top.unexpected(arg)),
    }
}

/// `help [COMMAND]`.
fn help(p: &mut Parser) -> Result<Command, UsageError> {
    let ctx = Ctx("");
    let text = match ctx.next(p)? {
        None => HELP,
        Some(Arg::Value(cmd)) => match cmd.to_str() {
            Some("check") => CHECK_HELP,
            Some("demo") => DEMO_HELP,
            Some("run") => RUN_HELP,
            Some("fleet") => FLEET_HELP,
            Some("help") => HELP,
            _ => {
                return Err(ctx.error(format!(
                    "unknown command '{}': check, demo, run or fleet",
                    cmd.to_string_lossy()
                )))
            }
        },
        Some(arg) => return Err(ctx.unexpected(arg)),
    };
    match ctx.next(p)? {
        None => Ok(Command::Help(text)),
        Some(arg) => Err(ctx.unexpected(arg)),
    }
}

/// `check INPUT [options]`.
fn check(p: &mut Parser) -> Result<Command, UsageError> {
    let ctx = Ctx("check");
    let mut input = None;
    let mut format = None;
    let mut duration = None;
    let mut stall_after = None;
    let mut connect_timeout = None;
    let mut ca_file = None;
    let mut max_bandwidth = None;
    let mut rtsp_transport = None;
    let mut detect_config = None;
    let mut stream_id = None;
    let mut probe_id = None;
    let mut decode_level = None;
    let mut thumbs = None;
    let mut report = None;
    while let Some(arg) = ctx.next(p)? {
        match arg {
            Arg::Long("format") => ctx.set(&mut format, "--format", ctx.choice(p, "--format")?)?,
            Arg::Long("duration") => {
                let v = ctx.seconds(p, "--duration")?;
                ctx.set(&mut duration, "--duration", v)?
            }
            Arg::Long("stall-after") => {
                let v = ctx.seconds(p, "--stall-after")?;
                ctx.set(&mut stall_after, "--stall-after", v)?
            }
            Arg::Long("connect-timeout") => {
                let v = ctx.seconds(p, "--connect-timeout")?;
                ctx.set(&mut connect_timeout, "--connect-timeout", v)?
            }
            Arg::Long("ca-file") => {
                ctx.set(&mut ca_file, "--ca-file", ctx.path(p, "--ca-file")?)?
            }
            Arg::Long("max-bandwidth") => {
                let v = ctx.number(p, "--max-bandwidth", "a whole number of bits/s")?;
                ctx.set(&mut max_bandwidth, "--max-bandwidth", v)?
            }
            Arg::Long("rtsp-transport") => {
                let v = ctx.choice(p, "--rtsp-transport")?;
                ctx.set(&mut rtsp_transport, "--rtsp-transport", v)?
            }
            Arg::Long("detect-config") => {
                let v = ctx.path(p, "--detect-config")?;
                ctx.set(&mut detect_config, "--detect-config", v)?
            }
            Arg::Long("stream-id") => {
                let v = ctx.string(p, "--stream-id")?;
                ctx.set(&mut stream_id, "--stream-id", v)?
            }
            Arg::Long("probe-id") => {
                let v = ctx.string(p, "--probe-id")?;
                ctx.set(&mut probe_id, "--probe-id", v)?
            }
            Arg::Long("decode-level") => {
                let v = ctx.choice::<LevelChoice>(p, "--decode-level")?;
                ctx.set(&mut decode_level, "--decode-level", v)?
            }
            Arg::Long("thumbs") => ctx.set(&mut thumbs, "--thumbs", ctx.path(p, "--thumbs")?)?,
            Arg::Long("report") => ctx.set(&mut report, "--report", ctx.path(p, "--report")?)?,
            Arg::Short('h') | Arg::Long("help") => return ctx.help(p, CHECK_HELP),
            Arg::Value(v) if input.is_none() => {
                input = Some(v.into_string().map_err(|v| {
                    ctx.error(format!(
                        "INPUT is not valid UTF-8: '{}'",
                        v.to_string_lossy()
                    ))
                })?)
            }
            arg => return Err(ctx.unexpected(arg)),
        }
    }
    let Some(input) = input else {
        return Err(
            ctx.error("missing INPUT (a file, an rtsp:// URL or an HLS playlist) after 'check'")
        );
    };
    Ok(Command::Check(CheckArgs {
        input,
        format: format.unwrap_or_default(),
        duration,
        stall_after: stall_after.unwrap_or(2.0),
        connect_timeout: connect_timeout.unwrap_or(10.0),
        ca_file,
        max_bandwidth,
        rtsp_transport: rtsp_transport.unwrap_or_default(),
        detect_config,
        stream_id,
        probe_id,
        decode_level,
        thumbs,
        report,
    }))
}

/// `demo [options]`.
fn demo(p: &mut Parser) -> Result<Command, UsageError> {
    let ctx = Ctx("demo");
    let mut format = None;
    let mut realtime = false;
    let mut mqtt = None;
    let mut report = None;
    while let Some(arg) = ctx.next(p)? {
        match arg {
            Arg::Long("format") => ctx.set(&mut format, "--format", ctx.choice(p, "--format")?)?,
            Arg::Long("realtime") => ctx.flag(&mut realtime, "--realtime")?,
            Arg::Long("mqtt") => ctx.set(&mut mqtt, "--mqtt", ctx.string(p, "--mqtt")?)?,
            Arg::Long("report") => ctx.set(&mut report, "--report", ctx.path(p, "--report")?)?,
            Arg::Short('h') | Arg::Long("help") => return ctx.help(p, DEMO_HELP),
            arg => return Err(ctx.unexpected(arg)),
        }
    }
    Ok(Command::Demo(DemoOptions {
        format: format.unwrap_or_default(),
        realtime,
        mqtt,
        report,
    }))
}

/// `run [--config PATH] [--check-config]`.
fn run(p: &mut Parser) -> Result<Command, UsageError> {
    let ctx = Ctx("run");
    let mut config = None;
    let mut check_config = false;
    while let Some(arg) = ctx.next(p)? {
        match arg {
            Arg::Long("config") => ctx.set(&mut config, "--config", ctx.path(p, "--config")?)?,
            Arg::Long("check-config") => ctx.flag(&mut check_config, "--check-config")?,
            Arg::Short('h') | Arg::Long("help") => return ctx.help(p, RUN_HELP),
            arg => return Err(ctx.unexpected(arg)),
        }
    }
    Ok(Command::Run(RunArgs {
        config: config.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH)),
        check_config,
    }))
}

/// `fleet add|remove|list …`.
fn fleet(p: &mut Parser) -> Result<Command, UsageError> {
    let top = Ctx("fleet");
    let (ctx, help_text) = match top.next(p)? {
        None => return Err(top.error("missing command: add, remove or list")),
        Some(Arg::Short('h') | Arg::Long("help")) => return top.help(p, FLEET_HELP),
        Some(Arg::Value(op)) => match op.to_str() {
            Some("add") => (Ctx("fleet add"), FLEET_ADD_HELP),
            Some("remove") => (Ctx("fleet remove"), FLEET_REMOVE_HELP),
            Some("list") => (Ctx("fleet list"), FLEET_LIST_HELP),
            _ => {
                return Err(top.error(format!(
                    "unknown command '{}': add, remove or list",
                    op.to_string_lossy()
                )))
            }
        },
        Some(arg) => return Err(top.unexpected(arg)),
    };
    let mut config = None;
    let mut fleet = None;
    let mut positional: Vec<String> = Vec::new();
    let mut add = crate::app::fleet::cli::AddArgs::default();
    let mut format = None;
    let is = |name: &str| ctx.0 == name;
    while let Some(arg) = ctx.next(p)? {
        match arg {
            Arg::Long("config") => ctx.set(&mut config, "--config", ctx.path(p, "--config")?)?,
            Arg::Long("fleet") => ctx.set(&mut fleet, "--fleet", ctx.string(p, "--fleet")?)?,
            Arg::Short('h') | Arg::Long("help") => return ctx.help(p, help_text),
            Arg::Long("credentials") if is("fleet add") => {
                let v = ctx.string(p, "--credentials")?;
                ctx.set(&mut add.credentials, "--credentials", v)?
            }
            Arg::Long("loop") if is("fleet add") => ctx.flag(&mut add.looped, "--loop")?,
            Arg::Long("pace") if is("fleet add") => {
                let v = ctx.string(p, "--pace")?;
                ctx.set(&mut add.pace, "--pace", v)?
            }
            Arg::Long("rtsp-transport") if is("fleet add") => {
                let v = ctx.string(p, "--rtsp-transport")?;
                ctx.set(&mut add.rtsp_transport, "--rtsp-transport", v)?
            }
            Arg::Long("max-bandwidth") if is("fleet add") => {
                let v = ctx.number(p, "--max-bandwidth", "a whole number of bits/s")?;
                ctx.set(&mut add.max_bandwidth, "--max-bandwidth", v)?
            }
            Arg::Long("entry") if is("fleet add") => {
                ctx.set(&mut add.entry, "--entry", ctx.path(p, "--entry")?)?
            }
            Arg::Long("format") if is("fleet list") => {
                ctx.set(&mut format, "--format", ctx.choice(p, "--format")?)?
            }
            Arg::Value(v) => {
                positional.push(v.into_string().map_err(|v| {
                    ctx.error(format!("'{}' is not valid UTF-8", v.to_string_lossy()))
                })?)
            }
            arg => return Err(ctx.unexpected(arg)),
        }
    }
    let op = match ctx.0 {
        "fleet add" => {
            match (add.entry.is_some(), positional.len()) {
                (true, 0) => {}
                (false, 2) => {
                    add.url = positional.pop();
                    add.id = positional.pop();
                }
                (true, _) => {
                    return Err(ctx.error("give either --entry FILE or ID and URL, not both"))
                }
                (false, _) => return Err(ctx.error("expected ID and URL (or --entry FILE)")),
            }
            FleetOp::Add(add)
        }
        "fleet remove" => match <[String; 1]>::try_from(positional) {
            Ok([id]) => FleetOp::Remove(id),
            Err(_) => return Err(ctx.error("expected one stream ID")),
        },
        _ => {
            if let Some(v) = positional.first() {
                return Err(ctx.error(format!("unexpected argument '{v}'")));
            }
            FleetOp::List(format.unwrap_or_default())
        }
    };
    Ok(Command::Fleet(FleetCommand {
        config: config.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH)),
        fleet,
        op,
    }))
}

/// The command being parsed (for the hint of its errors) and the value readers, which
/// word every error with the option's name.
#[derive(Debug, Clone, Copy)]
struct Ctx(&'static str);

impl Ctx {
    fn error(self, message: impl Into<String>) -> UsageError {
        UsageError {
            message: message.into(),
            command: self.0,
        }
    }

    /// The next option or positional argument.
    fn next(self, p: &mut Parser) -> Result<Option<Arg<'_>>, UsageError> {
        p.next().map_err(|e| self.lexopt(e))
    }

    /// An option or argument this command does not take.
    fn unexpected(self, arg: Arg<'_>) -> UsageError {
        match arg {
            Arg::Short(c) => self.error(format!("unknown option '-{c}'")),
            Arg::Long(name) => self.error(format!("unknown option '--{name}'")),
            Arg::Value(v) => self.error(format!("unexpected argument '{}'", v.to_string_lossy())),
        }
    }

    fn lexopt(self, e: lexopt::Error) -> UsageError {
        match e {
            // A flag given a value: `--realtime=yes`.
            lexopt::Error::UnexpectedValue { option, value } => self.error(format!(
                "{option} takes no value (got '{}')",
                value.to_string_lossy()
            )),
            lexopt::Error::MissingValue {
                option: Some(option),
            } => self.error(format!("missing value for {option}")),
            e => self.error(e.to_string()),
        }
    }

    /// `-h` or `--help` (`--help=x` is an error): the command's help, whatever follows.
    fn help(self, p: &mut Parser, text: &'static str) -> Result<Command, UsageError> {
        match p.optional_value() {
            None => Ok(Command::Help(text)),
            Some(v) => Err(self.error(format!(
                "--help takes no value (got '{}')",
                v.to_string_lossy()
            ))),
        }
    }

    /// The value of option `opt`: `--opt=VALUE` or `--opt VALUE`. In the second form a
    /// value that starts with `-` is taken for a forgotten value followed by the next
    /// option (as clap did), unless it is a number (`--connect-timeout -1` then gets the
    /// library's range error); `--opt=-x` passes anything.
    fn value(self, p: &mut Parser, opt: &str) -> Result<OsString, UsageError> {
        if let Some(v) = p.optional_value() {
            return Ok(v);
        }
        let v = p.value().map_err(|e| self.lexopt(e))?;
        let s = v.to_string_lossy();
        if s.len() > 1 && s.starts_with('-') && s.parse::<f64>().is_err() {
            return Err(self.error(format!(
                "missing value for {opt} before '{s}' (a value that starts with '-' is \
                 written {opt}=VALUE)"
            )));
        }
        Ok(v)
    }

    fn string(self, p: &mut Parser, opt: &str) -> Result<String, UsageError> {
        self.value(p, opt)?.into_string().map_err(|v| {
            self.error(format!(
                "{opt}: '{}' is not valid UTF-8",
                v.to_string_lossy()
            ))
        })
    }

    fn path(self, p: &mut Parser, opt: &str) -> Result<PathBuf, UsageError> {
        Ok(PathBuf::from(self.value(p, opt)?))
    }

    /// A number, `expected` describing it in the error. Range checks are the library's
    /// (`CheckArgs::resolve` names the option).
    fn number<T: FromStr>(
        self,
        p: &mut Parser,
        opt: &str,
        expected: &str,
    ) -> Result<T, UsageError> {
        let s = self.string(p, opt)?;
        s.parse()
            .map_err(|_| self.error(format!("{opt}: invalid value '{s}' (expected {expected})")))
    }

    fn seconds(self, p: &mut Parser, opt: &str) -> Result<f64, UsageError> {
        self.number(p, opt, "a number of seconds")
    }

    /// One of a fixed set of values; the error lists them.
    fn choice<T>(self, p: &mut Parser, opt: &str) -> Result<T, UsageError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let s = self.string(p, opt)?;
        s.parse().map_err(|e| self.error(format!("{opt}: {e}")))
    }

    /// Stores the value of an option that may be given once.
    fn set<T>(self, slot: &mut Option<T>, opt: &str, value: T) -> Result<(), UsageError> {
        if slot.is_some() {
            return Err(self.error(format!("{opt} was given more than once")));
        }
        *slot = Some(value);
        Ok(())
    }

    /// Sets a flag that may be given once.
    fn flag(self, slot: &mut bool, opt: &str) -> Result<(), UsageError> {
        if *slot {
            return Err(self.error(format!("{opt} was given more than once")));
        }
        *slot = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::rtsp::RtspTransport;
    use crate::publish::OutputFormat;

    fn ok(args: &[&str]) -> Command {
        match parse(args) {
            Ok(c) => c,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn check(args: &[&str]) -> CheckArgs {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        match ok(&all) {
            Command::Check(c) => c,
            other => panic!("{all:?}: {other:?}"),
        }
    }

    fn err(args: &[&str]) -> UsageError {
        match parse(args) {
            Ok(c) => panic!("{args:?} parsed: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn fleet_commands_parse_with_their_options_and_errors() {
        let Command::Fleet(f) = ok(&[
            "fleet",
            "add",
            "--config=/c.toml",
            "cam1",
            "rtsp://h/x",
            "--credentials",
            "site-a",
            "--rtsp-transport",
            "udp",
            "--max-bandwidth",
            "5000000",
        ]) else {
            panic!("not fleet")
        };
        assert_eq!(f.config, PathBuf::from("/c.toml"));
        assert_eq!(f.fleet, None);
        let FleetOp::Add(a) = f.op else { panic!() };
        assert_eq!(
            (a.id.as_deref(), a.url.as_deref(), a.credentials.as_deref()),
            (Some("cam1"), Some("rtsp://h/x"), Some("site-a"))
        );
        assert_eq!(
            (
                a.rtsp_transport.as_deref(),
                a.max_bandwidth,
                a.looped,
                a.entry
            ),
            (Some("udp"), Some(5_000_000), false, None)
        );
        let Command::Fleet(f) = ok(&["fleet", "add", "--entry", "-", "--fleet", "eu"]) else {
            panic!()
        };
        assert_eq!(f.config, PathBuf::from(DEFAULT_PATH));
        assert_eq!(f.fleet.as_deref(), Some("eu"));
        assert!(
            matches!(f.op, FleetOp::Add(a) if a.entry == Some(PathBuf::from("-")) && a.id.is_none())
        );
        let Command::Fleet(f) = ok(&["fleet", "remove", "cam1"]) else {
            panic!()
        };
        assert!(matches!(f.op, FleetOp::Remove(ref id) if id == "cam1"));
        let Command::Fleet(f) = ok(&["fleet", "list", "--format", "json"]) else {
            panic!()
        };
        assert!(matches!(f.op, FleetOp::List(OutputFormat::Json)));
        assert!(matches!(
            ok(&["fleet", "--help"]),
            Command::Help(FLEET_HELP)
        ));
        assert!(matches!(
            ok(&["fleet", "add", "-h"]),
            Command::Help(FLEET_ADD_HELP)
        ));
        assert!(matches!(ok(&["help", "fleet"]), Command::Help(FLEET_HELP)));
        assert_err(&["fleet"], "missing command: add, remove or list", "fleet");
        assert_err(&["fleet", "move"], "unknown command 'move'", "fleet");
        assert_err(
            &["fleet", "add", "cam1"],
            "expected ID and URL",
            "fleet add",
        );
        assert_err(
            &["fleet", "add", "--entry", "e.json", "cam1", "u"],
            "not both",
            "fleet add",
        );
        assert_err(
            &["fleet", "remove"],
            "expected one stream ID",
            "fleet remove",
        );
        assert_err(
            &["fleet", "list", "extra"],
            "unexpected argument 'extra'",
            "fleet list",
        );
        // Options of one operation are not taken by another.
        assert_err(
            &["fleet", "list", "--loop"],
            "unknown option '--loop'",
            "fleet list",
        );
        assert_err(
            &["fleet", "remove", "x", "--format", "json"],
            "unknown option '--format'",
            "fleet remove",
        );
        assert_err(
            &["fleet", "list", "--format", "xml"],
            "--format",
            "fleet list",
        );
        assert_err(
            &["fleet", "add", "a", "b", "--max-bandwidth", "lots"],
            "--max-bandwidth",
            "fleet add",
        );
    }

    /// The error's line names `needle` and the hint names the command's help.
    fn assert_err(args: &[&str], needle: &str, command: &str) {
        let e = err(args);
        let line = e.to_string();
        assert!(line.contains(needle), "{args:?}: {line}");
        assert_eq!(e.command, command, "{args:?}: {line}");
        let hint = if command.is_empty() {
            "(see vqprobe --help)".to_owned()
        } else {
            format!("(see vqprobe {command} --help)")
        };
        assert!(line.ends_with(&hint), "{args:?}: {line}");
        assert!(!line.contains('\n'), "{args:?}: {line}");
    }

    #[test]
    fn check_defaults() {
        let c = check(&["clip.ts"]);
        assert_eq!(c.input, "clip.ts");
        assert_eq!(c.format, OutputFormat::Text);
        assert_eq!(c.duration, None);
        assert_eq!(c.stall_after, 2.0);
        assert_eq!(c.connect_timeout, 10.0);
        assert_eq!(c.ca_file, None);
        assert_eq!(c.max_bandwidth, None);
        assert_eq!(c.rtsp_transport, RtspTransport::Tcp);
        assert_eq!(c.detect_config, None);
        assert_eq!(c.stream_id, None);
        assert_eq!(c.probe_id, None);
        assert_eq!(c.decode_level, None);
        assert_eq!(c.thumbs, None);
        assert_eq!(c.report, None);
    }

    #[test]
    fn check_every_option_in_both_forms() {
        let separate = [
            "--format",
            "json",
            "--duration",
            "1.5",
            "--stall-after",
            "3",
            "--connect-timeout",
            "0.25",
            "--ca-file",
            "ca.pem",
            "--max-bandwidth",
            "2500000",
            "--rtsp-transport",
            "udp",
            "--detect-config",
            "d.toml",
            "--stream-id",
            "cam1",
            "--probe-id",
            "edge-1",
            "--decode-level",
            "reference",
            "--thumbs",
            "th",
            "--report",
            "r.html",
        ];
        let joined: Vec<String> = separate
            .chunks(2)
            .map(|kv| format!("{}={}", kv[0], kv[1]))
            .collect();
        let joined: Vec<&str> = joined.iter().map(String::as_str).collect();
        for (form, opts) in [("separate", separate.to_vec()), ("joined", joined)] {
            // INPUT first, last and in the middle.
            for at in [0, opts.len(), 4] {
                let mut args = opts.clone();
                args.insert(at, "rtsp://cam/x");
                let c = check(&args);
                assert_eq!(c.input, "rtsp://cam/x", "{form} {at}");
                assert_eq!(c.format, OutputFormat::Json, "{form}");
                assert_eq!(c.duration, Some(1.5), "{form}");
                assert_eq!(c.stall_after, 3.0, "{form}");
                assert_eq!(c.connect_timeout, 0.25, "{form}");
                assert_eq!(c.ca_file, Some(PathBuf::from("ca.pem")), "{form}");
                assert_eq!(c.max_bandwidth, Some(2_500_000), "{form}");
                assert_eq!(c.rtsp_transport, RtspTransport::Udp, "{form}");
                assert_eq!(c.detect_config, Some(PathBuf::from("d.toml")), "{form}");
                assert_eq!(c.stream_id.as_deref(), Some("cam1"), "{form}");
                assert_eq!(c.probe_id.as_deref(), Some("edge-1"), "{form}");
                assert_eq!(c.decode_level, Some(LevelChoice::Reference), "{form}");
                assert_eq!(c.thumbs, Some(PathBuf::from("th")), "{form}");
                assert_eq!(c.report, Some(PathBuf::from("r.html")), "{form}");
            }
        }
    }

    #[test]
    fn check_values_that_look_like_options() {
        // `=` passes anything; a negative number passes in both forms (the library
        // refuses it with the option's name); `--` ends the options.
        assert_eq!(
            check(&["x", "--stream-id=-cam"]).stream_id.as_deref(),
            Some("-cam")
        );
        assert_eq!(check(&["x", "--connect-timeout=-1"]).connect_timeout, -1.0);
        assert_eq!(
            check(&["x", "--connect-timeout", "-1"]).connect_timeout,
            -1.0
        );
        assert_eq!(check(&["--", "-odd.ts"]).input, "-odd.ts");
        assert_eq!(check(&["x", "--stream-id="]).stream_id.as_deref(), Some(""));
        // What the library range-checks is only parsed here.
        assert!(check(&["x", "--stall-after=NaN"]).stall_after.is_nan());
        assert_eq!(
            check(&["x", "--stall-after", "inf"]).stall_after,
            f64::INFINITY
        );
        // Each level.
        for (s, l) in [
            ("auto", LevelChoice::Auto),
            ("full", LevelChoice::Full),
            ("reference", LevelChoice::Reference),
            ("key", LevelChoice::Key),
        ] {
            assert_eq!(check(&["x", "--decode-level", s]).decode_level, Some(l));
        }
        assert_eq!(check(&["x", "--format", "text"]).format, OutputFormat::Text);
        assert_eq!(
            check(&["x", "--rtsp-transport=tcp"]).rtsp_transport,
            RtspTransport::Tcp
        );
    }

    #[test]
    fn check_errors_name_the_option() {
        let cases: &[(&[&str], &str)] = &[
            (&["check"], "missing INPUT"),
            (&["check", "--format", "json"], "missing INPUT"),
            (&["check", "a.ts", "b.ts"], "unexpected argument 'b.ts'"),
            (&["check", "a.ts", "--bogus"], "unknown option '--bogus'"),
            (&["check", "a.ts", "--bogus=1"], "unknown option '--bogus'"),
            (&["check", "a.ts", "-x"], "unknown option '-x'"),
            (&["check", "a.ts", "-V"], "unknown option '-V'"),
            (&["check", "a.ts", "--format"], "missing value for --format"),
            (
                &["check", "a.ts", "--stream-id", "--format", "json"],
                "missing value for --stream-id before '--format' (a value that starts with '-' is \
                 written --stream-id=VALUE)",
            ),
            (
                &["check", "a.ts", "--format", "xml"],
                "--format: invalid value 'xml' (expected one of: text, json)",
            ),
            (
                &["check", "a.ts", "--format=JSON"],
                "--format: invalid value 'JSON'",
            ),
            (
                &["check", "a.ts", "--rtsp-transport", "http"],
                "--rtsp-transport: invalid value 'http' (expected one of: tcp, udp)",
            ),
            (
                &["check", "a.ts", "--decode-level=most"],
                "--decode-level: invalid value 'most' (expected one of: auto, full, \
                 reference, key)",
            ),
            (
                &["check", "a.ts", "--stall-after", "2s"],
                "--stall-after: invalid value '2s' (expected a number of seconds)",
            ),
            (
                &["check", "a.ts", "--duration="],
                "--duration: invalid value ''",
            ),
            (
                &["check", "a.ts", "--connect-timeout=ten"],
                "--connect-timeout: invalid value 'ten'",
            ),
            (
                &["check", "a.ts", "--max-bandwidth", "1.5e6"],
                "--max-bandwidth: invalid value '1.5e6' (expected a whole number of bits/s)",
            ),
            (
                &["check", "a.ts", "--max-bandwidth=-1"],
                "--max-bandwidth: invalid value '-1'",
            ),
            (&["check", "a.ts", "--report"], "missing value for --report"),
            (
                &["check", "a.ts", "--format", "json", "--format", "text"],
                "--format was given more than once",
            ),
        ];
        for (args, needle) in cases {
            assert_err(args, needle, "check");
        }
    }

    #[test]
    fn demo_options() {
        let Command::Demo(d) = ok(&["demo"]) else {
            panic!()
        };
        assert_eq!(d.format, OutputFormat::Text);
        assert!(!d.realtime && d.mqtt.is_none() && d.report.is_none());
        for args in [
            &[
                "demo",
                "--format",
                "json",
                "--realtime",
                "--mqtt",
                "mqtt://h:1883",
                "--report",
                "r.html",
            ][..],
            &[
                "demo",
                "--report=r.html",
                "--mqtt=mqtt://h:1883",
                "--realtime",
                "--format=json",
            ],
        ] {
            let Command::Demo(d) = ok(args) else {
                panic!("{args:?}")
            };
            assert_eq!(d.format, OutputFormat::Json, "{args:?}");
            assert!(d.realtime, "{args:?}");
            assert_eq!(d.mqtt.as_deref(), Some("mqtt://h:1883"), "{args:?}");
            assert_eq!(d.report, Some(PathBuf::from("r.html")), "{args:?}");
        }
        let cases: &[(&[&str], &str)] = &[
            (&["demo", "x"], "unexpected argument 'x'"),
            (
                &["demo", "--realtime=yes"],
                "--realtime takes no value (got 'yes')",
            ),
            (
                &["demo", "--realtime", "--realtime"],
                "--realtime was given more than once",
            ),
            (&["demo", "--mqtt"], "missing value for --mqtt"),
            (&["demo", "--duration", "3"], "unknown option '--duration'"),
            (
                &["demo", "--format", "yaml"],
                "--format: invalid value 'yaml'",
            ),
        ];
        for (args, needle) in cases {
            assert_err(args, needle, "demo");
        }
    }

    #[test]
    fn run_options() {
        let Command::Run(r) = ok(&["run"]) else {
            panic!()
        };
        assert_eq!(
            r,
            RunArgs {
                config: PathBuf::from("/etc/vqprobe/config.toml"),
                check_config: false
            }
        );
        for args in [
            &["run", "--config", "/tmp/c.toml", "--check-config"][..],
            &["run", "--check-config", "--config=/tmp/c.toml"],
        ] {
            let Command::Run(r) = ok(args) else {
                panic!("{args:?}")
            };
            assert_eq!(r.config, PathBuf::from("/tmp/c.toml"), "{args:?}");
            assert!(r.check_config, "{args:?}");
        }
        let cases: &[(&[&str], &str)] = &[
            (&["run", "--config"], "missing value for --config"),
            (
                &["run", "--check-config=1"],
                "--check-config takes no value",
            ),
            (&["run", "--conf", "x"], "unknown option '--conf'"),
            (&["run", "c.toml"], "unexpected argument 'c.toml'"),
        ];
        for (args, needle) in cases {
            assert_err(args, needle, "run");
        }
    }

    #[test]
    fn help_and_version() {
        for (args, text) in [
            (&["--help"][..], HELP),
            (&["-h"], HELP),
            (&["help"], HELP),
            (&["help", "check"], CHECK_HELP),
            (&["help", "demo"], DEMO_HELP),
            (&["help", "run"], RUN_HELP),
            (&["check", "--help"], CHECK_HELP),
            // Help wins over a missing INPUT and over options after it.
            (&["check", "-h", "--bogus"], CHECK_HELP),
            (&["check", "x.ts", "--format", "json", "--help"], CHECK_HELP),
            (&["demo", "-h"], DEMO_HELP),
            (&["run", "--help"], RUN_HELP),
        ] {
            match ok(args) {
                Command::Help(t) => assert_eq!(t, text, "{args:?}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
        for args in [&["--version"][..], &["-V"]] {
            assert!(matches!(ok(args), Command::Version), "{args:?}");
        }
        // An option before --help is still checked, as clap did.
        assert_err(&["check", "--bogus", "--help"], "--bogus", "check");
        assert_err(
            &["run", "--help=x"],
            "--help takes no value (got 'x')",
            "run",
        );
    }

    #[test]
    fn top_level_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "no command given: check, demo, run or fleet"),
            (
                &["chek", "x.ts"],
                "unknown command 'chek': check, demo, run or fleet",
            ),
            (&["--format", "json"], "unknown option '--format'"),
            (&["-x"], "unknown option '-x'"),
            (&["--version=1"], "--version takes no value (got '1')"),
            (&["--help=all"], "--help takes no value (got 'all')"),
            (&["help", "fly"], "unknown command 'fly'"),
            (&["help", "check", "demo"], "unexpected argument 'demo'"),
        ];
        for (args, needle) in cases {
            assert_err(args, needle, "");
        }
    }

    #[test]
    fn help_texts_name_every_option_and_default() {
        for opt in [
            "--format <FORMAT>",
            "--duration <SECS>",
            "--stall-after <SECS>",
            "--connect-timeout <SECS>",
            "--ca-file <PATH>",
            "--max-bandwidth <BPS>",
            "--rtsp-transport <RTSP_TRANSPORT>",
            "--detect-config <PATH>",
            "--stream-id <STREAM_ID>",
            "--probe-id <PROBE_ID>",
            "--decode-level <LEVEL>",
            "--thumbs <DIR>",
            "--report <FILE>",
            "[default: 2]",
            "[default: 10]",
            "[default: text]",
            "[default: tcp]",
            "[possible values: auto, full, reference, key]",
        ] {
            assert!(CHECK_HELP.contains(opt), "check: {opt}");
        }
        for opt in [
            "--format <FORMAT>",
            "--realtime",
            "--mqtt <URL>",
            "--report <FILE>",
        ] {
            assert!(DEMO_HELP.contains(opt), "demo: {opt}");
        }
        for opt in ["--config <PATH>", "--check-config", DEFAULT_PATH] {
            assert!(RUN_HELP.contains(opt), "run: {opt}");
        }
        for text in [HELP, CHECK_HELP, DEMO_HELP, RUN_HELP] {
            assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
        }
    }
}
