//! The production device path, in a VM (`testbed::vm`): the kernel's TPM driver, `/dev/tpmrm0` (its resource
//! manager) and `/dev/tpm0`, libtss2's device TCTI, with swtpm behind QEMU's TPM emulator. One VM and one swtpm
//! per test. Tests are named `vm_*`: `make test` runs them in a lane of their own.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use testbed::logs::assert_readable;
use testbed::process::run_bin;
use testbed::vm::{self, Boot, VmTpm};

mod vm_support;
use vm_support::{bundle, verifier_on_host, verify_on_host};

const SIGNER: &str = "spire-server-attestor-tpm-signer-unix";

/// signer-unix's config in the guest: socket /run/su.sock, publish dir /tmp/www.
fn signer_config(tpm_device: Option<&str>) -> String {
    let device = tpm_device.map(|d| format!("tpm-device: {d}\n")).unwrap_or_default();
    format!("socket: /run/su.sock\ntpm-address: 0x81008006\nduration: 10m\ndir: /tmp/www\nissuer: vm-server\n{device}")
}

/// Starts signer-unix in the background (log /tmp/su.log) and waits for its socket: shell text for a script.
const START_SIGNER: &str = "mkdir -p /tmp/www\n\
    spire-server-attestor-tpm-signer-unix /sat/su.conf >/tmp/su.log 2>&1 &\n\
    SU=$!\n\
    wait_for 90 -S /run/su.sock || echo 'signer-unix did not start'\n";

/// Stops it and reports its exit status as `su-exit`.
const STOP_SIGNER: &str = "kill $SU\nwait $SU\nrun su-exit sh -c \"exit $?\"\n";

fn boot(tpm: &VmTpm, script: &str, files: &[(&str, &[u8])]) -> Boot {
    match vm::boot(tpm, script, files) {
        Ok(b) => {
            eprintln!("VM boot and script: {:.1} s", b.wall.as_secs_f64());
            b
        }
        Err(e) => panic!("{e:#}"),
    }
}

