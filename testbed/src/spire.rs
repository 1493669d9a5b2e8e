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
use crate::wait::{wait_for, wait_until};

/// Lowercase hex SHA-256 of a file (SPIRE's `plugin_checksum`).
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// An external plugin block for `plugins { ... }`: `plugin_cmd` = one of the workspace's binaries, with its
/// `plugin_checksum`, and `data` (HCL) as `plugin_data`.
pub fn external_plugin(kind: &str, name: &str, bin: &str, data: &str) -> anyhow::Result<String> {
    let path = crate::process::bin_path(bin)?;
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

/// What a test's spire-server looks like.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `trust_domain`.
    pub trust_domain: String,
    /// Plugin blocks besides the DataStore and KeyManager (see [`external_plugin`], [`builtin_plugin`]).
    pub plugins: Vec<String>,
    /// `ca_ttl`.
    pub ca_ttl: String,
    /// `default_x509_svid_ttl`.
    pub svid_ttl: String,
    /// A KeyManager plugin block (None: `memory`).
    pub key_manager: Option<String>,
    /// `agent_ttl` (None: SPIRE's default).
    pub agent_ttl: Option<String>,
    /// `log_level` (the tests' DEBUG; a benchmark's INFO).
    pub log_level: &'static str,
}

impl ServerOptions {
    /// A server for `trust_domain` with the join_token attestor and `plugins`.
    pub fn new(trust_domain: &str, plugins: Vec<String>) -> ServerOptions {
        ServerOptions {
            trust_domain: trust_domain.into(),
            plugins,
            ca_ttl: "24h".into(),
            svid_ttl: "1h".into(),
            key_manager: None,
            agent_ttl: None,
            log_level: "DEBUG",
        }
    }
}

/// A running spire-server.
#[derive(Debug)]
pub struct SpireServer {
    proc: Proc,
    bin: PathBuf,
    socket: PathBuf,
    port: u16,
    trust_domain: String,
    dir: tempfile::TempDir,
}

impl SpireServer {
    /// Writes the config, starts `spire-server run` and waits for `healthcheck` (60 s at most).
    pub fn start(opts: &ServerOptions) -> anyhow::Result<SpireServer> {
        let mut server = Self::spawn(opts)?;
        server.wait_healthy(Duration::from_secs(60))?;
        Ok(server)
    }

    /// Starts a server whose config must be refused: waits for it to exit non-zero (60 s at most) and returns
    /// its log.
    pub fn start_refused(opts: &ServerOptions) -> anyhow::Result<String> {
        let mut server = Self::spawn(opts)?;
        let status = wait_until("spire-server to refuse its config and exit", Duration::from_secs(60), || {
            ensure!(server.cli(&["healthcheck"]).is_err(), "spire-server became healthy");
            server.proc.exited()
        })?;
        ensure!(!status.success(), "spire-server exited 0");
        server.proc.quiet = true;
        Ok(server.log())
    }

    fn spawn(opts: &ServerOptions) -> anyhow::Result<SpireServer> {
        let dir = short_dir("sps")?;
        let p = dir.path();
        let socket = p.join("api.sock");
        let port = free_port()?;
        let key_manager = opts.key_manager.clone().unwrap_or_else(|| builtin_plugin("KeyManager", "memory", ""));
        let mut plugins = format!(
            "  DataStore \"sql\" {{\n    plugin_data {{\n      database_type = \"sqlite3\"\n      connection_string = \"{}\"\n    }}\n  }}\n{key_manager}  NodeAttestor \"join_token\" {{\n    plugin_data {{}}\n  }}\n",
            p.join("data/datastore.sqlite3").display()
        );
        for block in &opts.plugins {
            plugins.push_str(block);
        }
        let agent_ttl = opts.agent_ttl.as_ref().map(|t| format!("  agent_ttl = \"{t}\"\n")).unwrap_or_default();
        let conf = format!(
            "server {{\n  bind_address = \"127.0.0.1\"\n  bind_port = \"{port}\"\n  socket_path = \"{}\"\n  trust_domain = \"{}\"\n  data_dir = \"{}\"\n  log_level = \"{}\"\n  ca_ttl = \"{}\"\n  default_x509_svid_ttl = \"{}\"\n{agent_ttl}  ratelimit {{\n    attestation = false\n  }}\n}}\n\nplugins {{\n{plugins}}}\n",
            socket.display(),
            opts.trust_domain,
            p.join("data").display(),
            opts.log_level,
            opts.ca_ttl,
            opts.svid_ttl,
        );
        std::fs::write(p.join("server.conf"), &conf)?;
        let bin = spire_bin("spire-server")?;
        let proc = Proc::spawn("spire-server", &bin, &["run", "-config", "server.conf"], p, p.join("server.log"))?;
        Ok(SpireServer { proc, bin, socket, port, trust_domain: opts.trust_domain.clone(), dir })
    }

