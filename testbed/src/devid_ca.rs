//! The enrollment CA as a test runs it: the real `spire-server-attestor-tpm-devid-ca` binary with its key in a
//! swtpm, an HTTPS identity from a private test CA, an inventory and the manufacturers' CAs the test chooses; and
//! nodes enrolling with the real `spire-server-attestor-tpm-devid enroll` on their own swtpm.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};

use crate::pki;
use crate::ports::free_port;
use crate::process::{run_bin, Daemon, Ready};
use crate::swtpm::Swtpm;
use crate::wait::{wait_for, wait_until};

/// The CA binary.
pub const CA: &str = "spire-server-attestor-tpm-devid-ca";
/// The node's devid tool.
pub const DEVID: &str = "spire-server-attestor-tpm-devid";

/// How the CA is set up.
#[derive(Debug, Clone, Default)]
pub struct CaOptions {
    /// Manufacturer CA chains (PEM files) the CA trusts for EK certificates.
    pub endorsement_cas: Vec<PathBuf>,
    /// The inventory's text (`sha256:<hex> name` lines); `None`: no inventory.
    pub inventory: Option<String>,
    /// The CA key's type (`rsa2048` or `ecc-p256`).
    pub key_type: Option<&'static str>,
    /// `validity` (Go duration), when not the default.
    pub validity: Option<&'static str>,
    /// `crl-lifetime`, when not the default.
    pub crl_lifetime: Option<&'static str>,
    /// A `metrics-addr`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The CA key's password (`tpm-key-password-file`, mode 0600), set by `provision`.
    pub key_password: Option<&'static str>,
}

/// A running enrollment CA.
#[derive(Debug)]
pub struct CaSite {
    dir: tempfile::TempDir,
    /// The CA key's TPM.
    pub tpm: Swtpm,
    daemon: Option<Daemon>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its config file.
    pub config: PathBuf,
    /// The CA its HTTPS certificate chains to (`enroll --tls-ca`).
    pub tls_ca: PathBuf,
    /// The DevID CA chain (`enroll --ca-cert`, SPIRE's `devid_ca_path`).
    pub ca_cert: PathBuf,
    /// Where the CRL is written.
    pub crl: PathBuf,
    /// The inventory file.
    pub inventory: PathBuf,
    addr: std::net::SocketAddr,
    /// The in-process CA's stop signal and thread.
    in_process: Option<(tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<anyhow::Result<()>>)>,
}

impl Drop for CaSite {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.in_process.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

impl CaSite {
    /// Provisions the CA key and certificate, and starts the CA.
    pub fn start(options: &CaOptions) -> anyhow::Result<CaSite> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let (tls_ca, tls_cert, tls_key) = pki::tls_server(d)?;
        let tpm = Swtpm::start()?;
        let mut endorsement = String::new();
        for chain in &options.endorsement_cas {
            endorsement.push_str(&std::fs::read_to_string(chain)?);
        }
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let (ca_cert, crl, inventory) = (d.join("devid-ca.pem"), d.join("www/devid.crl"), d.join("inventory"));
        std::fs::create_dir_all(d.join("www"))?;
        std::fs::write(&inventory, options.inventory.as_deref().unwrap_or(""))?;
        let mut config = format!(
            "listen-addr: \"{addr}\"\ntls-cert: {}\ntls-key: {}\ntpm-device: \"{}\"\nca-cert: {}\nstate-dir: {}\ncrl: {}\n",
            tls_cert.display(),
            tls_key.display(),
            tpm.device(),
            ca_cert.display(),
            d.join("state").display(),
            crl.display()
        );
        if !endorsement.is_empty() {
            std::fs::write(d.join("manufacturers.pem"), endorsement)?;
            config.push_str(&format!("endorsement-ca: {}\n", d.join("manufacturers.pem").display()));
        }
        if options.inventory.is_some() {
            config.push_str(&format!("inventory: {}\n", inventory.display()));
        }
        for (key, value) in [("validity", options.validity), ("crl-lifetime", options.crl_lifetime)] {
            if let Some(v) = value {
                config.push_str(&format!("{key}: {v}\n"));
            }
        }
        if let Some(m) = options.metrics_addr {
            config.push_str(&format!("metrics-addr: \"{m}\"\n"));
        }
        if let Some(password) = options.key_password {
            let file = d.join("ca-key.pw");
            std::fs::write(&file, password)?;
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            config.push_str(&format!("tpm-key-password-file: {}\n", file.display()));
        }
        let config_path = d.join("devid-ca.conf");
        std::fs::write(&config_path, config)?;
        let conf = config_path.display().to_string();
        let key_type = options.key_type.unwrap_or("ecc-p256");
        let (code, _, stderr) = run_bin(
            CA,
            &["provision", &conf, "--self-signed", "--subject-cn", "Test Fleet DevID CA", "--key-type", key_type],
            b"",
        )?;
        ensure!(code == 0, "devid-ca provision failed ({code}): {stderr}");
        let mut site = CaSite {
            dir,
            tpm,
            daemon: None,
            url: format!("https://{addr}"),
            config: config_path,
            tls_ca,
            ca_cert,
            crl,
            inventory,
            addr,
            in_process: None,
        };
        site.restart()?;
        Ok(site)
    }

