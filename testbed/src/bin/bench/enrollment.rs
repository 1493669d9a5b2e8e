//! The enrollment CA: a node's `enroll` against its TPM commands, and the CA's rate against its TPM's.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use testbed::swtpm::Swtpm;

use crate::cpu::{cpu_by_command, cpu_ns, cpu_spent};
use crate::{figure, median, ms, raw_sign_ms};

/// The enrollment CA: a node's whole `enroll` against the TPM commands it runs, and the CA's enrollment rate with
/// 16 nodes at once against its own TPM's raw signature rate (one signature per certificate).
pub(crate) fn enrollment_bench(examples: &Path) -> anyhow::Result<()> {
    use testbed::devid_ca::{ek_hash_line, CaOptions, CaSite};
    println!("\n== enrollment CA: node wall time vs its TPM commands (target <= 1.2x); CA rate with 16 nodes vs raw TPM sign (target >= 0.8x)");
    const NODES: usize = 16;
    let tpms: Vec<Swtpm> = std::thread::scope(|s| {
        let started: Vec<_> = (0..NODES).map(|_| s.spawn(Swtpm::start)).collect();
        joined(started, "swtpm")
    })?;
    let mut inventory = String::new();
    for (i, tpm) in tpms.iter().enumerate() {
        inventory.push_str(&ek_hash_line(tpm, &format!("node-{i}"))?);
        inventory.push('\n');
    }
    // The node's side, against a CA with a P-256 key.
    {
        let ca = CaSite::start(&CaOptions { inventory: Some(inventory.clone()), ..CaOptions::default() })?;
        // One node: `devid enroll` as an operator runs it (a fresh DevID each time): its wall time, process start to
        // exit, against the time it reports spent in TPM commands (open, DevID create, EK, AK and certify, activation).
        let node = &tpms[0];
        let dir = tempfile::tempdir()?;
        let mut ratios = Vec::new();
        let (mut whole, mut in_tpm) = (Vec::new(), Vec::new());
        for round in 0..15 {
            let out = dir.path().join(format!("n{round}"));
            let t = Instant::now();
            let (code, said) = ca.enroll(node, &out, &["--key-type", "ecc-p256"])?;
            let wall = t.elapsed();
            anyhow::ensure!(code == 0, "enroll: {said}");
            let tpm_ms = figure(&said, "in TPM commands", "; ").context("enroll printed no TPM time")?;
            ratios.push(wall.as_secs_f64() * 1e3 / tpm_ms);
            whole.push(wall);
            in_tpm.push(Duration::from_secs_f64(tpm_ms / 1e3));
        }
        ratios.sort_by(|a, b| a.total_cmp(b));
        println!(
            "node: `devid enroll` wall p50 {}, in TPM commands p50 {}; ratio median {:.3}x, worst of 15 {:.3}x (target <= 1.2x)",
            ms(median(whole)),
            ms(median(in_tpm)),
            ratios[ratios.len() / 2],
            ratios[ratios.len() - 1]
        );
    }
    // The CA's rate: with the P-256 key (the target's row) and with RSA-2048, the other key type `provision`
    // makes, whose signature costs the TPM more.
    ca_rate(examples, &tpms, &inventory, "ecc-p256", "P-256")?;
    ca_rate(examples, &tpms, &inventory, "rsa2048", "RSA-2048")
}

