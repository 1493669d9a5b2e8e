//! Runs the project's real binaries as child processes: readiness waited for, output captured to a log file,
//! stopped with SIGTERM (then SIGKILL) by PID on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::wait::{wait_for, wait_until};

/// Finds one of the workspace's binaries (built by `cargo build --workspace --bins`).
///
/// Looks in `$SAT_BIN_DIR` when set, else next to the running executable's target profile directory.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("SAT_BIN_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    for dir in exe.ancestors().skip(1).take(3) {
        dirs.push(dir.to_owned());
    }
    for dir in &dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("binary {name} not found in {dirs:?}; run `cargo build --workspace --bins` first")
}

/// What "ready" means for a daemon.
#[derive(Debug, Clone)]
pub enum Ready {
    /// A unix socket accepts connections.
    UnixSocket(PathBuf),
    /// A TCP port on 127.0.0.1 accepts connections.
    Tcp(u16),
    /// A TCP address accepts connections.
    TcpAddr(std::net::SocketAddr),
}

/// A running daemon owned by the test.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `bin` with `args`, stdout and stderr to `log`, and waits until `ready` holds (10 s at most).
    pub fn spawn(bin: &str, args: &[&str], envs: &[(&str, &str)], log: &Path, ready: Ready) -> anyhow::Result<Daemon> {
        let path = bin_path(bin)?;
        Self::spawn_command(bin, Command::new(&path).args(args), envs, log, ready)
    }

    /// Starts `bin` as systemd's socket activation does, through systemd's own `systemd-socket-activate`: it
    /// listens on `socket` and, at the first connection, runs `bin` with the listening socket passed
    /// (`LISTEN_FDS`, `LISTEN_PID`). Ready once the socket accepts connections, which is before `bin` runs.
    pub fn spawn_activated(bin: &str, socket: &Path, args: &[&str], log: &Path) -> anyhow::Result<Daemon> {
        let path = bin_path(bin)?;
        let mut command = Command::new("systemd-socket-activate");
        command.arg("-l").arg(socket).arg(&path).args(args);
        Self::spawn_command(bin, &mut command, &[], log, Ready::UnixSocket(socket.to_owned()))
    }

    fn spawn_command(
        bin: &str,
        command: &mut Command,
        envs: &[(&str, &str)],
        log: &Path,
        ready: Ready,
    ) -> anyhow::Result<Daemon> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let path = command.get_program().to_owned();
        let child = command
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", path.to_string_lossy()))?;
        let mut daemon = Daemon { name: bin.to_owned(), child: Some(child), log: log.to_owned() };
        daemon.wait_ready(&ready, Duration::from_secs(10))?;
        Ok(daemon)
    }

    fn wait_ready(&mut self, ready: &Ready, limit: Duration) -> anyhow::Result<()> {
        let what = format!("{} to be ready", self.name);
        let waited = wait_for(what, limit, || {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("{} exited during start-up ({status})", self.name);
                }
            }
            Ok(match ready {
                Ready::UnixSocket(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
                Ready::Tcp(port) => std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok(),
                Ready::TcpAddr(addr) => std::net::TcpStream::connect(addr).is_ok(),
            })
        });
        waited.map_err(|e| anyhow::anyhow!("{e}; log:\n{}", self.log_tail()))
    }

    /// The daemon's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle` at least `count` times (20 s at most): the event that proves a thing
    /// happened, instead of a sleep.
    pub fn wait_log(&self, needle: &str, count: usize) -> anyhow::Result<()> {
        let what = format!("{} to log {needle:?} {count}x", self.name);
        wait_for(what, Duration::from_secs(20), || Ok(self.log().matches(needle).count() >= count))
            .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", self.log_tail()))
    }

    /// Waits for the daemon to exit by itself (10 s at most): its exit code (`None` for a signal).
    pub fn wait_exit(&mut self) -> anyhow::Result<Option<i32>> {
        let Some(child) = self.child.as_mut() else { bail!("{} is not running", self.name) };
        let what = format!("{} to exit", self.name);
        let status = wait_until(what, Duration::from_secs(10), || Ok(child.try_wait()?))
            .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", self.log_tail()))?;
        self.child = None;
        Ok(status.code())
    }

    /// Sends SIGTERM and waits for exit (5 s, then SIGKILL). Returns whether it exited on SIGTERM cleanly.
    pub fn stop(&mut self) -> anyhow::Result<bool> {
        let Some(mut child) = self.child.take() else { return Ok(false) };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        match wait_until("exit on SIGTERM", Duration::from_secs(5), || Ok(child.try_wait()?)) {
            Ok(status) => Ok(status.success()),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Ok(false)
            }
        }
    }
}

impl Daemon {
    /// Kills it with SIGKILL, at once: whatever it was doing is cut short.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a binary to completion with `stdin`, returning (exit code, stdout, stderr).
pub fn run_bin(bin: &str, args: &[&str], stdin: &[u8]) -> anyhow::Result<(i32, String, String)> {
    run_bin_env(bin, args, &[], stdin)
}

/// [`run_bin`] with extra environment variables.
pub fn run_bin_env(
    bin: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    stdin: &[u8],
) -> anyhow::Result<(i32, String, String)> {
    use std::io::Write;
    let path = bin_path(bin)?;
    let mut child = Command::new(&path)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    if let Some(mut input) = child.stdin.take() {
        // A binary that exits before reading all of its input is not an error here.
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
