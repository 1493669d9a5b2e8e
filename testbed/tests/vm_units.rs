//! The shipped systemd units in a VM (`testbed::vm` with Debian's systemd as PID 1): each daemon under its unit,
//! sandboxed as shipped, on the kernel's `/dev/tpmrm0`; and the enrollment CA under its unit with a node
//! enrolling on the VM's TPM. Tests are named `vm_*`: `make test` runs them in the VM lane.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use base64::Engine;

use testbed::logs::assert_readable;
use testbed::vm::{self, VmTpm};

mod vm_support;
use vm_support::{bundle, verify_on_host};

/// The configs of the systemd boot, where the packages put them: signer-unix (key a, the shipped socket and
/// publish directory, `iss` the host name as shipped), signer-http co-signing for server b (allowed by host name),
/// the verifier with one keyset per server (a's over HTTP from a host name, b's from a file).
const UNIT_CONFIGS: [(&str, &str); 4] = [
    (
        "signer-unix.conf",
        "socket: /var/run/spire/server-attestor-tpm/signer-unix.sock\ntpm-address: 0x81008006\nduration: 10m\n\
         dir: /usr/share/nginx/html\nmetrics-addr: \"127.0.0.1:9465\"\n",
    ),
    (
        "signer-http.conf",
        "socket: /var/run/spire/server-attestor-tpm/signer-unix.sock\nkeydir: keys\nprimary: b.pem\n\
         listen-addr: \"127.0.0.1:8181\"\nallowed-addrs: [localhost]\nmetrics-addr: \"127.0.0.1:9466\"\n",
    ),
    (
        "verifier.conf",
        "keydir: keys\nsocket: /var/run/spire/server-attestor-tpm/verifier.sock\nmetrics-addr: \"127.0.0.1:9464\"\n\
         keyset:\n  a:\n    url: http://localhost:8080/spiffetrustbundle.token\n    chain: [a.pem]\n\
         \x20 b:\n    url: file:///srv/www-b/spiffetrustbundle.token\n    chain: [b.pem, a.pem]\n",
    ),
    // Server b, started by hand: its tokens go through a's signer-http.
    (
        "b.conf",
        "socket: /run/b.sock\ntpm-address: 0x81008007\nduration: 10m\ndir: /srv/www-b\nissuer: vm-server-b\n\
         keydir: /etc/spire/server-attestor-tpm/keys\nchain: [b.pem, a.pem]\n",
    ),
];

/// The verifier's socket unit: systemd makes the socket, the verifier runs as its own user.
const VERIFIER_SOCKET: &str = "spire-server-attestor-tpm-verifier.socket";

/// The units the packages ship, as installed there; the script does what the packages' maintainer scripts do.
const UNITS: [&str; 3] = [
    "spire-server-attestor-tpm-signer-unix.service",
    "spire-server-attestor-tpm-signer-http.service",
    "spire-server-attestor-tpm-verifier.service",
];

