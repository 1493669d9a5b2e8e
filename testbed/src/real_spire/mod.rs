//! Scenarios with the real SPIRE v1.13.3: spire-server loads the sign plugin as a BundlePublisher, spire-agent
//! bootstraps through the verifier (`trust_bundle_url` + `trust_bundle_unix_socket`), with swtpm TPMs, the
//! real daemons and Debian's nginx. Used by `testbed/tests/e2e_spire.rs` and by `make testbed`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};

use crate::agent;
use crate::devid::{DevIdLab, LabOptions};
use crate::nginx::Nginx;
use crate::process::{Daemon, Ready};
use crate::single::{
    provision, start_signer_at, start_signer_publishing, start_verifier, wait_for_answer, Report, SIGN,
};
use crate::spire::{
    external_plugin, short_dir, verify_svid, AgentOptions, Attestor, Bootstrap, ServerOptions, SpireAgent, SpireServer,
    Svid,
};
use crate::swtpm::Swtpm;
use crate::wait::{wait_paced, wait_until};

mod devid;
pub use devid::{devid, devid_agent_id, our_agent_devid, our_server_devid};

/// The trust domain of every scenario.
pub const TRUST_DOMAIN: &str = "example.org";
/// The published file, as signer-unix names it.
const TOKEN_FILE: &str = "spiffetrustbundle.token";
/// How long a SPIRE process may take for one step (start-up, attestation, an SVID): generous for 2 cores.
const STEP: Duration = Duration::from_secs(90);

/// The `agent` block's bootstrap settings for keyset `instance` of the verifier at `socket`.
pub fn through_verifier(socket: &Path, instance: &str, format: &'static str) -> Bootstrap {
    let mut url = format!("http://localhost/trustbundle?instance={instance}");
    if format == "spiffe" {
        url.push_str("&format=spiffe");
    }
    Bootstrap::Url { url, socket: socket.to_owned(), format }
}

/// The sign plugin as SPIRE loads it: `plugin_cmd` + `plugin_checksum`, `plugin_data` pointing at signer-unix.
pub fn sign_plugin(socket: &Path, cosigners: &[String]) -> anyhow::Result<String> {
    let urls = cosigners.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
    let data = format!("socket = \"{}\"\nurls = [{urls}]\ntimeout = \"10s\"", socket.display());
    external_plugin("BundlePublisher", "tpm_sign", SIGN, &data)
}

/// Waits until `root`'s published token differs from `previous`; returns it.
pub fn wait_published(root: &Path, previous: &str) -> anyhow::Result<String> {
    wait_until(format!("a new token published in {}", root.display()), STEP, || {
        let now = std::fs::read_to_string(root.join(TOKEN_FILE)).unwrap_or_default();
        Ok((!now.is_empty() && now != previous).then_some(now))
    })
}

/// A join-token agent bootstrapping through `bootstrap`: healthy, then an SVID for a workload registered under
/// its node alias, verified against `spire-server bundle show`. Returns the agent and the workload's SPIFFE ID.
pub fn attest_and_fetch(
    server: &SpireServer,
    node: &str,
    bootstrap: Bootstrap,
    report: Report<'_>,
) -> anyhow::Result<(SpireAgent, String)> {
    let token = server.join_token(node)?;
    let mut a = SpireAgent::start(&AgentOptions {
        trust_domain: TRUST_DOMAIN.into(),
        server_port: server.port(),
        bootstrap,
        attestor: Attestor::JoinToken(token.clone()),
        rebootstrap: None,
        key_manager: None,
    })?;
    a.wait_healthy(STEP)?;
    let agent_id = format!("spiffe://{TRUST_DOMAIN}/spire/agent/join_token/{token}");
    ensure!(server.agent_ids()?.contains(&agent_id), "spire-server agent list does not show {agent_id}");
    report(&format!("  spire-agent attested: {agent_id}"));
    let workload = server.register_workload(&format!("spiffe://{TRUST_DOMAIN}/{node}"), &format!("{node}/workload"))?;
    let svid = fetch_verified(&mut a, server, &workload)?;
    report(&format!(
        "  `spire-agent api fetch x509` gave {} (issuer {}, expires {}), whose chain verifies against `spire-server bundle show`",
        svid.id, svid.issuer, svid.not_after
    ));
    Ok((a, workload))
}