    fn wait_healthy(&mut self, limit: Duration) -> anyhow::Result<()> {
        wait_for("spire-server to be healthy", limit, || {
            if let Some(status) = self.proc.exited()? {
                bail!("spire-server exited during start-up ({status})");
            }
            Ok(self.cli(&["healthcheck"]).is_ok())
        })
    }

    /// `spire-server <args> -socketPath S`: stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let socket = self.socket.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-socketPath", &socket]);
        cli(&self.bin, &all)
    }

    /// The server's API socket (`socket_path`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The server's bind port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// A file in the server's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `token generate -spiffeID spiffe://TD/<node>`: the join token.
    pub fn join_token(&self, node: &str) -> anyhow::Result<String> {
        let id = format!("spiffe://{}/{node}", self.trust_domain);
        let out = self.cli(&["token", "generate", "-spiffeID", &id, "-ttl", "600"])?;
        out.lines()
            .find_map(|l| l.strip_prefix("Token: "))
            .map(|t| t.trim().to_owned())
            .with_context(|| format!("no token in {out:?}"))
    }

    /// `entry create`: a workload entry under `parent` for this machine's uid.
    pub fn register_workload(&self, parent: &str, workload: &str) -> anyhow::Result<String> {
        let id = format!("spiffe://{}/{workload}", self.trust_domain);
        let uid = format!("unix:uid:{}", current_uid()?);
        self.cli(&[
            "entry",
            "create",
            "-parentID",
            parent,
            "-spiffeID",
            &id,
            "-selector",
            &uid,
            "-x509SVIDTTL",
            "120",
        ])?;
        Ok(id)
    }

    /// `bundle show -format pem`.
    pub fn bundle_pem(&self) -> anyhow::Result<String> {
        self.cli(&["bundle", "show", "-format", "pem"])
    }

    /// `agent show -spiffeID ID`: (attestation type, selectors), as SPIRE prints them.
    pub fn agent_show(&self, id: &str) -> anyhow::Result<(String, Vec<String>)> {
        let out = self.cli(&["agent", "show", "-spiffeID", id])?;
        let field = |name: &str| -> Vec<String> {
            out.lines()
                .filter_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == name).map(|(_, v)| v.trim().to_owned()))
                .collect()
        };
        let kind = field("Attestation type").into_iter().next().with_context(|| format!("agent show: {out}"))?;
        let mut selectors = field("Selectors");
        selectors.sort();
        Ok((kind, selectors))
    }

    /// Agent IDs the server knows (`agent list`).
    pub fn agent_ids(&self) -> anyhow::Result<Vec<String>> {
        let out = self.cli(&["agent", "list"])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                l.split_once(':').filter(|(k, _)| k.trim() == "SPIFFE ID").map(|(_, v)| v.trim().to_owned())
            })
            .collect())
    }

    /// Runs `localauthority x509 <action>` and returns the authority ID it names (prepare, activate, taint, revoke).
    pub fn local_authority(&self, action: &str, authority: Option<&str>) -> anyhow::Result<String> {
        let mut args = vec!["localauthority", "x509", action];
        if let Some(id) = authority {
            args.extend(["-authorityID", id]);
        }
        let out = self.cli(&args)?;
        out.lines()
            .find_map(|l| {
                l.split_once(':').filter(|(k, _)| k.trim() == "Authority ID").map(|(_, v)| v.trim().to_owned())
            })
            .with_context(|| format!("localauthority x509 {action}: no authority ID in {out:?}"))
    }

    /// `localauthority x509 show`: (active, prepared, old) authority IDs, empty where there is none.
    pub fn authorities(&self) -> anyhow::Result<[String; 3]> {
        let out = self.cli(&["localauthority", "x509", "show"])?;
        let mut ids = [String::new(), String::new(), String::new()];
        let mut section = None;
        for line in out.lines() {
            let t = line.trim();
            section = match t {
                s if s.starts_with("Active X.509 authority") => Some(0),
                s if s.starts_with("Prepared X.509 authority") => Some(1),
                s if s.starts_with("Old X.509 authority") => Some(2),
                _ => section,
            };
            if let (Some(i), Some((k, v))) = (section, t.split_once(':')) {
                if k.trim() == "Authority ID" {
                    ids[i] = v.trim().to_owned();
                }
            }
        }
        Ok(ids)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Waits until the log holds `needle` at least `count` times.
    pub fn wait_log(&mut self, needle: &str, count: usize, limit: Duration) -> anyhow::Result<()> {
        self.proc.wait_log(needle, count, limit)
    }

    /// Stops the server by PID; true when it exited cleanly on SIGTERM.
    pub fn stop(&mut self) -> bool {
        self.proc.stop()
    }

    /// Stops the server and starts it again on the same config and data (its datastore, its keys).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        ensure!(self.proc.stop(), "spire-server did not stop cleanly");
        let p = self.dir.path();
        self.proc =
            Proc::spawn("spire-server", &self.bin, &["run", "-config", "server.conf"], p, p.join("server.log"))?;
        self.wait_healthy(Duration::from_secs(60))
    }

    /// The server's directory (its data_dir is `data` in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// How the agent gets its first bundle.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// `trust_bundle_url` through `trust_bundle_unix_socket`, with `trust_bundle_format`.
    Url {
        /// The URL (its host is only the Host header: the connection goes to the socket).
        url: String,
        /// The verifier's socket.
        socket: PathBuf,
        /// `pem` or `spiffe`.
        format: &'static str,
    },
    /// `trust_bundle_path`.
    Path(PathBuf),
}