/// The CA's enrollments per second with 16 nodes at once against its own TPM's raw signature rate, its key of
/// `key_type`.
pub(crate) fn ca_rate(
    examples: &Path,
    tpms: &[Swtpm],
    inventory: &str,
    key_type: &'static str,
    key_name: &str,
) -> anyhow::Result<()> {
    use crypto::devid::enroll::{EnrollAnswer, EnrollChallenge, EnrollRequest};
    use testbed::devid_ca::{CaOptions, CaSite, RawNode};
    const EACH: usize = 20;
    let options = CaOptions { inventory: Some(inventory.to_owned()), key_type: Some(key_type), ..CaOptions::default() };
    let mut ca = CaSite::start(&options)?;

    // The CA TPM's raw signature rate, with the CA stopped (one client per swtpm), before and after the timed
    // phases: this shared machine's speed drifts, and the CA's rate is compared with the faster of the two.
    let raw_ca_ms = |ca: &mut CaSite| -> anyhow::Result<f64> {
        ca.daemon()?.stop()?;
        let ms = raw_sign_ms(examples, &ca.tpm, "0x81008007", 200)?;
        ca.restart()?;
        Ok(ms)
    };
    let raw_before = raw_ca_ms(&mut ca)?;
    println!("CA key ({key_name}) raw TPM2_Sign p50 {raw_before:.3} ms: {:.1} signatures/s serially", 1e3 / raw_before);

    // 16 nodes, 20 enrollments each. The nodes' requests are made first; then, in four rounds of five per node,
    // the round's begins go to the CA 16 at a time (timed), the nodes' TPMs answer (not timed: that is the nodes'
    // work), and the round's answers go, 16 at a time (timed). The CA's rate is the enrollments over the timed
    // phases.
    let prepared: Vec<(RawNode, Vec<(EnrollRequest, tpm::attest::PendingAttestation)>)> = std::thread::scope(|s| {
        let made: Vec<_> = tpms
            .iter()
            .map(|tpm| {
                s.spawn(move || -> anyhow::Result<_> {
                    let raw = RawNode::new(tpm, tpm::KeyType::EccP256)?;
                    let requests = (0..EACH).map(|_| raw.request(None)).collect::<anyhow::Result<Vec<_>>>()?;
                    Ok((raw, requests))
                })
            })
            .collect();
        joined(made, "node")
    })?;
    let pid = ca.pid().context("the CA's PID")?;
    // The CA's command name as `comm` has it (15 bytes), swtpm and this bench.
    let commands = ["spire-server-at", "swtpm", "bench"];
    // In rounds of PER_ROUND sessions per node: the CA holds at most PER_EK open sessions for one EK.
    const PER_ROUND: usize = 5;
    const _: () = assert!(PER_ROUND <= services::devid_ca::PER_EK && EACH.is_multiple_of(PER_ROUND));
    let (mut t_begin, mut t_answer, mut cpu_begin, mut cpu_answer) = (Duration::ZERO, Duration::ZERO, 0, 0);
    let mut over_both = std::collections::BTreeMap::<String, u64>::new();
    let mut add_cpu = |from: &std::collections::BTreeMap<String, u64>, to: &std::collections::BTreeMap<String, u64>| {
        for (command, ns) in to {
            *over_both.entry(command.clone()).or_default() +=
                ns.saturating_sub(from.get(command).copied().unwrap_or(0));
        }
    };
    let mut n = 0;
    for round in 0..EACH / PER_ROUND {
        let range = round * PER_ROUND..(round + 1) * PER_ROUND;
        let requests: Vec<&EnrollRequest> =
            prepared.iter().flat_map(|(_, r)| r[range.clone()].iter().map(|(req, _)| req)).collect();
        let (all0, cpu0) = (cpu_by_command(&commands)?, cpu_ns(pid)?);
        let (t, challenges) = sixteen_at_a_time(&ca, "/v1/enroll", &requests)?;
        t_begin += t;
        cpu_begin += cpu_ns(pid)? - cpu0;
        add_cpu(&all0, &cpu_by_command(&commands)?);
        let challenges: Vec<EnrollChallenge> =
            challenges.iter().map(|c| serde_json::from_str(c)).collect::<Result<_, _>>()?;
        let answers: Vec<EnrollAnswer> = std::thread::scope(|s| {
            let mut next = challenges.iter();
            let answering: Vec<_> = prepared
                .iter()
                .map(|(raw, requests)| {
                    let pending = &requests[range.clone()];
                    let challenged: Vec<&EnrollChallenge> = next.by_ref().take(pending.len()).collect();
                    s.spawn(move || {
                        pending
                            .iter()
                            .zip(challenged)
                            .map(|((_, pending), c)| raw.answer(pending, c))
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            anyhow::Ok(joined(answering, "node")?.into_iter().flatten().collect())
        })?;
        let answers: Vec<&EnrollAnswer> = answers.iter().collect();
        let (all0, cpu0) = (cpu_by_command(&commands)?, cpu_ns(pid)?);
        let (t, _) = sixteen_at_a_time(&ca, "/v1/enroll/answer", &answers)?;
        t_answer += t;
        cpu_answer += cpu_ns(pid)? - cpu0;
        add_cpu(&all0, &cpu_by_command(&commands)?);
        n += answers.len();
    }
    let enrollments = n;
    let n = n as f64;
    let rate = n / (t_begin + t_answer).as_secs_f64();
    let raw_after = raw_ca_ms(&mut ca)?;
    let raw_ms = raw_before.min(raw_after);
    println!(
        "CA ({key_name}): {} enrollments, 16 at a time: begins {} + answers {} = {:.1} enrollments/s; raw TPM2_Sign p50 again after them {raw_after:.3} ms; ratio {:.2}x the faster raw rate, {:.1}/s (target >= 0.8x)",
        enrollments,
        ms(t_begin),
        ms(t_answer),
        rate,
        rate / (1e3 / raw_ms),
        1e3 / raw_ms
    );
    println!(
        "CA ({key_name}) CPU per enrollment: {:.3} ms (begin {:.3} + answer {:.3}, all threads; the TPM's own time is swtpm's, not counted); the 16 clients share the same 2 cores",
        (cpu_begin + cpu_answer) as f64 / n / 1e6,
        cpu_begin as f64 / n / 1e6,
        cpu_answer as f64 / n / 1e6
    );
    println!(
        "  CPU ms per enrollment, both timed phases: {}",
        cpu_spent(&std::collections::BTreeMap::new(), &over_both, enrollments)
    );
    Ok(())
}

/// POSTs every body in `bodies` to `path` from 16 clients at once, each request on a new TLS connection as a
/// node's are: the wall time and the answers (200s only), in order.
pub(crate) fn sixteen_at_a_time<T: serde::Serialize + Sync>(
    ca: &testbed::devid_ca::CaSite,
    path: &str,
    bodies: &[&T],
) -> anyhow::Result<(Duration, Vec<String>)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    let mut done: Vec<(usize, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<Vec<(usize, String)>> {
                    let mut mine = Vec::new();
                    let client = ca.client()?;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else { return Ok(mine) };
                        let (status, text) = client.post(path, body)?;
                        anyhow::ensure!(status == 200, "{path}: {status} {text}");
                        mine.push((i, text));
                    }
                })
            })
            .collect();
        anyhow::Ok(joined(workers, "client")?.into_iter().flatten().collect())
    })?;
    let elapsed = t.elapsed();
    done.sort_by_key(|(i, _)| *i);
    Ok((elapsed, done.into_iter().map(|(_, text)| text).collect()))
}

/// Every scoped thread's result, in order; a thread that panicked is an error naming `who` it was.
fn joined<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>>, who: &str) -> anyhow::Result<Vec<T>> {
    handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("{who} thread panicked"))?).collect()
}