/// `api fetch x509` until the SVID is `want` and verifies against the server's current bundle.
pub fn fetch_verified(a: &mut SpireAgent, server: &SpireServer, want: &str) -> anyhow::Result<Svid> {
    let mut last = None;
    let verified = wait_paced(format!("an SVID for {want} that verifies"), STEP, Duration::from_millis(500), || {
        let (id, dir) = a.fetch_x509(STEP)?;
        match verify_svid(&dir, &server.bundle_pem()?) {
            Ok(svid) if id == want && svid.id == want => return Ok(Some(svid)),
            Ok(svid) => last = Some(anyhow::anyhow!("SVID is {id} (SAN {}), wanted {want}", svid.id)),
            Err(e) => last = Some(e),
        }
        Ok(None)
    });
    verified.map_err(|e| last.take().map_or(e, |last| last.context(format!("no verified SVID within {STEP:?}"))))
}

/// A node's verifier in `dir` (config, socket, state, log), refreshing every second, with one keyset per
/// `(name, url, chain as YAML, backup)`, key files in `keydir`. Returns the daemon and its socket.
fn node_verifier(
    dir: &Path,
    keydir: &Path,
    keysets: &[(&str, String, &str, &str)],
) -> anyhow::Result<(Daemon, PathBuf)> {
    let socket = dir.join("verifier.sock");
    let config = dir.join("verifier.conf");
    let mut text = format!(
        "keydir: {}\nsocket: {}\nstate-dir: {}\nrefresh: 1s\nkeyset:\n",
        keydir.display(),
        socket.display(),
        dir.join("state").display()
    );
    for (name, url, chain, backup) in keysets {
        text.push_str(&format!("  {name}:\n    url: {url}\n    backup: {backup}\n    chain: {chain}\n"));
    }
    std::fs::write(&config, text)?;
    Ok((start_verifier(dir, &config, &socket)?, socket))
}

/// Waits until the verifier's keyset `main` serves a bundle of `certs` CA certificates.
fn wait_serving(vsock: &Path, certs: usize, what: &str) -> anyhow::Result<()> {
    wait_for_answer(vsock, "main", what, |r| r.status == 200 && agent::accept_pem(&r.body).is_ok_and(|n| n == certs))?;
    Ok(())
}

/// `localauthority x509 revoke`, retried while SPIRE still refuses (it may until the taint has propagated).
fn revoke(server: &SpireServer, authority: &str) -> anyhow::Result<()> {
    let mut last = None;
    let what = format!("SPIRE to revoke {authority}");
    wait_paced(what, STEP, Duration::from_millis(500), || match server.local_authority("revoke", Some(authority)) {
        Ok(_) => Ok(Some(())),
        Err(e) => {
            last = Some(e);
            Ok(None)
        }
    })
    .map_err(|e| last.take().map_or(e, |last| last.context(format!("revoke {authority}"))))
}

/// One SPIRE server with its TPMs, signer-unix, nginx, and one node's verifier.
#[derive(Debug)]
pub struct Site {
    /// spire-server, publishing through the sign plugin.
    pub server: SpireServer,
    /// The verifier on the node (keyset `main`).
    pub verifier: Daemon,
    /// Its socket.
    pub vsock: PathBuf,
    /// The primary TPM.
    pub primary: Swtpm,
    /// The offline backup TPM.
    pub backup: Swtpm,
    /// signer-unix on the primary TPM.
    pub signer: Daemon,
    /// signer-unix's socket (the plugin's `socket`).
    pub socket: PathBuf,
    /// nginx.
    pub nginx: Nginx,
    dir: tempfile::TempDir,
}

impl Site {
    /// The directory holding keys, web root, configs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The web root signer-unix publishes into.
    pub fn webroot(&self) -> PathBuf {
        self.dir().join("www")
    }

    /// The token currently published.
    pub fn published(&self) -> String {
        std::fs::read_to_string(self.webroot().join(TOKEN_FILE)).unwrap_or_default()
    }

    /// Brings everything up: TPMs provisioned, signer-unix, nginx, spire-server with the sign plugin (waiting
    /// for its first publish), the verifier.
    pub fn start(report: Report<'_>) -> anyhow::Result<Site> {
        Self::start_with(report, Vec::new())
    }

