//! A small VM with a real `/dev/tpmrm0` and `/dev/tpm0`: the Debian kernel's own TPM drivers and in-kernel
//! resource manager, in front of a swtpm reached through QEMU's TPM emulator backend. Software emulation (TCG);
//! no network, no disk, nothing downloaded: the guest is an initramfs made here from the host's own build
//! (busybox-static, the project's binaries, tpm2-tools, and the libraries `ldd` names for them, plus the TCTI
//! libraries libtss2 opens at run time).
//!
//! A boot runs one shell script inside the guest. Its helpers (`run NAME CMD...`, `bring FILE...`) send each
//! command's exit status, stdout and stderr, and the files the test wants, to the host on the second serial
//! port, base64 per line; the host waits for the script's end marker, then stops QEMU and its swtpm by PID.
//! The TPM state outlives a boot, so booting again on it is a power cycle.
//!
//! [`Init::Systemd`] boots Debian's systemd as PID 1 instead (from the same initramfs, plus a layer with systemd,
//! curl and the remaining daemons): the script then runs as a oneshot service and can start the units the
//! packages ship, under their sandboxing, as production does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;

use crate::process::bin_path;

/// The project's binaries the guest runs.
pub const GUEST_BINS: [&str; 3] =
    ["spire-server-attestor-tpm-signer-unix", "spire-server-attestor-tpm-sign", "spire-server-attestor-tpm-devid"];

/// The tpm2-tools commands the guest has (all are links to Debian's multi-call `tpm2`).
const TPM2_TOOLS: [&str; 7] = [
    "tpm2_readpublic",
    "tpm2_getcap",
    "tpm2_changeauth",
    "tpm2_evictcontrol",
    "tpm2_startup",
    "tpm2_clear",
    "tpm2_createprimary",
];

/// Libraries libtss2's TCTI loader opens by name at run time (`ldd` does not list them).
const TCTI_LIBS: [&str; 2] = ["libtss2-tctildr.so.0", "libtss2-tcti-device.so.0"];

/// Where Debian's multiarch libraries are.
const LIB_DIR: &str = "/lib/x86_64-linux-gnu";

/// What runs as PID 1 in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// busybox: `/init` runs the script itself.
    Shell,
    /// Debian's systemd: the script runs as `sat-test.service`, with `systemctl` and the project's units at hand.
    Systemd,
}

/// Host programs the systemd layer adds: (host path, guest path).
const SYSTEMD_PROGRAMS: [(&str, &str); 5] = [
    ("/lib/systemd/systemd", "lib/systemd/systemd"),
    ("/usr/bin/systemctl", "usr/bin/systemctl"),
    ("/usr/bin/systemd-sysusers", "usr/bin/systemd-sysusers"),
    ("/usr/bin/systemd-tmpfiles", "usr/bin/systemd-tmpfiles"),
    ("/usr/bin/curl", "usr/bin/curl"),
];

/// The project's daemons only the systemd layer carries (the base image has the rest).
const SYSTEMD_BINS: [&str; 2] = ["spire-server-attestor-tpm-verifier", "spire-server-attestor-tpm-signer-http"];

/// `rdinit` of a systemd boot: the API file systems, the result port, then systemd as PID 1.
const INIT_SYSTEMD: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
stty -F /dev/ttyS1 raw -echo
exec /lib/systemd/systemd --unit=sat.target
"#;

/// The units of a systemd boot: the targets every service's default dependencies name, and the script's service.
const SYSTEMD_UNITS: [(&str, &str); 5] = [
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

/// How long one boot may take, script included, before the VM is killed.
const BOOT_DEADLINE: Duration = Duration::from_secs(240);

/// `/init`: mounts, runs `/sat/test.sh` with the helpers, reports the end.
const INIT: &str = r#"#!/bin/sh
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
const LIB: &str = r#"# run NAME CMD...: runs CMD (stdin /dev/null); its exit status, stdout and stderr go to the host.
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

/// The Debian packages this machine lacks for a VM boot, if any (`ci/install-deps.sh test` installs them).
pub fn missing_parts() -> Option<String> {
    let mut missing = Vec::new();
    if which("qemu-system-x86_64").is_none() {
        missing.push("qemu-system-x86");
    }
    if kernel().is_err() {
        missing.push("linux-image-amd64");
    }
    if !Path::new("/bin/busybox").is_file() || !is_static("/bin/busybox") {
        missing.push("busybox-static");
    }
    // The systemd boot's PID 1 and its HTTP client.
    for (path, package) in [("/lib/systemd/systemd", "systemd"), ("/usr/bin/curl", "curl")] {
        if !Path::new(path).is_file() {
            missing.push(package);
        }
    }
    (!missing.is_empty()).then(|| missing.join(" "))
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.is_file())
}

