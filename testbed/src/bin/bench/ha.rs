//! The HA chain's `PublishBundle` and a keyset update's way to a node.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use testbed::nginx::Nginx;
use testbed::process::{Daemon, Ready};
use testbed::single::{provision, start_signer_publishing, VERIFIER};
use testbed::swtpm::Swtpm;

use crate::signer::wait_ok;
use crate::{median, ms, raw_sign_ms};

/// The HA chain: PublishBundle through the plugin (sign on a, co-sign on b, publish), split into its parts.
pub(crate) fn ha_bench(examples: &Path) -> anyhow::Result<()> {
    use common::client::HttpUrl;
    use common::signer_client::SignerClient;
    println!(
        "\n== HA chain: one PublishBundle after a bundle change (target: <= 1.2x the sum of the TPM signs it needs)"
    );
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    for d in ["keys", "www-a", "www-b"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let (a, b) = (Swtpm::start()?, Swtpm::start()?);
    provision(&a, "rsa2048", &dir.join("keys/a.pem"))?;
    provision(&b, "rsa2048", &dir.join("keys/b.pem"))?;
    let (raw_a, raw_b) = (raw_sign_ms(examples, &a, "0x81008006", 100)?, raw_sign_ms(examples, &b, "0x81008006", 100)?);
    let (sock_a, sock_b) = (dir.join("signer-a.sock"), dir.join("signer-b.sock"));
    let _sa =
        start_signer_publishing(dir, "signer-a", &a, &dir.join("www-a"), "10m", &sock_a, &["a.pem", "b.pem"], None)?;
    let _sb =
        start_signer_publishing(dir, "signer-b", &b, &dir.join("www-b"), "10m", &sock_b, &["b.pem", "a.pem"], None)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    std::fs::write(
        dir.join("http-b.conf"),
        format!(
            "socket: {}\nkeydir: keys\nprimary: a.pem\nlisten-addr: \"127.0.0.1:{port}\"\nallowed-addrs: [127.0.0.1]\n",
            sock_b.display()
        ),
    )?;
    let _hb = Daemon::spawn(
        "spire-server-attestor-tpm-signer-http",
        &[&dir.join("http-b.conf").display().to_string()],
        &[],
        &dir.join("http-b.log"),
        Ready::Tcp(port),
    )?;
    let url = format!("http://127.0.0.1:{port}/sign");
    let ca = testbed::pki::spire_ca(dir, "example.org", "ca")?;
    // The parts, each timed on its own.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = SignerClient::new(&sock_a, Duration::from_secs(30))?;
    let cosigner = HttpUrl::parse(&url)?;
    let (mut sign, mut cosign, mut publish) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..30 {
        rt.block_on(async {
            let t = Instant::now();
            let token = client.sign_bundle(ca.as_bytes()).await?;
            sign.push(t.elapsed());
            let t = Instant::now();
            let token = client.cosign(&cosigner, &token).await?;
            cosign.push(t.elapsed());
            let t = Instant::now();
            client.publish(&token).await?;
            publish.push(t.elapsed());
            anyhow::Ok(())
        })?;
    }
    // The whole thing through the plugin, as SPIRE calls it, with a changed bundle every time.
    let host = testbed::host::PluginHost::launch(testbed::single::SIGN, "BundlePublisher")?;
    host.init()?;
    host.configure(&format!("socket = \"{}\"\nurls = [\"{url}\"]", sock_a.display()), "example.org")?;
    let mut whole = Vec::new();
    for seq in 1..=30u64 {
        let bundle = testbed::host::spire_bundle("example.org", &ca, seq)?;
        let mut changed = bundle.clone();
        changed.refresh_hint = seq as i64; // a different bundle each round
        let t = Instant::now();
        host.publish_bundle(Some(changed)).map_err(|e| anyhow::anyhow!("{e}"))?;
        whole.push(t.elapsed());
    }
    let (sign, cosign, publish, whole) = (median(sign), median(cosign), median(publish), median(whole));
    let tpm_sum = raw_a + raw_b;
    println!("raw TPM sign p50: a {raw_a:.3} ms, b {raw_b:.3} ms; sum {tpm_sum:.3} ms");
    println!(
        "parts p50: local sign (signer-unix a, incl. TPM a) {}, co-sign hop (signer-http b -> signer-unix b, incl. TPM b) {}, publish {}",
        ms(sign),
        ms(cosign),
        ms(publish)
    );
    println!(
        "PublishBundle through the plugin p50 {} = {:.3}x the TPM signs it needs (target <= 1.2x)",
        ms(whole),
        whole.as_secs_f64() * 1e3 / tpm_sum
    );
    let _ = host.unload();

    // Time until a node serves the new bundle: bounded by the verifier's refresh interval.
    let nginx = Nginx::start(&dir.join("www-a"))?;
    let vsock = dir.join("v.sock");
    std::fs::write(
        dir.join("v.conf"),
        format!(
            "keydir: keys\nsocket: {}\nstate-dir: {}\nrefresh: 5s\nkeyset:\n  a:\n    url: {}\n    chain: [a.pem, b.pem]\n",
            vsock.display(),
            dir.join("state").display(),
            nginx.url("/spiffetrustbundle.token")
        ),
    )?;
    let _v = Daemon::spawn(
        VERIFIER,
        &[&dir.join("v.conf").display().to_string(), "-l"],
        &[],
        &dir.join("v.log"),
        Ready::UnixSocket(vsock.clone()),
    )?;
    let path = testbed::agent::bootstrap_path("a");
    wait_ok(&vsock, &path)?;
    let ca2 = testbed::pki::spire_ca(dir, "example.org", "ca2")?;
    let t = Instant::now();
    rt.block_on(async {
        let token = client.sign_chain(ca2.as_bytes(), std::slice::from_ref(&cosigner)).await?;
        client.publish(&token).await?;
        anyhow::Ok(())
    })?;
    // Polled every 10 ms, not through testbed::wait (whose pauses grow to 100 ms): the wait is the figure.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !testbed::agent::get(&vsock, &path)?.body.contains(ca2.trim()) {
        if Instant::now() > deadline {
            bail!("the verifier never served the new bundle");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "new bundle served by the verifier {} after the publish started (refresh: 5s; bounded by it)",
        ms(t.elapsed())
    );
    Ok(())
}

/// Writes `data` to `dest` as the web server would see a deploy: a new file renamed over the old.
pub(crate) fn deploy(dest: &Path, data: &str) -> anyhow::Result<()> {
    let tmp = dest.with_extension("deploying");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dest)?;
    Ok(())
}

