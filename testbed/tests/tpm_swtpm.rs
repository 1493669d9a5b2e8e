//! The TPM lane: the `tpm` crate against a real swtpm (one per test, free ports), signatures checked with
//! independent implementations (the RustCrypto `rsa` and `p256` crates) and keys compared with tpm2-tools.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sha2::Digest;
use testbed::swtpm::Swtpm;
use tpm::provision::{provision, Outcome};
use tpm::{KeySigner, KeyType, PersistentHandle, Tpm, TpmError};

const H: PersistentHandle = PersistentHandle::DEFAULT_SIGNING;
/// No key password.
static NONE: std::sync::LazyLock<tpm::Password> = std::sync::LazyLock::new(tpm::Password::default);

fn verify_independently(public: &tpm::PublicKey, digest: &[u8; 32], sig: &[u8]) {
    match public.key_type() {
        KeyType::Rsa2048 => {
            use rsa::pkcs8::DecodePublicKey;
            let k = rsa::RsaPublicKey::from_public_key_der(public.spki_der()).unwrap();
            k.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest, sig)
                .expect("rsa crate rejects the TPM signature");
        }
        KeyType::EccP256 => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            use p256::pkcs8::DecodePublicKey;
            let k = p256::ecdsa::VerifyingKey::from_public_key_der(public.spki_der()).unwrap();
            let s = p256::ecdsa::Signature::from_slice(sig).unwrap();
            k.verify_prehash(digest, &s).expect("p256 crate rejects the TPM signature");
        }
    }
}

fn digest(msg: &str) -> [u8; 32] {
    sha2::Sha256::digest(msg.as_bytes()).into()
}

#[test]
fn rsa_and_ecc_keys_sign_and_verify() {
    for key_type in [KeyType::Rsa2048, KeyType::EccP256] {
        let tpm = Swtpm::start().unwrap();
        let done = provision(&tpm.device(), H, key_type, &NONE).unwrap();
        assert_eq!(done.outcome, Outcome::Created);
        let key = Tpm::open(&tpm.device()).unwrap().signing_key(H).unwrap();
        assert_eq!(key.key_type(), key_type);
        assert_eq!(key.public_key(), &done.public);
        for i in 0..3 {
            let d = digest(&format!("message {i}"));
            let sig = key.sign_digest(&d).unwrap();
            assert_eq!(sig.len(), if key_type == KeyType::Rsa2048 { 256 } else { 64 });
            verify_independently(key.public_key(), &d, &sig);
        }
        // And a signature does not verify for another digest (the check can fail).
        let sig = key.sign_digest(&digest("a")).unwrap();
        let other = std::panic::catch_unwind(|| verify_independently(key.public_key(), &digest("b"), &sig));
        assert!(other.is_err(), "{key_type}: signature verified for the wrong digest");
    }
}

#[test]
fn exported_pem_is_byte_identical_to_tpm2_readpublic() {
    for key_type in [KeyType::Rsa2048, KeyType::EccP256] {
        let tpm = Swtpm::start().unwrap();
        let done = provision(&tpm.device(), H, key_type, &NONE).unwrap();
        let dir = tempfile::tempdir().unwrap();
        tpm.tpm2("tpm2_readpublic", &["-Q", "-c", "0x81008006", "-f", "pem", "-o", "pub.pem"], dir.path()).unwrap();
        let theirs = std::fs::read_to_string(dir.path().join("pub.pem")).unwrap();
        assert_eq!(crypto::pem::encode("PUBLIC KEY", done.public.spki_der()), theirs, "{key_type}");
    }
}

#[test]
fn provisioning_is_idempotent_and_never_overwrites() {
    let tpm = Swtpm::start().unwrap();
    let first = provision(&tpm.device(), H, KeyType::EccP256, &NONE).unwrap();
    let second = provision(&tpm.device(), H, KeyType::EccP256, &NONE).unwrap();
    assert_eq!((first.outcome, second.outcome), (Outcome::Created, Outcome::Existing));
    assert_eq!(first.public, second.public);
    // The other type at the same handle: refused, key kept.
    let err = provision(&tpm.device(), H, KeyType::Rsa2048, &NONE).unwrap_err();
    assert!(matches!(err, TpmError::WrongKey { .. }), "{err}");
    assert_eq!(Tpm::open(&tpm.device()).unwrap().signing_key(H).unwrap().public_key(), &first.public);
    // A second key at another handle reuses the storage key.
    let other = provision(&tpm.device(), PersistentHandle::new(0x8100_8007).unwrap(), KeyType::Rsa2048, &NONE).unwrap();
    assert_eq!(other.outcome, Outcome::Created);
    assert_ne!(other.public, first.public);
}

