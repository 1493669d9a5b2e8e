//! The guest's initramfs, built in memory from the host's own build: the base image every boot shares
//! (busybox-static, the project's binaries, tpm2-tools, the libraries `ldd` names and the TCTI libraries libtss2
//! opens at run time), the layer a systemd boot adds, and the `newc` cpio writer both use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context};

use crate::process::bin_path;

/// The project's binaries the guest runs.
pub const GUEST_BINS: [&str; 3] =
    ["spire-server-attestor-tpm-signer-unix", "spire-server-attestor-tpm-sign", "spire-server-attestor-tpm-devid"];

/// The tpm2-tools commands the guest has (all are links to Debian's multi-call `tpm2`).
pub(super) const TPM2_TOOLS: [&str; 8] = [
    "tpm2_pcrread",
    "tpm2_readpublic",
    "tpm2_getcap",
    "tpm2_changeauth",
    "tpm2_evictcontrol",
    "tpm2_startup",
    "tpm2_clear",
    "tpm2_createprimary",
];

/// Libraries libtss2's TCTI loader opens by name at run time (`ldd` does not list them).
pub(super) const TCTI_LIBS: [&str; 2] = ["libtss2-tctildr.so.0", "libtss2-tcti-device.so.0"];

/// Where Debian's multiarch libraries are.
pub(super) const LIB_DIR: &str = "/lib/x86_64-linux-gnu";

/// Host programs the systemd layer adds: (host path, guest path).
pub(super) const SYSTEMD_PROGRAMS: [(&str, &str); 5] = [
    ("/lib/systemd/systemd", "lib/systemd/systemd"),
    ("/usr/bin/systemctl", "usr/bin/systemctl"),
    ("/usr/bin/systemd-sysusers", "usr/bin/systemd-sysusers"),
    ("/usr/bin/systemd-tmpfiles", "usr/bin/systemd-tmpfiles"),
    ("/usr/bin/curl", "usr/bin/curl"),
];

/// The project's daemons only the systemd layer carries (the base image has the rest).
pub(super) const SYSTEMD_BINS: [&str; 3] = [
    "spire-server-attestor-tpm-verifier",
    "spire-server-attestor-tpm-signer-http",
    "spire-server-attestor-tpm-devid-ca",
];

/// `rdinit` of a systemd boot: the API file systems, the result port, then systemd as PID 1.
pub(super) const INIT_SYSTEMD: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
stty -F /dev/ttyS1 raw -echo
exec /lib/systemd/systemd --unit=sat.target
"#;

/// The units of a systemd boot: the targets every service's default dependencies name, and the script's service.
pub(super) const SYSTEMD_UNITS: [(&str, &str); 5] = [
    ("sysinit.target", "[Unit]\nDescription=sat: system initialization\n"),
    ("basic.target", "[Unit]\nDescription=sat: basic system\nRequires=sysinit.target\nAfter=sysinit.target\n"),
    ("shutdown.target", "[Unit]\nDescription=sat: shutdown\nDefaultDependencies=no\n"),
    ("sat.target", "[Unit]\nDescription=sat: the test\nRequires=sat-test.service\nAfter=sat-test.service\n"),
    (
        "sat-test.service",
        "[Unit]\nDescription=sat: the test script\n\n[Service]\nType=oneshot\nTimeoutStartSec=infinity\n\
         ExecStart=/bin/sh -c 'cd /tmp; . /sat/lib.sh; . /sat/test.sh; echo SAT-END >>/dev/ttyS1'\n\
         StandardOutput=file:/dev/console\nStandardError=inherit\n",
    ),
];

/// `/init`: mounts, runs `/sat/test.sh` with the helpers, reports the end.
pub(super) const INIT: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
stty -F /dev/ttyS1 raw -echo
cd /tmp
. /sat/lib.sh
. /sat/test.sh
echo SAT-END >>/dev/ttyS1
# The host stops the VM once it has read the end marker; this is only the fallback.
sleep 600
poweroff -f
"#;