    /// [`Site::start`] with more plugin blocks in the server's config (a NodeAttestor).
    pub fn start_with(report: Report<'_>, plugins: Vec<String>) -> anyhow::Result<Site> {
        let dir = short_dir("site")?;
        let p = dir.path();
        for d in ["keys", "www", "state"] {
            std::fs::create_dir_all(p.join(d))?;
        }
        report("Two swtpm TPMs: the SPIRE server's primary TPM and an offline backup; a key provisioned in each.");
        let primary = Swtpm::start()?;
        let backup = Swtpm::start()?;
        provision(&primary, "rsa2048", &p.join("keys/primary.pem"))?;
        provision(&backup, "ecc-p256", &p.join("keys/backup.pem"))?;
        report("signer-unix on the primary TPM publishes into nginx's root.");
        let socket = p.join("signer.sock");
        let signer = start_signer_at(p, "signer-primary", &primary, &p.join("www"), "10m", &socket)?;
        let nginx = Nginx::start(&p.join("www"))?;
        report("spire-server v1.13.3 loads spire-server-attestor-tpm-sign as a BundlePublisher (plugin_cmd, plugin_checksum).");
        let mut all = vec![sign_plugin(&socket, &[])?];
        all.extend(plugins);
        let server = SpireServer::start(&ServerOptions::new(TRUST_DOMAIN, all))?;
        let token = wait_published(&p.join("www"), "")?;
        ensure!(
            server.log().contains("Plugin loaded") && !server.log().contains("checksum not configured"),
            "spire-server did not load the plugin with its checksum"
        );
        report(&format!(
            "  SPIRE called PublishBundle at start-up: {} bytes published at {}",
            token.len(),
            nginx.url("/spiffetrustbundle.token")
        ));
        let main = ("main", nginx.url("/spiffetrustbundle.token"), "[primary.pem]", "backup.pem");
        let (verifier, vsock) = node_verifier(p, &p.join("keys"), &[main])?;
        report("The node's verifier runs in listen mode (keyset main: chain [primary], backup).");
        Ok(Site { server, verifier, vsock, primary, backup, signer, socket, nginx, dir })
    }

    /// Stops everything started here, by PID, checking each exits cleanly.
    pub fn stop(mut self) -> anyhow::Result<()> {
        ensure!(self.server.stop(), "spire-server did not stop cleanly on SIGTERM");
        ensure!(self.verifier.stop()?, "verifier did not stop cleanly");
        Ok(())
    }
}

