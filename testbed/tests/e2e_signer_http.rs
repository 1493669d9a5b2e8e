//! signer-http as shipped: the co-signing path through a second TPM, and its bad-input table (allow-list
//! before any parsing, IPv4/IPv6/CIDR, wrong key, expired, garbage, oversized, slow client, signer-unix down).

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::clock::unix_now as now;
use testbed::agent::{post, tcp_from};
use testbed::pki;
use testbed::process::{Daemon, Ready};
use testbed::single::{provision, sign_cli, start_signer_publishing};
use testbed::swtpm::Swtpm;

const SIGNER_HTTP: &str = "spire-server-attestor-tpm-signer-http";

struct Ha {
    tmp: tempfile::TempDir,
    _tpms: Vec<Swtpm>,
    _signers: Vec<Daemon>,
    sock_a: PathBuf,
    sock_b: PathBuf,
    ca: String,
}

fn free_port() -> u16 {
    testbed::ports::free_port().unwrap()
}

impl Ha {
    fn new() -> Ha {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for d in ["keys", "www-a", "www-b"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let (a, b, c) = (Swtpm::start().unwrap(), Swtpm::start().unwrap(), Swtpm::start().unwrap());
        provision(&a, "rsa2048", &dir.join("keys/a.pem")).unwrap();
        provision(&b, "ecc-p256", &dir.join("keys/b.pem")).unwrap();
        provision(&c, "rsa2048", &dir.join("keys/c.pem")).unwrap();
        let publishing = |name: &str, tpm: &Swtpm, www: &str, chain: &[&str]| {
            let socket = dir.join(format!("{name}.sock"));
            let d = start_signer_publishing(dir, name, tpm, &dir.join(www), "10m", &socket, chain, Some("c.pem"));
            (d.unwrap(), socket)
        };
        let (sa, sock_a) = publishing("signer-a", &a, "www-a", &["a.pem", "b.pem"]);
        let (sb, sock_b) = publishing("signer-b", &b, "www-b", &["b.pem", "a.pem"]);
        let (sc, _) = publishing("signer-c", &c, "www-a", &["a.pem", "b.pem"]);
        let ca = pki::spire_ca(dir, "example.org", "ca").unwrap();
        Ha { tmp, _tpms: vec![a, b, c], _signers: vec![sa, sb, sc], sock_a, sock_b, ca }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Starts signer-http in front of signer-unix(b), trusting a (primary) and c (backup).
    fn cosigner(&self, name: &str, listen: &str, allowed: &[&str], socket: &Path) -> (Daemon, SocketAddr) {
        self.cosigner_with(name, listen, allowed, socket, "")
    }

    fn cosigner_with(
        &self,
        name: &str,
        listen: &str,
        allowed: &[&str],
        socket: &Path,
        extra: &str,
    ) -> (Daemon, SocketAddr) {
        let conf = self.dir().join(format!("{name}.conf"));
        let allowed: String = allowed.iter().map(|a| format!("- \"{a}\"\n")).collect();
        std::fs::write(
            &conf,
            format!(
                "socket: {}\nkeydir: keys\nprimary: a.pem\nbackup: c.pem\nlisten-addr: \"{listen}\"\nread-timeout: 1s\nmax-body: 65536\n{extra}allowed-addrs:\n{allowed}",
                socket.display()
            ),
        )
        .unwrap();
        let addr: SocketAddr = listen.parse().unwrap();
        let d = Daemon::spawn(
            SIGNER_HTTP,
            &[&conf.display().to_string()],
            &[],
            &self.dir().join(format!("{name}.log")),
            Ready::TcpAddr(addr),
        )
        .unwrap();
        (d, addr)
    }

    fn policy(&self, chain: &[&str]) -> crypto::policy::Policy {
        let key = |n: &str| {
            crypto::keys::VerifyingKey::from_pem(n, &std::fs::read(self.dir().join("keys").join(n)).unwrap()).unwrap()
        };
        crypto::policy::Policy::new(
            chain.iter().map(|n| key(n)).collect(),
            Some(key("c.pem")),
            crypto::Limits::default(),
        )
        .unwrap()
    }
}

fn lo() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

#[test]
fn a_token_signed_by_a_is_co_signed_by_b() {
    let ha = Ha::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_h, addr) = ha.cosigner("http-b", &listen, &["127.0.0.1"], &ha.sock_b);
    let url = format!("http://{addr}/sign");
    let token = sign_cli(&ha.sock_a, &[&url], &ha.ca).unwrap();
    let v = ha.policy(&["a.pem", "b.pem"]).verify(&token, now()).unwrap();
    assert_eq!(v.layers.len(), 2);
    assert_eq!(v.layers[0].key_name, "b.pem");
    // Published by a's signer-unix.
    assert_eq!(std::fs::read_to_string(ha.dir().join("www-a/spiffetrustbundle.token")).unwrap(), token);
    // A token with a's signature only does not satisfy [a, b].
    let single = testbed::agent::send(&ha.sock_a, "POST", "/sign", &[], ha.ca.as_bytes()).unwrap().body;
    let err = ha.policy(&["a.pem", "b.pem"]).verify(&single, now()).unwrap_err();
    assert!(matches!(err.kind, crypto::VerifyErrorKind::MissingLayers { .. }), "{err}");
}

#[test]
fn bad_input_table() {
    let ha = Ha::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let (h, addr) = ha.cosigner("http-b", &listen, &["127.0.0.1", "127.0.0.4/31"], &ha.sock_b);
    // Tokens to send: a valid one from a, one from c (backup), one from b itself (not trusted here).
    let from_a = {
        let raw = testbed::agent::send(&ha.sock_a, "POST", "/sign", &[], ha.ca.as_bytes()).unwrap();
        assert_eq!(raw.status, 200);
        raw.body
    };
    let from_b = testbed::agent::send(&ha.sock_b, "POST", "/sign", &[], ha.ca.as_bytes()).unwrap().body;
    let jwt = "application/jwt";
    let cases: Vec<(&str, IpAddr, Vec<u8>, u16)> = vec![
        ("token from a", lo(), post("/sign", jwt, from_a.as_bytes()), 200),
        ("CIDR 127.0.0.4/31, low edge", "127.0.0.4".parse().unwrap(), post("/sign", jwt, from_a.as_bytes()), 200),
        ("CIDR 127.0.0.4/31, high edge", "127.0.0.5".parse().unwrap(), post("/sign", jwt, from_a.as_bytes()), 200),
        ("just outside the CIDR", "127.0.0.6".parse().unwrap(), post("/sign", jwt, from_a.as_bytes()), 403),
        ("disallowed IPv4 peer", "127.0.0.2".parse().unwrap(), post("/sign", jwt, from_a.as_bytes()), 403),
        (
            "disallowed peer sending garbage is refused before parsing",
            "127.0.0.2".parse().unwrap(),
            b"\x16\x03\x01garbage".to_vec(),
            403,
        ),
        ("token signed by an unknown key", lo(), post("/sign", jwt, from_b.as_bytes()), 400),
        ("garbage", lo(), post("/sign", jwt, b"garbage"), 400),
        ("a bundle instead of a token", lo(), post("/sign", jwt, ha.ca.as_bytes()), 400),
        ("oversized", lo(), post("/sign", jwt, &vec![b'a'; 70_000]), 413),
        ("wrong method", lo(), b"GET /sign HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 405),
        ("wrong path", lo(), post("/other", jwt, from_a.as_bytes()), 404),
        ("slow client (head never finished)", lo(), b"POST /sign HTTP/1.1\r\nHost: x\r\n".to_vec(), 408),
    ];
    for (case, source, raw, want) in cases {
        let resp = tcp_from(source, addr, &raw);
        let status = match resp {
            Ok(r) => {
                if want == 200 {
                    assert!(crypto::token::inspect(r.body.trim()).is_ok(), "{case}: 200 without a token: {:?}", r.body);
                } else {
                    assert!(!r.body.trim().is_empty() || want == 408, "{case}: no reason");
                }
                r.status
            }
            // hyper closes a connection whose head timed out without an answer.
            Err(_) if want == 408 => 408,
            Err(e) => panic!("{case}: {e}"),
        };
        assert_eq!(status, want, "{case}");
    }
    let log = h.log();
    assert!(log.contains("127.0.0.2") && log.contains("allowed-addrs"), "refusals not logged:\n{log}");
    // Every log line about the disallowed peer is the refusal at the door: its request was never parsed.
    for line in log.lines().filter(|l| l.contains("127.0.0.2") || l.contains("127.0.0.6")) {
        assert!(line.contains("refused before reading"), "a disallowed peer got further: {line}");
    }
}

#[test]
fn backup_signed_tokens_are_accepted_and_logged() {
    let ha = Ha::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let (h, addr) = ha.cosigner("http-b", &listen, &["127.0.0.1"], &ha.sock_b);
    let sock_c = ha.dir().join("signer-c.sock");
    let token = sign_cli(&sock_c, &[&format!("http://{addr}/sign")], &ha.ca).unwrap();
    let v = ha.policy(&["a.pem", "b.pem"]).verify(&token, now()).unwrap();
    assert!(v.used_backup);
    assert!(h.log().contains("BACKUP"), "backup use not logged:\n{}", h.log_tail());
}

#[test]
fn ipv6_peers_are_allowed_when_listed() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        panic!("IPv6 loopback is not available on this machine; the IPv6 allow-list test needs it");
    }
    let ha = Ha::new();
    let listen = format!("[::1]:{}", free_port());
    let (_h, addr) = ha.cosigner("http-b6", &listen, &["::1"], &ha.sock_b);
    let from_a = testbed::agent::send(&ha.sock_a, "POST", "/sign", &[], ha.ca.as_bytes()).unwrap().body;
    let r = tcp_from("::1".parse().unwrap(), addr, &post("/sign", "application/jwt", from_a.as_bytes())).unwrap();
    assert_eq!(r.status, 200, "the Go original refused every IPv6 peer: {:?}", r.body);
    // An IPv6 peer that is not listed is refused like any other.
    let listen = format!("[::1]:{}", free_port());
    let (_h2, addr2) = ha.cosigner("http-b6-closed", &listen, &["127.0.0.1", "fd00::/8"], &ha.sock_b);
    let r = tcp_from("::1".parse().unwrap(), addr2, &post("/sign", "application/jwt", from_a.as_bytes())).unwrap();
    assert_eq!(r.status, 403, "{r:?}");
}

