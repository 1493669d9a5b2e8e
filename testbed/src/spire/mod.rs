//! The real SPIRE: spire-server and spire-agent (built once per machine by `ci/spire.sh`) as child processes.
//!
//! Each process gets a fresh short directory under `/tmp` (unix socket paths, go-plugin's sockets in `TMPDIR`,
//! its `data_dir`), a config generated from the test's parameters, readiness through `healthcheck`, and its
//! stdout/stderr in a log file. It is stopped by PID (SIGTERM, then SIGKILL) on every path; a process dropped
//! without [`SpireServer::stop`] / [`SpireAgent::stop`] prints its log, so a failing test shows what SPIRE said
//! (`SAT_PRINT_LOGS=1` prints every log).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use sha2::Digest;

mod agent;
mod server;
pub use agent::{AgentOptions, Attestor, Bootstrap, SpireAgent};
pub use server::{ServerOptions, SpireServer};

/// Where `ci/spire.sh` put the binaries: `$SAT_SPIRE_BIN`, else the script's answer (which builds on first use).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SAT_SPIRE_BIN") {
            return Ok(PathBuf::from(dir));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/spire.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!("{} failed ({}); see its message above", script.display(), out.status));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn spire_bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    ensure!(path.is_file(), "{} is missing; run ci/spire.sh", path.display());
    Ok(path)
}

/// A short private directory under `/tmp` (sun_path holds 108 bytes; `t.TempDir()`-style paths do not fit).
pub fn short_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp")?)
}

use crate::ports::free_port;
use crate::wait::{wait_for, wait_paced, wait_until};

/// Lowercase hex SHA-256 of a file (SPIRE's `plugin_checksum`).
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// An external plugin block for `plugins { ... }`: `plugin_cmd` = one of the workspace's binaries, with its
/// `plugin_checksum`, and `data` (HCL) as `plugin_data`.
pub fn external_plugin(kind: &str, name: &str, bin: &str, data: &str) -> anyhow::Result<String> {
    external_plugin_at(kind, name, &crate::process::bin_path(bin)?, data)
}

/// [`external_plugin`] for the executable at `path` (a stripped copy, as the packages ship).
pub fn external_plugin_at(kind: &str, name: &str, path: &Path, data: &str) -> anyhow::Result<String> {
    let path = path.canonicalize()?;
    Ok(format!(
        "  {kind} \"{name}\" {{\n    plugin_cmd = \"{}\"\n    plugin_checksum = \"{}\"\n    plugin_data {{\n{}\n    }}\n  }}\n",
        path.display(),
        sha256_file(&path)?,
        indent(data, 6)
    ))
}

/// A built-in plugin block.
pub fn builtin_plugin(kind: &str, name: &str, data: &str) -> String {
    format!("  {kind} \"{name}\" {{\n    plugin_data {{\n{}\n    }}\n  }}\n", indent(data, 6))
}

fn indent(text: &str, n: usize) -> String {
    text.lines().map(|l| format!("{:n$}{l}", "")).collect::<Vec<_>>().join("\n")
}

/// One SPIRE process and its log.
#[derive(Debug)]
struct Proc {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
    /// Set by a clean stop: the log is printed on drop otherwise.
    quiet: bool,
}

impl Proc {
    fn spawn(name: &'static str, bin: &Path, args: &[&str], dir: &Path, log: PathBuf) -> anyhow::Result<Proc> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .args(args)
            .current_dir(dir)
            .env("TMPDIR", dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Proc { name, child: Some(child), log, quiet: false })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("{} is not running", self.name),
        }
    }

    /// SIGTERM, then SIGKILL after 10 s. True when it exited by itself after SIGTERM.
    fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let clean = wait_until("exit on SIGTERM", Duration::from_secs(10), || Ok(child.try_wait()?)).is_ok();
        if !clean {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.quiet = clean;
        clean
    }

    fn wait_log(&mut self, needle: &str, count: usize, limit: Duration) -> anyhow::Result<()> {
        let what = format!("{} to log {needle:?} ({count}x)", self.name);
        wait_for(what, limit, || {
            if self.log().matches(needle).count() >= count {
                return Ok(true);
            }
            if let Some(status) = self.exited()? {
                bail!("{} exited ({status}) before logging {needle:?}", self.name);
            }
            Ok(false)
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.quiet || std::env::var_os("SAT_PRINT_LOGS").is_some() {
            eprintln!(
                "===== {} log ({}) =====\n{}===== end of {} log =====",
                self.name,
                self.log.display(),
                self.log(),
                self.name
            );
        }
    }
}

/// Runs a SPIRE CLI command to completion; stdout, or an error with stderr and stdout.
fn cli(bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}{}",
            bin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The uid this process runs as (what a `unix:uid` selector of it says).
fn current_uid() -> anyhow::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/self")?.uid())
}

/// What [`verify_svid`] found in a verified SVID.
#[derive(Debug, Clone)]
pub struct Svid {
    /// The URI SAN (SPIFFE ID).
    pub id: String,
    /// `openssl x509 -issuer`.
    pub issuer: String,
    /// `openssl x509 -enddate`.
    pub not_after: String,
}

/// `openssl verify`: the SVID in `svid_dir` chains to the CA certificates in `bundle_pem` (what
/// `spire-server bundle show` printed).
pub fn verify_svid(svid_dir: &Path, bundle_pem: &str) -> anyhow::Result<Svid> {
    let ca = svid_dir.join("server-bundle.pem");
    std::fs::write(&ca, bundle_pem)?;
    let (ca, svid) = (ca.display().to_string(), "svid.0.pem");
    crate::pki::openssl(&["verify", "-CAfile", &ca, "-untrusted", svid, svid], svid_dir)
        .context("the SVID does not verify against spire-server bundle show")?;
    let text = crate::pki::openssl(
        &["x509", "-noout", "-issuer", "-enddate", "-ext", "subjectAltName", "-in", svid],
        svid_dir,
    )?;
    let line = |prefix: &str| {
        text.lines().find_map(|l| l.strip_prefix(prefix)).map(|v| v.trim().to_owned()).unwrap_or_default()
    };
    let id = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|t| t.strip_prefix("URI:"))
        .map(str::to_owned)
        .with_context(|| format!("no URI SAN in the SVID: {text}"))?;
    Ok(Svid { id, issuer: line("issuer="), not_after: line("notAfter=") })
}
