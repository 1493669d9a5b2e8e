//! Metrics and health, end to end: signer-unix, signer-http and the verifier with `metrics-addr`, on swtpm and
//! nginx; Debian's `promtool check metrics` on each daemon's output; Debian's `prometheus` server scraping a
//! verifier with the shipped alert rules, seeing the fetch alert fire once nginx stops.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use testbed::agent::{self, http_get};
use testbed::nginx::Nginx;
use testbed::process::{Daemon, Ready};
use testbed::single::{provision, sign_cli, start_signer_publishing, start_verifier, wait_for_answer};
use testbed::swtpm::Swtpm;
use testbed::wait::wait_for;

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], testbed::ports::free_port().unwrap()))
}

/// Stops the test unless `tool` is installed (`ci/install-deps.sh test` installs it): a missing tool fails the
/// lane instead of passing a test that checked nothing.
fn require(tool: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is not installed (make test installs it: apt-get install prometheus)");
}

/// `promtool check metrics` on `text`: exit status and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The value of the sample whose line starts with `series` (name and labels exactly as rendered).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn verifier_config(dir: &Path, socket: &Path, nginx: &Nginx, metrics: SocketAddr) -> std::path::PathBuf {
    let config = dir.join("verifier.conf");
    std::fs::write(
        &config,
        format!(
            "keydir: keys\nsocket: {}\nstate-dir: {}\nrefresh: 1s\nmetrics-addr: \"{metrics}\"\nkeyset:\n  main:\n    url: {}\n    chain: [a.pem, b.pem]\n",
            socket.display(),
            dir.join("state").display(),
            nginx.url("/spiffetrustbundle.token")
        ),
    )
    .unwrap();
    config
}

/// Two TPMs with a key each (keys/a.pem RSA, keys/b.pem ECC) and an empty web root.
struct Lab {
    tmp: tempfile::TempDir,
    www: std::path::PathBuf,
    tpm_a: Swtpm,
    tpm_b: Swtpm,
}

fn lab() -> Lab {
    let tmp = tempfile::tempdir().unwrap();
    let www = tmp.path().join("www");
    std::fs::create_dir_all(tmp.path().join("keys")).unwrap();
    std::fs::create_dir_all(&www).unwrap();
    let (tpm_a, tpm_b) = (Swtpm::start().unwrap(), Swtpm::start().unwrap());
    provision(&tpm_a, "rsa2048", &tmp.path().join("keys/a.pem")).unwrap();
    provision(&tpm_b, "ecc-p256", &tmp.path().join("keys/b.pem")).unwrap();
    Lab { tmp, www, tpm_a, tpm_b }
}

