//! The signer's and the verifier's figures: verification cost, TPM sign through the trait, `POST /sign`, the
//! verifier's cached bundle, and a SPIRE agent's bootstrap through the verifier.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use testbed::load::{self, RequestSpec};
use testbed::nginx::Nginx;
use testbed::process::{Daemon, Ready};
use testbed::single::{provision, sign_cli, start_signer, VERIFIER};
use testbed::swtpm::Swtpm;

use crate::{figure, median, ms, openssl_verify_us, run};

/// Verification against openssl, the trait's sign against raw tss-esapi, signer-unix's `POST /sign`, and the
/// verifier's cached `GET /trustbundle`.
pub(crate) fn signer_bench(examples: &Path) -> anyhow::Result<()> {
    println!("== verification cost per signature (target: <= 2x openssl speed verify on this machine)");
    let (ossl_rsa, ossl_ec) = openssl_verify_us()?;
    let verify = run(&mut Command::new(examples.join("verify_bench")))?;
    print!("{verify}");
    println!("openssl speed: rsa2048 verify {ossl_rsa:.1} us, ecdsap256 verify {ossl_ec:.1} us");
    for (tag, base) in [("rs256", ossl_rsa), ("es256", ossl_ec)] {
        if let Some(us) = figure(&verify, &format!("verify {tag}"), ":") {
            println!("ratio {tag}: {:.2}x openssl (target <= 2x)", us / base);
        }
    }

    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let tpm = Swtpm::start()?;
    provision(&tpm, "rsa2048", &dir.join("key.pem"))?;
    println!("\n== TPM sign through the trait vs raw tss-esapi, same swtpm (target: overhead <= 5 %)");
    let sign =
        run(Command::new(examples.join("sign_bench")).args([tpm.device().to_string().as_str(), "0x81008006", "300"]))?;
    print!("{sign}");
    let raw_p50_ms = figure(&sign, "raw", "raw p50").context("sign_bench printed no raw p50")?;

    println!(
        "\n== signer-unix POST /sign vs raw TPM sign (targets: p50 <= 1.15x raw; 16 clients >= 0.9x raw serial rate)"
    );
    let webroot = dir.join("www");
    std::fs::create_dir_all(&webroot)?;
    let (signer, socket) = start_signer(dir, "signer", &tpm, &webroot, "10m")?;
    let ca = testbed::pki::spire_ca(dir, "example.org", "ca")?;
    let spec = RequestSpec {
        method: http::Method::POST,
        path: "/sign".into(),
        content_type: Some("application/x-pem-file"),
        body: Bytes::from(ca.clone()),
    };
    load::run(&socket, 1, 20, &spec)?; // warm-up
    let serial = load::run(&socket, 1, 300, &spec)?;
    let p50 = serial.percentile(50.0);
    println!(
        "POST /sign serial x{}: p50 {} p99 {}; raw TPM sign p50 {raw_p50_ms:.3} ms; ratio {:.3}x (target <= 1.15x)",
        serial.requests,
        ms(p50),
        ms(serial.percentile(99.0)),
        p50.as_secs_f64() * 1e3 / raw_p50_ms
    );
    let conc = load::run(&socket, 16, 800, &spec)?;
    let raw_rate = 1e3 / raw_p50_ms;
    println!(
        "POST /sign 16 clients x{}: {:.0} signs/s, p50 {} p99 {}; raw serial rate {raw_rate:.0}/s; ratio {:.3}x (target >= 0.9x)",
        conc.requests, conc.rate(), ms(conc.percentile(50.0)), ms(conc.percentile(99.0)), conc.rate() / raw_rate
    );
    sign_cli(&socket, &[], &ca)?;
    drop(signer);

    println!("\n== verifier cached GET /trustbundle, 32 concurrent clients (targets: p99 < 1 ms; RSS <= 10 MiB after 100,000 requests)");
    std::fs::create_dir_all(dir.join("keys"))?;
    std::fs::copy(dir.join("key.pem"), dir.join("keys/primary.pem"))?;
    let nginx = Nginx::start(&webroot)?;
    let vsock = dir.join("verifier.sock");
    let vconf = dir.join("verifier.conf");
    std::fs::write(
        &vconf,
        format!(
            "keydir: keys\nsocket: {}\nstate-dir: {}\nrefresh: 1m\nkeyset:\n  main:\n    url: {}\n    chain:\n    - primary.pem\n",
            vsock.display(),
            dir.join("state").display(),
            nginx.url("/spiffetrustbundle.token")
        ),
    )?;
    let verifier = Daemon::spawn(
        VERIFIER,
        &[&vconf.display().to_string(), "-l"],
        &[],
        &dir.join("verifier.log"),
        Ready::UnixSocket(vsock.clone()),
    )?;
    let path = testbed::agent::bootstrap_path("main");
    wait_ok(&vsock, &path)?;
    let spec = RequestSpec { method: http::Method::GET, path, content_type: None, body: Bytes::new() };
    let pid = verifier.pid().context("verifier pid")?;
    let (rss0, _) = load::rss_kib(pid)?;
    load::run(&vsock, 32, 2_000, &spec)?; // warm-up
    let res = load::run(&vsock, 32, 100_000, &spec)?;
    let (rss, hwm) = load::rss_kib(pid)?;
    println!(
        "GET x{} over 32 keep-alive connections: {:.0} req/s, p50 {} p99 {} max {} (target p99 < 1 ms)",
        res.requests,
        res.rate(),
        ms(res.percentile(50.0)),
        ms(res.percentile(99.0)),
        ms(res.percentile(100.0))
    );
    println!(
        "verifier RSS: {:.1} MiB at start, {:.1} MiB after 102,000 requests, peak {:.1} MiB (target <= 10 MiB)",
        rss0 as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    drop(verifier);
    drop(nginx);
    Ok(())
}

/// A fresh spire-agent's time to its first SVID, bootstrapping through the verifier vs from a local file.
pub(crate) fn spire_bootstrap_bench() -> anyhow::Result<()> {
    println!("\n== the real SPIRE: a fresh spire-agent, start to its first SVID (target: through the verifier <= 1.05x trust_bundle_path)");
    let (through, local) = testbed::real_spire::bootstrap_timing(10)?;
    let (t, l) = (median(through.clone()), median(local.clone()));
    let spread = |v: &[Duration]| {
        let min = v.iter().min().copied().unwrap_or_default();
        let max = v.iter().max().copied().unwrap_or_default();
        format!("min {}, max {}", ms(min), ms(max))
    };
    println!(
        "through the verifier (trust_bundle_url + unix socket): p50 {} ({}), n={}",
        ms(t),
        spread(&through),
        through.len()
    );
    println!(
        "trust_bundle_path (the same bundle in a file):          p50 {} ({}), n={}",
        ms(l),
        spread(&local),
        local.len()
    );
    println!("ratio: {:.3}x (target <= 1.05x)", t.as_secs_f64() / l.as_secs_f64());
    Ok(())
}

/// Waits until the verifier on `socket` serves `path` with a 200.
pub(crate) fn wait_ok(socket: &Path, path: &str) -> anyhow::Result<()> {
    testbed::wait::wait_for("the verifier to serve the bundle", Duration::from_secs(20), || {
        Ok(testbed::agent::get(socket, path).is_ok_and(|r| r.status == 200))
    })
}
