//! A private swtpm per test: a fresh state directory, a free port pair (the swtpm TCTI requires the control
//! port to be the command port + 1), readiness checked with a real TPM command, killed by PID on drop, and
//! restartable on the same state (keys survive).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// A stream a raw TPM command can go over.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// TPM2_GetRandom(8): a command any started TPM answers.
const GET_RANDOM: [u8; 12] = [0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x7b, 0, 0x08];

/// TPM2_Shutdown(TPM_SU_CLEAR): what an OS sends before it powers the TPM down.
const SHUTDOWN: [u8; 12] = [0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x45, 0, 0];

/// A running (or stopped) swtpm owned by the caller.
#[derive(Debug)]
pub struct Swtpm {
    child: Option<Child>,
    port: u16,
    state: tempfile::TempDir,
    ek_ca: Option<PathBuf>,
    /// The unix socket it serves on after [`Swtpm::restart_unixio`], until [`Swtpm::restart`].
    unixio: Option<PathBuf>,
}

use crate::ports::free_port_pair;
use crate::wait::wait_for;

fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(&GET_RANDOM).is_err() {
        return false;
    }
    let mut head = [0u8; 10];
    s.read_exact(&mut head).is_ok() && head[6..10] == [0, 0, 0, 0]
}

/// Manufactures a TPM state like a real TPM's in `dir`: `swtpm_setup` creates the RSA-2048 EK (and an ECC one)
/// with certificates in NV (RSA EK certificate at 0x01C00002) issued by a private `swtpm_localca` CA made for
/// this TPM (never the system one). The state is `dir/tpm`; returns the CA chain (issuer then root, PEM).
pub fn manufacture(dir: &Path) -> anyhow::Result<PathBuf> {
    let ca_dir = dir.join("localca");
    std::fs::create_dir_all(&ca_dir)?;
    let localca_conf = dir.join("swtpm-localca.conf");
    std::fs::write(
        &localca_conf,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
            ca = ca_dir.display()
        ),
    )?;
    let setup_conf = dir.join("swtpm_setup.conf");
    std::fs::write(
        &setup_conf,
        format!(
            "create_certs_tool= /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\n\
             create_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n",
            localca_conf.display()
        ),
    )?;
    let tpm_state = dir.join("tpm");
    std::fs::create_dir_all(&tpm_state)?;
    let out = Command::new("swtpm_setup")
        .args(["--tpm2", "--tpmstate"])
        .arg(&tpm_state)
        .arg("--config")
        .arg(&setup_conf)
        .args(["--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--overwrite"])
        .output()
        .context("running swtpm_setup (package swtpm-tools)")?;
    if !out.status.success() {
        bail!("swtpm_setup failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let chain = dir.join("ek-ca-chain.pem");
    let issuer = std::fs::read_to_string(ca_dir.join("issuercert.pem"))?;
    let root = std::fs::read_to_string(ca_dir.join("swtpm-localca-rootca-cert.pem"))?;
    std::fs::write(&chain, format!("{issuer}{root}"))?;
    Ok(chain)
}

impl Swtpm {
    /// Starts a blank swtpm.
    pub fn start() -> anyhow::Result<Swtpm> {
        Self::start_in(tempfile::tempdir()?, None)
    }

    /// Starts a swtpm manufactured like a real TPM: `swtpm_setup` creates the RSA-2048 EK (and an ECC one) with
    /// certificates in NV (RSA EK certificate at 0x01C00002) issued by a private `swtpm_localca` CA made for this
    /// instance (never the system one). [`Swtpm::ek_ca`] is that CA's chain (issuer then root, PEM).
    pub fn start_with_ek() -> anyhow::Result<Swtpm> {
        let state = tempfile::tempdir()?;
        let chain = manufacture(state.path())?;
        Self::start_in(state, Some(chain))
    }

    /// The EK certificate CA chain (issuer, then root) of a [`Swtpm::start_with_ek`] TPM.
    pub fn ek_ca(&self) -> Option<&Path> {
        self.ek_ca.as_deref()
    }

    fn tpm_state(&self) -> PathBuf {
        if self.ek_ca.is_some() {
            self.state.path().join("tpm")
        } else {
            self.state.path().to_owned()
        }
    }

    fn start_in(state: tempfile::TempDir, ek_ca: Option<PathBuf>) -> anyhow::Result<Swtpm> {
        let mut tpm = Swtpm { child: None, port: 0, state, ek_ca, unixio: None };
        let mut last = None;
        for _ in 0..10 {
            tpm.port = free_port_pair()?;
            match tpm.spawn() {
                Ok(()) => return Ok(tpm),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("swtpm did not start")))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.unixio = None;
        let tpm_state = self.tpm_state();
        let dir = tpm_state.as_path();
        let log = dir.join("log");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2"])
            .args(["--server", &format!("type=tcp,port={}", self.port)])
            .args(["--ctrl", &format!("type=tcp,port={}", self.port + 1)])
            .args(["--tpmstate", &format!("dir={}", dir.display())])
            .args(["--flags", "not-need-init,startup-clear"])
            .args(["--log", &format!("file={},level=1", log.display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr"))?)
            .spawn()
            .context("starting swtpm (make test installs it: apt-get install swtpm swtpm-tools)")?;
        self.child = Some(child);
        let port = self.port;
        let up = wait_for(format!("swtpm to answer on port {port}"), Duration::from_secs(10), || {
            if let Some(status) = self.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                self.child = None;
                let err = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
                bail!("swtpm exited ({status}): {err}");
            }
            Ok(answers(port))
        });
        if up.is_err() {
            self.kill();
        }
        up
    }

    /// Stops the process after an orderly TPM2_Shutdown, as a machine's restart does: without it the TPM counts
    /// each restart against its dictionary-attack protection (a DevID or an AK in use when the power went), and a
    /// test that restarts a few times finds the TPM in lockout.
    fn kill(&mut self) {
        if self.child.is_some() {
            let sent = |s: &mut dyn ReadWrite| {
                let mut head = [0u8; 10];
                s.write_all(&SHUTDOWN).is_ok() && s.read_exact(&mut head).is_ok()
            };
            let timeout = Some(Duration::from_millis(500));
            // Best effort: a TPM busy with another client, or already gone, is killed as it is.
            let _ = match &self.unixio {
                Some(socket) => std::os::unix::net::UnixStream::connect(socket)
                    .map(|mut s| s.set_read_timeout(timeout).is_ok() && sent(&mut s)),
                None => TcpStream::connect(("127.0.0.1", self.port))
                    .map(|mut s| s.set_read_timeout(timeout).is_ok() && sent(&mut s)),
            };
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The TPM as the project's config and CLI name it.
    pub fn device(&self) -> tpm::TpmDevice {
        tpm::TpmDevice::Swtpm { host: "127.0.0.1".into(), port: self.port }
    }

    /// The TCTI string for tpm2-tools (`TPM2TOOLS_TCTI`).
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The TPM state directory (`tpm2-00.permall` lives here).
    pub fn state_dir(&self) -> PathBuf {
        self.tpm_state()
    }

    /// The swtpm log.
    pub fn log_path(&self) -> PathBuf {
        self.tpm_state().join("log")
    }

    /// Stops the TPM (the process exits; the state stays).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.kill();
        Ok(())
    }

    /// Starts the TPM again on the same state and ports (retrying while the ports are released).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let mut last = None;
        wait_for("swtpm to start again on its ports", Duration::from_secs(10), || match self.spawn() {
            Ok(()) => Ok(true),
            Err(e) => {
                last = Some(e);
                Ok(false)
            }
        })
        .map_err(|e| last.take().map_or(e, |last| last.context("swtpm did not start again within 10 s")))
    }

    /// Restarts the TPM on the same state behind a unix socket (`--server type=unixio`), the way SPIRE's own
    /// agent reaches a swtpm (`tpm_device_path` = the socket; one connection per command, so no `--terminate`).
    /// Returns the socket's path. tpm2-tools and tss-esapi cannot reach it; [`Swtpm::restart`] goes back to TCP.
    pub fn restart_unixio(&mut self) -> anyhow::Result<PathBuf> {
        self.kill();
        let dir = self.tpm_state();
        let socket = dir.join("tpm.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2"])
            .args(["--server", &format!("type=unixio,path={}", socket.display())])
            .args(["--tpmstate", &format!("dir={}", dir.display())])
            .args(["--flags", "not-need-init,startup-clear"])
            .args(["--log", &format!("file={},level=1", dir.join("log").display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr"))?)
            .spawn()
            .context("starting swtpm")?;
        self.child = Some(child);
        let what = format!("swtpm to answer on {}", socket.display());
        let up = wait_for(what, Duration::from_secs(10), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                bail!("swtpm exited ({status}): {}", std::fs::read_to_string(dir.join("stderr")).unwrap_or_default());
            }
            let Ok(mut s) = std::os::unix::net::UnixStream::connect(&socket) else { return Ok(false) };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut head = [0u8; 10];
            Ok(s.write_all(&GET_RANDOM).is_ok() && s.read_exact(&mut head).is_ok() && head[6..10] == [0, 0, 0, 0])
        });
        if let Err(e) = up {
            self.kill();
            return Err(e);
        }
        self.unixio = Some(socket.clone());
        Ok(socket)
    }

    /// Runs a tpm2-tools command against this TPM; returns stdout, or an error with stderr.
    pub fn tpm2(&self, tool: &str, args: &[&str], cwd: &Path) -> anyhow::Result<String> {
        let out = Command::new(tool)
            .args(args)
            .current_dir(cwd)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .env("TSS2_LOG", "all+NONE")
            .output()
            .with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!("{tool} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.kill();
    }
}