#[test]
fn every_daemon_exports_metrics_promtool_accepts_and_counts_what_happened() {
    require("promtool");
    let Lab { tmp, www, tpm_a, tpm_b } = lab();
    let dir = tmp.path();
    let nginx = Nginx::start(&www).unwrap();

    // The verifier first: before any bundle exists, /healthz names the keyset it cannot serve.
    let (m_verifier, m_unix, m_http) = (free_addr(), free_addr(), free_addr());
    let vsock = dir.join("verifier.sock");
    let vconf = verifier_config(dir, &vsock, &nginx, m_verifier);
    let _verifier = start_verifier(dir, &vconf, &vsock).unwrap();
    let health = http_get(m_verifier, "/healthz").unwrap();
    assert_eq!(health.status, 503, "{health:?}");
    assert!(health.body.contains("keyset main"), "{health:?}");

    // signer-unix a publishes what a (inner) and b (through signer-http b) signed.
    let sock_a = dir.join("a.sock");
    let sock_b = dir.join("b.sock");
    let conf_a = dir.join("signer-a.conf");
    std::fs::write(
        &conf_a,
        format!(
            "socket: {}\ntpm-device: \"{}\"\nduration: 10m\ndir: {}\nkeydir: keys\nchain: [a.pem, b.pem]\nmetrics-addr: \"{m_unix}\"\n",
            sock_a.display(),
            tpm_a.device(),
            www.display()
        ),
    )
    .unwrap();
    let _signer_a = Daemon::spawn(
        testbed::single::SIGNER_UNIX,
        &[conf_a.to_str().unwrap()],
        &[],
        &dir.join("signer-a.log"),
        Ready::UnixSocket(sock_a.clone()),
    )
    .unwrap();
    let _signer_b = start_signer_publishing(dir, "signer-b", &tpm_b, &www, "10m", &sock_b, &[], None).unwrap();
    let http_b = free_addr();
    let conf_b = dir.join("signer-http-b.conf");
    std::fs::write(
        &conf_b,
        format!(
            "socket: {}\nkeydir: keys\nprimary: a.pem\nlisten-addr: \"{http_b}\"\nallowed-addrs: [127.0.0.1]\nmetrics-addr: \"{m_http}\"\n",
            sock_b.display()
        ),
    )
    .unwrap();
    let _cosigner = Daemon::spawn(
        testbed::ha::SIGNER_HTTP,
        &[conf_b.to_str().unwrap()],
        &[],
        &dir.join("signer-http-b.log"),
        Ready::TcpAddr(http_b),
    )
    .unwrap();
    let ca = testbed::pki::spire_ca(dir, "example.org", "ca").unwrap();
    sign_cli(&sock_a, &[&format!("http://{http_b}/sign")], &ca).unwrap();
    // One refusal of each daemon's kind: garbage to co-sign, a bundle request for an unknown instance.
    let bad = agent::tcp_from("127.0.0.1".parse().unwrap(), http_b, &agent::post("/sign", "application/jwt", b"a.b.c"))
        .unwrap();
    assert_eq!(bad.status, 400);
    wait_for_answer(&vsock, "main", "the bundle", |r| r.status == 200).unwrap();
    assert_eq!(agent::get(&vsock, &agent::bootstrap_path("nope")).unwrap().status, 404);
    let health = http_get(m_verifier, "/healthz").unwrap();
    assert_eq!((health.status, health.body.trim()), (200, "ok: serving main"));

    let scrape = |addr| {
        let r = http_get(addr, "/metrics").unwrap();
        assert_eq!(r.status, 200);
        r.body
    };
    let (unix, http, verifier) = (scrape(m_unix), scrape(m_http), scrape(m_verifier));
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml");
    let checked = std::process::Command::new("promtool").args(["check", "rules"]).arg(&rules).output().unwrap();
    assert!(checked.status.success(), "promtool check rules: {}", String::from_utf8_lossy(&checked.stdout));
    for (who, text) in [("signer-unix", &unix), ("signer-http", &http), ("verifier", &verifier)] {
        let (ok, said) = promtool_check(text);
        assert!(ok && said.trim().is_empty(), "promtool check metrics on {who}: {said}\n{text}");
    }
    let p = "spire_attestor_tpm_";
    let source = nginx.url("/spiffetrustbundle.token");
    type Want = fn(f64) -> bool;
    let rows: Vec<(&str, String, Want)> = vec![
        ("signer-unix", format!("{p}signer_unix_signs_total{{kind=\"bundle\",result=\"ok\"}}"), |v| v == 1.0),
        ("signer-unix", format!("{p}signer_unix_publishes_total{{result=\"ok\"}}"), |v| v == 1.0),
        ("signer-unix", format!("{p}signer_unix_tpm_sign_seconds_count"), |v| v == 1.0),
        ("signer-unix", format!("{p}signer_unix_queue_depth"), |v| v == 0.0),
        ("signer-unix", format!("{p}signer_unix_published_token_expires_in_seconds"), |v| v > 500.0 && v <= 600.0),
        ("signer-http", format!("{p}signer_http_requests_total{{result=\"cosigned\"}}"), |v| v == 1.0),
        ("signer-http", format!("{p}signer_http_requests_total{{result=\"bad_token\"}}"), |v| v == 1.0),
        ("signer-http", format!("{p}signer_http_requests_total{{result=\"refused_at_door\"}}"), |v| v == 0.0),
        (
            "verifier",
            format!("{p}verifier_fetches_total{{keyset=\"main\",result=\"accepted\",source=\"{source}\"}}"),
            |v| v >= 1.0,
        ),
        ("verifier", format!("{p}verifier_requests_total{{keyset=\"main\",status=\"200\"}}"), |v| v >= 1.0),
        ("verifier", format!("{p}verifier_requests_total{{keyset=\"\",status=\"404\"}}"), |v| v == 1.0),
        ("verifier", format!("{p}verifier_token_expires_in_seconds{{keyset=\"main\"}}"), |v| v > 500.0 && v <= 600.0),
        ("verifier", format!("{p}verifier_backup_key_in_use{{keyset=\"main\"}}"), |v| v == 0.0),
        ("verifier", format!("{p}verifier_keys_version{{keyset=\"main\"}}"), |v| v == 0.0),
        ("verifier", format!("{p}verifier_refresh_interval_seconds{{keyset=\"main\"}}"), |v| v == 1.0),
        ("verifier", format!("{p}verifier_last_successful_fetch_timestamp_seconds{{keyset=\"main\"}}"), |v| {
            (v - common::clock::unix_now() as f64).abs() < 30.0
        }),
    ];
    for (who, series, want) in rows {
        let text = match who {
            "signer-unix" => &unix,
            "signer-http" => &http,
            _ => &verifier,
        };
        let got = sample(text, &series).unwrap_or_else(|| panic!("{who}: no {series}\n{text}"));
        assert!(want(got), "{who}: {series} = {got}");
    }
    // Only /metrics and /healthz are served.
    assert_eq!(http_get(m_verifier, "/").unwrap().status, 404);
}

