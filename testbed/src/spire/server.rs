//! A spire-server of the tests: its config, its process, its CLI.

use super::*;

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
    /// `ca_key_type` (None: SPIRE's default, ec-p256).
    pub ca_key_type: Option<&'static str>,
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
            ca_key_type: None,
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
        let mut optional = opts.agent_ttl.as_ref().map(|t| format!("  agent_ttl = \"{t}\"\n")).unwrap_or_default();
        if let Some(key_type) = opts.ca_key_type {
            optional.push_str(&format!("  ca_key_type = \"{key_type}\"\n"));
        }
        let conf = format!(
            "server {{\n  bind_address = \"127.0.0.1\"\n  bind_port = \"{port}\"\n  socket_path = \"{}\"\n  trust_domain = \"{}\"\n  data_dir = \"{}\"\n  log_level = \"{}\"\n  ca_ttl = \"{}\"\n  default_x509_svid_ttl = \"{}\"\n{optional}  ratelimit {{\n    attestation = false\n  }}\n}}\n\nplugins {{\n{plugins}}}\n",
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

    /// An agent of this server attesting with `attestor`, bootstrapping from the server's bundle in a file
    /// (`bootstrap.pem` in the server's directory, written now), without rebootstrap, with SPIRE's `disk`
    /// KeyManager.
    pub fn agent_options(&self, attestor: Attestor) -> anyhow::Result<AgentOptions> {
        let bundle = self.path("bootstrap.pem");
        std::fs::write(&bundle, self.bundle_pem()?)?;
        Ok(AgentOptions {
            trust_domain: self.trust_domain.clone(),
            server_port: self.port,
            bootstrap: Bootstrap::Path(bundle),
            attestor,
            rebootstrap: None,
            key_manager: None,
        })
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