#[test]
fn a_non_signing_object_at_the_handle_is_refused_and_left_untouched() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    tpm.tpm2("tpm2_createprimary", &["-Q", "-C", "o", "-g", "sha256", "-G", "rsa2048:aes128cfb", "-c", "p.ctx"], p)
        .unwrap();
    tpm.tpm2("tpm2_evictcontrol", &["-Q", "-C", "o", "-c", "p.ctx", "0x81008006"], p).unwrap();
    tpm.tpm2("tpm2_flushcontext", &["-t"], p).unwrap();
    tpm.tpm2("tpm2_readpublic", &["-Q", "-c", "0x81008006", "-o", "before.pub"], p).unwrap();
    let err = provision(&tpm.device(), H, KeyType::Rsa2048, &NONE).unwrap_err();
    assert!(matches!(err, TpmError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("not an unrestricted signing key"), "{err}");
    let err = Tpm::open(&tpm.device()).unwrap().signing_key(H).unwrap_err();
    assert!(matches!(err, TpmError::WrongKey { .. }), "{err}");
    tpm.tpm2("tpm2_readpublic", &["-Q", "-c", "0x81008006", "-o", "after.pub"], p).unwrap();
    assert_eq!(std::fs::read(p.join("before.pub")).unwrap(), std::fs::read(p.join("after.pub")).unwrap());
}

#[test]
fn a_key_made_with_the_upstream_tpm2_tools_recipe_signs() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    for (tool, args) in [
        ("tpm2_createprimary", vec!["-Q", "-C", "o", "-g", "sha256", "-G", "rsa2048:aes128cfb", "-c", "primary.ctx"]),
        ("tpm2_evictcontrol", vec!["-Q", "-C", "o", "-c", "primary.ctx", "0x81000001"]),
        ("tpm2_flushcontext", vec!["-t"]),
        (
            "tpm2_create",
            vec![
                "-Q",
                "-G",
                "rsa2048:rsassa:null",
                "-g",
                "sha256",
                "-u",
                "key.pub",
                "-r",
                "key.priv",
                "-C",
                "0x81000001",
            ],
        ),
        ("tpm2_load", vec!["-Q", "-C", "0x81000001", "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx"]),
        ("tpm2_evictcontrol", vec!["-Q", "-C", "o", "-c", "key.ctx", "0x81008006"]),
        ("tpm2_flushcontext", vec!["-t"]),
        ("tpm2_readpublic", vec!["-Q", "-c", "0x81008006", "-f", "pem", "-o", "pub.pem"]),
    ] {
        tpm.tpm2(tool, &args, p).unwrap();
    }
    let key = Tpm::open(&tpm.device()).unwrap().signing_key(H).unwrap();
    assert_eq!(
        crypto::pem::encode("PUBLIC KEY", key.public_key().spki_der()),
        std::fs::read_to_string(p.join("pub.pem")).unwrap()
    );
    let d = digest("upstream recipe");
    verify_independently(key.public_key(), &d, &key.sign_digest(&d).unwrap());
    // provision recognises it and keeps it.
    assert_eq!(provision(&tpm.device(), H, KeyType::Rsa2048, &NONE).unwrap().outcome, Outcome::Existing);
}

#[test]
fn a_tpm_restart_is_survived_and_an_outage_is_transient() {
    let mut tpm = Swtpm::start().unwrap();
    provision(&tpm.device(), H, KeyType::EccP256, &NONE).unwrap();
    let key = Tpm::open(&tpm.device()).unwrap().signing_key(H).unwrap();
    key.sign_digest(&digest("before")).unwrap();
    tpm.restart().unwrap();
    let d = digest("after restart");
    verify_independently(key.public_key(), &d, &key.sign_digest(&d).unwrap());
    tpm.stop().unwrap();
    let err = key.sign_digest(&digest("down")).unwrap_err();
    assert!(err.is_transient(), "TPM down must be transient: {err}");
    tpm.restart().unwrap();
    let d = digest("back");
    verify_independently(key.public_key(), &d, &key.sign_digest(&d).unwrap());
}

