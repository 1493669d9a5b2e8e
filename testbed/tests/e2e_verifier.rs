//! The verifier as shipped (real binary) behind a real nginx, with tokens signed on swtpm: bad-input tables
//! for its socket, misbehaving upstreams, state-file damage, config errors, and one-shot mode.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testbed::agent::{self, bootstrap_path, send_raw};
use testbed::nginx::Nginx;
use testbed::pki;
use testbed::process::{run_bin, Daemon, Ready};
use testbed::single::{provision, sign_cli, start_signer, VERIFIER};
use testbed::swtpm::Swtpm;
use testbed::wait::{wait_for, wait_until};

struct Fixture {
    tmp: tempfile::TempDir,
    _tpm: Swtpm,
    _signer: Daemon,
    nginx: Nginx,
    good: String,
    ca: String,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::create_dir_all(dir.join("www")).unwrap();
        let tpm = Swtpm::start().unwrap();
        provision(&tpm, "ecc-p256", &dir.join("keys/primary.pem")).unwrap();
        let (signer, socket) = start_signer(dir, "signer", &tpm, &dir.join("www"), "10m").unwrap();
        let ca = pki::spire_ca(dir, "example.org", "ca").unwrap();
        let good = sign_cli(&socket, &[], &ca).unwrap();
        let nginx = Nginx::start(&dir.join("www")).unwrap();
        Fixture { tmp, _tpm: tpm, _signer: signer, nginx, good, ca }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn config(&self, name: &str, keyset: &str) -> PathBuf {
        let path = self.dir().join(format!("{name}.conf"));
        std::fs::write(
            &path,
            format!(
                "keydir: keys\nsocket: {}\nstate-dir: {}\nrefresh: 300ms\ntimeout: 1s\nkeyset:\n{keyset}",
                self.dir().join(format!("{name}.sock")).display(),
                self.dir().join(format!("{name}-state")).display()
            ),
        )
        .unwrap();
        path
    }

    fn main_keyset(&self, url: &str, mirrors: &[&str]) -> String {
        let mirrors: String = mirrors.iter().map(|m| format!("      - {m}\n")).collect();
        let mirrors = if mirrors.is_empty() { String::new() } else { format!("    mirrors:\n{mirrors}") };
        format!("  main:\n    url: {url}\n{mirrors}    chain:\n    - primary.pem\n")
    }

    fn start(&self, name: &str, config: &Path) -> (Daemon, PathBuf) {
        let socket = self.dir().join(format!("{name}.sock"));
        let d = Daemon::spawn(
            VERIFIER,
            &[&config.display().to_string(), "-l"],
            &[("RUST_LOG", "debug")],
            &self.dir().join(format!("{name}.log")),
            Ready::UnixSocket(socket.clone()),
        )
        .unwrap();
        (d, socket)
    }

    fn token_url(&self) -> String {
        self.nginx.url("/spiffetrustbundle.token")
    }
}

/// Waits until `log` holds `needle` at least `count` times (20 s at most).
fn wait_log(d: &Daemon, needle: &str, count: usize) {
    d.wait_log(needle, count).unwrap();
}

fn get(socket: &Path, path: &str) -> agent::AgentResponse {
    agent::get(socket, path).unwrap()
}