/// The shipped units, with every sandboxing directive they carry, run under Debian's systemd as PID 1 on the
/// kernel's `/dev/tpmrm0` with the modes Debian's tpm-udev gives it (tss:tss 0660): signer-unix signs and
/// publishes into the shipped publish directory, signer-http co-signs, the verifier serves both keysets, each
/// daemon's metrics and health answer; each daemon's seccomp filter, no-new-privileges and empty capability
/// set are in force; signer-unix also signs on /dev/tpm0 (a misc device, outside the tpm major). Negative row:
/// without the tss group, which the old unit lacked, signer-unix cannot open the TPM.
#[test]
fn vm_shipped_units_run_sandboxed_under_systemd() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path());
    let tpm = VmTpm::blank().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |p: &str| std::fs::read(repo.join(p)).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("bundle.pem".into(), bundle.clone().into_bytes()),
        ("sysusers.conf".into(), read("systemd/sysusers.conf")),
        ("tmpfiles.conf".into(), read("systemd/tmpfiles.conf")),
    ];
    for unit in UNITS.iter().chain([&VERIFIER_SOCKET]) {
        files.push(((*unit).into(), read(&format!("systemd/{unit}"))));
    }
    for (name, text) in UNIT_CONFIGS {
        files.push((name.into(), text.as_bytes().to_vec()));
    }
    let su = "spire-server-attestor-tpm-signer-unix";
    let etc = "/etc/spire/server-attestor-tpm";
    let run_dir = "/var/run/spire/server-attestor-tpm";
    // The socket directory is removed after tmpfiles made it, as where a unit starts before tmpfiles ran (or
    // without it): signer-unix's unit must make it so that signer-http, another user, can reach the socket.
    let script = format!(
        "give_up() {{ bring /run/sat-logs/*.log /tmp/b.log; echo SAT-END >>/dev/ttyS1; exit 0; }}\n\
         mkdir -p /lib/systemd/system /usr/lib/sysusers.d /usr/lib/tmpfiles.d {etc}/keys /usr/share/nginx/html /srv/www-b /run/sat-logs\n\
         for u in {units}; do\n\
           cp /sat/$u /lib/systemd/system/\n\
           mkdir -p /etc/systemd/system/$u.d\n\
           printf '[Service]\\nStandardOutput=append:/run/sat-logs/%s.log\\n' $u >/etc/systemd/system/$u.d/sat-log.conf\n\
         done\n\
         cp /sat/{VERIFIER_SOCKET} /lib/systemd/system/\n\
         cp /sat/sysusers.conf /usr/lib/sysusers.d/spire-server-attestor-tpm.conf\n\
         cp /sat/tmpfiles.conf /usr/lib/tmpfiles.d/spire-server-attestor-tpm.conf\n\
         for c in signer-unix signer-http verifier; do cp /sat/$c.conf {etc}/; done\n\
         run sysusers systemd-sysusers spire-server-attestor-tpm.conf\n\
         run tmpfiles systemd-tmpfiles --create spire-server-attestor-tpm.conf\n\
         rm -rf /run/spire\n\
         chown tss:tss /dev/tpmrm0; chmod 0660 /dev/tpmrm0; chown tss:root /dev/tpm0; chmod 0660 /dev/tpm0\n\
         run provision-a {su} provision --handle 0x81008006 --out {etc}/keys/a.pem\n\
         run provision-b {su} provision --handle 0x81008007 --key-type ecc-p256 --out {etc}/keys/b.pem\n\
         chmod 0644 {etc}/keys/*.pem\n\
         run reload systemctl daemon-reload\n\
         run start-signer-unix systemctl start {su}\n\
         wait_for 60 -S {run_dir}/signer-unix.sock || give_up\n\
         run start-signer-http systemctl start spire-server-attestor-tpm-signer-http\n\
         {su} /sat/b.conf >/tmp/b.log 2>&1 &\n\
         B=$!\n\
         wait_for 60 -S /run/b.sock || give_up\n\
         run sign-a sh -c 'spire-server-attestor-tpm-sign {run_dir}/signer-unix.sock < /sat/bundle.pem'\n\
         wait_log /run/sat-logs/spire-server-attestor-tpm-signer-http.service.log listening 60\n\
         run sign-b sh -c 'spire-server-attestor-tpm-sign /run/b.sock http://127.0.0.1:8181/sign < /sat/bundle.pem'\n\
         run published stat -c '%a %U %F' /usr/share/nginx/html/spiffetrustbundle.token\n\
         run guest-hostname cat /proc/sys/kernel/hostname\n\
         busybox httpd -p 127.0.0.1:8080 -h /usr/share/nginx/html\n\
         run start-verifier systemctl start spire-server-attestor-tpm-verifier\n\
         wait_for 60 -S {run_dir}/verifier.sock || give_up\n\
         run served-a curl -sS --fail --unix-socket {run_dir}/verifier.sock 'http://localhost/trustbundle?instance=a'\n\
         run served-b curl -sS --fail --unix-socket {run_dir}/verifier.sock 'http://localhost/trustbundle?instance=b'\n\
         run sockets stat -c '%n %U:%G %a' {run_dir}/signer-unix.sock {run_dir}/verifier.sock\n\
         wait_for 30 -f /var/lib/spire/server-attestor-tpm/verifier/a.json\n\
         run state-dir stat -c '%U %a' /var/lib/spire/server-attestor-tpm/verifier /var/lib/spire/server-attestor-tpm/verifier/a.json\n\
         run sign-b-again sh -c 'spire-server-attestor-tpm-sign /run/b.sock http://127.0.0.1:8181/sign < /sat/bundle.pem'\n\
         for port in 9464 9465 9466; do\n\
           run health-$port curl -sS --fail http://127.0.0.1:$port/healthz\n\
           run metrics-$port curl -sS --fail http://127.0.0.1:$port/metrics\n\
         done\n\
         for u in {units}; do\n\
           run active-$u systemctl is-active $u\n\
           run sandbox-$u sh -c \"grep -E '^(Uid|Groups|NoNewPrivs|Seccomp|CapEff|CapBnd):' /proc/$(systemctl show -p MainPID --value $u)/status\"\n\
         done\n\
         run tss-gid sh -c 'grep ^tss: /etc/group'\n\
         systemctl stop {su}\n\
         rm -f {run_dir}/signer-unix.sock\n\
         chown root:root /dev/tpm0; chmod 0600 /dev/tpm0\n\
         echo 'tpm-device: /dev/tpm0' >>{etc}/signer-unix.conf\n\
         systemctl start {su}\n\
         wait_for 60 -S {run_dir}/signer-unix.sock || give_up\n\
         run sign-tpm0 sh -c 'spire-server-attestor-tpm-sign {run_dir}/signer-unix.sock < /sat/bundle.pem'\n\
         sed -i '/^tpm-device:/d' {etc}/signer-unix.conf\n\
         mkdir -p /etc/systemd/system/{su}.service.d\n\
         printf '[Service]\\nSupplementaryGroups=\\n' >/etc/systemd/system/{su}.service.d/no-tss.conf\n\
         : >/run/sat-logs/{su}.service.log\n\
         systemctl daemon-reload\n\
         systemctl restart {su}\n\
         wait_log /run/sat-logs/{su}.service.log 'ermission denied' 60\n\
         run sign-no-tss sh -c 'spire-server-attestor-tpm-sign {run_dir}/signer-unix.sock < /sat/bundle.pem'\n\
         kill $B\n\
         bring /run/sat-logs/*.log /tmp/b.log /srv/www-b/spiffetrustbundle.token {etc}/keys/a.pem {etc}/keys/b.pem\n",
        units = UNITS.join(" "),
    );
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let boot = match vm::boot_with(vm::Init::Systemd, &tpm, &script, &files) {
        Ok(b) => b,
        Err(e) => panic!("{e:#}"),
    };
    eprintln!("VM boot (systemd) and script: {:.1} s", boot.wall.as_secs_f64());
    for step in
        ["sysusers", "tmpfiles", "provision-a", "provision-b", "reload", "start-signer-unix", "start-signer-http"]
    {
        boot.ok(step).unwrap();
    }
    let log = |unit: &str| boot.text(&format!("/run/sat-logs/{unit}.log")).unwrap_or_default();
    let signed = boot.ok("sign-a").unwrap_or_else(|e| panic!("{e:#}\nsigner-unix: {}", log(UNITS[0])));
    assert!(signed.stdout.starts_with("ey"), "{}", signed.stdout);
    // No `issuer` in its config, as shipped: the token names the host (read where the unit hides /proc/sys).
    let claims = signed.stdout.trim().split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    assert_eq!(claims["iss"], boot.ok("guest-hostname").unwrap().stdout.trim(), "{claims}");
    boot.ok("sign-b").unwrap_or_else(|e| panic!("{e:#}\nsigner-http: {}", log(UNITS[1])));
    assert_eq!(boot.ok("published").unwrap().stdout.trim(), "644 root regular file");
    // What the verifier under its unit serves is the bundle, and the host's verifier agrees on the tokens.
    for keyset in ["a", "b"] {
        let served = boot.ok(&format!("served-{keyset}")).unwrap_or_else(|e| panic!("{e:#}\n{}", log(UNITS[2])));
        assert_eq!(served.stdout, bundle, "keyset {keyset}");
    }
    let a_pem = boot.file("/etc/spire/server-attestor-tpm/keys/a.pem").unwrap();
    assert_eq!(verify_on_host(tmp.path(), a_pem, signed.stdout.trim().as_bytes()), bundle);
    // Each daemon counted what it did: the verifier two requests served, signer-unix its signs, signer-http
    // its co-signature.
    for (port, counter) in [(9464, "requests_total"), (9465, "signs_total"), (9466, "requests_total")] {
        boot.ok(&format!("health-{port}")).unwrap();
        let metrics = &boot.ok(&format!("metrics-{port}")).unwrap().stdout;
        let counted = metrics.lines().any(|l| {
            let (name, value) = l.split_once('{').map(|(n, rest)| (n, rest.rsplit(' ').next())).unwrap_or((l, None));
            name.ends_with(counter) && value.and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0)
        });
        assert!(counted, "port {port}: no {counter} counted:\n{metrics}");
    }
    let tss = boot.ok("tss-gid").unwrap().stdout.clone();
    let tss_gid = tss.trim().split(':').nth(2).unwrap().to_owned();
    for unit in UNITS {
        assert_eq!(boot.ok(&format!("active-{unit}")).unwrap().stdout.trim(), "active");
        let status = boot.ok(&format!("sandbox-{unit}")).unwrap().stdout.clone();
        for want in ["NoNewPrivs:\t1", "Seccomp:\t2", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"] {
            assert!(status.contains(want), "{unit}: {want:?} not in\n{status}");
        }
        let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap_or_default();
        assert_eq!(groups.split_whitespace().any(|g| g == tss_gid), unit == UNITS[0], "{unit}: {groups}");
        assert_readable(unit, &log(unit));
    }
    let uid = |unit: &str| {
        let status = boot.ok(&format!("sandbox-{unit}")).unwrap().stdout.clone();
        status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().nth(1).unwrap().to_owned()
    };
    assert_ne!(uid(UNITS[1]), "0", "signer-http runs as its own user");
    assert_ne!(uid(UNITS[2]), "0", "the verifier runs as its own user");
    // The verifier keeps its state in the directory its unit owns, as its user, and serves on the socket systemd
    // made; starting it re-owned nothing of signer-unix's (the old unit's RuntimeDirectory= gave the shared
    // directory, signer-unix's socket in it, to root:root, and signer-http could no longer reach signer-unix).
    let state = boot.ok("state-dir").unwrap_or_else(|e| panic!("{e:#}\n{}", log(UNITS[2]))).stdout.clone();
    assert_eq!(state, "spire-tpm-verifier 700\nspire-tpm-verifier 600\n", "state directory and file");
    let sockets = boot.ok("sockets").unwrap().stdout.clone();
    assert!(sockets.contains("signer-unix.sock root:spire-tpm-signer-http 660"), "{sockets}");
    assert!(sockets.contains("verifier.sock root:root 660"), "{sockets}");
    boot.ok("sign-b-again").unwrap_or_else(|e| panic!("{e:#}\nsigner-http: {}", log(UNITS[1])));
    // /dev/tpm0 (root's, as without tpm-udev) is a device the unit admits too: it is not under the tpm major.
    boot.ok("sign-tpm0").unwrap_or_else(|e| panic!("{e:#}\nsigner-unix: {}", log(UNITS[0])));
    // Negative row: the old unit's groups (no tss) leave root without capabilities unable to open the TPM.
    let refused = boot.run("sign-no-tss").unwrap();
    assert_ne!(refused.status, 0, "signed without the tss group: {}", refused.stdout);
    assert!(log(UNITS[0]).contains("ermission denied"), "{}", log(UNITS[0]));
}

