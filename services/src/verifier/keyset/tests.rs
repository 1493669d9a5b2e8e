//! The keyset's own tests: state writes and keyset updates held off the event loop, the floor across a restart.

use std::sync::mpsc::{channel, Receiver, Sender};

use super::*;
use common::config::ConfigFile;
use tpm::KeySigner;

/// A state write a test holds: the writer reports when it started, then waits to be released (3 s at most).
struct Gate {
    file: PathBuf,
    started: Sender<Instant>,
    release: Receiver<()>,
}

static GATE: Mutex<Option<Gate>> = Mutex::new(None);

/// Called by [`Keyset::persist`]'s writer before it writes `file`, and by the keyset updates' verification
/// with the keys state file.
pub(super) fn hold_write(file: &Path) {
    let gate = {
        let mut slot = common::sync::lock(&GATE);
        if slot.as_ref().is_some_and(|g| g.file == file) {
            slot.take()
        } else {
            None
        }
    };
    if let Some(gate) = gate {
        let _ = gate.started.send(Instant::now());
        let _ = gate.release.recv_timeout(Duration::from_secs(3));
    }
}

/// A new P-256 software key, its public key written to `dir/keys/NAME.pem`.
fn key_in_keydir(dir: &Path, name: &str) -> tpm::mock::SoftwareKey {
    let key = tpm::mock::SoftwareKey::generate(tpm::KeyType::EccP256);
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let pem = crypto::pem::encode("PUBLIC KEY", key.public_key().spki_der());
    std::fs::write(dir.join(format!("keys/{name}.pem")), pem).unwrap();
    key
}

/// A bundle token over the test CA, signed by `key` at `iat`, valid for 10 minutes from then.
fn bundle_token(key: &tpm::mock::SoftwareKey, iat: u64) -> String {
    let claims = crypto::token::Claims {
        payload: crypto::token::Payload::Bundle(include_str!("../../../../crypto/tests/data/ca-ec.pem").into()),
        iss: String::new(),
        iat,
        nbf: iat,
        exp: iat + 600,
        trust_domain: None,
    };
    let builder = crypto::token::TokenBuilder::new(crypto::Alg::Es256, &claims);
    let signature = key.sign_digest(&builder.digest()).unwrap();
    builder.finish(&signature).unwrap()
}

/// Keyset `main` reading `dir/token` (plus the `keys` lines), under `chain`, its state directory made.
fn config(dir: &Path, keys: &str, chain: &str) -> super::super::VerifierConfig {
    let text = format!(
        "keydir: keys\nsocket: {0}/v.sock\nstate-dir: {0}/state\nkeyset:\n  main:\n    url: file://{0}/token\n{keys}    chain: {chain}\n",
        dir.display()
    );
    let cfg = super::super::VerifierConfig::parse(&dir.join("v.conf"), &text).unwrap();
    std::fs::create_dir_all(&cfg.state_dir).unwrap();
    cfg
}