/// (a) bootstrap through the verifier, PEM and SPIFFE; (b) a forged bundle is never trusted; (c) CA rotation
/// with prepare/activate/taint/revoke; (d) the primary TPM is lost and the backup stands in.
pub fn single(report: Report<'_>) -> anyhow::Result<()> {
    let mut site = Site::start(report)?;

    report("(a) A spire-agent bootstraps through the verifier: trust_bundle_url = \"http://localhost/trustbundle?instance=main\".");
    let (mut running, workload) =
        attest_and_fetch(&site.server, "node-pem", through_verifier(&site.vsock, "main", "pem"), report)?;
    ensure!(
        site.verifier.log().contains("SPIRE agent (re)bootstrap request"),
        "the agent's request never reached the verifier"
    );
    report("(a) Again with trust_bundle_format = \"spiffe\" (URL ...&format=spiffe).");
    let (mut spiffe_agent, _) =
        attest_and_fetch(&site.server, "node-spiffe", through_verifier(&site.vsock, "main", "spiffe"), report)?;
    ensure!(spiffe_agent.stop(), "spire-agent did not stop cleanly");

    report("(b) A token signed by an unknown key is in nginx's root; a second node's verifier has no cached state.");
    let forged_root = site.webroot().join("forged");
    std::fs::create_dir_all(&forged_root)?;
    let rogue = crate::single::rogue_token(site.dir(), &site.server.bundle_pem()?)?;
    std::fs::write(forged_root.join(TOKEN_FILE), &rogue)?;
    let v2 = site.dir().join("v2");
    std::fs::create_dir_all(&v2)?;
    let main = ("main", site.nginx.url("/forged/spiffetrustbundle.token"), "[primary.pem]", "backup.pem");
    let (mut v2d, v2sock) = node_verifier(&v2, &site.dir().join("keys"), &[main])?;
    let token = site.server.join_token("node-forged")?;
    let mut forged_agent = SpireAgent::start(&AgentOptions {
        trust_domain: TRUST_DOMAIN.into(),
        server_port: site.server.port(),
        bootstrap: through_verifier(&v2sock, "main", "pem"),
        attestor: Attestor::JoinToken(token.clone()),
        rebootstrap: None,
        key_manager: None,
    })?;
    forged_agent.wait_log("Failed to retrieve attestation result", 1, STEP)?;
    ensure!(forged_agent.log().contains("503 Service Unavailable"), "the agent's failure is not the verifier's 503");
    ensure!(!forged_agent.healthy(), "agent is healthy on a forged bundle");
    let agent_id = format!("spiffe://{TRUST_DOMAIN}/spire/agent/join_token/{token}");
    ensure!(!site.server.agent_ids()?.contains(&agent_id), "the server knows an agent that had only a forged bundle");
    report("  the verifier answers 503 (token rejected); the agent logs `Failed to retrieve attestation result` and retries; not attested");
    std::fs::write(forged_root.join(TOKEN_FILE), site.published())?;
    forged_agent.wait_healthy(STEP)?;
    ensure!(site.server.agent_ids()?.contains(&agent_id), "agent healthy but unknown to the server");
    report("  the genuine token restored: the agent, still retrying, attests");
    ensure!(forged_agent.stop(), "spire-agent did not stop cleanly");
    ensure!(v2d.stop()?, "second verifier did not stop cleanly");

    report("(c) CA rotation: spire-server localauthority x509 prepare.");
    let [old, _, _] = site.server.authorities()?;
    let before = site.published();
    let prepared = site.server.local_authority("prepare", None)?;
    let t = wait_published(&site.webroot(), &before)?;
    wait_serving(&site.vsock, 2, "the bundle with the prepared CA")?;
    report(&format!("  prepared {prepared}: the plugin re-signed at once, the verifier serves 2 CA certificates"));
    let (mut fresh, _) =
        attest_and_fetch(&site.server, "node-c1", through_verifier(&site.vsock, "main", "pem"), report)?;
    ensure!(fresh.stop(), "spire-agent did not stop cleanly");
    site.server.local_authority("activate", Some(&prepared))?;
    report(&format!("  activated {prepared}; taint the old CA {old}"));
    site.server.local_authority("taint", Some(&old))?;
    let t = wait_published(&site.webroot(), &t)?;
    report("  tainting changed the bundle: re-signed and published");
    fetch_verified(&mut running, &site.server, &workload)?;
    revoke(&site.server, &old)?;
    wait_published(&site.webroot(), &t)?;
    wait_serving(&site.vsock, 1, "the bundle without the revoked CA")?;
    report(&format!("  revoked {old}: the verifier serves only the new CA"));
    let (mut fresh, _) =
        attest_and_fetch(&site.server, "node-c2", through_verifier(&site.vsock, "main", "pem"), report)?;
    ensure!(fresh.stop(), "spire-agent did not stop cleanly");
    fetch_verified(&mut running, &site.server, &workload)?;
    report("  the agent started before the rotation still serves its workload an SVID that verifies under the new CA");

    report(
        "(d) The primary TPM is lost: signer-unix moves to the backup TPM (same config). Nothing changes on the node.",
    );
    ensure!(site.signer.stop()?, "signer-unix did not stop cleanly");
    site.primary.stop()?;
    let before = site.published();
    let prepared = site.server.local_authority("prepare", None)?;
    site.server.wait_log("Failed to publish bundle", 1, STEP)?;
    ensure!(site.published() == before, "something was published with no signer");
    ensure!(agent::get(&site.vsock, &agent::bootstrap_path("main"))?.status == 200, "the node lost its bundle");
    report(&format!(
        "  prepared {prepared} while no signer runs: SPIRE logs `Failed to publish bundle`; nothing is published, nodes keep the last good bundle"
    ));
    let backup_signer =
        start_signer_at(site.dir(), "signer-backup", &site.backup, &site.webroot(), "10m", &site.socket)?;
    wait_published(&site.webroot(), &before)?;
    wait_serving(&site.vsock, 2, "the bundle signed by the backup TPM")?;
    ensure!(site.verifier.log().contains("BACKUP key standing in"), "the verifier did not log the backup's use");
    report("  signer-unix on the backup TPM: SPIRE's next PublishBundle (every 30 s) signs with it; the verifier accepts it (backup use logged)");
    let (mut fresh, _) =
        attest_and_fetch(&site.server, "node-d", through_verifier(&site.vsock, "main", "pem"), report)?;
    ensure!(fresh.stop(), "spire-agent did not stop cleanly");
    ensure!(running.stop(), "spire-agent did not stop cleanly");
    drop(backup_signer);
    site.stop()
}