/// The helpers every test script can use.
pub(super) const LIB: &str = r#"# run NAME CMD...: runs CMD (stdin /dev/null); its exit status, stdout and stderr go to the host.
run() {
  sat_name=$1; shift
  "$@" </dev/null >/tmp/.sat.out 2>/tmp/.sat.err
  sat_rc=$?
  { echo "SAT-RUN $sat_name $sat_rc"; base64 -w0 /tmp/.sat.out; echo; base64 -w0 /tmp/.sat.err; echo; } >>/dev/ttyS1
  echo "== $sat_name: exit $sat_rc"
  tail -n 3 /tmp/.sat.err
  return 0
}
# bring FILE...: sends each file to the host (a missing file arrives as missing).
bring() {
  for sat_f in "$@"; do
    [ -f "$sat_f" ] || continue
    { echo "SAT-FILE $sat_f"; base64 -w0 "$sat_f"; echo; } >>/dev/ttyS1
  done
}
# wait_for SECONDS TEST-ARGS...: polls `test TEST-ARGS` every 50 ms; fails after SECONDS.
wait_for() {
  sat_n=$(( $1 * 20 )); shift
  while ! test "$@"; do
    sat_n=$(( sat_n - 1 ))
    [ "$sat_n" -gt 0 ] || return 1
    usleep 50000
  done
}
# wait_log FILE TEXT SECONDS: polls until FILE contains TEXT; fails after SECONDS.
wait_log() {
  sat_n=$(( $3 * 20 ))
  while ! grep -q "$2" "$1" 2>/dev/null; do
    sat_n=$(( sat_n - 1 ))
    [ "$sat_n" -gt 0 ] || return 1
    usleep 50000
  done
}
"#;

/// A `newc` cpio archive, built in memory (no root needed for device nodes).
#[derive(Default)]
pub(super) struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    pub(super) fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let fields = [self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    pub(super) fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    pub(super) fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[], (0, 0));
    }

    pub(super) fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | mode, data, (0, 0));
    }

    pub(super) fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120_777, target.as_bytes(), (0, 0));
    }

    pub(super) fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, &[], (major, minor));
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.out
    }
}

/// The libraries `ldd` lists for `path`, with the paths the dynamic loader will look for.
pub(super) fn libraries(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(path).output().context("running ldd")?;
    if !out.status.success() {
        bail!("ldd {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let lib = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
            libs.push(PathBuf::from(lib));
        }
    }
    Ok(libs)
}

/// The binary without its debug sections (the guest's RAM holds the whole image).
pub(super) fn stripped(path: &Path) -> anyhow::Result<Vec<u8>> {
    let tmp = tempfile::NamedTempFile::new()?;
    let ok = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(path)
        .arg(tmp.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    Ok(std::fs::read(if ok { tmp.path() } else { path })?)
}

/// The guest image shared by every boot of this process (about 60 MB uncompressed), and the libraries it holds.
pub(super) fn base_image() -> anyhow::Result<Arc<BaseImage>> {
    static IMAGE: OnceLock<Result<Arc<BaseImage>, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| build_base_image().map(Arc::new).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("building the VM image: {e}"))
}

pub(super) struct BaseImage {
    pub(super) cpio: Vec<u8>,
    libs: std::collections::BTreeSet<PathBuf>,
}

/// The directories the base image creates (`LIB_DIR` last).
pub(super) const BASE_DIRS: &str = "bin dev proc sys tmp run root etc usr usr/bin lib lib64 lib/x86_64-linux-gnu";

pub(super) fn build_base_image() -> anyhow::Result<BaseImage> {
    let mut cpio = Cpio::default();
    for d in BASE_DIRS.split_whitespace() {
        cpio.dir(d);
    }
    // The kernel opens /dev/console for /init before devtmpfs is mounted.
    cpio.char_device("dev/console", 5, 1);
    cpio.file("bin/busybox", 0o755, &std::fs::read("/bin/busybox").context("reading /bin/busybox")?);
    cpio.symlink("bin/sh", "busybox");
    cpio.file("init", 0o755, INIT.as_bytes());
    let mut programs = Vec::new();
    for name in GUEST_BINS {
        programs.push((bin_path(name)?, format!("usr/bin/{name}")));
    }
    programs.push((PathBuf::from("/usr/bin/tpm2"), "usr/bin/tpm2".into()));
    let mut libs = std::collections::BTreeSet::new();
    for (path, dest) in &programs {
        cpio.file(dest, 0o755, &stripped(path)?);
        libs.extend(libraries(path)?);
    }
    for tool in TPM2_TOOLS {
        cpio.symlink(&format!("usr/bin/{tool}"), "tpm2");
    }
    for name in TCTI_LIBS {
        let path = Path::new(LIB_DIR).join(name);
        if !path.exists() {
            bail!("{} is missing (apt-get install libtss2-dev)", path.display());
        }
        libs.extend(libraries(&path)?);
        libs.insert(path);
    }
    for lib in &libs {
        let name = lib.display().to_string();
        let data = std::fs::read(lib).with_context(|| format!("reading {name}"))?;
        cpio.file(&name, 0o755, &data);
    }
    Ok(BaseImage { cpio: cpio.finish(), libs })
}

/// The layer a systemd boot adds on top of the base image: systemd, systemctl, systemd-sysusers and
/// systemd-tmpfiles, curl, the verifier and signer-http, their libraries, the units of [`SYSTEMD_UNITS`], and
/// the users Debian's tpm-udev creates (the group tss owns `/dev/tpmrm0` there).
pub(super) fn systemd_layer() -> anyhow::Result<Arc<Vec<u8>>> {
    static LAYER: OnceLock<Result<Arc<Vec<u8>>, String>> = OnceLock::new();
    LAYER
        .get_or_init(|| build_systemd_layer().map(Arc::new).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("building the VM's systemd layer: {e}"))
}