#[test]
fn vm_provision_on_tpmrm0_is_idempotent_and_the_pem_is_what_tpm2_tools_reads() {
    let tpm = VmTpm::blank().unwrap();
    let script = "D=/dev/tpmrm0\n\
        run rsa-1 spire-server-attestor-tpm-signer-unix provision --tpm-device $D --handle 0x81008006 --key-type rsa2048 --out /tmp/rsa-1.pem\n\
        run rsa-2 spire-server-attestor-tpm-signer-unix provision --tpm-device $D --handle 0x81008006 --key-type rsa2048 --out /tmp/rsa-2.pem\n\
        run ecc-1 spire-server-attestor-tpm-signer-unix provision --tpm-device $D --handle 0x81008007 --key-type ecc-p256 --out /tmp/ecc-1.pem\n\
        run ecc-2 spire-server-attestor-tpm-signer-unix provision --tpm-device $D --handle 0x81008007 --key-type ecc-p256 --out /tmp/ecc-2.pem\n\
        run rsa-tools tpm2_readpublic -T device:$D -c 0x81008006 -f pem -o /tmp/rsa-tools.pem\n\
        run ecc-tools tpm2_readpublic -T device:$D -c 0x81008007 -f pem -o /tmp/ecc-tools.pem\n\
        run other-type spire-server-attestor-tpm-signer-unix provision --tpm-device $D --handle 0x81008006 --key-type ecc-p256\n\
        run srk spire-server-attestor-tpm-signer-unix provision --tpm-device $D --handle 0x81000001\n\
        bring /tmp/rsa-1.pem /tmp/rsa-2.pem /tmp/ecc-1.pem /tmp/ecc-2.pem /tmp/rsa-tools.pem /tmp/ecc-tools.pem\n";
    let boot = boot(&tpm, script, &[]);
    for (kind, handle) in [("rsa", "0x81008006"), ("ecc", "0x81008007")] {
        let first = boot.ok(&format!("{kind}-1")).unwrap();
        assert!(first.stderr.contains("Created:"), "{}", first.stderr);
        assert!(first.stderr.contains(&format!("at {handle} on /dev/tpmrm0")), "{}", first.stderr);
        let again = boot.ok(&format!("{kind}-2")).unwrap();
        assert!(again.stderr.contains("Existing:"), "{}", again.stderr);
        boot.ok(&format!("{kind}-tools")).unwrap();
        let ours = boot.text(&format!("/tmp/{kind}-1.pem")).unwrap();
        assert!(ours.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{ours}");
        assert_eq!(
            ours,
            boot.text(&format!("/tmp/{kind}-2.pem")).unwrap(),
            "{kind}: a second provision changed the key"
        );
        assert_eq!(
            ours,
            boot.text(&format!("/tmp/{kind}-tools.pem")).unwrap(),
            "{kind}: tpm2_readpublic reads another PEM"
        );
        assert_readable(kind, &(first.stderr.clone() + &again.stderr));
    }
    assert_ne!(boot.text("/tmp/rsa-1.pem").unwrap(), boot.text("/tmp/ecc-1.pem").unwrap());
    // Negative rows: a key of the other type, and the storage key, are never overwritten.
    for (run, says) in [("other-type", "0x81008006"), ("srk", "0x81000001")] {
        let r = boot.run(run).unwrap();
        assert_ne!(r.status, 0, "{run} succeeded: {}", r.stderr);
        assert!(r.stderr.contains(says), "{run}: {}", r.stderr);
        assert_readable(run, &r.stderr);
    }
}

#[test]
fn vm_autodetection_takes_tpmrm0_then_tpm0_and_names_both_when_neither_exists() {
    let tpm = VmTpm::blank().unwrap();
    let script = "P='spire-server-attestor-tpm-signer-unix provision --handle 0x81008006'\n\
        run with-both $P --out /tmp/a.pem\n\
        mv /dev/tpmrm0 /tmp/tpmrm0.hidden\n\
        run tpm0-only $P --out /tmp/b.pem\n\
        mv /dev/tpm0 /tmp/tpm0.hidden\n\
        run neither $P\n\
        mv /tmp/tpmrm0.hidden /dev/tpmrm0\n\
        mv /tmp/tpm0.hidden /dev/tpm0\n\
        run restored $P\n\
        bring /tmp/a.pem /tmp/b.pem\n";
    let boot = boot(&tpm, script, &[]);
    let both = boot.ok("with-both").unwrap();
    assert!(both.stderr.contains("on /dev/tpmrm0"), "{}", both.stderr);
    let tpm0 = boot.ok("tpm0-only").unwrap();
    assert!(tpm0.stderr.contains("Existing:") && tpm0.stderr.contains("on /dev/tpm0"), "{}", tpm0.stderr);
    assert_eq!(boot.file("/tmp/a.pem").unwrap(), boot.file("/tmp/b.pem").unwrap(), "one TPM behind both devices");
    let neither = boot.run("neither").unwrap();
    assert_ne!(neither.status, 0);
    assert!(
        neither.stderr.contains("/dev/tpmrm0") && neither.stderr.contains("/dev/tpm0"),
        "the error names both devices: {}",
        neither.stderr
    );
    assert!(boot.ok("restored").unwrap().stderr.contains("on /dev/tpmrm0"));
    for r in ["with-both", "tpm0-only", "neither"] {
        assert_readable(r, &boot.run(r).unwrap().stderr);
    }
}

#[test]
fn vm_signer_unix_daemon_on_tpmrm0_publishes_a_token_the_host_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path());
    let tpm = VmTpm::blank().unwrap();
    let script = format!(
        "run provision spire-server-attestor-tpm-signer-unix provision --tpm-device /dev/tpmrm0 --out /tmp/key.pem\n\
         {START_SIGNER}\
         run sign sh -c 'spire-server-attestor-tpm-sign /run/su.sock < /sat/bundle.pem'\n\
         run sign-again sh -c 'spire-server-attestor-tpm-sign /run/su.sock < /sat/bundle.pem'\n\
         run not-a-bundle sh -c 'echo garbage | spire-server-attestor-tpm-sign /run/su.sock'\n\
         run published ls -l /tmp/www\n\
         {STOP_SIGNER}\
         bring /tmp/key.pem /tmp/www/spiffetrustbundle.token /tmp/su.log\n"
    );
    let config = signer_config(None);
    let boot = boot(&tpm, &script, &[("bundle.pem", bundle.as_bytes()), ("su.conf", config.as_bytes())]);
    boot.ok("provision").unwrap();
    let signed = boot.ok("sign-again").unwrap();
    boot.ok("sign").unwrap();
    let token = boot.file("/tmp/www/spiffetrustbundle.token").unwrap();
    assert_eq!(signed.stdout.trim().as_bytes(), token, "the published token is the one the CLI printed");
    let served = verify_on_host(tmp.path(), boot.file("/tmp/key.pem").unwrap(), token);
    assert_eq!(served, bundle, "the host's verifier serves the bundle signed in the guest");
    // Negative row: what is not a bundle is refused, and the published token stays.
    let bad = boot.run("not-a-bundle").unwrap();
    assert_ne!(bad.status, 0);
    assert!(bad.stderr.contains("400"), "{}", bad.stderr);
    let published = &boot.ok("published").unwrap().stdout;
    assert_eq!(
        published.matches("spiffetrustbundle.token").count(),
        1,
        "only the token, no temporary file: {published}"
    );
    assert_eq!(boot.ok("su-exit").unwrap().status, 0, "signer-unix exits 0 on SIGTERM");
    let log = boot.text("/tmp/su.log").unwrap();
    assert!(log.contains("signing key opened") && log.contains("/dev/tpmrm0"), "autodetected /dev/tpmrm0:\n{log}");
    assert_readable("signer-unix's log", &log);
}