    /// [`CaSite::start`], the CA running in this process (the real code, its key in the swtpm) and judging every
    /// time by `clock`, so a test can move it past a token's or a certificate's expiry instead of waiting.
    pub fn start_in_process(options: &CaOptions, clock: common::clock::Clock) -> anyhow::Result<CaSite> {
        let mut site = Self::start(options)?;
        if let Some(mut d) = site.daemon.take() {
            d.stop()?;
        }
        let cfg = <services::devid_ca::config::DevIdCaConfig as services::ConfigFile>::load(&site.config)?;
        let key = tpm::Tpm::open(&site.tpm.device())?.signing_key(cfg.handle)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = site.addr;
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            runtime.block_on(services::devid_ca::server::run(cfg, std::sync::Arc::new(key), clock, async move {
                let _ = stopped.await;
            }))?;
            anyhow::Ok(())
        });
        wait_for("the in-process CA to listen", std::time::Duration::from_secs(20), || {
            ensure!(!thread.is_finished(), "the in-process CA stopped at start");
            Ok(std::net::TcpStream::connect(addr).is_ok())
        })?;
        site.in_process = Some((stop, thread));
        Ok(site)
    }

    /// The test directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// (Re)starts the CA process.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut old) = self.daemon.take() {
            old.stop()?;
        }
        let log = self.dir.path().join(format!("devid-ca.{}.log", crate::ports::free_port()?));
        let conf = self.config.display().to_string();
        let daemon = Daemon::spawn(CA, &[&conf], &[], &log, Ready::TcpAddr(self.addr))?;
        // It listens before it serves: serving starts once its first CRL is written.
        daemon.wait_log("CRL signed and written", 1)?;
        self.daemon = Some(daemon);
        Ok(())
    }

    /// The running CA process.
    pub fn daemon(&mut self) -> anyhow::Result<&mut Daemon> {
        self.daemon.as_mut().context("the CA is not running")
    }

    /// The CA process's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().and_then(Daemon::pid)
    }

    /// Kills the CA with SIGKILL (no chance to finish anything).
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut d) = self.daemon.take() {
            d.kill()?;
        }
        Ok(())
    }

    /// `devid-ca ARGS... CONFIG`: (exit code, stdout, stderr).
    pub fn admin(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let mut all: Vec<&str> = args.to_vec();
        let conf = self.config.display().to_string();
        all.push(&conf);
        run_bin(CA, &all, b"")
    }

    /// A one-time token for `name`.
    pub fn token(&self, name: &str, ttl: &str) -> anyhow::Result<String> {
        let (code, out, err) = self.admin(&["token", "create", "--name", name, "--ttl", ttl])?;
        ensure!(code == 0, "token create failed ({code}): {err}");
        Ok(out.trim().to_owned())
    }

    /// The certificates the CA lists: (serial, state, name, not_after, ek hash).
    pub fn list(&self) -> anyhow::Result<Vec<Vec<String>>> {
        let (code, out, err) = self.admin(&["list"])?;
        ensure!(code == 0, "list failed ({code}): {err}");
        Ok(out.lines().map(|l| l.split_whitespace().map(str::to_owned).collect()).collect())
    }

    /// Appends `line` to the inventory (the CA re-reads it).
    pub fn approve(&self, line: &str) -> anyhow::Result<()> {
        let mut text = std::fs::read_to_string(&self.inventory)?;
        text.push_str(line.trim());
        text.push('\n');
        std::fs::write(&self.inventory, text)?;
        Ok(())
    }

    /// `devid enroll` of the node on `tpm` into `out_dir`, with `extra` arguments: (exit code, stderr).
    pub fn enroll(&self, tpm: &Swtpm, out_dir: &Path, extra: &[&str]) -> anyhow::Result<(i32, String)> {
        let device = tpm.device().to_string();
        let (out, ca, tls) =
            (out_dir.display().to_string(), self.ca_cert.display().to_string(), self.tls_ca.display().to_string());
        let mut args = vec![
            "enroll",
            "--url",
            &self.url,
            "--ca-cert",
            &ca,
            "--tls-ca",
            &tls,
            "--out-dir",
            &out,
            "--tpm-device",
            &device,
        ];
        args.extend_from_slice(extra);
        let (code, _, stderr) = run_bin(DEVID, &args, b"")?;
        Ok((code, stderr))
    }
}