fn is_static(path: &str) -> bool {
    Command::new("ldd").arg(path).output().map(|o| !o.status.success()).unwrap_or(false)
}

/// The newest installed kernel image (`/boot/vmlinuz-*`).
fn kernel() -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .context("reading /boot")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
        .collect();
    found.sort();
    found.pop().context("no /boot/vmlinuz-* (apt-get install linux-image-amd64)")
}

/// A `newc` cpio archive, built in memory (no root needed for device nodes).
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
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

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[], (0, 0));
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | mode, data, (0, 0));
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120_777, target.as_bytes(), (0, 0));
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, &[], (major, minor));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.out
    }
}

/// The libraries `ldd` lists for `path`, with the paths the dynamic loader will look for.
fn libraries(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
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
fn stripped(path: &Path) -> anyhow::Result<Vec<u8>> {
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
fn base_image() -> anyhow::Result<Arc<BaseImage>> {
    static IMAGE: OnceLock<Result<Arc<BaseImage>, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| build_base_image().map(Arc::new).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("building the VM image: {e}"))
}

struct BaseImage {
    cpio: Vec<u8>,
    libs: std::collections::BTreeSet<PathBuf>,
}

/// The directories the base image creates (`LIB_DIR` last).
const BASE_DIRS: &str = "bin dev proc sys tmp run root etc usr usr/bin lib lib64 lib/x86_64-linux-gnu";

fn build_base_image() -> anyhow::Result<BaseImage> {
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
fn systemd_layer() -> anyhow::Result<Arc<Vec<u8>>> {
    static LAYER: OnceLock<Result<Arc<Vec<u8>>, String>> = OnceLock::new();
    LAYER
        .get_or_init(|| build_systemd_layer().map(Arc::new).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("building the VM's systemd layer: {e}"))
}

fn build_systemd_layer() -> anyhow::Result<Vec<u8>> {
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
struct Layer {
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

/// A TPM state for VM boots; it outlives each boot (a boot is a power cycle of the machine, not of the TPM).
#[derive(Debug)]
pub struct VmTpm {
    /// Kept for its lifetime: the state is deleted with it.
    _dir: tempfile::TempDir,
    state: PathBuf,
    ek_ca: Option<PathBuf>,
}

impl VmTpm {
    /// A blank TPM (no EK certificate, no keys).
    pub fn blank() -> anyhow::Result<VmTpm> {
        let dir = crate::spire::short_dir("vmtpm")?;
        let state = dir.path().join("tpm");
        std::fs::create_dir_all(&state)?;
        Ok(VmTpm { _dir: dir, state, ek_ca: None })
    }

    /// A TPM manufactured by `swtpm_setup` with EK certificates ([`crate::swtpm::manufacture`]).
    pub fn manufactured() -> anyhow::Result<VmTpm> {
        let dir = crate::spire::short_dir("vmtpm")?;
        let chain = crate::swtpm::manufacture(dir.path())?;
        Ok(VmTpm { state: dir.path().join("tpm"), _dir: dir, ek_ca: Some(chain) })
    }

    /// The EK certificate CA chain of a manufactured TPM.
    pub fn ek_ca(&self) -> Option<&Path> {
        self.ek_ca.as_deref()
    }
}

/// One command's result, as the guest reported it.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// Exit status.
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// What one boot brought back.
#[derive(Debug)]
pub struct Boot {
    runs: Vec<(String, GuestRun)>,
    files: BTreeMap<String, Vec<u8>>,
    console: String,
    /// Wall time from starting swtpm to the end marker.
    pub wall: Duration,
}

impl Boot {
    /// The result of `run NAME ...` (the last one of that name).
    pub fn run(&self, name: &str) -> anyhow::Result<&GuestRun> {
        self.runs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r)
            .with_context(|| format!("the guest did not run {name:?}; console:\n{}", self.console_tail()))
    }

    /// The result of `run NAME ...`, which must have exited 0.
    pub fn ok(&self, name: &str) -> anyhow::Result<&GuestRun> {
        let r = self.run(name)?;
        if r.status != 0 {
            bail!("{name} exited {} in the guest:\nstdout: {}\nstderr: {}", r.status, r.stdout, r.stderr);
        }
        Ok(r)
    }

    /// A file the script brought back with `bring`.
    pub fn file(&self, path: &str) -> anyhow::Result<&[u8]> {
        self.files.get(path).map(Vec::as_slice).with_context(|| {
            format!("the guest did not bring {path}; it brought {:?}", self.files.keys().collect::<Vec<_>>())
        })
    }

    /// A brought-back file as text.
    pub fn text(&self, path: &str) -> anyhow::Result<String> {
        Ok(String::from_utf8_lossy(self.file(path)?).into_owned())
    }

    /// The guest's console (kernel messages and the script's own output).
    pub fn console(&self) -> &str {
        &self.console
    }

    fn console_tail(&self) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// A process the boot started, killed by PID when dropped.
struct Owned(Option<Child>);

impl Owned {
    fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.0.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Boots the VM on `tpm`, runs `script` (busybox sh, with the helpers) with `files` under `/sat/`, and returns
/// what it reported. QEMU and swtpm are stopped by PID on every path.
pub fn boot(tpm: &VmTpm, script: &str, files: &[(&str, &[u8])]) -> anyhow::Result<Boot> {
    boot_with(Init::Shell, tpm, script, files)
}

/// [`boot`] with the given PID 1: under [`Init::Systemd`] the script runs as a service of Debian's systemd.
pub fn boot_with(init: Init, tpm: &VmTpm, script: &str, files: &[(&str, &[u8])]) -> anyhow::Result<Boot> {
    if let Some(missing) = missing_parts() {
        bail!("the VM needs the packages {missing} (`ci/install-deps.sh test` installs them)");
    }
    let started = Instant::now();
    let base = base_image()?;
    let run = crate::spire::short_dir("vm")?;
    let dir = run.path();
    // The kernel unpacks concatenated archives in order: the shared image, then this boot's script and files.
    let mut extra = Cpio::default();
    extra.dir("sat");
    extra.file("sat/lib.sh", 0o644, LIB.as_bytes());
    extra.file("sat/test.sh", 0o644, script.as_bytes());
    for (name, data) in files {
        extra.file(&format!("sat/{name}"), 0o644, data);
    }
    let initrd = dir.join("initrd.cpio");
    let mut image = Vec::with_capacity(base.cpio.len() + 4096);
    image.extend_from_slice(&base.cpio);
    if init == Init::Systemd {
        image.extend_from_slice(&systemd_layer()?);
    }
    image.extend_from_slice(&extra.finish());
    std::fs::write(&initrd, image)?;

    let ctrl = dir.join("ctrl.sock");
    let mut swtpm = Owned(Some(
        Command::new("swtpm")
            .args(["socket", "--tpm2"])
            .args(["--tpmstate", &format!("dir={}", tpm.state.display())])
            .args(["--ctrl", &format!("type=unixio,path={}", ctrl.display())])
            .args(["--log", &format!("file={},level=1", dir.join("swtpm.log").display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("swtpm.err"))?)
            .spawn()
            .context("starting swtpm")?,
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctrl.exists() {
        if let Some(status) = swtpm.exited() {
            bail!("swtpm exited ({status}): {}", std::fs::read_to_string(dir.join("swtpm.err")).unwrap_or_default());
        }
        if Instant::now() > deadline {
            bail!("swtpm did not create {} within 10 s", ctrl.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    let console = dir.join("console.log");
    let results = dir.join("results.log");
    let kernel = kernel()?;
    let mut qemu = Owned(Some(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-cpu", "max", "-m", "768", "-smp", "1", "-nodefaults", "-display", "none"])
            .args(["-no-reboot", "-kernel"])
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(match init {
                Init::Shell => "console=ttyS0 quiet panic=-1",
                Init::Systemd => "console=ttyS0 quiet panic=-1 rdinit=/init-systemd",
            })
            .args(["-serial", &format!("file:{}", console.display())])
            .args(["-serial", &format!("file:{}", results.display())])
            .args(["-chardev", &format!("socket,id=chrtpm,path={}", ctrl.display())])
            .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("qemu.err"))?)
            .spawn()
            .context("starting qemu-system-x86_64")?,
    ));

    let deadline = started + BOOT_DEADLINE;
    let report = loop {
        let text = std::fs::read_to_string(&results).unwrap_or_default();
        if text.lines().any(|l| l.trim_end_matches('\r') == "SAT-END") {
            break text;
        }
        let failure = if let Some(status) = qemu.exited() {
            Some(format!("QEMU exited ({status}) before the script ended"))
        } else if Instant::now() > deadline {
            Some(format!("the guest did not finish within {} s", BOOT_DEADLINE.as_secs()))
        } else {
            None
        };
        if let Some(why) = failure {
            qemu.stop(Duration::from_secs(2));
            swtpm.stop(Duration::from_secs(2));
            let console = std::fs::read_to_string(&console).unwrap_or_default();
            let qemu_err = std::fs::read_to_string(dir.join("qemu.err")).unwrap_or_default();
            let tail: Vec<&str> = console.lines().collect();
            bail!("{why}\nqemu: {qemu_err}\nconsole (tail):\n{}", tail[tail.len().saturating_sub(60)..].join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = started.elapsed();
    // SIGTERM: QEMU closes the TPM's control channel and swtpm, with its state saved, exits by itself.
    qemu.stop(Duration::from_secs(10));
    swtpm.stop(Duration::from_secs(10));
    let console = std::fs::read_to_string(&console).unwrap_or_default();
    let (runs, files) = parse_report(&report)?;
    Ok(Boot { runs, files, console, wall })
}

type Report = (Vec<(String, GuestRun)>, BTreeMap<String, Vec<u8>>);

fn parse_report(text: &str) -> anyhow::Result<Report> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s.trim()).context("guest report: base64");
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let (mut runs, mut files) = (Vec::new(), BTreeMap::new());
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("SAT-RUN ") {
            let (name, status) = rest.rsplit_once(' ').context("guest report: SAT-RUN line")?;
            let status = status.parse().context("guest report: exit status")?;
            let stdout = String::from_utf8_lossy(&b64(lines.next().unwrap_or_default())?).into_owned();
            let stderr = String::from_utf8_lossy(&b64(lines.next().unwrap_or_default())?).into_owned();
            runs.push((name.to_owned(), GuestRun { status, stdout, stderr }));
        } else if let Some(path) = line.strip_prefix("SAT-FILE ") {
            files.insert(path.to_owned(), b64(lines.next().unwrap_or_default())?);
        }
    }
    Ok((runs, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parsing_table() {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "SAT-RUN a 0\r\n{}\r\n{}\r\nSAT-FILE /tmp/x\n{}\nSAT-RUN a b 3\n\n{}\nSAT-END\n",
            b("out"),
            b("err"),
            b("file"),
            b("e2")
        );
        let (runs, files) = parse_report(&text).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].0.as_str(), runs[0].1.status, runs[0].1.stdout.as_str()), ("a", 0, "out"));
        assert_eq!((runs[1].0.as_str(), runs[1].1.status, runs[1].1.stderr.as_str()), ("a b", 3, "e2"));
        assert_eq!(files["/tmp/x"], b"file");
        for bad in ["SAT-RUN a x\n\n\n", "SAT-RUN a 0\n!!\n\n", "SAT-FILE /x\n***\n"] {
            assert!(parse_report(bad).is_err(), "{bad:?}");
        }
    }

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