#[test]
fn vm_tpm0_held_by_another_process_is_a_clear_transient_error_and_signing_resumes_once_free() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path());
    let tpm = VmTpm::blank().unwrap();
    let script = format!(
        "run provision spire-server-attestor-tpm-signer-unix provision --tpm-device /dev/tpm0 --out /tmp/key.pem\n\
         sh -c 'exec 3<>/dev/tpm0; touch /tmp/held; exec sleep 600' &\n\
         HOLDER=$!\n\
         wait_for 10 -f /tmp/held\n\
         run busy spire-server-attestor-tpm-signer-unix provision --tpm-device /dev/tpm0\n\
         run shared spire-server-attestor-tpm-signer-unix provision --tpm-device /dev/tpmrm0\n\
         mkdir -p /tmp/www\n\
         spire-server-attestor-tpm-signer-unix /sat/su.conf >/tmp/su.log 2>&1 &\n\
         SU=$!\n\
         run waits wait_log /tmp/su.log 'TPM not available' 60\n\
         run no-socket-while-held test -S /run/su.sock\n\
         kill $HOLDER\n\
         run resumed wait_for 60 -S /run/su.sock\n\
         run sign sh -c 'spire-server-attestor-tpm-sign /run/su.sock < /sat/bundle.pem'\n\
         {STOP_SIGNER}\
         bring /tmp/key.pem /tmp/www/spiffetrustbundle.token /tmp/su.log\n"
    );
    let config = signer_config(Some("/dev/tpm0"));
    let boot = boot(&tpm, &script, &[("bundle.pem", bundle.as_bytes()), ("su.conf", config.as_bytes())]);
    boot.ok("provision").unwrap();
    let busy = boot.run("busy").unwrap();
    assert_ne!(busy.status, 0);
    for says in ["cannot open TPM device /dev/tpm0", "busy", "/dev/tpmrm0"] {
        assert!(busy.stderr.contains(says), "the error says {says:?}: {}", busy.stderr);
    }
    assert_readable("provision on a held /dev/tpm0", &busy.stderr);
    assert!(boot.ok("shared").unwrap().stderr.contains("Existing:"), "/dev/tpmrm0 is usable meanwhile");
    boot.ok("waits").unwrap();
    assert_ne!(boot.run("no-socket-while-held").unwrap().status, 0, "signer-unix served without its TPM");
    boot.ok("resumed").unwrap();
    boot.ok("sign").unwrap();
    let token = boot.file("/tmp/www/spiffetrustbundle.token").unwrap();
    assert_eq!(verify_on_host(tmp.path(), boot.file("/tmp/key.pem").unwrap(), token), bundle);
    let log = boot.text("/tmp/su.log").unwrap();
    assert!(log.contains("Device or resource busy"), "the log says why:\n{log}");
    assert!(log.contains("signing key opened"), "{log}");
    assert_readable("signer-unix's log", &log);
}

