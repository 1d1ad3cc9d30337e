//! Trying a plugin in a child process before loading it: a library whose initialisers or
//! operator table crash (a panic across `extern "C"` aborts, a segfault) takes the child down,
//! not the host, and the host refuses it with the signal and the child's last words. Where
//! no probe can run (the child never says it started, as under some emulators), plugins load
//! without one and a warning says so once.

use super::PluginError;
use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

/// The environment variable that turns a process started by [`check`] into a probe.
const PROBE_VARIABLE: &str = "OPAL_PLUGIN_PROBE";

/// How long a probe may take before the plugin is refused as hanging.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// What a probe writes to its standard output before it loads the plugin.
const READY: &str = "opal plugin probe ready";

static PROBE_PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Set once a probe could not run; plugins then load without one.
static PROBES_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// Probes every plugin loaded from now on with `program`, an executable whose `main` starts
/// with [`answer_probe`] (the `opal` binary does). Without it, plugins load without a probe.
pub fn probe_plugins_with(program: PathBuf) {
    let _ = PROBE_PROGRAM.set(program);
}

/// In a process started as a probe, loads the plugin it names and returns the exit code to end
/// with (0 when it loaded or failed cleanly, the host then reports why); `None` otherwise.
pub fn answer_probe() -> Option<std::process::ExitCode> {
    let path = PathBuf::from(std::env::var_os(PROBE_VARIABLE)?);
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{READY}").and_then(|()| stdout.flush());
    // A clean error is the host's to report, once, when it loads the plugin itself.
    let _ = super::PluginLibrary::load(&path);
    Some(std::process::ExitCode::SUCCESS)
}

/// Loads `path` (a copy of `source`) in a child process first, if probing is on.
pub(crate) fn check(path: &Path, source: &Path) -> Result<(), PluginError> {
    let Some(program) = PROBE_PROGRAM.get() else {
        return Ok(());
    };
    if PROBES_UNAVAILABLE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let refused = |cause: String| PluginError::CrashedWhileLoading {
        path: source.to_owned(),
        cause,
    };
    let spawned = Command::new(program)
        .env(PROBE_VARIABLE, path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            probes_unavailable(program, &format!("it did not start: {e}"));
            return Ok(());
        }
    };
    // Read while the child runs, so a long message cannot fill a pipe and stall it.
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
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
    let output = stderr.join().unwrap_or_default();
    if !stdout.join().unwrap_or_default().contains(READY) {
        // The child ended before it reached the plugin: the probe failed, not the plugin.
        let why = format!(
            "it {} before it reported that it started{}",
            describe(status),
            said(&output)
        );
        probes_unavailable(program, &why);
        return Ok(());
    }
    Err(refused(format!(
        "loading it {}{}",
        describe(status),
        said(&output)
    )))
}

/// Turns probing off for the rest of the process, with one warning.
fn probes_unavailable(program: &Path, why: &str) {
    if !PROBES_UNAVAILABLE.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            probe = %program.display(),
            "plugins load without a crash probe: the probe process could not run ({why})"
        );
    }
}

/// A thread that reads `pipe` to its end.
fn read_all<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut output = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut output);
        }
        output
    })
}

/// "; it said: …" with the last words in `output`, or nothing.
fn said(output: &str) -> String {
    panic_message(output)
        .map(|l| format!("; it said: {l}"))
        .unwrap_or_default()
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

/// How a probe ended, in words ("was killed by SIGSEGV (signal 11)").
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
            format!("was killed by {name} (signal {signal})")
        }
        (None, Some(code)) => format!("exited with status {code}"),
        (None, None) => "ended abnormally".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_that_cannot_start_leaves_plugins_to_load_without_one() {
        // `false` ends at once without saying it is ready, as a probe under an emulator that
        // cannot start a child of the guest's architecture does.
        probe_plugins_with(PathBuf::from("false"));
        let plugin = Path::new("/nonexistent/libplugin.so");
        assert!(check(plugin, plugin).is_ok());
        assert!(PROBES_UNAVAILABLE.load(Ordering::Relaxed));
        assert!(check(plugin, plugin).is_ok());
    }
}
