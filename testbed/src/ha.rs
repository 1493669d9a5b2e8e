//! The HA scenario: SPIRE servers a and b, each with its own TPM, plus a shared offline backup TPM c. Each
//! server's bundle is signed by its own TPM and co-signed by the other's (signer-http), published by its own
//! nginx, and every node verifies both signatures. Used by the end-to-end test and by `make testbed`.
//!
//! Each server publishes through the sign plugin, loaded by the testbed's go-plugin host exactly as SPIRE
//! loads a BundlePublisher.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};

use crate::agent;
use crate::host::{spire_bundle, PluginHost};
use crate::nginx::Nginx;
use crate::pki;
use crate::process::{Daemon, Ready};
use crate::single::{provision, start_signer_publishing, start_verifier, wait_for_answer, Report, SIGN};
use crate::swtpm::Swtpm;

/// The co-signer binary.
pub const SIGNER_HTTP: &str = "spire-server-attestor-tpm-signer-http";

use crate::ports::free_port;

/// Starts signer-http for server `name`, in front of `socket`, trusting `primary` (and backup c).
pub(crate) fn start_cosigner(
    dir: &Path,
    name: &str,
    socket: &Path,
    primary: &str,
) -> anyhow::Result<(Daemon, SocketAddr)> {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "socket: {}\nkeydir: keys\nprimary: {primary}\nbackup: c.pem\nlisten-addr: \"{addr}\"\nallowed-addrs:\n- 127.0.0.1\n- localhost\n",
            socket.display()
        ),
    )?;
    let d = Daemon::spawn(
        SIGNER_HTTP,
        &[&conf.display().to_string()],
        &[],
        &dir.join(format!("{name}.log")),
        Ready::TcpAddr(addr),
    )?;
    Ok((d, addr))
}

fn published(root: &Path) -> String {
    std::fs::read_to_string(root.join("spiffetrustbundle.token")).unwrap_or_default()
}