#[test]
fn local_signer_down_is_a_502_with_a_reason() {
    let ha = Ha::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let (h, addr) = ha.cosigner("http-x", &listen, &["127.0.0.1"], &ha.dir().join("nobody.sock"));
    let from_a = testbed::agent::send(&ha.sock_a, "POST", "/sign", &[], ha.ca.as_bytes()).unwrap().body;
    let r = tcp_from(lo(), addr, &post("/sign", "application/jwt", from_a.as_bytes())).unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("local signer"), "{r:?}");
    // A network peer gets a stable reason, not signer-unix's internals (the old answer named the socket path);
    // the log has the detail.
    assert!(!r.body.contains("nobody.sock") && !r.body.contains("os error"), "internals sent to a peer: {r:?}");
    h.wait_log("nobody.sock", 1).unwrap();
}

#[test]
fn tls_listener_with_a_private_ca() {
    let ha = Ha::new();
    let (ca, cert, key) = testbed::pki::tls_server(ha.dir()).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let tls = format!("tls-cert: {}\ntls-key: {}\n", cert.display(), key.display());
    let (_h, addr) = ha.cosigner_with("https-b", &listen, &["127.0.0.1"], &ha.sock_b, &tls);
    let url = format!("https://{addr}/sign");
    let args = [ha.sock_a.display().to_string(), url];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Trusting the private CA (SSL_CERT_FILE, read by the client's system-roots loader): co-signed and published.
    let ca_env = ca.display().to_string();
    let (code, out, err) =
        testbed::process::run_bin_env(testbed::single::SIGN, &args, &[("SSL_CERT_FILE", &ca_env)], ha.ca.as_bytes())
            .unwrap();
    assert_eq!(code, 0, "{err}");
    let v = ha.policy(&["a.pem", "b.pem"]).verify(out.trim(), now()).unwrap();
    assert_eq!(v.layers.len(), 2);
    // Not trusting it: the TLS handshake fails, nothing new is published.
    let before = std::fs::read_to_string(ha.dir().join("www-a/spiffetrustbundle.token")).unwrap();
    let system = "/etc/ssl/certs/ca-certificates.crt";
    let (code, out, err) =
        testbed::process::run_bin_env(testbed::single::SIGN, &args, &[("SSL_CERT_FILE", system)], ha.ca.as_bytes())
            .unwrap();
    assert_ne!(code, 0);
    assert!(out.is_empty() && err.contains("TLS"), "{err}");
    assert_eq!(std::fs::read_to_string(ha.dir().join("www-a/spiffetrustbundle.token")).unwrap(), before);
}

/// A co-signer that answers every request with `answer(token it was sent)`: the faulty co-signer, or whoever sits
/// on the plain-HTTP hop between the servers.
fn lying_cosigner(answer: impl Fn(&str) -> String + Send + 'static) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/sign", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let reply = answer(String::from_utf8_lossy(&body).trim());
            let mut conn = conn;
            let _ =
                write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len());
        }
    });
    url
}