/// `/dev/tpm0` admits one opener, so it shows what the TPM owner does: 16 concurrent sign requests through one
/// signer-unix all succeed, while 16 processes opening the device each on their own collide.
#[test]
fn vm_concurrent_signs_on_tpm0_succeed_through_one_owner_where_separate_openers_collide() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path());
    let tpm = VmTpm::blank().unwrap();
    let script = format!(
        "run provision spire-server-attestor-tpm-signer-unix provision --tpm-device /dev/tpm0 --out /tmp/key.pem\n\
         {START_SIGNER}\
         i=0; while [ $i -lt 16 ]; do\n\
           ( if spire-server-attestor-tpm-sign /run/su.sock </sat/bundle.pem >/tmp/tok.$i 2>/tmp/err.$i; then echo ok >>/tmp/owner.ok; else echo failed >>/tmp/owner.failed; fi ) &\n\
           i=$((i+1)); done\n\
         while [ $(cat /tmp/owner.ok /tmp/owner.failed 2>/dev/null | wc -l) -lt 16 ]; do usleep 50000; done\n\
         {STOP_SIGNER}\
         i=0; while [ $i -lt 16 ]; do\n\
           ( if spire-server-attestor-tpm-signer-unix provision --tpm-device /dev/tpm0 >/dev/null 2>>/tmp/alone.err; then echo ok >>/tmp/alone.ok; else echo failed >>/tmp/alone.failed; fi ) &\n\
           i=$((i+1)); done\n\
         while [ $(cat /tmp/alone.ok /tmp/alone.failed 2>/dev/null | wc -l) -lt 16 ]; do usleep 50000; done\n\
         bring /tmp/key.pem /tmp/tok.7 /tmp/owner.ok /tmp/owner.failed /tmp/alone.ok /tmp/alone.failed /tmp/alone.err /tmp/su.log\n"
    );
    let config = signer_config(Some("/dev/tpm0"));
    let boot = boot(&tpm, &script, &[("bundle.pem", bundle.as_bytes()), ("su.conf", config.as_bytes())]);
    boot.ok("provision").unwrap();
    assert_eq!(boot.text("/tmp/owner.ok").unwrap().lines().count(), 16, "every sign through the owner succeeded");
    assert!(boot.file("/tmp/owner.failed").is_err(), "a sign through the owner failed");
    let token = boot.text("/tmp/tok.7").unwrap();
    assert_eq!(verify_on_host(tmp.path(), boot.file("/tmp/key.pem").unwrap(), token.trim().as_bytes()), bundle);
    let collided = boot.text("/tmp/alone.failed").map(|t| t.lines().count()).unwrap_or(0);
    eprintln!("separate openers of /dev/tpm0: {collided} of 16 collided");
    assert!(collided > 0, "16 separate openers of /dev/tpm0 never collided: the device did not show what it guards");
    let err = boot.text("/tmp/alone.err").unwrap();
    assert!(err.contains("Device or resource busy"), "{err}");
    assert_readable("signer-unix's log", &boot.text("/tmp/su.log").unwrap());
}