/// The inventory line of the node on `tpm` (`devid ek-hash`).
pub fn ek_hash_line(tpm: &Swtpm, name: &str) -> anyhow::Result<String> {
    let device = tpm.device().to_string();
    let (code, out, err) = run_bin(DEVID, &["ek-hash", "--tpm-device", &device, "--name", name], b"")?;
    ensure!(code == 0, "ek-hash failed ({code}): {err}");
    Ok(out.trim().to_owned())
}

/// A node speaking the enrollment protocol step by step, so a test can change any part of it (the real `enroll`
/// does the honest thing in one go).
#[derive(Debug)]
pub struct RawNode {
    tpm: tpm::Tpm,
    /// Its DevID, in its TPM.
    pub blobs: tpm::devid::DevIdBlobs,
    hierarchies: tpm::attest::Hierarchies,
}

impl RawNode {
    /// A node on `tpm` with a fresh DevID of `key_type`.
    pub fn new(tpm: &Swtpm, key_type: tpm::KeyType) -> anyhow::Result<RawNode> {
        let t = tpm::Tpm::open(&tpm.device())?;
        let hierarchies = tpm::attest::Hierarchies::default();
        let blobs = t.create_devid(key_type, &hierarchies.owner, &tpm::Password::default())?;
        Ok(RawNode { tpm: t, blobs, hierarchies })
    }

    /// Exchange 1's request, and the TPM state to answer with.
    pub fn request(
        &self,
        token: Option<&str>,
    ) -> anyhow::Result<(crypto::devid::enroll::EnrollRequest, tpm::attest::PendingAttestation)> {
        let (evidence, pending) =
            self.tpm.enrollment_evidence(&self.blobs, &tpm::Password::default(), &self.hierarchies)?;
        let request = crypto::devid::enroll::EnrollRequest {
            ek_pub: evidence.ek_pub,
            ek_cert: evidence.ek_cert.unwrap_or_default(),
            ak_pub: evidence.ak_pub,
            devid_pub: evidence.devid_pub,
            token: token.map(str::to_owned),
            renew: Vec::new(),
        };
        Ok((request, pending))
    }

    /// Exchange 2's honest answer to `challenge`.
    pub fn answer(
        &self,
        pending: &tpm::attest::PendingAttestation,
        challenge: &crypto::devid::enroll::EnrollChallenge,
    ) -> anyhow::Result<crypto::devid::enroll::EnrollAnswer> {
        let proof = pending.answer_enrollment(&challenge.nonce, &challenge.credential, &challenge.secret)?;
        Ok(crypto::devid::enroll::EnrollAnswer {
            session: challenge.session.clone(),
            certify_info: proof.certify_info,
            certify_signature: proof.certify_signature,
            devid_signature: plugin::devid::signature::der(self.blobs.key.key_type(), proof.devid_signature)?,
            activated_secret: proof.activated_secret.to_vec(),
        })
    }
}