#[test]
fn socket_bad_input_table() {
    let f = Fixture::new();
    let (_v, s) = f.start("v", &f.config("v", &f.main_keyset(&f.token_url(), &[])));
    let ok = get(&s, &bootstrap_path("main"));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body, f.ca);
    let cases = [
        ("GET", "/trustbundle", 400),
        ("GET", "/trustbundle?instance=", 400),
        ("GET", "/trustbundle?instance=nope", 404),
        ("GET", "/trustbundle?instance=main&format=xml", 400),
        ("POST", "/trustbundle?instance=main", 405),
        ("DELETE", "/trustbundle?instance=main", 405),
        ("GET", "/", 404),
        ("GET", "/spiffetrustbundle.token", 404),
        ("GET", "/trustbundle/?instance=main", 200),
        ("GET", "/trustbundle?instance=main&format=pem", 200),
    ];
    for (method, path, want) in cases {
        let r = agent::request(&s, method, path).unwrap();
        assert_eq!(r.status, want, "{method} {path}: {:?}", r.body);
        if want != 200 {
            assert!(!r.body.trim().is_empty(), "{method} {path}: no reason given");
            assert!(!r.body.contains("BEGIN CERTIFICATE"), "{method} {path}: bundle in an error");
        }
    }
    let garbage = send_raw(&s, b"\x00\x01garbage\r\n\r\n").unwrap();
    assert_eq!(garbage.status, 400, "{garbage:?}");
    let huge_header =
        format!("GET /trustbundle?instance=main HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(100_000));
    let r = send_raw(&s, huge_header.as_bytes()).unwrap();
    assert_eq!(r.status, 431, "oversized head");
    // SPIFFE format for agents with trust_bundle_format = "spiffe".
    let json = get(&s, &format!("{}&format=spiffe", bootstrap_path("main")));
    assert_eq!(json.status, 200);
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["keys"][0]["use"], "x509-svid");
    assert_eq!(crypto::bundle::Bundle::parse(&json.body).unwrap().to_pem(), f.ca);
}

#[test]
fn corrupt_and_truncated_tokens_served_by_nginx_are_never_served() {
    let f = Fixture::new();
    let (v, s) = f.start("v", &f.config("v", &f.main_keyset(&f.token_url(), &[])));
    assert_eq!(get(&s, &bootstrap_path("main")).body, f.ca);
    // While nothing changes, the verifier asks conditionally and nginx answers 304 Not Modified.
    wait_for("a conditional GET answered 304 by nginx", Duration::from_secs(20), || {
        Ok(f.nginx.access_log().contains("\" 304 "))
    })
    .unwrap_or_else(|e| panic!("{e}:\n{}", f.nginx.access_log()));
    let www = f.dir().join("www/spiffetrustbundle.token");
    let mut flipped = f.good.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("corrupt", flipped),
        ("truncated", f.good.as_bytes()[..f.good.len() - 40].to_vec()),
        ("empty", Vec::new()),
        ("an HTML error page", b"<html><body>502 Bad Gateway</body></html>".to_vec()),
        ("binary", vec![0xff; 300]),
    ];
    let mut rejections = v.log().matches("source failed").count() + v.log().matches("token rejected").count();
    for (i, (case, body)) in bad.into_iter().enumerate() {
        std::fs::write(&www, &body).unwrap();
        // nginx's validators come from size and mtime (1 s resolution): give each version its own mtime.
        let stamp = format!("@{}", 1_600_000_000 + i);
        assert!(std::process::Command::new("touch").args(["-m", "-d", &stamp]).arg(&www).status().unwrap().success());
        rejections = wait_until(format!("{case}: a rejection logged"), Duration::from_secs(20), || {
            let n = v.log().matches("source failed").count() + v.log().matches("token rejected").count();
            Ok((n > rejections).then_some(n))
        })
        .unwrap_or_else(|e| panic!("{e}:\n{}", v.log_tail()));
        let r = get(&s, &bootstrap_path("main"));
        assert_eq!((r.status, r.body.as_str()), (200, f.ca.as_str()), "{case}: last good bundle not served");
    }
}