/// Runs the HA scenario, reporting each step.
pub fn run(report: Report<'_>) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    for d in ["keys", "www-a", "www-b"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let (www_a, www_b): (PathBuf, PathBuf) = (dir.join("www-a"), dir.join("www-b"));

    report("Start three software TPMs: server a's, server b's, and the shared offline backup c.");
    let a = Swtpm::start()?;
    let mut b = Swtpm::start()?;
    let c = Swtpm::start()?;
    provision(&a, "rsa2048", &dir.join("keys/a.pem"))?;
    provision(&b, "ecc-p256", &dir.join("keys/b.pem"))?;
    provision(&c, "rsa2048", &dir.join("keys/c.pem"))?;
    report("  keys/a.pem (RSA), keys/b.pem (ECC), keys/c.pem (RSA, the backup) copied to every node");

    report("On each server: signer-unix on its TPM, signer-http co-signing for the other server, nginx.");
    let (sock_a, sock_b) = (dir.join("signer-a.sock"), dir.join("signer-b.sock"));
    let _sa = start_signer_publishing(dir, "signer-a", &a, &www_a, "10m", &sock_a, &["a.pem", "b.pem"], Some("c.pem"))?;
    let mut sb =
        start_signer_publishing(dir, "signer-b", &b, &www_b, "10m", &sock_b, &["b.pem", "a.pem"], Some("c.pem"))?;
    let (_ha, http_a) = start_cosigner(dir, "http-a", &sock_a, "b.pem")?;
    let (mut hb, http_b) = start_cosigner(dir, "http-b", &sock_b, "a.pem")?;
    let nginx_a = Nginx::start(&www_a)?;
    let nginx_b = Nginx::start(&www_b)?;
    report(&format!("  signer-http a at {http_a} (accepts b's tokens), b at {http_b} (accepts a's tokens)"));

    report("Each SPIRE server loads the sign plugin (BundlePublisher) configured with the other's signer-http.");
    let ca = pki::spire_ca(dir, "example.org", "ca")?;
    let url_b = format!("http://{http_b}/sign");
    let url_a = format!("http://{http_a}/sign");
    let plugin_a = load_plugin(&sock_a, &url_b)?;
    let plugin_b = load_plugin(&sock_b, &url_a)?;
    report("  handshake, Init, Validate, Configure done for both, as SPIRE does at start-up");

    report("SPIRE calls PublishBundle: each server signs locally, has the other co-sign, and publishes.");
    plugin_a.publish_bundle(Some(spire_bundle("example.org", &ca, 1)?)).context("PublishBundle on a")?;
    plugin_b.publish_bundle(Some(spire_bundle("example.org", &ca, 1)?)).context("PublishBundle on b")?;
    let (t_a, t_b) = (published(&www_a), published(&www_b));
    report(&format!(
        "  a published {} bytes (signed a, then b); b published {} bytes (signed b, then a)",
        t_a.len(),
        t_b.len()
    ));

    let (verifier, vsock) = node_verifier(dir, &nginx_a, &nginx_b, &ca, report)?;
    let single = refuse_one_signature_and_the_bypass(dir, &sock_a, &www_a, &t_a, (&verifier, &vsock), &ca, report)?;

    report("A peer at a disallowed address (127.0.0.2) asks signer-http b to co-sign: refused before parsing.");
    let r = agent::tcp_from("127.0.0.2".parse()?, http_b, &agent::post("/sign", "application/jwt", single.as_bytes()))?;
    ensure!(r.status == 403, "disallowed peer got {}", r.status);
    report(&format!("  403: {}", r.body.trim()));

    report(
        "Server a's co-signer goes down: server b's PublishBundle fails loudly; its last good token stays published.",
    );
    drop(_ha);
    let ca2 = pki::spire_ca(dir, "example.org", "ca2")?;
    let rotated = format!("{}\n{ca2}", ca.trim_end());
    let err = match plugin_b.publish_bundle(Some(spire_bundle("example.org", &rotated, 2)?)) {
        Ok(()) => anyhow::bail!("publish succeeded without the co-signer"),
        Err(e) => e,
    };
    ensure!(
        err.message().contains(&format!("cannot connect to {url_a}")),
        "PublishBundle failed, but not for the co-signer: {}",
        err.message()
    );
    ensure!(published(&www_b) == t_b, "something was published");
    ensure!(agent::get(&vsock, &agent::bootstrap_path("b"))?.body == ca, "served bundle changed");
    report(&format!("  PublishBundle: {:?}: {}", err.code(), err.message()));
    let (_ha2, http_a2) = start_cosigner(dir, "http-a2", &sock_a, "b.pem")?;
    let url_a = format!("http://{http_a2}/sign");

    report("Server b's TPM is lost: b's signer-unix moves to the backup TPM c. Nothing changes on the node.");
    sb.stop()?;
    b.stop()?;
    hb.stop()?;
    let sock_c = dir.join("signer-b-on-c.sock");
    let _sc =
        start_signer_publishing(dir, "signer-b-on-c", &c, &www_b, "10m", &sock_c, &["b.pem", "a.pem"], Some("c.pem"))?;
    let (_hc, http_c) = start_cosigner(dir, "http-b-on-c", &sock_c, "a.pem")?;
    let url_c = format!("http://{http_c}/sign");
    // The operators point each plugin at the new endpoints (SPIRE re-runs Configure on a changed plugin_data_file).
    plugin_a.configure(&hcl(&sock_a, &url_c), "example.org").context("reconfigure a")?;
    plugin_b.configure(&hcl(&sock_c, &url_a), "example.org").context("reconfigure b")?;
    plugin_a
        .publish_bundle(Some(spire_bundle("example.org", &rotated, 2)?))
        .context("server a co-signed by the backup")?;
    plugin_b
        .publish_bundle(Some(spire_bundle("example.org", &rotated, 2)?))
        .context("server b (on c) co-signed by a")?;
    for side in ["a", "b"] {
        wait_for_answer(&vsock, side, "the rotated bundle signed with the backup", |r| {
            r.status == 200 && r.body.contains(ca2.trim())
        })?;
    }
    verifier.wait_log("token verified with the BACKUP key", 1)?;
    report("  both keysets serve the rotated bundle; c stood in for b in each chain (logged as backup use)");
    drop(verifier);
    for (name, p) in [("a", plugin_a), ("b", plugin_b)] {
        let code = p.unload()?;
        ensure!(code == 0, "plugin {name} exited {code}");
    }
    report("SPIRE unloads the plugins: Deinit, Shutdown, both exit 0.");
    Ok(())
}

