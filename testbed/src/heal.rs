//! Trust that heals itself: signed keyset updates end to end, with the real binaries, swtpm TPMs and nginx.
//! Used by the end-to-end test and by `make testbed`.
//!
//! Part one continues the single-server story: the primary TPM a is lost, the backup c stands in, a new TPM d
//! is provisioned, and c and d sign an update to `chain: [d], backup: c` that every node follows with nothing
//! changed on it. Part two moves an HA trust domain (servers a and b co-signing, backup c) to `threshold: 2`
//! over {a, b, c}. The node's key directory only ever holds the keys it was installed with.

use std::path::{Path, PathBuf};

use anyhow::ensure;

use crate::agent;
use crate::nginx::Nginx;
use crate::pki;
use crate::process::{run_bin, Daemon};
use crate::single::{
    provision, sign_cli, start_signer_publishing, start_verifier, wait_for_answer, Report, SIGN, VERIFIER,
};
use crate::swtpm::Swtpm;

/// Where nginx serves keyset updates (one update token per line, oldest first).
const KEYS_FILE: &str = "keys.tokens";
const TOKEN_FILE: &str = "spiffetrustbundle.token";

fn node_config(node: &Path, socket: &Path, main: &Nginx, ha: &Nginx) -> anyhow::Result<PathBuf> {
    let config = node.join("verifier.conf");
    std::fs::write(
        &config,
        format!(
            "keydir: keys\nsocket: {}\nstate-dir: {}\nrefresh: 1s\nkeyset:\n  main:\n    url: {}\n    keys-url: {}\n    chain: [a.pem]\n    backup: c.pem\n  ha:\n    url: {}\n    keys-url: {}\n    chain: [a.pem, b.pem]\n    backup: c.pem\n",
            socket.display(),
            node.join("state").display(),
            main.url(&format!("/{TOKEN_FILE}")),
            main.url(&format!("/{KEYS_FILE}")),
            ha.url(&format!("/{TOKEN_FILE}")),
            ha.url(&format!("/{KEYS_FILE}")),
        ),
    )?;
    Ok(config)
}

/// Runs `sign keys ARGS`; returns (exit code, stdout, stderr).
fn sign_keys(args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    run_bin(SIGN, &all, b"")
}

/// What `verifier CONFIG KEYSET --keys` prints.
fn trusted_keys(config: &Path, keyset: &str) -> anyhow::Result<String> {
    let (code, stdout, stderr) = run_bin(VERIFIER, &[&config.display().to_string(), keyset, "--keys"], b"")?;
    ensure!(code == 0, "verifier --keys failed ({code}): {stderr}");
    Ok(stdout)
}