/// The enrollment CA under its shipped unit (its own user in group tss, its database in its StateDirectory, the
/// CRL in the directory tmpfiles makes) with its key on the kernel's `/dev/tpmrm0`; the node in the same VM
/// enrolls on `/dev/tpmrm0` (listed in the inventory by `ek-hash`), `check` accepts the DevID with the approved
/// name, and the agent package's renewal unit renews it. Nothing is left loaded in the TPM.
#[test]
fn vm_enrollment_ca_under_its_unit_and_a_node_enrolling_on_tpmrm0() {
    let tmp = tempfile::tempdir().unwrap();
    let (tls_ca, tls_cert, tls_key) = testbed::pki::tls_server(tmp.path()).unwrap();
    let tpm = VmTpm::manufactured().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |p: &str| std::fs::read(repo.join(p)).unwrap();
    let etc = "/etc/spire/server-attestor-tpm";
    let ca_unit = "spire-server-attestor-tpm-devid-ca.service";
    let renew_unit = "spire-server-attestor-tpm-devid-renew.service";
    let conf = String::from(
        "listen-addr: \"127.0.0.1:8446\"\ntls-cert: tls/devid-ca.pem\ntls-key: tls/devid-ca.key\ntpm-device: /dev/tpmrm0\n\
         ca-cert: devid-ca.pem\nendorsement-ca: tpm-manufacturers.pem\ninventory: devid-inventory\n\
         state-dir: /var/lib/spire/server-attestor-tpm/devid-ca\ncrl: /var/lib/spire/server-attestor-tpm/devid-crl/devid.crl\n"
    );
    let renew_env = format!(
        "DEVID_CA_URL=https://127.0.0.1:8446\nDEVID_RENEW_BEFORE=100000h\n\
         DEVID_ENROLL_ARGS=--tls-ca {etc}/devid-ca-tls.pem --tpm-device /dev/tpmrm0\n"
    );
    let files: Vec<(String, Vec<u8>)> = vec![
        ("sysusers.conf".into(), read("systemd/sysusers.conf")),
        ("tmpfiles.conf".into(), read("systemd/tmpfiles.conf")),
        (ca_unit.into(), read(&format!("systemd/{ca_unit}"))),
        (renew_unit.into(), read(&format!("systemd/{renew_unit}"))),
        ("devid-ca.conf".into(), conf.into_bytes()),
        ("devid-renew.env".into(), renew_env.into_bytes()),
        ("tls-ca.pem".into(), std::fs::read(&tls_ca).unwrap()),
        ("tls.pem".into(), std::fs::read(&tls_cert).unwrap()),
        ("tls.key".into(), std::fs::read(&tls_key).unwrap()),
        ("ek-ca.pem".into(), std::fs::read(tpm.ek_ca().unwrap()).unwrap()),
    ];
    let d = "spire-server-attestor-tpm-devid";
    let out = "/var/lib/spire/agent/devid";
    let script = format!(
        "give_up() {{ bring /run/sat-logs/*.log; echo SAT-END >>/dev/ttyS1; exit 0; }}\n\
         mkdir -p /lib/systemd/system /usr/lib/sysusers.d /usr/lib/tmpfiles.d {etc}/tls /run/sat-logs\n\
         for u in {ca_unit} {renew_unit}; do\n\
           cp /sat/$u /lib/systemd/system/\n\
           mkdir -p /etc/systemd/system/$u.d\n\
           printf '[Service]\\nStandardOutput=append:/run/sat-logs/%s.log\\n' $u >/etc/systemd/system/$u.d/sat-log.conf\n\
         done\n\
         cp /sat/sysusers.conf /usr/lib/sysusers.d/spire-server-attestor-tpm.conf\n\
         cp /sat/tmpfiles.conf /usr/lib/tmpfiles.d/spire-server-attestor-tpm.conf\n\
         cp /sat/devid-ca.conf /sat/devid-renew.env {etc}/\n\
         cp /sat/tls.pem {etc}/tls/devid-ca.pem; cp /sat/tls.key {etc}/tls/devid-ca.key; cp /sat/tls-ca.pem {etc}/devid-ca-tls.pem\n\
         cp /sat/ek-ca.pem {etc}/tpm-manufacturers.pem\n\
         run sysusers systemd-sysusers spire-server-attestor-tpm.conf\n\
         run tmpfiles systemd-tmpfiles --create spire-server-attestor-tpm.conf\n\
         chown tss:tss /dev/tpmrm0; chmod 0660 /dev/tpmrm0\n\
         chgrp spire-tpm-devid-ca {etc}/tls/devid-ca.key; chmod 0640 {etc}/tls/devid-ca.key\n\
         run ek-hash sh -c '{d} ek-hash --tpm-device /dev/tpmrm0 --name vm-node >{etc}/devid-inventory'\n\
         run provision-ca spire-server-attestor-tpm-devid-ca provision {etc}/devid-ca.conf --self-signed --subject-cn 'VM DevID CA'\n\
         run reload systemctl daemon-reload\n\
         run start-ca systemctl start {ca_unit}\n\
         wait_log /run/sat-logs/{ca_unit}.log 'CRL signed and written' 60 || give_up\n\
         run enroll {d} enroll --url https://127.0.0.1:8446 --ca-cert {etc}/devid-ca.pem --tls-ca {etc}/devid-ca-tls.pem --tpm-device /dev/tpmrm0 --key-type rsa2048\n\
         run check {d} check --tpm-device /dev/tpmrm0 --devid-cert {out}/devid.crt.pem --devid-priv {out}/devid.priv.blob --devid-pub {out}/devid.pub.blob --devid-ca {etc}/devid-ca.pem --endorsement-ca {etc}/tpm-manufacturers.pem\n\
         cp {out}/devid.crt.pem /tmp/first.pem\n\
         run renew systemctl start {renew_unit}\n\
         run modes stat -c '%n %a %U' /var/lib/spire/server-attestor-tpm/devid-ca /var/lib/spire/server-attestor-tpm/devid-crl/devid.crl\n\
         run active systemctl is-active {ca_unit}\n\
         run sandbox sh -c \"grep -E '^(Uid|NoNewPrivs|Seccomp|CapEff):' /proc/$(systemctl show -p MainPID --value {ca_unit})/status\"\n\
         run list spire-server-attestor-tpm-devid-ca list {etc}/devid-ca.conf\n\
         run leftovers tpm2_getcap -T device:/dev/tpmrm0 handles-transient\n\
         bring /run/sat-logs/*.log /tmp/first.pem {out}/devid.crt.pem\n"
    );
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let boot = match vm::boot_with(vm::Init::Systemd, &tpm, &script, &files) {
        Ok(b) => b,
        Err(e) => panic!("{e:#}"),
    };
    eprintln!("VM boot (systemd) and script: {:.1} s", boot.wall.as_secs_f64());
    let log = |unit: &str| boot.text(&format!("/run/sat-logs/{unit}.log")).unwrap_or_default();
    for step in ["sysusers", "tmpfiles", "ek-hash", "provision-ca", "reload", "start-ca"] {
        boot.ok(step).unwrap_or_else(|e| panic!("{e:#}\n{}", log(ca_unit)));
    }
    let enrolled = boot.ok("enroll").unwrap_or_else(|e| panic!("{e:#}\nCA: {}", log(ca_unit)));
    assert!(enrolled.stderr.contains("enrolled: DevID certificate for vm-node"), "{}", enrolled.stderr);
    let checked = boot.ok("check").unwrap();
    assert!(checked.stdout.contains("subject:cn:vm-node"), "{}", checked.stdout);
    assert!(checked.stdout.contains("issuer:cn:VM DevID CA"), "{}", checked.stdout);
    boot.ok("renew").unwrap_or_else(|e| panic!("{e:#}\nrenew: {}\nCA: {}", log(renew_unit), log(ca_unit)));
    assert!(log(renew_unit).contains("renewed: DevID certificate for vm-node"), "{}", log(renew_unit));
    assert_ne!(boot.file("/tmp/first.pem").unwrap(), boot.file(&format!("{out}/devid.crt.pem")).unwrap());
    let modes = boot.ok("modes").unwrap().stdout.clone();
    assert!(modes.contains("devid-ca 700 spire-tpm-devid-ca"), "{modes}");
    assert!(modes.contains("devid.crl 644 spire-tpm-devid-ca"), "{modes}");
    assert_eq!(boot.ok("active").unwrap().stdout.trim(), "active");
    let status = boot.ok("sandbox").unwrap().stdout.clone();
    for want in ["NoNewPrivs:\t1", "Seccomp:\t2", "CapEff:\t0000000000000000"] {
        assert!(status.contains(want), "{want:?} not in\n{status}");
    }
    assert!(!status.lines().any(|l| l.starts_with("Uid:\t0\t")), "the CA runs as root:\n{status}");
    let listed = boot.ok("list").unwrap().stdout.clone();
    assert_eq!(listed.lines().filter(|l| l.contains(" issued vm-node ")).count(), 2, "{listed}");
    assert_eq!(boot.ok("leftovers").unwrap().stdout.trim(), "", "objects left loaded in the TPM");
    assert_readable(ca_unit, &log(ca_unit));
}