#[test]
fn a_replaced_tpm_with_another_key_is_never_signed_with() {
    let mut tpm = Swtpm::start().unwrap();
    provision(&tpm.device(), H, KeyType::EccP256, &NONE).unwrap();
    let key =
        Tpm::open(&tpm.device()).unwrap().signing_key(H).unwrap().with_recheck_interval(std::time::Duration::ZERO);
    key.sign_digest(&digest("x")).unwrap();
    // A blank TPM appears on the same address, and someone provisions a new key at the same handle.
    tpm.stop().unwrap();
    std::fs::remove_file(tpm.state_dir().join("tpm2-00.permall")).unwrap();
    tpm.restart().unwrap();
    provision(&tpm.device(), H, KeyType::EccP256, &NONE).unwrap();
    let err = key.sign_digest(&digest("y")).unwrap_err();
    assert!(matches!(err, TpmError::KeyChanged { .. }), "{err}");
    assert!(!err.is_transient());
}

#[test]
fn an_empty_handle_is_a_clear_permanent_error() {
    let tpm = Swtpm::start().unwrap();
    let err = Tpm::open(&tpm.device()).unwrap().signing_key(H).unwrap_err();
    assert!(matches!(err, TpmError::HandleNotFound { .. }), "{err}");
    assert!(err.to_string().contains("0x81008006"), "{err}");
    assert!(!err.is_transient());
}

#[test]
fn no_tpm_listening_is_transient() {
    let mut tpm = Swtpm::start().unwrap();
    let device = tpm.device();
    tpm.stop().unwrap();
    let err = Tpm::open(&device).unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[test]
/// Twenty threads sign at once through clones of one key: every signature verifies. swtpm serializes commands
/// by itself, so this cannot show the owner's serialization; `vm_device::vm_concurrent_signs_on_tpm0_*` does,
/// on a `/dev/tpm0` that admits one opener.
fn concurrent_signers_share_one_owner_and_every_signature_verifies() {
    let tpm = Swtpm::start().unwrap();
    provision(&tpm.device(), H, KeyType::EccP256, &NONE).unwrap();
    let key = Tpm::open(&tpm.device()).unwrap().signing_key(H).unwrap();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let key = key.clone();
            std::thread::spawn(move || {
                let d = digest(&format!("thread {i}"));
                (d, key.sign_digest(&d).unwrap())
            })
        })
        .collect();
    for h in handles {
        let (d, sig) = h.join().unwrap();
        verify_independently(key.public_key(), &d, &sig);
    }
}

/// A key provisioned with a password signs with it alone, and says which password was refused; `provision` again
/// finds it and checks the password; the key is noDA, so wrong passwords (a daemon restarting with one) never
/// lock the TPM out: after 40 of them, the right one still signs.
#[test]
fn a_key_with_a_password_signs_with_it_alone_and_wrong_ones_never_lock_the_tpm_out() {
    let tpm = Swtpm::start().unwrap();
    let (right, wrong) =
        (tpm::Password::new(b"0123456789abcdef".to_vec()), tpm::Password::new(b"fedcba9876543210".to_vec()));
    let done = provision(&tpm.device(), H, KeyType::EccP256, &right).unwrap();
    assert_eq!(done.outcome, Outcome::Created);
    let open = || Tpm::open(&tpm.device()).unwrap().signing_key(H).unwrap();
    for (what, key) in [("no password", open()), ("a wrong password", open().with_auth(wrong.clone()))] {
        for _ in 0..20 {
            let err = key.sign_digest(&digest("x")).unwrap_err();
            assert!(matches!(err, TpmError::AuthFailed { .. }), "{what}: {err}");
            assert!(err.to_string().contains("signing key's password"), "{what}: {err}");
        }
    }
    let key = open().with_auth(right.clone());
    let sig = key.sign_digest(&digest("x")).unwrap();
    verify_independently(key.public_key(), &digest("x"), &sig);
    assert_eq!(provision(&tpm.device(), H, KeyType::EccP256, &right).unwrap().outcome, Outcome::Existing);
    let err = provision(&tpm.device(), H, KeyType::EccP256, &wrong).unwrap_err();
    assert!(matches!(err, TpmError::AuthFailed { .. }), "{err}");
    let err = provision(&tpm.device(), H, KeyType::EccP256, &NONE).unwrap_err();
    assert!(matches!(err, TpmError::AuthFailed { .. }), "{err}");
    key.sign_digest(&digest("still")).unwrap();
}