#[test]
fn vm_two_processes_share_tpmrm0_and_leave_no_object_or_session_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path());
    testbed::devid::make_devid_ca(tmp.path(), "vm-devid").unwrap();
    let tpm = VmTpm::manufactured().unwrap();
    let ek_ca = std::fs::read(tpm.ek_ca().unwrap()).unwrap();
    let root = std::fs::read(tmp.path().join("root.pem")).unwrap();
    let root_key = std::fs::read(tmp.path().join("root.key")).unwrap();
    let d = "spire-server-attestor-tpm-devid";
    let script = format!(
        "run provision spire-server-attestor-tpm-signer-unix provision --tpm-device /dev/tpmrm0 --out /tmp/key.pem\n\
         run devid {d} provision --tpm-device /dev/tpmrm0 --out-dir /tmp/devid\n\
         run issue {d} sign-csr --csr /tmp/devid/devid.csr --ca-cert /sat/root.pem --ca-key /sat/root.key --out /tmp/devid/devid.pem\n\
         {START_SIGNER}\
         ( while [ ! -f /tmp/check.done ]; do\n\
             if spire-server-attestor-tpm-sign /run/su.sock </sat/bundle.pem >/dev/null 2>>/tmp/loop.err; then\n\
               if [ -f /tmp/check.running ]; then echo during >>/tmp/loop.ok; else echo outside >>/tmp/loop.ok; fi\n\
             else echo failed >>/tmp/loop.failed; fi\n\
           done ) &\n\
         LOOP=$!\n\
         wait_log /tmp/loop.ok outside 60\n\
         touch /tmp/check.running\n\
         run check {d} check --tpm-device /dev/tpmrm0 --devid-cert /tmp/devid/devid.pem --devid-priv /tmp/devid/devid.priv.blob --devid-pub /tmp/devid/devid.pub.blob --devid-ca /sat/root.pem --endorsement-ca /sat/ek-ca.pem\n\
         rm /tmp/check.running\n\
         wait_log /tmp/loop.ok outside 60\n\
         touch /tmp/check.done\n\
         wait $LOOP\n\
         {STOP_SIGNER}\
         run transient tpm2_getcap -T device:/dev/tpm0 handles-transient\n\
         run loaded-sessions tpm2_getcap -T device:/dev/tpm0 handles-loaded-session\n\
         run saved-sessions tpm2_getcap -T device:/dev/tpm0 handles-saved-session\n\
         run leak tpm2_createprimary -T device:/dev/tpm0 -C o -G ecc -c /tmp/leak.ctx\n\
         run leak-seen tpm2_getcap -T device:/dev/tpm0 handles-transient\n\
         bring /tmp/loop.ok /tmp/loop.failed /tmp/loop.err /tmp/su.log\n"
    );
    let config = signer_config(Some("/dev/tpmrm0"));
    let files: [(&str, &[u8]); 5] = [
        ("bundle.pem", bundle.as_bytes()),
        ("su.conf", config.as_bytes()),
        ("root.pem", &root),
        ("root.key", &root_key),
        ("ek-ca.pem", &ek_ca),
    ];
    let boot = boot(&tpm, &script, &files);
    boot.ok("provision").unwrap();
    boot.ok("devid").unwrap();
    boot.ok("issue").unwrap();
    let check = boot.ok("check").unwrap();
    assert_readable("devid check", &check.stderr);
    let signs = boot.text("/tmp/loop.ok").unwrap();
    assert!(signs.contains("during"), "signer-unix signed while the attestation ran: {signs}");
    assert!(
        boot.file("/tmp/loop.failed").is_err(),
        "a sign failed while sharing the TPM: {}",
        boot.text("/tmp/loop.err").unwrap_or_default()
    );
    for handles in ["transient", "loaded-sessions", "saved-sessions"] {
        let r = boot.ok(handles).unwrap();
        assert_eq!(r.stdout.trim(), "", "{handles} left in the TPM: {}", r.stdout);
    }
    // Control row: the same query does see an object left behind (/dev/tpm0 has no resource manager to flush
    // what tpm2_createprimary loaded), so the empty answers above are the TPM's state, not a blind query.
    boot.ok("leak").unwrap();
    let seen = boot.ok("leak-seen").unwrap();
    assert!(seen.stdout.contains("0x80"), "a transient object left on /dev/tpm0 is not listed: {:?}", seen.stdout);
    assert_eq!(boot.ok("su-exit").unwrap().status, 0);
    assert_readable("signer-unix's log", &boot.text("/tmp/su.log").unwrap());
}