/// Starts signer-http for `name` in front of `socket`, co-signing tokens whose innermost layer `primary` signed.
pub fn cosigner(dir: &Path, name: &str, socket: &Path, primary: &str) -> anyhow::Result<(Daemon, String)> {
    let port = crate::ports::free_port()?;
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "socket: {}\nkeydir: keys\nprimary: {primary}\nbackup: c.pem\nlisten-addr: \"127.0.0.1:{port}\"\nallowed-addrs:\n- 127.0.0.1\n",
            socket.display()
        ),
    )?;
    let d = Daemon::spawn(
        crate::ha::SIGNER_HTTP,
        &[&conf.display().to_string()],
        &[],
        &dir.join(format!("{name}.log")),
        Ready::Tcp(port),
    )
    .context("starting signer-http")?;
    Ok((d, format!("http://127.0.0.1:{port}/sign")))
}

/// What spire-agent logs when its cached bundle no longer verifies the server and it re-bootstraps: v1.13.3's
/// words, then v1.14's and later's.
const REBOOTSTRAP_WORDS: [&str; 2] =
    ["Trust Bandle and Server dont agree.... rebootstrapping", "Trust Bundle and Server don't agree, rebootstrapping"];

/// (g) A node powered down too long: its agent (tpm_devid, `rebootstrap_mode = "always"`) is stopped while
/// SPIRE's CA is rotated and the old one revoked; started again on its old `data_dir`, it re-bootstraps
/// through the verifier, re-attests with its DevID and serves SVIDs again. Nothing on the node changes.
pub fn powered_down(report: Report<'_>) -> anyhow::Result<()> {
    let lab = DevIdLab::new(LabOptions::default())?;
    let id = devid_agent_id(&lab)?;
    let site = Site::start_with(report, vec![our_server_devid(&lab)?])?;
    let opts = AgentOptions {
        trust_domain: TRUST_DOMAIN.into(),
        server_port: site.server.port(),
        bootstrap: through_verifier(&site.vsock, "main", "pem"),
        attestor: Attestor::Plugin(our_agent_devid(&lab)?),
        rebootstrap: Some(("always", "1s")),
        key_manager: None,
    };
    report("(g) A node's spire-agent attests with its TPM DevID, rebootstrap_mode = \"always\", rebootstrap_delay = \"1s\".");
    let mut node = SpireAgent::start(&opts)?;
    node.wait_healthy(STEP)?;
    let workload = site.server.register_workload(&id, "powered-down/workload")?;
    fetch_verified(&mut node, &site.server, &workload)?;
    report(&format!("  attested as {id}; its workload has {workload}"));
    report("The node is powered down. Meanwhile SPIRE's CA is rotated and the old CA revoked.");
    ensure!(node.stop(), "spire-agent did not stop cleanly");
    let [old, _, _] = site.server.authorities()?;
    let prepared = site.server.local_authority("prepare", None)?;
    site.server.local_authority("activate", Some(&prepared))?;
    site.server.local_authority("taint", Some(&old))?;
    revoke(&site.server, &old)?;
    wait_serving(&site.vsock, 1, "the bundle without the revoked CA")?;
    report(&format!(
        "  {old} revoked; only {prepared} is trusted: the node's cached bundle no longer verifies the server"
    ));
    report("The node powers up: the same spire-agent, the same config, its old data_dir.");
    let rebootstraps = |v: &Daemon| {
        v.log().lines().filter(|l| l.contains("bootstrap request") && l.contains("mode=\"rebootstrap\"")).count()
    };
    let before = rebootstraps(&site.verifier);
    node.restart(&opts)?;
    let restarts = node.wait_healthy_supervised(&opts, Duration::from_secs(180))?;
    let log = node.log();
    // The agent's words: v1.13.3's, and v1.14 and later's (which may re-bootstrap without exiting). What reached
    // the verifier below is the judge.
    ensure!(
        REBOOTSTRAP_WORDS.iter().any(|w| log.contains(w)),
        "the agent never noticed the CA change (restarts: {restarts})"
    );
    ensure!(
        rebootstraps(&site.verifier) > before,
        "no rebootstrap request reached the verifier; its log:\n{}",
        site.verifier.log()
    );
    report(&format!(
        "  the agent noticed (`Trust Bundle and Server don't agree`), {} (restarted {restarts}x as systemd would),",
        "dropped its cached bundle and SVID"
    ));
    report("  fetched the bundle through the verifier again (spire-attest-mode=rebootstrap) and re-attested with its DevID");
    let svid = fetch_verified(&mut node, &site.server, &workload)?;
    ensure!(site.server.agent_ids()? == vec![id.clone()], "the server lists other agents");
    report(&format!(
        "  serving SVIDs again: {} (issuer {}, expires {}), chained to the new CA; still agent {id}",
        svid.id, svid.issuer, svid.not_after
    ));
    ensure!(node.stop(), "spire-agent did not stop cleanly");
    site.stop()
}