/// The attack on the old code: the sign CLI and plugin checked only that a co-signer's reply was a well-formed
/// token, and `/publish` only its innermost layer, so a reply wrapped with a bogus signature was published (exit 0,
/// "published") and every node refused it from then on; a reply wrapping another token (an older one, say) was
/// published too. Now the reply must wrap exactly the token sent, and `/publish` verifies every layer against the
/// publish chain: both attacks fail loudly and publish nothing.
#[test]
fn a_lying_cosigner_gets_nothing_published() {
    let ha = Ha::new();
    let published = ha.dir().join("www-a/spiffetrustbundle.token");
    let dir = ha.dir().to_owned();
    // (1) Wraps the token it was sent, but the outer signature is by a key nobody trusts.
    let bogus = lying_cosigner(move |t| {
        testbed::single::rogue_token_with(&dir, crypto::token::Payload::Token(t.to_owned())).unwrap()
    });
    let err = sign_cli(&ha.sock_a, &[&bogus], &ha.ca).unwrap_err().to_string();
    assert!(err.contains("checked against the publish policy (chain a.pem, b.pem, backup c.pem)"), "{err}");
    assert!(!published.exists(), "a token with a bogus co-signature was published");
    // (2) A well-formed token signed by signer-a itself, but not the one it was sent.
    let other = testbed::agent::send(&ha.sock_a, "POST", "/sign", &[], ha.ca.as_bytes()).unwrap().body;
    let swapped = lying_cosigner(move |_| other.trim().to_owned());
    let err = sign_cli(&ha.sock_a, &[&swapped], &ha.ca).unwrap_err().to_string();
    assert!(err.contains("does not wrap the token sent"), "{err}");
    assert!(!published.exists(), "a swapped token was published");
    // The honest co-signer still works.
    let listen = format!("127.0.0.1:{}", free_port());
    let (_h, addr) = ha.cosigner("http-b", &listen, &["127.0.0.1"], &ha.sock_b);
    sign_cli(&ha.sock_a, &[&format!("http://{addr}/sign")], &ha.ca).unwrap();
    assert!(published.exists());
}