/// An HTTPS client of the CA (a node's, or a load generator's worker): each request on a new TLS connection, as
/// `enroll` makes them.
#[derive(Debug)]
pub struct CaClient {
    client: common::client::HttpClient,
    runtime: tokio::runtime::Runtime,
    url: String,
}

impl CaClient {
    /// POSTs `body` (JSON) to `path`: (status, body).
    pub fn post(&self, path: &str, body: &impl serde::Serialize) -> anyhow::Result<(u16, String)> {
        let url = common::client::HttpUrl::parse(&format!("{}{path}", self.url))?;
        let body = bytes::Bytes::from(serde_json::to_vec(body)?);
        let resp = self.runtime.block_on(self.client.send(http::Method::POST, &url, &[], body))?;
        Ok((resp.status.as_u16(), String::from_utf8_lossy(&resp.body).into_owned()))
    }
}

impl CaSite {
    /// A client of the CA trusting its HTTPS certificate.
    pub fn client(&self) -> anyhow::Result<CaClient> {
        let client = common::client::HttpClient::new(common::client::ClientOptions {
            timeout: std::time::Duration::from_secs(30),
            max_body: 1 << 20,
            ca_file: Some(self.tls_ca.clone()),
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(CaClient { client, runtime, url: self.url.clone() })
    }

    /// POSTs `body` (JSON) to `path` on a new connection: (status, body).
    pub fn post(&self, path: &str, body: &impl serde::Serialize) -> anyhow::Result<(u16, String)> {
        self.client()?.post(path, body)
    }
}

/// The agent plugin's `plugin_data` (HCL) for a node enrolled into `out_dir` on `tpm`.
pub fn agent_hcl(tpm: &Swtpm, out_dir: &Path) -> String {
    format!(
        "tpm_device_path = \"{}\"\ndevid_cert_path = \"{}\"\ndevid_priv_path = \"{}\"\ndevid_pub_path = \"{}\"\n",
        tpm.device(),
        out_dir.join("devid.crt.pem").display(),
        out_dir.join("devid.priv.blob").display(),
        out_dir.join("devid.pub.blob").display(),
    )
}

/// The DevID leaf certificate a node holds in `out_dir`.
pub fn held_leaf(out_dir: &Path) -> anyhow::Result<crypto::devid::Cert> {
    let certs = crypto::devid::chain::parse_pem_bundle(&std::fs::read(out_dir.join("devid.crt.pem"))?)?;
    certs.into_iter().next().context("no certificate in devid.crt.pem")
}

impl CaSite {
    /// Our server plugin's `plugin_data` (HCL): this CA's chain, the manufacturers' CAs in `endorsement_ca`, and
    /// this CA's CRL when `with_crl`.
    pub fn server_hcl(&self, endorsement_ca: &Path, with_crl: bool) -> String {
        let mut hcl = format!(
            "devid_ca_path = \"{}\"\nendorsement_ca_path = \"{}\"\n",
            self.ca_cert.display(),
            endorsement_ca.display()
        );
        if with_crl {
            hcl.push_str(&format!("devid_crl_path = \"{}\"\n", self.crl.display()));
        }
        hcl
    }

    /// The CRL file as the server plugin reads it, verified against the CA's certificate.
    pub fn read_crl(&self) -> anyhow::Result<crypto::devid::crl::Crl> {
        let anchors = crypto::devid::chain::parse_pem_bundle(&std::fs::read(&self.ca_cert)?)?;
        Ok(crypto::devid::crl::Crl::parse(&std::fs::read(&self.crl)?, &anchors)?)
    }

    /// Waits until the CRL file lists `serial` (the CA writes it within seconds of a revocation).
    pub fn wait_for_crl_listing(&self, serial: &[u8]) -> anyhow::Result<crypto::devid::crl::Crl> {
        wait_until("the CRL to list the serial", std::time::Duration::from_secs(30), || {
            // The file is replaced by rename: a read sees the old CRL or the new one, never half of one.
            let crl = self.read_crl()?;
            Ok(crl.revokes(serial).then_some(crl))
        })
    }
}