#[test]
fn vm_devid_provision_and_check_rsa_and_ecc_with_and_without_passwords() {
    let tmp = tempfile::tempdir().unwrap();
    testbed::devid::make_devid_ca(tmp.path(), "vm-devid").unwrap();
    let tpm = VmTpm::manufactured().unwrap();
    let ek_ca = std::fs::read(tpm.ek_ca().unwrap()).unwrap();
    let root = std::fs::read(tmp.path().join("root.pem")).unwrap();
    let root_key = std::fs::read(tmp.path().join("root.key")).unwrap();
    let d = "spire-server-attestor-tpm-devid";
    let mut script = String::from("T=device:/dev/tpmrm0\n");
    let flow = |name: &str, kt: &str, provision_pw: &str, check_pw: &str| {
        format!(
            "run {name}-provision {d} provision --tpm-device /dev/tpmrm0 --key-type {kt} {provision_pw} --out-dir /tmp/{name}\n\
             run {name}-issue {d} sign-csr --csr /tmp/{name}/devid.csr --ca-cert /sat/root.pem --ca-key /sat/root.key --out /tmp/{name}/devid.pem\n\
             run {name}-check {d} check --tpm-device /dev/tpmrm0 --devid-cert /tmp/{name}/devid.pem --devid-priv /tmp/{name}/devid.priv.blob --devid-pub /tmp/{name}/devid.pub.blob --devid-ca /sat/root.pem --endorsement-ca /sat/ek-ca.pem {check_pw}\n"
        )
    };
    for kt in ["rsa2048", "ecc-p256"] {
        script += &flow(&format!("{kt}-plain"), kt, "", "");
    }
    // The boot state on the kernel's device: a quote of what the VM's firmware measured, beside tpm2_pcrread.
    script += &format!(
        "run quote {d} check --tpm-device /dev/tpmrm0 --devid-cert /tmp/rsa2048-plain/devid.pem --devid-priv /tmp/rsa2048-plain/devid.priv.blob --devid-pub /tmp/rsa2048-plain/devid.pub.blob --devid-ca /sat/root.pem --endorsement-ca /sat/ek-ca.pem --pcr-selection sha256:0,1,2,3,4,5,6,7\n\
         run pcrread tpm2_pcrread -T $T sha256:0,1,2,3,4,5,6,7\n"
    );
    // Owner and endorsement hierarchy passwords set on the TPM, and a DevID password.
    script += "printf owner-secret >/tmp/owner.pw\nprintf endorsement-secret >/tmp/endorsement.pw\nprintf devid-secret >/tmp/devid.pw\nprintf wrong >/tmp/wrong.pw\n\
        run set-owner tpm2_changeauth -T $T -c o owner-secret\n\
        run set-endorsement tpm2_changeauth -T $T -c e endorsement-secret\n";
    let provision_pw = "--owner-password-file /tmp/owner.pw --devid-password-file /tmp/devid.pw";
    let check_pw = "--owner-password-file /tmp/owner.pw --endorsement-password-file /tmp/endorsement.pw --devid-password-file /tmp/devid.pw";
    for kt in ["rsa2048", "ecc-p256"] {
        script += &flow(&format!("{kt}-pw"), kt, provision_pw, check_pw);
    }
    // Negative rows: each password wrong in turn, and none given.
    let c = format!(
        "{d} check --tpm-device /dev/tpmrm0 --devid-cert /tmp/rsa2048-pw/devid.pem --devid-priv /tmp/rsa2048-pw/devid.priv.blob --devid-pub /tmp/rsa2048-pw/devid.pub.blob --devid-ca /sat/root.pem --endorsement-ca /sat/ek-ca.pem"
    );
    script += &format!(
        "run wrong-devid {c} --owner-password-file /tmp/owner.pw --endorsement-password-file /tmp/endorsement.pw --devid-password-file /tmp/wrong.pw\n\
         run wrong-owner {c} --owner-password-file /tmp/wrong.pw --endorsement-password-file /tmp/endorsement.pw --devid-password-file /tmp/devid.pw\n\
         run wrong-endorsement {c} --owner-password-file /tmp/owner.pw --endorsement-password-file /tmp/wrong.pw --devid-password-file /tmp/devid.pw\n\
         run no-passwords {c}\n"
    );
    let files: [(&str, &[u8]); 3] = [("root.pem", &root), ("root.key", &root_key), ("ek-ca.pem", &ek_ca)];
    let boot = boot(&tpm, &script, &files);
    for kt in ["rsa2048", "ecc-p256"] {
        for variant in ["plain", "pw"] {
            let name = format!("{kt}-{variant}");
            boot.ok(&format!("{name}-provision")).unwrap();
            boot.ok(&format!("{name}-issue")).unwrap();
            let check = boot.ok(&format!("{name}-check")).unwrap();
            assert_readable(&name, &(check.stdout.clone() + &check.stderr));
        }
    }
    let quoted = boot.ok("quote").unwrap().stdout.clone();
    let read = boot.ok("pcrread").unwrap().stdout.clone();
    let mut measured = 0;
    for line in read.lines().filter_map(|l| l.trim().split_once(" : 0x")) {
        let (index, value) = (line.0.trim(), line.1.trim().to_ascii_lowercase());
        let want = format!("selector   tpm_devid:pcr:sha256:{index}:{value}");
        assert!(quoted.contains(&want), "{want} not in\n{quoted}");
        measured += usize::from(value.bytes().any(|b| b != b'0'));
    }
    assert_eq!(quoted.matches("tpm_devid:pcr:sha256:").count(), 8, "{quoted}\n{read}");
    assert!(measured > 0, "the VM's firmware measured nothing into PCRs 0-7:\n{read}");
    boot.ok("set-owner").unwrap();
    boot.ok("set-endorsement").unwrap();
    for (run, names) in [
        ("wrong-devid", "DevID password"),
        ("wrong-owner", "owner hierarchy password"),
        ("wrong-endorsement", "endorsement hierarchy password"),
        ("no-passwords", "password"),
    ] {
        let r = boot.run(run).unwrap();
        assert_ne!(r.status, 0, "{run} passed");
        let said = r.stdout.clone() + &r.stderr;
        assert!(said.contains(names), "{run} names the {names}: {said}");
        for secret in ["owner-secret", "endorsement-secret", "devid-secret"] {
            assert!(!said.contains(secret), "{run} prints a password: {said}");
        }
        assert_readable(run, &said);
    }
}

