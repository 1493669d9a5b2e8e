//! The single-server scenario (issue: one SPIRE server, primary + backup TPM), end to end with the real
//! binaries, two swtpm TPMs and nginx. Used by the end-to-end test and by `make testbed`, so what a developer
//! watches is exactly what CI asserts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::ensure;

use crate::agent;
use crate::nginx::Nginx;
use crate::pki;
use crate::process::{run_bin, Daemon, Ready};
use crate::swtpm::Swtpm;

/// Binary names, as installed.
pub const SIGNER_UNIX: &str = "spire-server-attestor-tpm-signer-unix";
/// The verifier binary.
pub const VERIFIER: &str = "spire-server-attestor-tpm-verifier";
/// The sign CLI / plugin binary.
pub const SIGN: &str = "spire-server-attestor-tpm-sign";

/// Prints (or records) one step of a scenario.
pub type Report<'a> = &'a mut dyn FnMut(&str);

/// Provisions a signing key on `tpm` with the real `signer-unix provision` command; returns the PEM path.
pub fn provision(tpm: &Swtpm, key_type: &str, out: &Path) -> anyhow::Result<PathBuf> {
    let (code, _stdout, stderr) = run_bin(
        SIGNER_UNIX,
        &[
            "provision",
            "--tpm-device",
            &tpm.device().to_string(),
            "--key-type",
            key_type,
            "--out",
            &out.display().to_string(),
        ],
        b"",
    )?;
    ensure!(code == 0, "provision failed ({code}): {stderr}");
    Ok(out.to_owned())
}

/// Starts signer-unix on `tpm`, publishing into `webroot`, with token lifetime `duration` (Go syntax).
pub fn start_signer(
    dir: &Path,
    name: &str,
    tpm: &Swtpm,
    webroot: &Path,
    duration: &str,
) -> anyhow::Result<(Daemon, PathBuf)> {
    let socket = dir.join(format!("{name}.sock"));
    let daemon = start_signer_at(dir, name, tpm, webroot, duration, &socket)?;
    Ok((daemon, socket))
}

/// [`start_signer`] with the socket at `socket` (a signer moved to another TPM keeps its clients' socket).
pub fn start_signer_at(
    dir: &Path,
    name: &str,
    tpm: &Swtpm,
    webroot: &Path,
    duration: &str,
    socket: &Path,
) -> anyhow::Result<Daemon> {
    start_signer_publishing(dir, name, tpm, webroot, duration, socket, &[], None)
}

/// [`start_signer_at`] for a signer that publishes co-signed tokens: `/publish` accepts what verifies under
/// `chain` (innermost signer first, key files in `dir/keys`) with `backup`, as the nodes check it.
#[allow(clippy::too_many_arguments)]
pub fn start_signer_publishing(
    dir: &Path,
    name: &str,
    tpm: &Swtpm,
    webroot: &Path,
    duration: &str,
    socket: &Path,
    chain: &[&str],
    backup: Option<&str>,
) -> anyhow::Result<Daemon> {
    let config = dir.join(format!("{name}.conf"));
    let mut text = format!(
        "socket: {}\ntpm-address: 0x81008006\ntpm-device: \"{}\"\nduration: {duration}\ndir: {}\nissuer: {name}\nsocket-mode: \"0600\"\n",
        socket.display(),
        tpm.device(),
        webroot.display()
    );
    if !chain.is_empty() {
        text.push_str(&format!("keydir: keys\nchain: [{}]\n", chain.join(", ")));
    }
    if let Some(b) = backup {
        text.push_str(&format!("backup: {b}\n"));
    }
    std::fs::write(&config, text)?;
    let log = dir.join(format!("{name}.log"));
    Daemon::spawn(SIGNER_UNIX, &[&config.display().to_string()], &[], &log, Ready::UnixSocket(socket.to_owned()))
}