/// (e) HA: two spire-servers, each with its own TPM and the sign plugin co-signing through the other server's
/// signer-http, the backup TPM c shared; one agent per side bootstraps through `instance=a` / `instance=b` of
/// one verifier.
pub fn ha(report: Report<'_>) -> anyhow::Result<()> {
    let dir = short_dir("ha")?;
    let p = dir.path();
    for d in ["keys", "www-a", "www-b", "state"] {
        std::fs::create_dir_all(p.join(d))?;
    }
    report("(e) Three swtpm TPMs: server a's, server b's and the shared offline backup c, a key in each.");
    let (tpm_a, tpm_b, tpm_c) = (Swtpm::start()?, Swtpm::start()?, Swtpm::start()?);
    provision(&tpm_a, "rsa2048", &p.join("keys/a.pem"))?;
    provision(&tpm_b, "ecc-p256", &p.join("keys/b.pem"))?;
    provision(&tpm_c, "rsa2048", &p.join("keys/c.pem"))?;
    let (sock_a, sock_b) = (p.join("signer-a.sock"), p.join("signer-b.sock"));
    let (chain_a, chain_b, c) = (["a.pem", "b.pem"], ["b.pem", "a.pem"], Some("c.pem"));
    let _signer_a = start_signer_publishing(p, "signer-a", &tpm_a, &p.join("www-a"), "10m", &sock_a, &chain_a, c)?;
    let _signer_b = start_signer_publishing(p, "signer-b", &tpm_b, &p.join("www-b"), "10m", &sock_b, &chain_b, c)?;
    let (_http_a, url_a) = cosigner(p, "http-a", &sock_a, "b.pem")?;
    let (_http_b, url_b) = cosigner(p, "http-b", &sock_b, "a.pem")?;
    let nginx_a = Nginx::start(&p.join("www-a"))?;
    let nginx_b = Nginx::start(&p.join("www-b"))?;
    report("  each server: signer-unix on its TPM, signer-http co-signing the other's tokens, nginx");
    let mut server_a = SpireServer::start(&ServerOptions::new(
        TRUST_DOMAIN,
        vec![sign_plugin(&sock_a, std::slice::from_ref(&url_b))?],
    ))
    .context("server a")?;
    let mut server_b = SpireServer::start(&ServerOptions::new(
        TRUST_DOMAIN,
        vec![sign_plugin(&sock_b, std::slice::from_ref(&url_a))?],
    ))
    .context("server b")?;
    wait_published(&p.join("www-a"), "")?;
    wait_published(&p.join("www-b"), "")?;
    report("  spire-server a and b started; each published a token signed by its TPM and co-signed by the other's");
    let keysets = [
        ("a", nginx_a.url("/spiffetrustbundle.token"), "[a.pem, b.pem]", "c.pem"),
        ("b", nginx_b.url("/spiffetrustbundle.token"), "[b.pem, a.pem]", "c.pem"),
    ];
    let (mut verifier, vsock) = node_verifier(p, &p.join("keys"), &keysets)?;
    report("  the node's verifier: keyset a (chain [a, b]) and b (chain [b, a]), both with backup c");
    for (name, server) in [("a", &server_a), ("b", &server_b)] {
        report(&format!("  side {name}: trust_bundle_url = \"http://localhost/trustbundle?instance={name}\""));
        let (mut a, _) =
            attest_and_fetch(server, &format!("node-{name}"), through_verifier(&vsock, name, "pem"), report)
                .with_context(|| format!("side {name}"))?;
        ensure!(a.stop(), "spire-agent {name} did not stop cleanly");
        let served = agent::get(&vsock, &agent::bootstrap_path(name))?;
        ensure!(
            crypto::bundle::Bundle::parse(&served.body)?.certificates().len() == 1
                && server.bundle_pem()?.contains(served.body.trim()),
            "keyset {name} does not serve server {name}'s bundle"
        );
    }
    ensure!(server_a.stop() && server_b.stop(), "a spire-server did not stop cleanly");
    ensure!(verifier.stop()?, "verifier did not stop cleanly");
    Ok(())
}