/// The attack on the old code: every connection from an address outside `allowed-addrs` was held up to 2 s with
/// no cap, so a flood from one disallowed host made accept fail with "Too many open files" and the allowed
/// co-signer got 502. Refused connections are now answered (a few at a time, briefly) or closed at once: the
/// daemon's descriptors are back to their idle count within 1.5 s (refusals take at most 250 ms), with the flood
/// still connected; the old code held every one for 2 s.
#[test]
fn a_flood_from_a_disallowed_address_is_closed_at_once_and_starves_no_one() {
    let ha = Ha::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let (h, addr) = ha.cosigner("http-b", &listen, &["127.0.0.1"], &ha.sock_b);
    let pid = h.pid().unwrap().to_string();
    // As under a tight descriptor limit: fewer descriptors than the flood has connections.
    let status = std::process::Command::new("prlimit").args(["--pid", &pid, "--nofile=96:96"]).status().unwrap();
    assert!(status.success(), "prlimit failed");
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let idle = fds();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _flood = runtime.block_on(async {
        // 200 connections from 127.0.0.2 that send nothing and are kept open by this test.
        let mut flood = Vec::new();
        for _ in 0..200 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            flood.push(socket.connect(addr).await.unwrap());
        }
        flood
    });
    let flooded = Instant::now();
    while fds() > idle + 2 {
        assert!(
            flooded.elapsed() < Duration::from_millis(1500),
            "the daemon still holds {} descriptors (idle: {idle}) 1.5 s after the flood (the old code: 2 s)",
            fds()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The allowed co-signer is served while the flood is still connected.
    let url = format!("http://{addr}/sign");
    sign_cli(&ha.sock_a, &[&url], &ha.ca).unwrap();
}

/// `log-format: json` for signer-http: one JSON object per line, a co-signature and a refused peer each with their
/// fields; with `RUST_LOG` unset, no colour escapes.
#[test]
fn logs_are_json_lines_with_the_peer_field() {
    let ha = Ha::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let (mut h, addr) = ha.cosigner_with("http-json", &listen, &["127.0.0.2"], &ha.sock_b, "log-format: json\n");
    let refused = sign_cli(&ha.sock_a, &[&format!("http://{addr}/sign")], &ha.ca);
    assert!(refused.is_err(), "a peer outside allowed-addrs got a co-signature");
    h.wait_log("refused before reading its request", 1).unwrap();
    assert!(h.stop().unwrap(), "stopped cleanly");
    let said = h.log();
    testbed::logs::assert_readable("signer-http", &said);
    let lines = testbed::logs::json_lines(&said);
    assert!(lines.iter().any(|l| l["message"] == "signer-http listening" && l["addr"] == listen.as_str()), "{said}");
    let refusal = lines.iter().find(|l| l["message"].as_str().is_some_and(|m| m.contains("refused before"))).unwrap();
    assert_eq!((&refusal["peer"], &refusal["level"]), (&"127.0.0.1".into(), &"WARN".into()), "{refusal}");
}

/// The Go original's HA configs, unchanged, with our binaries: signer-unix without `keydir` or `chain`, and each
/// server's signer-http co-signing the other's tokens. Our signer-unix used to answer 422 to every co-signed
/// token ("layer 0: signature does not verify with 0x81008006": it tried its own key on the co-signer's layer),
/// so an HA pair switched binary by binary stopped publishing. Both servers publish, and each token passes the
/// nodes' chain; signer-unix says at start that it cannot check the co-signers' layers.
#[test]
fn the_go_originals_ha_configs_publish_co_signed_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for d in ["keys", "www-a", "www-b"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let (a, b) = (Swtpm::start().unwrap(), Swtpm::start().unwrap());
    provision(&a, "rsa2048", &dir.join("keys/a.pem")).unwrap();
    provision(&b, "ecc-p256", &dir.join("keys/b.pem")).unwrap();
    let upstream_signer = |name: &str, tpm: &Swtpm, www: &str| {
        let socket = dir.join(format!("{name}.sock"));
        let d = start_signer_publishing(dir, name, tpm, &dir.join(www), "10m", &socket, &[], None).unwrap();
        (d, socket)
    };
    let (signer_a, sock_a) = upstream_signer("signer-a", &a, "www-a");
    let (_signer_b, sock_b) = upstream_signer("signer-b", &b, "www-b");
    // signer-http.conf as the Go original ships it: socket, keydir, primary, backup, listen-addr, allowed-addrs.
    let upstream_cosigner = |name: &str, socket: &Path, primary: &str| {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "socket: {}\nkeydir: keys\nprimary: {primary}\nlisten-addr: \"{addr}\"\nallowed-addrs:\n- 127.0.0.1\n",
                socket.display()
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        (Daemon::spawn(SIGNER_HTTP, &[&conf.display().to_string()], &[], &log, Ready::TcpAddr(addr)).unwrap(), addr)
    };
    let (_http_a, http_a) = upstream_cosigner("http-a", &sock_a, "b.pem");
    let (_http_b, http_b) = upstream_cosigner("http-b", &sock_b, "a.pem");
    let ca = pki::spire_ca(dir, "example.org", "ca").unwrap();
    let key =
        |n: &str| crypto::keys::VerifyingKey::from_pem(n, &std::fs::read(dir.join("keys").join(n)).unwrap()).unwrap();
    let chain = |names: [&str; 2]| {
        crypto::policy::Policy::new(names.iter().map(|n| key(n)).collect(), None, crypto::Limits::default()).unwrap()
    };
    for (socket, cosigner, www, order) in
        [(&sock_a, http_b, "www-a", ["a.pem", "b.pem"]), (&sock_b, http_a, "www-b", ["b.pem", "a.pem"])]
    {
        let token = sign_cli(socket, &[&format!("http://{cosigner}/sign")], &ca)
            .unwrap_or_else(|e| panic!("{www}: the co-signed token was not published: {e:#}"));
        let published = std::fs::read_to_string(dir.join(www).join("spiffetrustbundle.token")).unwrap();
        assert_eq!(published.trim(), token, "{www}");
        let v = chain(order).verify(&published, now()).unwrap_or_else(|e| panic!("{www}: {e}"));
        assert_eq!(v.layers.len(), 2, "{www}");
    }
    assert!(signer_a.log().contains("no `chain` configured"), "signer-unix did not say what it cannot check");
}