/// Runs the sign CLI: signs `bundle` through `socket` (and co-signers), publishes it; returns the token.
pub fn sign_cli(socket: &Path, cosigners: &[&str], bundle: &str) -> anyhow::Result<String> {
    let mut args = vec![socket.display().to_string()];
    args.extend(cosigners.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = run_bin(SIGN, &args, bundle.as_bytes())?;
    ensure!(code == 0, "sign CLI failed ({code}): {stderr}");
    Ok(stdout.trim().to_owned())
}

/// Polls the verifier as the agent would until `want` holds for the response (20 s at most).
pub fn wait_for_answer(
    socket: &Path,
    instance: &str,
    what: &str,
    want: impl Fn(&agent::AgentResponse) -> bool,
) -> anyhow::Result<agent::AgentResponse> {
    let mut last = None;
    let answered = crate::wait::wait_until(what, Duration::from_secs(20), || {
        let resp = agent::get(socket, &agent::bootstrap_path(instance))?;
        if want(&resp) {
            return Ok(Some(resp));
        }
        last = Some(resp);
        Ok(None)
    });
    answered.map_err(|e| match last.take() {
        Some(resp) => anyhow::anyhow!("{e}; last answer {} {:?}", resp.status, resp.body),
        None => e,
    })
}

/// Makes a token signed by a key nobody trusts (an RSA key made with openssl), carrying `bundle`.
pub fn rogue_token(dir: &Path, bundle: &str) -> anyhow::Result<String> {
    rogue_token_with(dir, crypto::token::Payload::Bundle(bundle.to_owned()))
}

/// Makes a token carrying `payload`, signed by a key nobody trusts.
pub fn rogue_token_with(dir: &Path, payload: crypto::token::Payload) -> anyhow::Result<String> {
    if !dir.join("rogue.key").exists() {
        crate::pki::openssl(
            &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rogue.key"],
            dir,
        )?;
    }
    let now = common::clock::unix_now();
    let claims = crypto::token::Claims {
        payload,
        iss: "rogue".into(),
        iat: now + 1,
        nbf: now,
        exp: now + 600,
        trust_domain: None,
    };
    let builder = crypto::token::TokenBuilder::new(crypto::Alg::Rs256, &claims);
    std::fs::write(dir.join("rogue.input"), builder.signing_input())?;
    crate::pki::openssl(&["dgst", "-sha256", "-sign", "rogue.key", "-out", "rogue.sig", "rogue.input"], dir)?;
    Ok(builder.finish(&std::fs::read(dir.join("rogue.sig"))?)?)
}

fn write_verifier_config(dir: &Path, socket: &Path, url: &str) -> anyhow::Result<PathBuf> {
    let config = dir.join("verifier.conf");
    std::fs::write(
        &config,
        format!(
            "keydir: keys\nsocket: {}\nstate-dir: {}\nrefresh: 1s\nkeyset:\n  main:\n    url: {url}\n    backup: backup.pem\n    chain:\n    - primary.pem\n",
            socket.display(),
            dir.join("state").display()
        ),
    )?;
    Ok(config)
}

/// Starts the verifier in listen mode with the config at `config`.
pub fn start_verifier(dir: &Path, config: &Path, socket: &Path) -> anyhow::Result<Daemon> {
    Daemon::spawn(
        VERIFIER,
        &[&config.display().to_string(), "-l"],
        &[],
        &dir.join("verifier.log"),
        Ready::UnixSocket(socket.to_owned()),
    )
}

/// Runs the whole single-server scenario, reporting each step. Fails on the first step that does not hold.
pub fn run(report: Report<'_>) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let keys = dir.join("keys");
    let webroot = dir.join("www");
    std::fs::create_dir_all(&keys)?;
    std::fs::create_dir_all(&webroot)?;

    report("Start two software TPMs (swtpm): the SPIRE server's primary TPM, and an offline backup TPM.");
    let mut primary_tpm = Swtpm::start()?;
    let backup_tpm = Swtpm::start()?;
    report(&format!("  primary: {}   backup: {}", primary_tpm.device(), backup_tpm.device()));

    report("Provision a signing key in each TPM (signer-unix provision) and copy both public keys to the node.");
    provision(&primary_tpm, "rsa2048", &keys.join("primary.pem"))?;
    provision(&backup_tpm, "ecc-p256", &keys.join("backup.pem"))?;
    report("  keys/primary.pem (RSA-2048, RS256), keys/backup.pem (ECC P-256, ES256)");

    report("Start nginx serving the publish directory, and signer-unix on the primary TPM.");
    let mut nginx = Nginx::start(&webroot)?;
    let (mut primary_signer, primary_socket) = start_signer(dir, "signer-primary", &primary_tpm, &webroot, "10m")?;

    report("The SPIRE server's bundle (a CA with a SPIFFE URI SAN) is signed by the TPM and published (sign CLI).");
    let ca1 = pki::spire_ca(dir, "example.org", "ca1")?;
    let t1 = sign_cli(&primary_socket, &[], &ca1)?;
    ensure!(
        std::fs::read_to_string(webroot.join("spiffetrustbundle.token"))?.trim() == t1,
        "published file is not the token"
    );
    report(&format!(
        "  published spiffetrustbundle.token ({} bytes), served at {}",
        t1.len(),
        nginx.url("/spiffetrustbundle.token")
    ));

    report("Start the verifier on the node, and bootstrap a SPIRE agent through its unix socket.");
    let vsock = dir.join("verifier.sock");
    let vconf = write_verifier_config(dir, &vsock, &nginx.url("/spiffetrustbundle.token"))?;
    let mut verifier = start_verifier(dir, &vconf, &vsock)?;
    let resp = wait_for_answer(&vsock, "main", "the first bundle", |r| r.status == 200)?;
    ensure!(resp.body.trim() == ca1.trim(), "agent got a different bundle: {:?}", resp.body);
    ensure!(agent::accept_pem(&resp.body)? == 1, "agent should see one CA");
    report("  agent: 200, one CA certificate, accepted as SPIRE's agent would (trust_bundle_url + trust_bundle_unix_socket)");

    report("A token signed by an unknown key is placed in the web root: the verifier rejects it.");
    let rogue = rogue_token(dir, &pki::spire_ca(dir, "evil.org", "evil")?)?;
    let rejected = verifier.log().matches("token rejected").count();
    std::fs::write(webroot.join("spiffetrustbundle.token"), &rogue)?;
    verifier.wait_log("token rejected", rejected + 1)?;
    let resp = agent::get(&vsock, &agent::bootstrap_path("main"))?;
    ensure!(resp.status == 200 && resp.body.trim() == ca1.trim(), "rogue token changed what is served: {resp:?}");
    report("  still serving the good bundle; the rejection is in the verifier's log");

    report("The CA rotates: the server signs and publishes a bundle with the old and new CA.");
    crate::wait::next_second()?;
    let ca2 = pki::spire_ca(dir, "example.org", "ca2")?;
    let rotated = format!("{}\n{ca2}", ca1.trim_end());
    let t2 = sign_cli(&primary_socket, &[], &rotated)?;
    wait_for_answer(&vsock, "main", "the rotated bundle", |r| r.status == 200 && r.body.contains(ca2.trim()))?;
    report("  agent now gets 2 CA certificates");

    report(
        "Rollback: the older token is put back in the web root. The verifier refuses to go back, even after a restart.",
    );
    std::fs::write(webroot.join("spiffetrustbundle.token"), &t1)?;
    verifier.wait_log("rollback: token older", 1)?;
    let resp = agent::get(&vsock, &agent::bootstrap_path("main"))?;
    ensure!(resp.status == 200 && resp.body.contains(ca2.trim()), "rollback accepted: {resp:?}");
    ensure!(verifier.stop()?, "verifier did not stop cleanly on SIGTERM");
    let verifier = start_verifier(dir, &vconf, &vsock)?;
    // The restarted verifier fetches at once: the old token is refused against the persisted floor.
    verifier.wait_log("rollback: token older", 1)?;
    let resp = agent::get(&vsock, &agent::bootstrap_path("main"))?;
    ensure!(resp.status == 200 && resp.body.contains(ca2.trim()), "rollback accepted after restart: {resp:?}");
    std::fs::write(webroot.join("spiffetrustbundle.token"), &t2)?;
    report("  still serving the rotated bundle after the restart (the rollback floor is kept in the state directory)");

    report("The primary TPM is lost. A new signer-unix starts on the backup TPM; nothing changes on the node.");
    ensure!(primary_signer.stop()?, "signer-unix did not stop cleanly on SIGTERM");
    primary_tpm.stop()?;
    let (_backup_signer, backup_socket) = start_signer(dir, "signer-backup", &backup_tpm, &webroot, "6s")?;
    crate::wait::next_second()?;
    let ca3 = pki::spire_ca(dir, "example.org", "ca3")?;
    sign_cli(&backup_socket, &[], &ca3)?;
    wait_for_answer(&vsock, "main", "the bundle signed by the backup TPM", |r| {
        r.status == 200 && r.body.trim() == ca3.trim()
    })?;
    report("  agent: 200 with the new bundle, verified with the backup key standing in for the primary (6 s token)");

    report("nginx goes down: the verifier keeps serving the cached bundle until the token expires, then refuses.");
    nginx.stop();
    let resp = agent::get(&vsock, &agent::bootstrap_path("main"))?;
    ensure!(resp.status == 200 && resp.body.trim() == ca3.trim(), "cache not served while nginx is down: {resp:?}");
    report("  nginx down: 200 from the cache");
    let resp = wait_for_answer(&vsock, "main", "expiry", |r| r.status == 503)?;
    report(&format!("  after the token's exp: 503 ({})", resp.body.trim()));
    drop(verifier);
    Ok(())
}
