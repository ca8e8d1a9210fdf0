//! The `camjobd` binary: command line → config → service → wait for SIGTERM/SIGINT.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use camjobd::config::{self, Config, ConfigError};
use camjobd::error::Error;
use camjobd::job::Service;
use camjobd::shutdown::{self, Stop};

const USAGE: &str = "\
camjobd — a camera job service for Raspberry Pi class boards

usage:
  camjobd                         run with the built-in default config (synthetic camera)
  camjobd --config FILE           run with a JSON config file
  camjobd --board NAME            run with a built-in board profile
  camjobd --check-config [...]    validate, print the effective config, exit
  camjobd --version | --help

Exit status: 0 clean shutdown, 2 usage or config error, 1 fatal runtime error.
";

/// How long shutdown may take before remaining threads are abandoned.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(1800);
/// How often `STATUS=` is refreshed for `systemctl status`.
const STATUS_EVERY: Duration = Duration::from_secs(5);

enum Source {
    Default,
    File(String),
    Board(String),
}

fn usage_error(msg: String) -> Error {
    Error::Usage(format!("{msg}\n\n{USAGE}"))
}

fn parse_args(args: &[String]) -> Result<Option<(Source, bool)>, Error> {
    let mut source = Source::Default;
    let mut check = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "--version" | "-V" => {
                println!("camjobd {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--check-config" => check = true,
            "--config" | "--board" => {
                if !matches!(source, Source::Default) {
                    return Err(usage_error("give only one of --config and --board".into()));
                }
                let v = it.next().ok_or_else(|| usage_error(format!("{a} needs a value")))?.clone();
                source = if a == "--config" { Source::File(v) } else { Source::Board(v) };
            }
            other => return Err(usage_error(format!("unknown argument {other:?}"))),
        }
    }
    Ok(Some((source, check)))
}

fn load(source: &Source) -> Result<Config, Error> {
    match source {
        Source::Default => Ok(Config::default()),
        Source::Board(name) => Ok(config::board(name)?),
        Source::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::Config(ConfigError { path: "--config".into(), message: format!("cannot read {path}: {e}") })
            })?;
            let mut config = Config::from_json(&text).map_err(|e| {
                Error::Config(ConfigError { path: e.path, message: format!("{} (in {path})", e.message) })
            })?;
            config.load_secret_files()?;
            Ok(config)
        }
    }
}

fn run(args: &[String]) -> Result<(), Error> {
    let Some((source, check)) = parse_args(args)? else { return Ok(()) };
    let config = load(&source)?;
    // Start-up commits all frame memory at once, and the threads: refuse what this board (and
    // the unit, for --check-config) cannot hold, naming the keys, rather than die in the
    // allocator or at "cannot start thread" and be restarted for ever.
    let budget = camjobd::budget::Budget::of(&config);
    let limits = if check { camjobd::budget::Limits::here_and_unit() } else { camjobd::budget::Limits::here() };
    budget.check(&limits)?;
    for w in camjobd::budget::frame_size_warnings(&config) {
        eprintln!("camjobd: warning: {w}");
    }
    if let Some(m) = &config.mqtt {
        // Reads and checks `mqtt.ca_file` (and the system's roots for mqtts://).
        camjobd::mqtt::Settings::resolve(&config, m)?;
    }
    if check {
        // What was given, so the output is itself a valid config: a token read from
        // `token_file` stays in its file (an inline token prints as `<redacted>`).
        let mut shown = config.clone();
        if shown.http.token_file.is_some() {
            shown.http.token = None;
        }
        // A closed stdout (`| head`) is not worth a panic.
        let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&shown).expect("config serializes"));
        // stdout stays a config; what it costs goes to stderr.
        eprintln!("camjobd: this config needs {budget}");
        eprintln!("camjobd: limits here: {limits}");
        return Ok(());
    }
    let logs = camjobd::logging::init(config.log.level.into())
        .map_err(|e| Error::Fatal(format!("cannot start logging: {e}")))?;
    let stop = Stop::new();
    let signals = shutdown::SignalThread::start(&stop)
        .map_err(|e| Error::Fatal(format!("cannot install signal handlers: {e}")))?;
    let service = Service::start(config, stop.clone())?;
    camjobd::sys::commit_heap(); // after the pools (docs/operations.md, "Fixed memory")
    println!("camjobd {} running; dashboard at http://{}/", env!("CARGO_PKG_VERSION"), service.local_addr());
    let _ = std::io::stdout().flush();
    let notifier = match camjobd::notify::Notifier::from_env() {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            log::warn!("NOTIFY_SOCKET is set but unusable ({e}); systemd will not hear READY");
            None
        }
        None => None,
    };
    let notify = |msg: &str| {
        if let Some(n) = &notifier {
            if let Err(e) = n.send(msg) {
                log::debug!("systemd notify: {e}");
            }
        }
    };
    notify(&format!("READY=1\nSTATUS={}\nMAINPID={}", service.status_line(), std::process::id()));
    let watchdog = camjobd::notify::watchdog_interval();
    let (mut pinged, mut status_at) = (Instant::now(), Instant::now());
    let mut sick_logged = false;
    loop {
        // Asleep until the stop token (a signal, or a thread that broke) or the next ping or
        // status line is due.
        let due = match (&notifier, watchdog) {
            (None, _) => Duration::from_secs(3600),
            // Unhealthy: not pinged, looked at again a period later.
            (Some(_), Some(every)) if sick_logged => every.min(STATUS_EVERY),
            (Some(_), Some(every)) => every.saturating_sub(pinged.elapsed()).min(STATUS_EVERY),
            (Some(_), None) => STATUS_EVERY.saturating_sub(status_at.elapsed()),
        };
        if stop.wait(due.max(Duration::from_millis(10))) {
            break;
        }
        if notifier.is_none() {
            continue;
        }
        if let Some(every) = watchdog.filter(|&w| pinged.elapsed() >= w) {
            // Only while every core thread is alive and going round: a hung one gets us restarted.
            match service.unhealthy(camjobd::status::STALE) {
                None => {
                    notify("WATCHDOG=1");
                    pinged = Instant::now();
                    sick_logged = false;
                }
                Some(why) if !sick_logged => {
                    log::error!("not pinging systemd's watchdog: {why} (every {every:?})");
                    notify(&format!("STATUS=unhealthy: {why}"));
                    sick_logged = true;
                }
                Some(_) => {}
            }
        }
        if status_at.elapsed() >= STATUS_EVERY && !sick_logged {
            notify(&format!("STATUS={}", service.status_line()));
            status_at = Instant::now();
        }
    }
    notify("STOPPING=1\nSTATUS=shutting down");
    log::info!("shutting down");
    let deadline = Instant::now() + SHUTDOWN_BUDGET;
    service.shutdown(deadline);
    signals.close(deadline);
    logs.wait(Instant::now() + Duration::from_millis(100));
    // Read after the shutdown: a thread may also break while winding down.
    match stop.failure() {
        Some(f) => Err(Error::Fatal(format!("{f}; exiting with status 1 so that systemd restarts camjobd"))),
        None => Ok(()),
    }
}

fn main() -> ExitCode {
    // Before any thread: one malloc arena, no per-thread caches (may restart the binary once).
    let _ = camjobd::sys::settle_allocator().map_err(|e| eprintln!("camjobd: {e}"));
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camjobd: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