/// When the held call reported that it started (waited for on the event loop, 10 s at most).
async fn started_at(started: &Receiver<Instant>, what: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(at) = started.try_recv() {
            return at;
        }
        assert!(Instant::now() < deadline, "{what} never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// While the state (two fsyncs) is being written, the event loop that answers agents keeps running and the
/// new bundle is already served. The old verifier wrote it on the loop: the loop stood still for the whole
/// write (here the 3 s the held write waits).
#[tokio::test(flavor = "current_thread")]
async fn the_state_is_written_off_the_event_loop() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_in_keydir(dir.path(), "k");
    std::fs::write(dir.path().join("token"), bundle_token(&key, common::clock::unix_now())).unwrap();
    let cfg = config(dir.path(), "", "[k.pem]");
    let metrics = Arc::new(VerifierMetrics::new().unwrap());
    let ks = Arc::new(Keyset::new("main", cfg.keysets["main"].clone(), &cfg.state_dir, metrics, Clock::system()));
    let (started_tx, started) = channel();
    let (release, release_rx) = channel();
    *common::sync::lock(&GATE) = Some(Gate { file: ks.state_file.clone(), started: started_tx, release: release_rx });

    let client = HttpClient::new(common::client::ClientOptions {
        timeout: Duration::from_secs(5),
        max_body: 1 << 20,
        ca_file: None,
    })
    .unwrap();
    let refreshing = ks.clone();
    let refresh = tokio::spawn(async move { refreshing.refresh(&client, 1 << 20, Duration::from_secs(5)).await });
    let write_started = started_at(&started, "the state's write").await;
    // The loop runs a timer while the write is held.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let lag = write_started.elapsed();
    assert!(ks.serving(common::clock::unix_now()).is_some(), "the bundle is served before its state is on disk");
    let _ = release.send(());
    refresh.await.unwrap();
    assert!(lag < Duration::from_secs(2), "the event loop stood still for {lag:?} while the state was written");
    assert!(ks.state_file.is_file(), "the state was written once released");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&ks.state_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the state (the rollback floor) is the verifier's alone");
}

/// The attack: after a policy change (here chain [a] to [a, b]) the stored token no longer verifies, and the
/// restarted verifier forgot its rollback floor: the first replayed older token signed by a and b was
/// accepted. The floor now survives.
#[tokio::test(flavor = "current_thread")]
async fn the_rollback_floor_survives_a_restart_under_a_changed_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = (key_in_keydir(dir.path(), "a"), key_in_keydir(dir.path(), "b"));
    let now = common::clock::unix_now();
    std::fs::write(dir.path().join("token"), bundle_token(&a, now - 5)).unwrap();
    let cfg = config(dir.path(), "", "[a.pem]");
    let metrics = Arc::new(VerifierMetrics::new().unwrap());
    let client = HttpClient::new(common::client::ClientOptions {
        timeout: Duration::from_secs(5),
        max_body: 1 << 20,
        ca_file: None,
    })
    .unwrap();
    let ks = Keyset::new("main", cfg.keysets["main"].clone(), &cfg.state_dir, metrics.clone(), Clock::system());
    ks.refresh(&client, 1 << 20, Duration::from_secs(5)).await;
    assert_eq!(ks.floor(), now - 5, "accepted");
    drop(ks);
    let cfg = config(dir.path(), "", "[a.pem, b.pem]");
    let ks = Keyset::new("main", cfg.keysets["main"].clone(), &cfg.state_dir, metrics, Clock::system());
    assert!(ks.serving(now).is_none(), "a token the policy now refuses is served");
    assert_eq!(ks.floor(), now - 5, "the rollback floor was forgotten");
}

/// Keyset updates are verified off the event loop: a keys source that serves many lines, each introducing
/// large keys, used to hold the loop (and every agent's request) for as long as their signatures took to
/// check. Here the verification is held for up to 3 s; the loop keeps running meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn keyset_updates_are_verified_off_the_event_loop() {
    let dir = tempfile::tempdir().unwrap();
    key_in_keydir(dir.path(), "k");
    std::fs::write(dir.path().join("keys.tokens"), "x.y.z\n").unwrap();
    let keys_url = format!("    keys-url: file://{}/keys.tokens\n", dir.path().display());
    let cfg = config(dir.path(), &keys_url, "[k.pem]");
    let metrics = Arc::new(VerifierMetrics::new().unwrap());
    let ks = Arc::new(Keyset::new("main", cfg.keysets["main"].clone(), &cfg.state_dir, metrics, Clock::system()));
    let (started_tx, started) = channel();
    let (release, release_rx) = channel();
    *common::sync::lock(&GATE) = Some(Gate { file: ks.keys_file.clone(), started: started_tx, release: release_rx });
    let client = HttpClient::new(common::client::ClientOptions::default()).unwrap();
    let refreshing = ks.clone();
    let refresh = tokio::spawn(async move { refreshing.refresh_keys(&client, 1 << 20, Duration::from_secs(5)).await });
    let verify_started = started_at(&started, "the updates' verification").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let lag = verify_started.elapsed();
    let _ = release.send(());
    refresh.await.unwrap();
    assert!(lag < Duration::from_secs(2), "the event loop stood still for {lag:?} while updates were verified");
    assert_eq!(ks.trusted().version, 0, "a garbage line changed nothing");
}
