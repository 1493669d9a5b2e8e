//! A spire-agent of the tests: its bootstrap, its attestor, its process, its Workload API.

use super::*;

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
        // Each ask is a spire-agent process: paced at 200 ms at most.
        wait_paced("spire-agent to be healthy", limit, Duration::from_millis(200), || {
            if let Some(status) = self.proc()?.exited()? {
                bail!("spire-agent exited ({status}) before it was healthy");
            }
            Ok(self.healthy().then_some(()))
        })
    }

    /// [`SpireAgent::wait_healthy`] under a supervisor: an agent that exits with an error is started again with
    /// `opts` on its `data_dir`, as systemd's `Restart=on-failure` does. Returns how many restarts it took.
    pub fn wait_healthy_supervised(&mut self, opts: &AgentOptions, limit: Duration) -> anyhow::Result<usize> {
        let mut restarts = 0;
        wait_paced("spire-agent to be healthy under its supervisor", limit, Duration::from_millis(200), || {
            let proc = self.proc()?;
            if let Some(status) = proc.exited()? {
                ensure!(!status.success(), "spire-agent exited 0");
                ensure!(restarts < 5, "spire-agent keeps exiting ({status})");
                proc.quiet = true; // the next run appends to the same log
                self.proc = None;
                restarts += 1;
                self.restart(opts)?;
                return Ok(None);
            }
            Ok(self.healthy().then_some(()))
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
        let fetched =
            wait_paced("an X509-SVID from the Workload API", limit, Duration::from_millis(500), || {
                match cli(
                    &self.bin,
                    &["api", "fetch", "x509", "-socketPath", &socket, "-timeout", "5s", "-write", &dir],
                ) {
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
