//! The sign plugin's re-sign schedule, judged by a manual clock instead of waited for: signer-unix in-process on
//! a software key signs with the same clock, so a token's `iat` and `exp` move with it.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::clock::Clock;
use plugin::pb::config::config_server::Config;
use plugin::pb::config::{ConfigureRequest, CoreConfiguration};
use plugin::publisher::Publisher;
use services::ConfigFile;
use tpm::mock::SoftwareKey;
use tpm::KeyType;

const CA: &str = include_str!("../../crypto/tests/data/ca-ec.pem");

fn bundle() -> plugin::pb::types::Bundle {
    let parsed = crypto::bundle::Bundle::parse(CA).unwrap();
    plugin::pb::types::Bundle {
        trust_domain: "example.org".into(),
        x509_authorities: parsed
            .certificates()
            .iter()
            .map(|der| plugin::pb::types::X509Certificate { asn1: der.clone(), tainted: false })
            .collect(),
        sequence_number: 1,
        ..Default::default()
    }
}

/// A token lives 10 minutes: the plugin re-signs the same bundle at half-life (300 s), not a second before, and
/// not before that when nothing changed.
#[tokio::test]
async fn the_plugin_re_signs_at_half_life_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, www) = (dir.path().join("s.sock"), dir.path().join("www"));
    std::fs::create_dir_all(&www).unwrap();
    let start = common::clock::unix_now();
    let clock = Clock::manual(start);
    let text = format!("socket: {}\ndir: {}\nduration: 10m\nissuer: a\n", socket.display(), www.display());
    let cfg = services::signer_unix::SignerUnixConfig::parse(&dir.path().join("s.conf"), &text).unwrap();
    let key = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let signer = tokio::spawn(services::signer_unix::run_with(cfg, key, clock.clone(), async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::UnixStream::connect(&socket).await.is_err() {
        assert!(Instant::now() < deadline, "signer-unix never listened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let publisher = Publisher::with_clock(clock.clone());
    let configure = ConfigureRequest {
        core_configuration: Some(CoreConfiguration { trust_domain: "example.org".into() }),
        hcl_configuration: format!("socket = \"{}\"\nfrequency = \"24h\"\n", socket.display()),
    };
    publisher.config_service().configure(tonic::Request::new(configure)).await.unwrap();
    let published = || std::fs::read_to_string(www.join("spiffetrustbundle.token")).unwrap();
    let iat = |token: &str| crypto::token::Token::parse(token).unwrap().exp() - 600;

    assert!(publisher.publish(bundle()).await.unwrap(), "the first bundle is published");
    assert_eq!(iat(&published()), start);
    assert!(!publisher.publish(bundle()).await.unwrap(), "nothing changed, nothing due");
    clock.advance(299);
    assert!(!publisher.publish(bundle()).await.unwrap(), "a second before half-life");
    clock.advance(1);
    assert!(publisher.publish(bundle()).await.unwrap(), "at half-life the same bundle is signed again");
    assert_eq!(iat(&published()), start + 300, "the new token is the one signed at half-life");
    assert!(!publisher.publish(bundle()).await.unwrap(), "and then not again until its own half-life");
    drop(stop);
    signer.await.unwrap().unwrap();
}