#[test]
fn slow_and_failing_upstreams_fall_back_to_mirrors_or_the_cache() {
    let f = Fixture::new();
    let slow = f.nginx.url("/slow/spiffetrustbundle.token");
    let broken = f.nginx.url("/error/spiffetrustbundle.token");
    // The first sources misbehave; the mirror after them works.
    let keyset = f.main_keyset(&slow, &[&broken, "http://127.0.0.1:9/x", &f.token_url()]);
    let (v, s) = f.start("v", &f.config("v", &keyset));
    let started = Instant::now();
    let r = get(&s, &bootstrap_path("main"));
    assert_eq!((r.status, r.body.as_str()), (200, f.ca.as_str()));
    assert!(started.elapsed() < Duration::from_secs(15), "the slow source was not cut off by the timeout");
    let log = v.log();
    assert!(log.contains("did not answer within"), "slow source not timed out:\n{log}");
    assert!(log.contains("HTTP status 500"), "500 not reported:\n{log}");
    // Only a slow source and no cache: the agent gets a 503 with a reason, not a hang.
    let only_slow =
        format!("{}  slow:\n    url: {slow}\n    chain:\n    - primary.pem\n", f.main_keyset(&f.token_url(), &[]));
    let (_v2, s2) = f.start("v2", &f.config("v2", &only_slow));
    let r = get(&s2, &bootstrap_path("slow"));
    assert_eq!(r.status, 503, "{r:?}");
}

#[test]
fn a_damaged_state_file_is_reported_and_ignored() {
    let f = Fixture::new();
    let conf = f.config("v", &f.main_keyset(&f.token_url(), &[]));
    let state = f.dir().join("v-state/main.json");
    {
        let (v, s) = f.start("v", &conf);
        assert_eq!(get(&s, &bootstrap_path("main")).status, 200);
        wait_log(&v, "accepted a new bundle", 1);
        // The state is written off the event loop, after the bundle is served: wait for the file itself.
        wait_for("the verifier to persist its state", Duration::from_secs(10), || Ok(state.exists())).unwrap();
    }
    let full = std::fs::read_to_string(&state).unwrap();
    let forged = full.replace("\"signed_at\":", "\"signed_at\":1").replace("\"signed_at\":1", "\"signed_at\":9");
    for (case, content) in [
        ("truncated", full[..full.len() / 2].to_string()),
        ("garbage", "\u{0}\u{1}not json".to_string()),
        ("forged signing time", forged),
        ("token replaced", full.replace("eyJ", "eyK")),
    ] {
        std::fs::write(&state, &content).unwrap();
        let (v, s) = f.start("v", &conf);
        let r = get(&s, &bootstrap_path("main"));
        assert_eq!((r.status, r.body.as_str()), (200, f.ca.as_str()), "{case}");
        let log = v.log();
        assert!(log.contains("ignoring it"), "{case}: damage not reported:\n{log}");
        drop(v);
    }
}

