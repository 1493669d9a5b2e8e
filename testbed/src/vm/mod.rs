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
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;

mod image;

pub use image::GUEST_BINS;
use image::{base_image, systemd_layer, Cpio, LIB};

/// What runs as PID 1 in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// busybox: `/init` runs the script itself.
    Shell,
    /// Debian's systemd: the script runs as `sat-test.service`, with `systemctl` and the project's units at hand.
    Systemd,
}

/// How long one boot may take, script included, before the VM is killed.
const BOOT_DEADLINE: Duration = Duration::from_secs(240);

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
        if crate::wait::wait_until("exit on SIGTERM", grace, || Ok(child.try_wait()?)).is_ok() {
            return;
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
    crate::wait::wait_for(format!("swtpm to create {}", ctrl.display()), Duration::from_secs(10), || {
        if let Some(status) = swtpm.exited() {
            bail!("swtpm exited ({status}): {}", std::fs::read_to_string(dir.join("swtpm.err")).unwrap_or_default());
        }
        Ok(ctrl.exists())
    })?;

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
}