/// How the agent attests.
#[derive(Debug, Clone)]
pub enum Attestor {
    /// `join_token`.
    JoinToken(String),
    /// A NodeAttestor plugin block (built-in or external).
    Plugin(String),
}

/// What a test's spire-agent looks like.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Trust domain.
    pub trust_domain: String,
    /// The server's port on 127.0.0.1.
    pub server_port: u16,
    /// Bootstrap source.
    pub bootstrap: Bootstrap,
    /// Node attestation.
    pub attestor: Attestor,
    /// `rebootstrap_mode` and `rebootstrap_delay` (None: SPIRE's default, never).
    pub rebootstrap: Option<(&'static str, &'static str)>,
    /// A KeyManager plugin block (None: `disk` in the agent's data_dir).
    pub key_manager: Option<String>,
}

/// A running spire-agent. Its directory (and `data_dir`) outlives a stop, so it can be started again on it.
#[derive(Debug)]
pub struct SpireAgent {
    proc: Option<Proc>,
    bin: PathBuf,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl SpireAgent {
    /// Starts an agent in a fresh directory; does not wait for attestation (see [`SpireAgent::wait_healthy`]).
    pub fn start(opts: &AgentOptions) -> anyhow::Result<SpireAgent> {
        let dir = short_dir("spa")?;
        let socket = dir.path().join("api.sock");
        let mut agent = SpireAgent { proc: None, bin: spire_bin("spire-agent")?, socket, dir };
        agent.restart(opts)?;
        Ok(agent)
    }

    /// (Re)starts the agent on its existing `data_dir` with `opts` (the config is rewritten).
    pub fn restart(&mut self, opts: &AgentOptions) -> anyhow::Result<()> {
        ensure!(self.proc.is_none(), "agent already running");
        let p = self.dir.path();
        let mut agent = format!(
            "  data_dir = \"{}\"\n  log_level = \"DEBUG\"\n  server_address = \"127.0.0.1\"\n  server_port = \"{}\"\n  socket_path = \"{}\"\n  trust_domain = \"{}\"\n",
            p.join("data").display(),
            opts.server_port,
            self.socket.display(),
            opts.trust_domain
        );
        match &opts.bootstrap {
            Bootstrap::Url { url, socket, format } => agent.push_str(&format!(
                "  trust_bundle_url = \"{url}\"\n  trust_bundle_unix_socket = \"{}\"\n  trust_bundle_format = \"{format}\"\n",
                socket.display()
            )),
            Bootstrap::Path(path) => agent.push_str(&format!("  trust_bundle_path = \"{}\"\n", path.display())),
        }
        if let Some((mode, delay)) = opts.rebootstrap {
            agent.push_str(&format!("  rebootstrap_mode = \"{mode}\"\n  rebootstrap_delay = \"{delay}\"\n"));
        }
        let attestor = match &opts.attestor {
            Attestor::JoinToken(token) => {
                agent.push_str(&format!("  join_token = \"{token}\"\n"));
                builtin_plugin("NodeAttestor", "join_token", "")
            }
            Attestor::Plugin(block) => block.clone(),
        };
        let key_manager = opts.key_manager.clone().unwrap_or_else(|| {
            builtin_plugin("KeyManager", "disk", &format!("directory = \"{}\"", p.join("data").display()))
        });
        let conf = format!(
            "agent {{\n{agent}}}\n\nplugins {{\n{key_manager}{attestor}  WorkloadAttestor \"unix\" {{\n    plugin_data {{}}\n  }}\n}}\n"
        );
        std::fs::write(p.join("agent.conf"), conf)?;
        self.proc =
            Some(Proc::spawn("spire-agent", &self.bin, &["run", "-config", "agent.conf"], p, p.join("agent.log"))?);
        Ok(())
    }

    fn proc(&mut self) -> anyhow::Result<&mut Proc> {
        self.proc.as_mut().context("spire-agent is not running")
    }

    /// Waits until `healthcheck` answers (the agent attested and serves the Workload API).
    pub fn wait_healthy(&mut self, limit: Duration) -> anyhow::Result<()> {
        wait_for("spire-agent to be healthy", limit, || {
            if let Some(status) = self.proc()?.exited()? {
                bail!("spire-agent exited ({status}) before it was healthy");
            }
            Ok(self.healthy())
        })
    }

    /// [`SpireAgent::wait_healthy`] under a supervisor: an agent that exits with an error is started again with
    /// `opts` on its `data_dir`, as systemd's `Restart=on-failure` does. Returns how many restarts it took.
    pub fn wait_healthy_supervised(&mut self, opts: &AgentOptions, limit: Duration) -> anyhow::Result<usize> {
        let mut restarts = 0;
        wait_for("spire-agent to be healthy under its supervisor", limit, || {
            let proc = self.proc()?;
            if let Some(status) = proc.exited()? {
                ensure!(!status.success(), "spire-agent exited 0");
                ensure!(restarts < 5, "spire-agent keeps exiting ({status})");
                proc.quiet = true; // the next run appends to the same log
                self.proc = None;
                restarts += 1;
                self.restart(opts)?;
                return Ok(false);
            }
            Ok(self.healthy())
        })?;
        Ok(restarts)
    }

    /// The Workload API socket (it appears once the agent has attested and holds its SVID).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether `healthcheck` answers now.
    pub fn healthy(&self) -> bool {
        cli(&self.bin, &["healthcheck", "-socketPath", &self.socket.display().to_string()]).is_ok()
    }

    /// `api fetch x509 -write DIR` until the agent has an SVID for this process (30 s at most): the SVID's
    /// SPIFFE ID and the written directory (`svid.0.pem`, `svid.0.key`, `bundle.0.pem`).
    pub fn fetch_x509(&mut self, limit: Duration) -> anyhow::Result<(String, PathBuf)> {
        let out_dir = self.dir.path().join("svid");
        std::fs::create_dir_all(&out_dir)?;
        let socket = self.socket.display().to_string();
        let dir = out_dir.display().to_string();
        let mut last = None;
        let fetched = wait_until("an X509-SVID from the Workload API", limit, || {
            match cli(&self.bin, &["api", "fetch", "x509", "-socketPath", &socket, "-timeout", "5s", "-write", &dir]) {
                Ok(out) => Ok(Some(out)),
                Err(e) => {
                    if let Some(status) = self.proc()?.exited()? {
                        bail!("spire-agent exited ({status}) while waiting for an SVID");
                    }
                    last = Some(e);
                    Ok(None)
                }
            }
        });
        let out =
            fetched.map_err(|e| last.take().map_or(e, |last| last.context(format!("no SVID after {limit:?}"))))?;
        let id = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("SPIFFE ID:"))
            .map(|s| s.trim().to_owned())
            .with_context(|| format!("no SPIFFE ID in {out:?}"))?;
        Ok((id, out_dir))
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        self.proc
            .as_ref()
            .map(Proc::log)
            .unwrap_or_else(|| std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default())
    }

    /// Waits until the log holds `needle` at least `count` times.
    pub fn wait_log(&mut self, needle: &str, count: usize, limit: Duration) -> anyhow::Result<()> {
        self.proc()?.wait_log(needle, count, limit)
    }

    /// Stops the agent by PID (its directory stays); true when it exited cleanly on SIGTERM.
    pub fn stop(&mut self) -> bool {
        self.proc.take().is_some_and(|mut p| p.stop())
    }

    /// The agent's directory (its data_dir is `data` in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

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