#[test]
fn config_errors_name_the_key() {
    let f = Fixture::new();
    std::fs::write(f.dir().join("keys/bad.pem"), "not a key").unwrap();
    let url = f.token_url();
    let cases = [
        (
            "unknown key",
            format!("keydir: keys\nbogus: 1\nkeyset:\n  main:\n    url: {url}\n    chain: [primary.pem]\n"),
            "bogus",
        ),
        ("no keysets", "keydir: keys\n".to_string(), "keyset"),
        ("missing url", "keyset:\n  main:\n    chain: [primary.pem]\n".to_string(), "keyset.main.url"),
        (
            "bad scheme",
            "keyset:\n  main:\n    url: ftp://x/y\n    chain: [primary.pem]\n".to_string(),
            "keyset.main.url",
        ),
        (
            "relative file",
            "keyset:\n  main:\n    url: file://rel/x\n    chain: [primary.pem]\n".to_string(),
            "keyset.main.url",
        ),
        ("empty chain", format!("keyset:\n  main:\n    url: {url}\n    chain: []\n"), "keyset.main.chain"),
        (
            "missing key file",
            format!("keyset:\n  main:\n    url: {url}\n    chain: [nope.pem]\n"),
            "keyset.main.chain[0]",
        ),
        (
            "unparsable key",
            format!("keyset:\n  main:\n    url: {url}\n    chain: [primary.pem, bad.pem]\n"),
            "keyset.main.chain[1]",
        ),
        (
            "bad backup",
            format!("keyset:\n  main:\n    url: {url}\n    backup: nope.pem\n    chain: [primary.pem]\n"),
            "keyset.main.backup",
        ),
        (
            "bad mirror",
            format!("keyset:\n  main:\n    url: {url}\n    mirrors: [gopher://x]\n    chain: [primary.pem]\n"),
            "keyset.main.mirrors[0]",
        ),
        (
            "bad refresh",
            format!("refresh: often\nkeyset:\n  main:\n    url: {url}\n    chain: [primary.pem]\n"),
            "refresh",
        ),
        (
            "duplicate url key",
            format!("keyset:\n  main:\n    url: {url}\n    url: {url}\n    chain: [primary.pem]\n"),
            "url",
        ),
        (
            "bad socket-mode",
            format!("socket-mode: rw\nkeyset:\n  main:\n    url: {url}\n    chain: [primary.pem]\n"),
            "socket-mode",
        ),
        ("unknown keyset key", format!("keyset:\n  main:\n    urls: [{url}]\n    chain: [primary.pem]\n"), "urls"),
    ];
    for (case, text, key) in cases {
        let path = f.dir().join("c.conf");
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = run_bin(VERIFIER, &[&path.display().to_string(), "-l"], b"").unwrap();
        assert_ne!(code, 0, "{case}");
        assert!(out.is_empty(), "{case}: stdout {out:?}");
        assert!(err.contains(key), "{case}: {err:?} does not name {key}");
    }
}

#[test]
fn one_shot_prints_exactly_the_verified_bundle() {
    let f = Fixture::new();
    let conf = f.config("v", &f.main_keyset(&f.token_url(), &[]));
    let c = conf.display().to_string();
    let (code, out, _) = run_bin(VERIFIER, &[&c, "main"], b"").unwrap();
    assert_eq!((code, out.as_str()), (0, f.ca.as_str()));
    // From a file URL given on the command line.
    let file = format!("file://{}", f.dir().join("www/spiffetrustbundle.token").display());
    let (code, out, _) = run_bin(VERIFIER, &[&c, "main", &file], b"").unwrap();
    assert_eq!((code, out.as_str()), (0, f.ca.as_str()));
    // Failures: nothing on stdout, non-zero exit, a reason on stderr.
    std::fs::write(f.dir().join("rogue.token"), "x.y.z").unwrap();
    let rogue = format!("file://{}", f.dir().join("rogue.token").display());
    for args in [
        vec![c.as_str(), "nope"],
        vec![c.as_str(), "main", rogue.as_str()],
        vec![c.as_str(), "main", "http://127.0.0.1:9/x"],
    ] {
        let (code, out, err) = run_bin(VERIFIER, &args, b"").unwrap();
        assert_ne!(code, 0, "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out:?}");
        assert!(!err.trim().is_empty(), "{args:?}");
    }
}

#[test]
fn https_sources_use_the_configured_ca() {
    let f = Fixture::new();
    let (ca, cert, key) = testbed::pki::tls_server(f.dir()).unwrap();
    let tls = Nginx::start_with(&f.dir().join("www"), Some((&cert, &key))).unwrap();
    let url = tls.url("/spiffetrustbundle.token");
    assert!(url.starts_with("https://"));
    let with_ca = format!("ca-file: {}\n", ca.display());
    let conf = f.config("v", &f.main_keyset(&url, &[]));
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{with_ca}{text}")).unwrap();
    let (_v, s) = f.start("v", &conf);
    let r = get(&s, &bootstrap_path("main"));
    assert_eq!((r.status, r.body.as_str()), (200, f.ca.as_str()), "https with the configured CA");
    // Without the CA (system roots only) the server is not trusted: nothing is served.
    let conf2 = f.config("v2", &f.main_keyset(&url, &[]));
    let (v2, s2) = f.start("v2", &conf2);
    let r = get(&s2, &bootstrap_path("main"));
    assert_eq!(r.status, 503, "untrusted https source accepted: {r:?}");
    assert!(v2.log().contains("TLS with"), "TLS failure not reported:\n{}", v2.log_tail());
}

