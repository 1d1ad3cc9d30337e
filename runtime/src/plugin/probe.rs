//! Trying a plugin in a child process before loading it: a library whose initialisers or
//! operator table crash (a panic across `extern "C"` aborts, a segfault) takes the child down,
//! not the host, and the host refuses it with the signal and the child's last words.

use super::PluginError;
use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The environment variable that turns a process started by [`check`] into a probe.
const PROBE_VARIABLE: &str = "OPAL_PLUGIN_PROBE";

/// How long a probe may take before the plugin is refused as hanging.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

static PROBE_PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Probes every plugin loaded from now on with `program`, an executable whose `main` starts
/// with [`answer_probe`] (the `opal` binary does). Without it, plugins load without a probe.
pub fn probe_plugins_with(program: PathBuf) {
    let _ = PROBE_PROGRAM.set(program);
}

/// In a process started as a probe, loads the plugin it names and returns the exit code to end
/// with (0 when it loaded or failed cleanly, the host then reports why); `None` otherwise.
pub fn answer_probe() -> Option<std::process::ExitCode> {
    let path = PathBuf::from(std::env::var_os(PROBE_VARIABLE)?);
    // A clean error is the host's to report, once, when it loads the plugin itself.
    let _ = super::PluginLibrary::load(&path);
    Some(std::process::ExitCode::SUCCESS)
}

/// Loads `path` (a copy of `source`) in a child process first, if probing is on.
pub(crate) fn check(path: &Path, source: &Path) -> Result<(), PluginError> {
    let Some(program) = PROBE_PROGRAM.get() else {
        return Ok(());
    };
    let refused = |cause: String| PluginError::CrashedWhileLoading {
        path: source.to_owned(),
        cause,
    };
    let mut child = Command::new(program)
        .env(PROBE_VARIABLE, path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            refused(format!(
                "the probe process {} did not start: {e}",
                program.display()
            ))
        })?;
    // Read while the child runs, so a long message cannot fill the pipe and stall it.
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut output = String::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = stderr.read_to_string(&mut output);
        }
        output
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(refused(format!(
                    "it did not finish loading within {} s",
                    PROBE_TIMEOUT.as_secs()
                )));
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    let output = reader.join().unwrap_or_default();
    let last_words = panic_message(&output)
        .map(|l| format!("; it said: {l}"))
        .unwrap_or_default();
    Err(refused(format!("{}{last_words}", describe(status))))
}

/// The message of a Rust panic in `output` (the line after "panicked at"), else its last line.
fn panic_message(output: &str) -> Option<&str> {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .position(|l| l.contains("panicked at"))
        .and_then(|k| lines.get(k + 1))
        .or(lines.last())
        .copied()
}

/// How a probe ended, in words.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.signal(), status.code()) {
        (Some(signal), _) => {
            let name = match signal {
                4 => "SIGILL",
                6 => "SIGABRT",
                7 => "SIGBUS",
                8 => "SIGFPE",
                9 => "SIGKILL",
                11 => "SIGSEGV",
                _ => "a signal",
            };
            format!("loading it was killed by {name} (signal {signal})")
        }
        (None, Some(code)) => format!("loading it exited with status {code}"),
        (None, None) => "loading it ended abnormally".to_owned(),
    }
}