#[test]
fn vm_reboot_keeps_the_persistent_key_and_signer_unix_signs_with_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path());
    let tpm = VmTpm::blank().unwrap();
    let first = boot(
        &tpm,
        "run provision spire-server-attestor-tpm-signer-unix provision --out /tmp/key.pem\nbring /tmp/key.pem\n",
        &[],
    );
    assert!(first.ok("provision").unwrap().stderr.contains("Created:"));
    let key = first.file("/tmp/key.pem").unwrap().to_vec();
    // Power cycle: a new VM and a new swtpm process on the same TPM state.
    let script = format!(
        "run provision spire-server-attestor-tpm-signer-unix provision --out /tmp/key.pem\n\
         {START_SIGNER}\
         run sign sh -c 'spire-server-attestor-tpm-sign /run/su.sock < /sat/bundle.pem'\n\
         {STOP_SIGNER}\
         bring /tmp/key.pem /tmp/www/spiffetrustbundle.token /tmp/su.log\n"
    );
    let config = signer_config(None);
    let second = boot(&tpm, &script, &[("bundle.pem", bundle.as_bytes()), ("su.conf", config.as_bytes())]);
    let provision = second.ok("provision").unwrap();
    assert!(provision.stderr.contains("Existing:"), "the key survived the reboot");
    assert_readable("provision after the reboot", &provision.stderr);
    assert_readable("signer-unix's log after the reboot", &second.text("/tmp/su.log").unwrap());
    assert_eq!(second.ok("su-exit").unwrap().status, 0);
    assert_eq!(second.file("/tmp/key.pem").unwrap(), key.as_slice());
    second.ok("sign").unwrap();
    let token = second.file("/tmp/www/spiffetrustbundle.token").unwrap();
    assert_eq!(verify_on_host(tmp.path(), &key, token), bundle, "signed after the reboot with the key from before it");
    // Negative row: the token does not verify with another key.
    let other = testbed::swtpm::Swtpm::start().unwrap();
    let (code, out, err) = run_bin(SIGNER, &["provision", "--tpm-device", &other.device().to_string()], b"").unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = verifier_on_host(tempfile::tempdir().unwrap().path(), out.as_bytes(), token);
    assert_ne!(code, 0, "a token verified with a key that did not sign it");
}
