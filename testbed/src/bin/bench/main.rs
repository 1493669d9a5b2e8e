//! `make bench`: the performance targets, measured on this machine against its own baselines (raw TPM sign on
//! the same swtpm, `openssl speed`). Prints figures and ratios; asserts nothing about time.

mod cpu;
mod devid;
mod enrollment;
mod ha;
mod keymanager;
mod signer;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use testbed::process::bin_path;
use testbed::swtpm::Swtpm;

fn main() -> anyhow::Result<()> {
    common::logging::quiet_tss_logging();
    let examples = bin_path("spire-server-attestor-tpm-signer-unix")?.parent().context("bin dir")?.join("examples");
    // `bench enrollment` or `bench devid`: that section alone (the others take minutes).
    match std::env::args().nth(1).as_deref() {
        Some("enrollment") => return enrollment::enrollment_bench(&examples),
        Some("devid") => return devid::devid_bench(),
        Some("keymanager") => return keymanager::keymanager_bench(&examples),
        _ => {}
    }
    signer::signer_bench(&examples)?;
    ha::ha_bench(&examples)?;
    ha::update_bench()?;
    devid::devid_bench()?;
    enrollment::enrollment_bench(&examples)?;
    keymanager::keymanager_bench(&examples)?;
    signer::spire_bootstrap_bench()
}

/// A duration in milliseconds, for printing.
fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Runs `cmd` to its end: its stdout, or an error with its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// openssl's RSA-2048 and P-256 verify times, in microseconds.
fn openssl_verify_us() -> anyhow::Result<(f64, f64)> {
    let text = run(Command::new("openssl")
        .args(["speed", "-seconds", "2", "rsa2048", "ecdsap256"])
        .stderr(std::process::Stdio::null()))?;
    let rate = |prefix: &str| -> anyhow::Result<f64> {
        let line =
            text.lines().find(|l| l.trim_start().starts_with(prefix)).with_context(|| format!("no {prefix} line"))?;
        let per_s: f64 = line.split_whitespace().last().context("empty line")?.parse()?;
        Ok(1e6 / per_s)
    };
    Ok((rate("rsa 2048 bits")?, rate("256 bits ecdsa (nistp256)")?))
}

/// Pulls `name <number> us` style figures out of an example's output.
fn figure(text: &str, line_has: &str, after: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains(line_has))?;
    let rest = &line[line.find(after)? + after.len()..];
    rest.split_whitespace().next()?.trim_end_matches(',').parse().ok()
}

/// Median of a sample.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The raw tss-esapi TPM2_Sign p50 (ms) of the key at `handle` on `tpm`, over `n` signatures (`sign_bench`).
fn raw_sign_ms(examples: &Path, tpm: &Swtpm, handle: &str, n: usize) -> anyhow::Result<f64> {
    let out = run(Command::new(examples.join("sign_bench")).args([
        tpm.device().to_string().as_str(),
        handle,
        n.to_string().as_str(),
    ]))?;
    figure(&out, "raw", "raw p50").context("sign_bench printed no raw p50")
}