/// A keyset update and the first bundle signed by the key it introduces, published together: how long until a
/// node serves that bundle. Each run starts a fresh node that serves the old bundle and publishes right after
/// the node's fetch: the worst phase of its refresh cycle.
pub(crate) fn update_bench() -> anyhow::Result<()> {
    const REFRESH_S: f64 = 1.0;
    const RUNS: usize = 7;
    println!("
== keyset update: publish (update + bundle by the new key) until a node serves the new bundle (bound: the refresh interval, {REFRESH_S} s)");
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (server, node, www) = (dir.join("server"), dir.join("node"), dir.join("www"));
    for d in [server.join("keys"), node.join("keys"), www.clone()] {
        std::fs::create_dir_all(d)?;
    }
    let (a, c, d) = (Swtpm::start()?, Swtpm::start()?, Swtpm::start()?);
    for (tpm, name) in [(&a, "a.pem"), (&c, "c.pem"), (&d, "d.pem")] {
        provision(tpm, "ecc-p256", &server.join("keys").join(name))?;
    }
    for name in ["a.pem", "c.pem"] {
        std::fs::copy(server.join("keys").join(name), node.join("keys").join(name))?;
    }
    let sock = |n: &str| server.join(format!("{n}.sock"));
    let _sa = start_signer_publishing(&server, "a", &a, &www, "1h", &sock("a"), &[], None)?;
    let _sc = start_signer_publishing(&server, "c", &c, &www, "1h", &sock("c"), &["a.pem"], Some("c.pem"))?;
    let _sd = start_signer_publishing(&server, "d", &d, &www, "1h", &sock("d"), &["d.pem"], Some("c.pem"))?;
    let (ca1, ca2) =
        (testbed::pki::spire_ca(dir, "example.org", "ca1")?, testbed::pki::spire_ca(dir, "example.org", "ca2")?);
    let signed = |socket: &Path, ca: &str| -> anyhow::Result<String> {
        let r = testbed::agent::send(
            socket,
            "POST",
            "/sign",
            &[("Content-Type", "application/x-pem-file")],
            ca.as_bytes(),
        )?;
        anyhow::ensure!(r.status == 200, "sign: {} {}", r.status, r.body);
        Ok(r.body.trim().to_owned())
    };
    let (by_a, by_d) = (signed(&sock("a"), &ca1)?, signed(&sock("d"), &ca2)?);
    let key = |n: &str| server.join("keys").join(n).display().to_string();
    let (code, update, stderr) = testbed::process::run_bin(
        testbed::single::SIGN,
        &[
            "keys",
            "--keyset",
            "main",
            "--version",
            "1",
            "--chain",
            &key("d.pem"),
            "--backup",
            &key("c.pem"),
            "--new-key-socket",
            &sock("d").display().to_string(),
            &sock("c").display().to_string(),
        ],
        b"",
    )?;
    anyhow::ensure!(code == 0, "sign keys: {stderr}");
    let nginx = Nginx::start(&www)?;
    let vsock = node.join("v.sock");
    let vconf = node.join("v.conf");
    std::fs::write(
        &vconf,
        format!(
            "keydir: keys\nsocket: {}\nstate-dir: {}\nrefresh: {REFRESH_S}s\nkeyset:\n  main:\n    url: {}\n    keys-url: {}\n    chain: [a.pem]\n    backup: c.pem\n",
            vsock.display(),
            node.join("state").display(),
            nginx.url("/spiffetrustbundle.token"),
            nginx.url("/keys.tokens")
        ),
    )?;
    let path = testbed::agent::bootstrap_path("main");
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let _ = std::fs::remove_dir_all(node.join("state"));
        let _ = std::fs::remove_file(www.join("keys.tokens"));
        deploy(&www.join("spiffetrustbundle.token"), &by_a)?;
        let verifier = Daemon::spawn(
            VERIFIER,
            &[&vconf.display().to_string(), "-l"],
            &[],
            &node.join("v.log"),
            Ready::UnixSocket(vsock.clone()),
        )?;
        wait_ok(&vsock, &path)?;
        let t = Instant::now();
        deploy(&www.join("keys.tokens"), &update)?;
        deploy(&www.join("spiffetrustbundle.token"), &by_d)?;
        loop {
            let r = testbed::agent::get(&vsock, &path)?;
            if r.status == 200 && r.body.trim() == ca2.trim() {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("the node never served the new key's bundle; log:\n{}", verifier.log_tail());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        times.push(t.elapsed());
        drop(verifier);
    }
    times.sort();
    let max = times[RUNS - 1];
    println!(
        "publish (just after a fetch) -> served under the new keys, {RUNS} runs: min {} p50 {} max {}; max / refresh interval {:.2}x (bound 1x, plus one fetch)",
        ms(times[0]),
        ms(times[RUNS / 2]),
        ms(max),
        max.as_secs_f64() / REFRESH_S
    );
    Ok(())
}