/// The attack on the old code: with no valid bundle held and a source that hangs, six concurrent agent requests
/// were answered after 3, 6, 9, 12, 15 and 18 s, each doing its own full fetch in turn. Waiters now share the
/// attempt in flight and its result: the hanging source sees one connection, not seven.
#[test]
fn concurrent_requests_share_one_attempt_when_nothing_is_held() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    testbed::pki::openssl(
        &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "k.pem"],
        dir.path(),
    )
    .unwrap();
    testbed::pki::openssl(&["pkey", "-in", "k.pem", "-pubout", "-out", "keys/primary.pem"], dir.path()).unwrap();
    // A source that accepts and never answers, counting connections and holding them open.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    let socket = dir.path().join("v.sock");
    let config = dir.path().join("v.conf");
    std::fs::write(
        &config,
        format!(
            "keydir: keys\nsocket: {}\nstate-dir: {}\nrefresh: 1h\ntimeout: 2s\nkeyset:\n  main:\n    url: http://127.0.0.1:{port}/token\n    chain:\n    - primary.pem\n",
            socket.display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let _verifier = Daemon::spawn(
        VERIFIER,
        &[&config.display().to_string(), "-l"],
        &[],
        &dir.path().join("v.log"),
        Ready::UnixSocket(socket.clone()),
    )
    .unwrap();
    // The start-up refresh is in flight once the source has its first connection.
    wait_for("the verifier to contact its source", Duration::from_secs(10), || Ok(accepted.load(Ordering::SeqCst) > 0))
        .unwrap();
    let agents: Vec<_> = (0..6)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || get(&socket, &bootstrap_path("main")).status)
        })
        .collect();
    let statuses: Vec<u16> = agents.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(statuses, [503; 6]);
    let n = accepted.load(Ordering::SeqCst);
    assert!(n <= 2, "the hanging source saw {n} connections: each waiter fetched on its own");
}

/// The attack on the old code: 256 idle connections on the verifier's socket, made by any local user who may
/// connect, took every connection slot and stalled every other client (the SPIRE agent) for 7-26 s. One uid now
/// holds at most a fixed share of the slots, and idle connections are closed sooner.
#[test]
fn idle_connections_of_one_uid_cannot_stall_the_agent() {
    use std::io::BufRead;
    let f = Fixture::new();
    std::fs::write(f.dir().join("www/spiffetrustbundle.token"), &f.good).unwrap();
    let keyset = f.main_keyset(&f.token_url(), &[]);
    let config = f.config("v", &format!("{keyset}socket-mode: \"0666\"\n"));
    // The socket's directory must be reachable by the other user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_v, socket) = f.start("v", &config);
    assert_eq!(get(&socket, &bootstrap_path("main")).status, 200);
    // User nobody opens 300 connections and keeps them idle.
    let script = "import socket,sys,time\nss=[]\nfor i in range(300):\n s=socket.socket(socket.AF_UNIX)\n s.settimeout(1)\n try:\n  s.connect(sys.argv[1]); ss.append(s)\n except OSError:\n  break\nprint('held',len(ss),flush=True)\ntime.sleep(60)\n";
    let mut holder = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script])
        .arg(&socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("held"), "{line:?}");
    // The agent (root here) is answered at once.
    let (tx, rx) = std::sync::mpsc::channel();
    let s = socket.clone();
    std::thread::spawn(move || {
        let _ = tx.send(get(&s, &bootstrap_path("main")).status);
    });
    let answered = rx.recv_timeout(Duration::from_secs(3));
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(answered, Ok(200), "the agent was stalled by another uid's idle connections ({})", line.trim());
}