/// Prometheus' HTTP API: the alerts it holds, as (name, state) pairs.
fn alerts(prometheus: SocketAddr) -> Vec<(String, String)> {
    let Ok(r) = http_get(prometheus, "/api/v1/alerts") else { return vec![] };
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    v["data"]["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                        x["state"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn prometheus_with_the_shipped_rules_fires_the_fetch_alert_once_nginx_stops() {
    require("prometheus");
    let Lab { tmp, www, tpm_a, tpm_b } = lab();
    let dir = tmp.path();
    let mut nginx = Nginx::start(&www).unwrap();
    let (sock_a, sock_b) = (dir.join("a.sock"), dir.join("b.sock"));
    let _a = start_signer_publishing(dir, "signer-a", &tpm_a, &www, "10m", &sock_a, &["a.pem", "b.pem"], None).unwrap();
    let _b = start_signer_publishing(dir, "signer-b", &tpm_b, &www, "10m", &sock_b, &[], None).unwrap();
    // a's token, wrapped by b directly (the chain the keyset wants), published by a.
    let ca = testbed::pki::spire_ca(dir, "example.org", "ca").unwrap();
    let inner =
        agent::send(&sock_a, "POST", "/sign", &[("Content-Type", "application/x-pem-file")], ca.as_bytes()).unwrap();
    let outer =
        agent::send(&sock_b, "POST", "/sign", &[("Content-Type", "application/jwt")], inner.body.trim().as_bytes())
            .unwrap();
    let published = agent::send(&sock_a, "POST", "/publish", &[], outer.body.trim().as_bytes()).unwrap();
    assert_eq!(published.status, 200, "{published:?}");

    let m_verifier = free_addr();
    let vsock = dir.join("verifier.sock");
    let vconf = verifier_config(dir, &vsock, &nginx, m_verifier);
    let _verifier = start_verifier(dir, &vconf, &vsock).unwrap();
    wait_for_answer(&vsock, "main", "the bundle", |r| r.status == 200).unwrap();

    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml");
    let web = free_addr();
    let pconf = dir.join("prometheus.yml");
    std::fs::write(
        &pconf,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: verifier\n    static_configs:\n      - targets: [\"{m_verifier}\"]\n",
            rules.display()
        ),
    )
    .unwrap();
    let _prometheus = Daemon::spawn(
        "/usr/bin/prometheus",
        &[
            &format!("--config.file={}", pconf.display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            &format!("--web.listen-address={web}"),
        ],
        &[],
        &dir.join("prometheus.log"),
        Ready::TcpAddr(web),
    )
    .unwrap();
    // Wait for the event that proves a scrape happened: the verifier's series in Prometheus.
    let scraped = || {
        http_get(web, "/api/v1/query?query=spire_attestor_tpm_verifier_token_expires_in_seconds")
            .map(|r| r.body.contains("\"keyset\":\"main\""))
            .unwrap_or(false)
    };
    wait_for("Prometheus to scrape the verifier", Duration::from_secs(30), || Ok(scraped())).unwrap();
    let firing = |name: &str| alerts(web).iter().any(|(n, s)| n == name && s == "firing");
    assert!(!firing("SpireTrustBundleFetchFailing"), "fetch alert firing while nginx serves: {:?}", alerts(web));
    assert!(!firing("SpireTrustBundleExpiresSoon"), "{:?}", alerts(web));

    nginx.stop();
    wait_for("the fetch alert to fire", Duration::from_secs(40), || Ok(firing("SpireTrustBundleFetchFailing")))
        .unwrap_or_else(|e| panic!("{e}: {:?}", alerts(web)));
    // The node still serves its cached bundle: only the fetch alert fires, not the expiry one.
    assert!(!firing("SpireTrustBundleExpiresSoon"), "{:?}", alerts(web));
    assert_eq!(agent::get(&vsock, &agent::bootstrap_path("main")).unwrap().status, 200);
}

/// The enrollment CA's metrics after one enrollment and one refusal: each exchange counted by step and result,
/// the TPM's signatures timed (the first CRL and the certificate), and the CRL's times and age, which the shipped
/// alert rules read. `promtool check metrics` accepts the output.
#[test]
fn the_enrollment_ca_counts_enrollments_times_its_tpm_and_exposes_the_crls_age() {
    use testbed::devid_ca::{ek_hash_line, CaOptions, CaSite};
    let (listed, stranger) = (Swtpm::start_with_ek().unwrap(), Swtpm::start_with_ek().unwrap());
    let m = free_addr();
    let ca = CaSite::start(&CaOptions {
        endorsement_cas: vec![listed.ek_ca().unwrap().to_owned()],
        inventory: Some(format!("{}\n", ek_hash_line(&listed, "node-1").unwrap())),
        crl_lifetime: Some("1h"),
        metrics_addr: Some(m),
        ..CaOptions::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = ca.enroll(&listed, &dir.path().join("1"), &[]).unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, err) = ca.enroll(&stranger, &dir.path().join("2"), &[]).unwrap();
    assert_ne!(code, 0, "{err}");
    let r = http_get(m, "/metrics").unwrap();
    assert_eq!(r.status, 200);
    let (ok, said) = promtool_check(&r.body);
    assert!(ok && said.trim().is_empty(), "promtool check metrics: {said}\n{}", r.body);
    let p = "spire_attestor_tpm_devid_ca_";
    let get =
        |series: &str| sample(&r.body, &format!("{p}{series}")).unwrap_or_else(|| panic!("no {series}\n{}", r.body));
    assert_eq!(get("enrollments_total{result=\"ok\",step=\"begin\"}"), 1.0);
    assert_eq!(get("enrollments_total{result=\"ok\",step=\"answer\"}"), 1.0);
    assert_eq!(get("enrollments_total{result=\"refused\",step=\"begin\"}"), 1.0);
    assert!(get("tpm_sign_seconds_count") >= 2.0, "the first CRL and the certificate");
    let (this, next, age) =
        (get("crl_this_update_timestamp_seconds"), get("crl_next_update_timestamp_seconds"), get("crl_age_seconds"));
    assert_eq!(next - this, 3600.0, "nextUpdate is crl-lifetime after thisUpdate");
    assert!((0.0..300.0).contains(&age), "age {age}");
    assert_eq!(http_get(m, "/healthz").unwrap().status, 200);
}

/// The CRL's age, which the shipped alert watches, stays under half its lifetime with no revocation: the CA
/// (in-process, its key in swtpm, on a manual clock) re-signs its CRL, with a higher number, once half of the
/// lifetime has passed.
#[test]
fn the_enrollment_ca_re_signs_its_crl_at_half_its_lifetime_without_a_revocation() {
    use crypto::devid::{chain::parse_pem_bundle, crl::Crl};
    use testbed::devid_ca::{CaOptions, CaSite};
    let start = common::clock::unix_now();
    let clock = common::clock::Clock::manual(start);
    let options = CaOptions { inventory: Some(String::new()), crl_lifetime: Some("10m"), ..CaOptions::default() };
    let ca = CaSite::start_in_process(&options, clock.clone()).unwrap();
    let anchors = parse_pem_bundle(&std::fs::read(&ca.ca_cert).unwrap()).unwrap();
    let crl = || Crl::parse(&std::fs::read(&ca.crl).unwrap(), &anchors).unwrap();
    // The in-process CA signs its first CRL as it starts, by the manual clock.
    wait_for("the first CRL", Duration::from_secs(10), || Ok(crl().this_update() == start)).unwrap();
    let first = crl();
    assert_eq!(first.next_update(), start + 600);
    clock.advance(301);
    wait_for("the CRL re-signed", Duration::from_secs(10), || Ok(crl().this_update() == start + 301)).unwrap();
    let second = crl();
    assert_eq!(second.next_update(), start + 301 + 600);
    assert!(second.may_replace(&first) && !first.may_replace(&second), "the re-signed CRL's number did not grow");
}