/// A node's verifier with keysets a (chain [a, b]) and b (chain [b, a]), both with backup c, serving `ca` on
/// both sides: the verifier and its socket.
fn node_verifier(
    dir: &Path,
    nginx_a: &Nginx,
    nginx_b: &Nginx,
    ca: &str,
    report: Report<'_>,
) -> anyhow::Result<(Daemon, PathBuf)> {
    report("A node's verifier has keysets a (chain [a, b]) and b (chain [b, a]), both with backup c.");
    let vsock = dir.join("verifier.sock");
    let vconf = dir.join("verifier.conf");
    std::fs::write(
        &vconf,
        format!(
            "keydir: keys\nsocket: {}\nstate-dir: {}\nrefresh: 1s\nkeyset:\n  a:\n    url: {}\n    backup: c.pem\n    chain: [a.pem, b.pem]\n  b:\n    url: {}\n    backup: c.pem\n    chain: [b.pem, a.pem]\n",
            vsock.display(),
            dir.join("state").display(),
            nginx_a.url("/spiffetrustbundle.token"),
            nginx_b.url("/spiffetrustbundle.token")
        ),
    )?;
    let verifier = start_verifier(dir, &vconf, &vsock)?;
    for side in ["a", "b"] {
        let r = wait_for_answer(&vsock, side, "both keysets", |r| r.status == 200)?;
        ensure!(r.body == ca, "keyset {side} served a different bundle");
    }
    report("  instance=a: 200, instance=b: 200 (the SPIRE HA agent's two sides both bootstrap)");
    Ok((verifier, vsock))
}

/// A token with a's signature only, then one wrapped by an unknown key, put on a's web server: both rejected,
/// the good one (`t_a`) kept and put back. Returns the single-signature token.
fn refuse_one_signature_and_the_bypass(
    dir: &Path,
    sock_a: &Path,
    www_a: &Path,
    t_a: &str,
    (verifier, vsock): (&Daemon, &Path),
    ca: &str,
    report: Report<'_>,
) -> anyhow::Result<String> {
    report("A token with server a's signature only is put on a's web server: rejected, the good one kept.");
    let single = agent::send(sock_a, "POST", "/sign", &[], ca.as_bytes())?.body;
    std::fs::write(www_a.join("spiffetrustbundle.token"), &single)?;
    verifier.wait_log("token rejected", 1)?;
    ensure!(
        agent::get(vsock, &agent::bootstrap_path("a"))?.body == ca,
        "single-signature token changed what is served"
    );
    report("  rejected: layer 0 must be b's signature");

    report("A token whose outer layer is signed by an unknown key (the Go original's backup bypass): rejected.");
    let bypass = rogue_token_wrapping(dir, &single)?;
    std::fs::write(www_a.join("spiffetrustbundle.token"), &bypass)?;
    verifier.wait_log("token rejected", 2)?;
    ensure!(agent::get(vsock, &agent::bootstrap_path("a"))?.status == 200, "good bundle no longer served");
    std::fs::write(www_a.join("spiffetrustbundle.token"), t_a)?;
    report("  rejected although a backup key is configured");
    Ok(single)
}

fn hcl(socket: &Path, url: &str) -> String {
    format!("socket = \"{}\"\nurls = [\"{url}\"]\ntimeout = \"5s\"\n", socket.display())
}

fn load_plugin(socket: &Path, cosigner: &str) -> anyhow::Result<PluginHost> {
    let host = PluginHost::launch(SIGN, "BundlePublisher")?;
    host.init()?;
    let text = hcl(socket, cosigner);
    let v = host.validate(&text, "example.org")?;
    ensure!(v.valid, "Validate: {:?}", v.notes);
    host.configure(&text, "example.org")?;
    Ok(host)
}

/// Wraps `inner` in an outer layer signed by a key nobody trusts.
fn rogue_token_wrapping(dir: &Path, inner: &str) -> anyhow::Result<String> {
    crate::single::rogue_token_with(dir, crypto::token::Payload::Token(inner.to_owned()))
}