/// systemd socket activation, as the shipped `.socket` unit does it (here through systemd's own
/// `systemd-socket-activate`): the first connection starts the verifier, which serves agents on the socket it was
/// given, says so, and leaves the socket file to systemd. Negative rows: a passed socket
/// at another path than the config's, and `LISTEN_*` variables meant for another process, stop it with the
/// reason (exit 1) instead of serving where nobody looks or taking a descriptor that is not its socket.
#[test]
fn socket_activation_serves_on_the_passed_socket_and_refuses_one_it_was_not_meant_to_take() {
    let f = Fixture::new();
    let keyset = f.main_keyset(&f.token_url(), &[]);
    let config = f.config("act", &keyset);
    let socket = f.dir().join("act.sock");
    let args = [config.to_str().unwrap(), "-l"];
    let mut v = Daemon::spawn_activated(VERIFIER, &socket, &args, &f.dir().join("act.log")).unwrap();
    let first = get(&socket, &bootstrap_path("main"));
    assert_eq!((first.status, first.body.as_str()), (200, f.ca.as_str()), "{}", v.log_tail());
    assert!(v.log().contains("activated=true"), "{}", v.log_tail());
    assert!(v.stop().unwrap(), "stopped cleanly");
    assert!(socket.exists(), "the verifier removed the socket systemd owns");

    // The unit passes one socket and the config names another.
    let elsewhere = f.dir().join("elsewhere.sock");
    let log = f.dir().join("mismatch.log");
    let mut v = Daemon::spawn_activated(VERIFIER, &elsewhere, &args, &log).unwrap();
    drop(std::os::unix::net::UnixStream::connect(&elsewhere));
    assert_eq!(v.wait_exit().unwrap(), Some(1), "{}", v.log_tail());
    let said = v.log();
    assert!(
        said.contains(&format!("systemd passed a socket at {}", elsewhere.display()))
            && said.contains(&format!("the config's socket is {}", socket.display())),
        "{said}"
    );

    // Variables inherited from a parent that was socket-activated itself: not this process's descriptors.
    let (code, _, err) =
        testbed::process::run_bin_env(VERIFIER, &args, &[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")], b"").unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("LISTEN_PID \"1\" is not this process"), "{err}");
}

/// `log-format: json` for the verifier: one JSON object per line, the keyset as a field of its own; and as text,
/// with `RUST_LOG` unset as an operator runs it, no colour escapes in a log that is not a terminal.
#[test]
fn logs_are_json_lines_with_the_keyset_field_or_plain_text() {
    let f = Fixture::new();
    let keyset = f.main_keyset(&f.token_url(), &[]);
    for (name, format) in [("json", "log-format: json\n"), ("text", "")] {
        let config = f.config(name, &keyset);
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("{format}{text}")).unwrap();
        let socket = f.dir().join(format!("{name}.sock"));
        let log = f.dir().join(format!("{name}.log"));
        let args = [config.to_str().unwrap(), "-l"];
        let mut v = Daemon::spawn(VERIFIER, &args, &[], &log, Ready::UnixSocket(socket.clone())).unwrap();
        assert_eq!(get(&socket, &bootstrap_path("main")).status, 200);
        v.wait_log("accepted a new bundle", 1).unwrap();
        assert!(v.stop().unwrap(), "stopped cleanly");
        let said = std::fs::read_to_string(&log).unwrap();
        testbed::logs::assert_readable(name, &said);
        if name == "json" {
            let lines = testbed::logs::json_lines(&said);
            let accepted = lines.iter().find(|l| l["message"] == "accepted a new bundle").unwrap();
            assert_eq!((&accepted["keyset"], &accepted["level"]), (&"main".into(), &"INFO".into()), "{accepted}");
            assert!(accepted["signed_at"].is_u64(), "{accepted}");
        } else {
            assert!(said.contains("accepted a new bundle") && said.contains("keyset=main"), "{said}");
        }
    }
}