/// For `make bench`: `rounds` fresh join-token agents, alternating between bootstrapping through the verifier and
/// from `trust_bundle_path` (the same bundle in a local file); each is timed from its start until its Workload API
/// socket appears (node attestation done, its own X509-SVID held). Returns (through the verifier, from the file).
pub fn bootstrap_timing(rounds: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let site = Site::start(&mut |_: &str| {})?;
    let file = site.dir().join("bootstrap.pem");
    let served = agent::get(&site.vsock, &agent::bootstrap_path("main"))?;
    ensure!(served.status == 200, "verifier answered {}", served.status);
    std::fs::write(&file, &served.body)?;
    let (mut verifier, mut local) = (Vec::new(), Vec::new());
    for i in 0..rounds * 2 {
        let through = i % 2 == 0;
        let bootstrap =
            if through { through_verifier(&site.vsock, "main", "pem") } else { Bootstrap::Path(file.clone()) };
        let token = site.server.join_token(&format!("bench-{i}"))?;
        let opts = AgentOptions {
            trust_domain: TRUST_DOMAIN.into(),
            server_port: site.server.port(),
            bootstrap,
            attestor: Attestor::JoinToken(token),
            rebootstrap: None,
            key_manager: None,
        };
        let started = Instant::now();
        let mut a = SpireAgent::start(&opts)?;
        while !a.socket().exists() {
            ensure!(started.elapsed() < STEP, "agent {i} never attested");
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = started.elapsed();
        a.wait_healthy(STEP)?;
        ensure!(a.stop(), "spire-agent did not stop cleanly");
        if through {
            verifier.push(took)
        } else {
            local.push(took)
        }
    }
    site.stop()?;
    Ok((verifier, local))
}

/// Plugin configurations spire-server must refuse at start-up, and the line each puts in SPIRE's log: a wrong
/// `plugin_checksum`, bad `plugin_data` for the sign plugin and for our server NodeAttestor.
pub fn refused_configs() -> anyhow::Result<Vec<(&'static str, String)>> {
    let sign = crate::process::bin_path(SIGN)?.canonicalize()?;
    let rows: Vec<(&'static str, String, &'static str)> = vec![
        (
            "plugin_checksum of another binary",
            format!(
                "  BundlePublisher \"tpm_sign\" {{\n    plugin_cmd = \"{}\"\n    plugin_checksum = \"{}\"\n    plugin_data {{}}\n  }}\n",
                sign.display(),
                "0".repeat(64)
            ),
            "checksum",
        ),
        (
            "sign plugin: frequency is not a duration",
            external_plugin("BundlePublisher", "tpm_sign", SIGN, "frequency = \"often\"")?,
            "frequency",
        ),
        (
            "sign plugin: unknown key",
            external_plugin("BundlePublisher", "tpm_sign", SIGN, "sockett = \"/run/x.sock\"")?,
            "unknown key \\\"sockett\\\"",
        ),
        (
            "tpm_devid server: endorsement_ca_path missing",
            external_plugin("NodeAttestor", "tpm_devid", "spire-server-nodeattestor-tpm-devid", "devid_ca_path = \"/nonexistent.pem\"")?,
            "endorsement_ca_path is required",
        ),
    ];
    let mut seen = Vec::new();
    for (case, block, needle) in rows {
        let log = SpireServer::start_refused(&ServerOptions::new(TRUST_DOMAIN, vec![block]))?;
        let errors = || log.lines().filter(|l| l.contains("level=error") && l.contains(needle));
        let line = errors()
            .find(|l| l.contains("Fatal run error"))
            .or_else(|| errors().next())
            .with_context(|| format!("{case}: no error naming {needle:?} in SPIRE's log:\n{log}"))?;
        seen.push((case, line.to_owned()));
    }
    Ok(seen)
}