/// Has signer-unix at `socket` sign `body` with `content_type` (a keyset document, or a token to wrap).
fn signer_unix_sign(socket: &Path, content_type: &str, body: &str) -> anyhow::Result<String> {
    let resp = agent::send(socket, "POST", "/sign", &[("Content-Type", content_type)], body.as_bytes())?;
    ensure!(resp.status == 200, "signer-unix {} answered {}: {}", socket.display(), resp.status, resp.body);
    Ok(resp.body.trim().to_owned())
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// What the scenario's steps share: its directories, the TPMs a, b and c, the two web servers, and the node's
/// verifier config.
struct Site {
    dir: tempfile::TempDir,
    server: PathBuf,
    node: PathBuf,
    www: PathBuf,
    www_ha: PathBuf,
    tpm_a: Swtpm,
    tpm_b: Swtpm,
    tpm_c: Swtpm,
    _nginx: (Nginx, Nginx),
    vsock: PathBuf,
    vconf: PathBuf,
}

/// Runs both parts, reporting each step. Fails on the first step that does not hold.
pub fn run(report: Report<'_>) -> anyhow::Result<()> {
    let (site, mut verifier, signer_a) = start(report)?;
    let (v1, _signers) = lose_the_primary(&site, &mut verifier, signer_a, report)?;
    let ca2 = refuse_what_was_planted(&site, &mut verifier, &v1, report)?;
    let verifier = renew_and_recover(&site, verifier, &v1, &ca2, report)?;
    move_ha_to_a_threshold(&site, &verifier, report)
}

/// The TPMs a, b and c, the node installed with their keys, nginx for each trust domain, signer-unix on a, and
/// the node's verifier serving a's first bundle.
fn start(report: Report<'_>) -> anyhow::Result<(Site, Daemon, Daemon)> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (server, node) = (dir.join("server"), dir.join("node"));
    let (www, www_ha) = (dir.join("www"), dir.join("www-ha"));
    for d in [server.join("keys"), node.join("keys"), www.clone(), www_ha.clone()] {
        std::fs::create_dir_all(d)?;
    }
    let key = |name: &str| server.join("keys").join(name);

    report("Start the TPMs (swtpm): the server's primary a, the offline backup c, and b, the HA peer server's.");
    let tpm_a = Swtpm::start()?;
    let tpm_b = Swtpm::start()?;
    let tpm_c = Swtpm::start()?;
    provision(&tpm_a, "rsa2048", &key("a.pem"))?;
    provision(&tpm_b, "ecc-p256", &key("b.pem"))?;
    provision(&tpm_c, "ecc-p256", &key("c.pem"))?;
    for k in ["a.pem", "b.pem", "c.pem"] {
        std::fs::copy(key(k), node.join("keys").join(k))?;
    }
    report("  the node is installed with keys a, b and c; it is never touched again");

    report("Start nginx for each trust domain, signer-unix on a, and the node's verifier with two keysets:");
    report("  main: chain [a], backup c; ha: chain [a, b], backup c; each with a keys-url for signed updates");
    let nginx = Nginx::start(&www)?;
    let nginx_ha = Nginx::start(&www_ha)?;
    let sock = |name: &str| server.join(format!("{name}.sock"));
    let signer_a =
        start_signer_publishing(&server, "signer-a", &tpm_a, &www, "10m", &sock("a"), &["a.pem"], Some("c.pem"))?;
    let vsock = node.join("verifier.sock");
    let vconf = node_config(&node, &vsock, &nginx, &nginx_ha)?;
    let verifier = start_verifier(&node, &vconf, &vsock)?;
    let ca1 = pki::spire_ca(dir, "example.org", "ca1")?;
    sign_cli(&sock("a"), &[], &ca1)?;
    wait_for_answer(&vsock, "main", "the first bundle", |r| r.status == 200 && r.body.trim() == ca1.trim())?;
    ensure!(trusted_keys(&vconf, "main")?.contains("version 0"), "a fresh node trusts its config's keys");
    report("  agent: 200 with the bundle signed by a; `verifier CONFIG main --keys`: version 0, from keydir");

    let site =
        Site { dir: tmp, server, node, www, www_ha, tpm_a, tpm_b, tpm_c, _nginx: (nginx, nginx_ha), vsock, vconf };
    Ok((site, verifier, signer_a))
}

/// The primary TPM a is lost: the backup c stands in, a new TPM d is provisioned, two bad updates are refused,
/// and the update `chain: [d], backup: c` signed by c and d is followed. Returns that update and the signers
/// (c, d) that keep running.
fn lose_the_primary(
    site: &Site,
    verifier: &mut Daemon,
    mut signer_a: Daemon,
    report: Report<'_>,
) -> anyhow::Result<(String, (Daemon, Daemon, Swtpm))> {
    let (dir, server, www) = (site.dir.path(), site.server.as_path(), site.www.as_path());
    let key = |name: &str| server.join("keys").join(name);
    let sock = |name: &str| server.join(format!("{name}.sock"));
    let (tpm_c, vconf) = (&site.tpm_c, &site.vconf);
    report("The primary TPM a is lost. The backup c stands in (signer-unix on c), and a new TPM d is provisioned.");
    ensure!(signer_a.stop()?, "signer-unix a did not stop cleanly");
    let signer_c =
        start_signer_publishing(server, "signer-c", tpm_c, www, "10m", &sock("c"), &["a.pem"], Some("c.pem"))?;
    let tpm_d = Swtpm::start()?;
    provision(&tpm_d, "ecc-p256", &key("d.pem"))?;
    let signer_d =
        start_signer_publishing(server, "signer-d", &tpm_d, www, "10m", &sock("d"), &["d.pem"], Some("c.pem"))?;
    report("  d.pem exists only on the server; the node has never seen it");

    let new_chain = ["--keyset", "main", "--chain", &path(&key("d.pem")), "--backup", &path(&key("c.pem"))];
    let keys_out = www.join(KEYS_FILE);
    let (out, sock_c, sock_d) = (path(&keys_out), path(&sock("c")), path(&sock("d")));
    report("An update that d did not sign: `sign keys` refuses to write it; a node refuses it too.");
    let mut args = vec!["--version", "1"];
    args.extend_from_slice(&new_chain);
    args.extend(["--out", &out, &sock_c]);
    let (code, stdout, stderr) = sign_keys(&args)?;
    ensure!(code == 1 && stdout.is_empty() && stderr.contains("did not sign"), "{code}: {stdout} {stderr}");
    ensure!(!keys_out.exists(), "sign keys wrote an update it refused");
    let doc = crypto::keyset::Document::new(
        "main",
        1,
        common::clock::unix_now() + 3600,
        &crypto::policy::Policy::new(
            vec![crypto::keys::VerifyingKey::from_pem("d.pem", &std::fs::read(key("d.pem"))?)?],
            Some(crypto::keys::VerifyingKey::from_pem("c.pem", &std::fs::read(key("c.pem"))?)?),
            crypto::Limits::default(),
        )?,
    )?;
    let without_d = signer_unix_sign(&sock("c"), "application/spiffe-keyset+json", doc.text())?;
    std::fs::write(&keys_out, format!("{without_d}\n"))?;
    verifier.wait_log("did not sign it: every new key must sign its update", 1)?;
    report(&format!("  sign keys: exit 1, {}", stderr.trim().lines().last().unwrap_or("")));
    report("  node: keyset update refused: the update introduces d.pem but it did not sign it");

    report("An update signed by an unknown key (an attacker's) is refused.");
    let rogue = crate::single::rogue_token_with(dir, crypto::token::Payload::Keyset(doc.text().to_owned()))?;
    std::fs::write(&keys_out, format!("{rogue}\n"))?;
    verifier.wait_log("not signed as the keyset's current policy requires", 1)?;
    ensure!(trusted_keys(vconf, "main")?.contains("version 0"), "a refused update changed the trusted keys");
    report("  node: not signed as the keyset's current policy requires; still version 0");
    std::fs::remove_file(&keys_out)?;

    report("The backup c and the new TPM d sign the update `chain: [d], backup: c` (sign keys), published by nginx.");
    let mut args = vec!["--version", "1"];
    args.extend_from_slice(&new_chain);
    args.extend(["--new-key-socket", &sock_d]);
    args.extend(["--out", &out, &sock_c]);
    let (code, _, stderr) = sign_keys(&args)?;
    ensure!(code == 0, "sign keys failed ({code}): {stderr}");
    let v1 = std::fs::read_to_string(&keys_out)?;
    verifier.wait_log("accepted a keyset update", 1)?;
    let keys = trusted_keys(vconf, "main")?;
    ensure!(
        keys.contains("version 1") && keys.contains("chain[0]: d.pem") && keys.contains("retired by version 1: a.pem"),
        "{keys}"
    );
    verifier.wait_log("the held bundle is not signed as the trusted keys require; no longer serving it", 1)?;
    report("  node, on its next refresh: accepted a keyset update; --keys: version 1, chain[0] d.pem, backup c.pem");
    report("  the bundle it held, signed by the retired a, is no longer served");

    Ok((v1, (signer_c, signer_d, tpm_d)))
}

/// d signs the next bundle; an update planted where bundles are served (and the reverse) and a bundle signed by
/// whoever holds the lost TPM a are refused. Returns d's bundle.
fn refuse_what_was_planted(site: &Site, verifier: &mut Daemon, v1: &str, report: Report<'_>) -> anyhow::Result<String> {
    let (dir, server, www) = (site.dir.path(), site.server.as_path(), site.www.as_path());
    let sock = |name: &str| server.join(format!("{name}.sock"));
    let (vsock, keys_out) = (&site.vsock, site.www.join(KEYS_FILE));
    report("d signs the next bundle; the node accepts it.");
    let ca2 = pki::spire_ca(dir, "example.org", "ca2")?;
    sign_cli(&sock("d"), &[], &ca2)?;
    wait_for_answer(vsock, "main", "the bundle signed by d", |r| r.status == 200 && r.body.trim() == ca2.trim())?;
    report("  agent: 200 with the bundle signed by d");

    report("The update is planted where the bundle is served, and a bundle token where updates are: both refused.");
    let bundle_token = std::fs::read_to_string(www.join(TOKEN_FILE))?;
    std::fs::write(www.join(TOKEN_FILE), v1)?;
    verifier.wait_log("a keyset update, not a bundle token", 1)?;
    std::fs::write(&keys_out, &bundle_token)?;
    verifier.wait_log("not a keyset update: layer 0: a bundle token, not a keyset update", 1)?;
    let resp = agent::get(vsock, &agent::bootstrap_path("main"))?;
    ensure!(resp.status == 200 && resp.body.trim() == ca2.trim(), "a planted update changed what is served: {resp:?}");
    std::fs::write(www.join(TOKEN_FILE), &bundle_token)?;
    std::fs::write(&keys_out, v1)?;
    report("  node: \"a keyset update, not a bundle token\" and \"not a keyset update\"; still serving the last good bundle");

    report("Whoever holds the lost TPM a signs a bundle and plants it in the web root: refused, a is retired.");
    let stolen = dir.join("stolen");
    std::fs::create_dir_all(&stolen)?;
    let mut thief =
        start_signer_publishing(&stolen, "signer-stolen-a", &site.tpm_a, www, "10m", &sock("stolen"), &[], None)?;
    let evil = pki::spire_ca(dir, "example.org", "evil")?;
    sign_cli(&sock("stolen"), &[], &evil)?;
    verifier.wait_log("retired by keyset update version 1", 1)?;
    let resp = agent::get(vsock, &agent::bootstrap_path("main"))?;
    ensure!(resp.status == 200 && resp.body.trim() == ca2.trim(), "the stolen key's bundle was served: {resp:?}");
    report("  node: signed by key a.pem, retired by keyset update version 1; still serving d's bundle");
    ensure!(thief.stop()?, "the thief's signer-unix did not stop cleanly");
    sign_cli(&sock("d"), &[], &ca2)?;

    Ok(ca2)
}

/// d re-signs the keyset (version 2, appended); a replayed version 1 is stale; a corrupt keyset state makes the
/// node trust nothing until the operator removes it, after which it follows both updates. Returns the verifier
/// that then runs.
fn renew_and_recover(
    site: &Site,
    mut verifier: Daemon,
    v1: &str,
    ca2: &str,
    report: Report<'_>,
) -> anyhow::Result<Daemon> {
    let (server, node) = (site.server.as_path(), site.node.as_path());
    let key = |name: &str| server.join("keys").join(name);
    let sock = |name: &str| server.join(format!("{name}.sock"));
    let (vsock, vconf, keys_out) = (&site.vsock, &site.vconf, site.www.join(KEYS_FILE));
    let new_chain = ["--keyset", "main", "--chain", &path(&key("d.pem")), "--backup", &path(&key("c.pem"))];
    let (out, sock_d) = (path(&keys_out), path(&sock("d")));
    report("d re-signs the keyset before it expires (version 2), appended to the published file after version 1.");
    let mut args = vec!["--version", "2"];
    args.extend_from_slice(&new_chain);
    args.extend(["--out", &out, &sock_d]);
    let (code, _, stderr) = sign_keys(&args)?;
    ensure!(code == 0, "sign keys v2 failed ({code}): {stderr}");
    let both = std::fs::read_to_string(&keys_out)?;
    ensure!(both.lines().count() == 2 && both.starts_with(v1.trim()), "--out did not append: {both}");
    verifier.wait_log("accepted a keyset update", 2)?;
    let (code, _, stderr) = sign_keys(&args)?;
    ensure!(code == 1 && stderr.contains("already holds version 2"), "version 2 again: {code}: {stderr}");
    ensure!(std::fs::read_to_string(&keys_out)? == both, "a refused --out changed the published file");
    report("  sign keys --out: appended (the file holds versions 1 and 2); version 2 again refused, file unchanged");
    report("The older version 1 is replayed alone.");
    let v2 = both.lines().nth(1).unwrap_or_default().to_owned();
    std::fs::write(&keys_out, v1)?;
    verifier.wait_log("stale", 1)?;
    ensure!(trusted_keys(vconf, "main")?.contains("version 2"), "the replayed update rolled the keys back");
    report("  node: version 2 kept; the source is stale (its newest update is older than the version held)");

    report("The node restarts with a corrupt keyset state: it trusts no key and says why, rather than keydir again.");
    std::fs::write(&keys_out, format!("{}\n{}\n", v1.trim(), v2.trim()))?;
    ensure!(verifier.stop()?, "verifier did not stop cleanly");
    let state = node.join("state/main.keys.json");
    std::fs::write(&state, b"{ not json")?;
    let mut verifier = start_verifier(node, vconf, vsock)?;
    verifier.wait_log("unusable keyset state; serving nothing", 1)?;
    let resp = agent::get(vsock, &agent::bootstrap_path("main"))?;
    ensure!(resp.status == 503, "a node with a corrupt keys state served: {resp:?}");
    report("  node: 503; its log names the file and says: trusting no key until it is repaired or removed");
    report("The operator removes the file: the node trusts keydir again and follows both updates.");
    ensure!(verifier.stop()?, "verifier did not stop cleanly");
    std::fs::remove_file(&state)?;
    let verifier = start_verifier(node, vconf, vsock)?;
    verifier.wait_log("accepted a keyset update", 1)?;
    wait_for_answer(vsock, "main", "d's bundle after the restart", |r| r.status == 200 && r.body.trim() == ca2.trim())?;
    ensure!(trusted_keys(vconf, "main")?.contains("version 2"), "the node did not follow both updates");
    report("  node: keydir (version 0) -> version 1 -> version 2 in one refresh; serving d's bundle");

    Ok(verifier)
}

/// Part two: an HA trust domain (a and b co-signing, backup c) moves to `threshold: 2` over {a, b, c}, each
/// server adding its layer by hand; then any two keys sign a bundle, and one alone does not.
fn move_ha_to_a_threshold(site: &Site, verifier: &Daemon, report: Report<'_>) -> anyhow::Result<()> {
    let (dir, server, www_ha) = (site.dir.path(), site.server.as_path(), site.www_ha.as_path());
    let key = |name: &str| server.join("keys").join(name);
    let sock = |name: &str| server.join(format!("{name}.sock"));
    let (vsock, vconf) = (&site.vsock, &site.vconf);
    report("HA: servers a and b sign each bundle (b co-signs through signer-http); nodes verify chain [a, b].");
    let _ha_a = start_signer_publishing(
        server,
        "signer-ha-a",
        &site.tpm_a,
        www_ha,
        "10m",
        &sock("ha-a"),
        &["a.pem", "b.pem"],
        Some("c.pem"),
    )?;
    let _ha_b = start_signer_publishing(server, "signer-ha-b", &site.tpm_b, www_ha, "10m", &sock("ha-b"), &[], None)?;
    let (_cosigner_b, http_b) = crate::ha::start_cosigner(server, "signer-http-b", &sock("ha-b"), "a.pem")?;
    let cosign_b = format!("http://{http_b}/sign");
    let ca_ha = pki::spire_ca(dir, "example.org", "ca-ha1")?;
    sign_cli(&sock("ha-a"), &[&cosign_b], &ca_ha)?;
    wait_for_answer(vsock, "ha", "the HA bundle", |r| r.status == 200 && r.body.trim() == ca_ha.trim())?;
    report("  agent (instance ha): 200 with the bundle signed by a and co-signed by b");

    report("The update `threshold: 2` over {a, b, c} is signed by hand on each server: no key is new.");
    let set = format!("{},{},{}", path(&key("a.pem")), path(&key("b.pem")), path(&key("c.pem")));
    let ha_keys = www_ha.join(KEYS_FILE);
    let (work_a, work_b) = (server.join("ha-update.a"), server.join("ha-update.ab"));
    let (code, _, stderr) = sign_keys(&[
        "--keyset",
        "ha",
        "--version",
        "1",
        "--threshold",
        "2",
        "--keys",
        &set,
        "--partial",
        &path(&work_a),
        &path(&sock("ha-a")),
    ])?;
    ensure!(code == 0, "sign keys on a failed ({code}): {stderr}");
    report("  on a (root): sign keys --keyset ha --version 1 --threshold 2 ... --partial ha-update.a");
    let started = std::fs::read_to_string(&work_a)?;
    let r = agent::tcp_from(
        "127.0.0.1".parse()?,
        http_b,
        &agent::post("/sign", "application/jwt", started.trim().as_bytes()),
    )?;
    ensure!(r.status == 403 && r.body.contains("does not co-sign keyset updates"), "signer-http b: {r:?}");
    report(&format!("  b's signer-http, asked to co-sign it: 403 {}", r.body.trim()));
    let (code, _, stderr) =
        sign_keys(&["--add-layer", &path(&work_a), "--partial", &path(&work_b), &path(&sock("ha-b"))])?;
    ensure!(code == 0, "sign keys --add-layer on b failed ({code}): {stderr}");
    report("  on b (root): sign keys --add-layer ha-update.a --partial ha-update.ab");
    let (code, _, stderr) = sign_keys(&["--complete", &path(&work_b), "--out", &path(&ha_keys), &path(&sock("ha-a"))])?;
    ensure!(code == 0, "sign keys --complete on a failed ({code}): {stderr}");
    report("  on a: sign keys --complete ha-update.ab --out keys.tokens (checked against a's publish policy)");
    verifier.wait_log("accepted a keyset update", 2)?;
    ensure!(trusted_keys(vconf, "ha")?.contains("threshold: 2 of 3"), "the HA keyset did not move");
    report("  node: --keys for ha: version 1, threshold: 2 of 3");

    report("Server a is down: b signs and the backup c co-signs, in the other order. Any two of three suffice.");
    let ca_ha2 = pki::spire_ca(dir, "example.org", "ca-ha2")?;
    let by_b = signer_unix_sign(&sock("ha-b"), "application/x-pem-file", &ca_ha2)?;
    let by_b_c = signer_unix_sign(&sock("c"), "application/jwt", &by_b)?;
    std::fs::write(www_ha.join(TOKEN_FILE), &by_b_c)?;
    wait_for_answer(vsock, "ha", "the bundle signed by b and c", |r| {
        r.status == 200 && r.body.trim() == ca_ha2.trim()
    })?;
    report("  agent (instance ha): 200 with the bundle signed by b, then c");

    report("A bundle signed by one key alone is refused: the threshold is 2.");
    let ca_ha3 = pki::spire_ca(dir, "example.org", "ca-ha3")?;
    let alone = signer_unix_sign(&sock("ha-b"), "application/x-pem-file", &ca_ha3)?;
    std::fs::write(www_ha.join(TOKEN_FILE), &alone)?;
    verifier.wait_log("2 of the keyset's keys must sign; signed by 1", 1)?;
    let resp = agent::get(vsock, &agent::bootstrap_path("ha"))?;
    ensure!(resp.status == 200 && resp.body.trim() == ca_ha2.trim(), "a one-key bundle was served: {resp:?}");
    report("  node: 2 of the keyset's keys must sign; signed by 1 (b.pem), missing a.pem, c.pem");
    Ok(())
}