pub(super) fn build_systemd_layer() -> anyhow::Result<Vec<u8>> {
    let base = base_image()?;
    let mut layer = Layer::new(BASE_DIRS.split_whitespace());
    let mut programs: Vec<(PathBuf, String)> =
        SYSTEMD_PROGRAMS.iter().map(|(host, guest)| (PathBuf::from(host), (*guest).to_owned())).collect();
    for name in SYSTEMD_BINS {
        programs.push((bin_path(name)?, format!("usr/bin/{name}")));
    }
    let mut libs = std::collections::BTreeSet::new();
    for (path, dest) in &programs {
        let data =
            stripped(path).with_context(|| format!("reading {} (apt-get install systemd curl)", path.display()))?;
        layer.file(dest, 0o755, &data);
        libs.extend(libraries(path)?);
    }
    for lib in libs.difference(&base.libs) {
        let name = lib.display().to_string();
        layer.file(&name, 0o755, &std::fs::read(lib).with_context(|| format!("reading {name}"))?);
    }
    layer.file("init-systemd", 0o755, INIT_SYSTEMD.as_bytes());
    layer.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\ntss:x:109:109:TPM software stack:/var/lib/tpm:/bin/false\n",
    );
    layer.file("etc/group", 0o644, b"root:x:0:\ntss:x:109:\n");
    layer.file("etc/os-release", 0o644, b"NAME=sat\nID=sat\n");
    // Name resolution as on a Debian host: the daemons resolve `localhost` through glibc's NSS.
    layer.file("etc/hosts", 0o644, b"127.0.0.1 localhost\n::1 localhost\n");
    layer.file("etc/nsswitch.conf", 0o644, b"passwd: files\ngroup: files\nhosts: files dns\n");
    layer.file("etc/machine-id", 0o444, b"5a7c0de1b0075a7c0de1b0075a7c0de1\n");
    for (name, text) in SYSTEMD_UNITS {
        layer.file(&format!("etc/systemd/system/{name}"), 0o644, text.as_bytes());
    }
    for d in ["var/lib", "srv", "usr/sbin"] {
        layer.dirs(d);
    }
    layer.symlink("var/run", "../run");
    Ok(layer.cpio.finish())
}

/// A cpio archive whose entries get their parent directories first (the kernel's unpacker creates none).
pub(super) struct Layer {
    cpio: Cpio,
    dirs: std::collections::BTreeSet<String>,
}

impl Layer {
    fn new<'a>(existing: impl Iterator<Item = &'a str>) -> Layer {
        Layer { cpio: Cpio::default(), dirs: existing.map(str::to_owned).collect() }
    }

    fn dirs(&mut self, path: &str) {
        let path = path.trim_start_matches('/');
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if self.dirs.insert(at.clone()) {
                self.cpio.dir(&at);
            }
        }
    }

    fn parents(&mut self, path: &str) {
        if let Some((parent, _)) = path.trim_start_matches('/').rsplit_once('/') {
            self.dirs(parent);
        }
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.parents(path);
        self.cpio.file(path, mode, data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.cpio.symlink(path, target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_creates_each_missing_parent_once_before_its_entries() {
        let mut layer = Layer::new(["usr"].into_iter());
        layer.file("/usr/lib/x/libs.so", 0o755, b"1");
        layer.file("usr/lib/x/other.so", 0o755, b"2");
        layer.symlink("var/run", "../run");
        let out = layer.cpio.finish();
        let names: Vec<String> = out
            .windows(6)
            .enumerate()
            .filter(|(_, w)| *w == b"070701")
            .map(|(at, _)| {
                let name = &out[at + 110..];
                String::from_utf8_lossy(&name[..name.iter().position(|b| *b == 0).unwrap()]).into_owned()
            })
            .collect();
        assert_eq!(
            names,
            ["usr/lib", "usr/lib/x", "usr/lib/x/libs.so", "usr/lib/x/other.so", "var", "var/run", "TRAILER!!!"]
        );
    }

    #[test]
    fn cpio_entries_are_aligned_and_end_with_the_trailer() {
        let mut c = Cpio::default();
        c.dir("a");
        c.file("a/b", 0o644, b"xyz");
        c.symlink("a/c", "b");
        let out = c.finish();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
        // The file's size field (7th) is 3.
        let second = out.windows(6).enumerate().filter(|(_, w)| *w == b"070701").nth(1).unwrap().0;
        assert_eq!(&out[second + 6 + 6 * 8..second + 6 + 7 * 8], b"00000003");
    }
}
