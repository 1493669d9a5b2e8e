//! End to end, signed keyset updates: real binaries, swtpm TPMs, nginx; the scenario `make testbed` prints.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn keyset_updates_replace_a_lost_tpm_and_move_ha_to_a_threshold() {
    let mut steps = Vec::new();
    let result = testbed::heal::run(&mut |s: &str| steps.push(s.to_owned()));
    if let Err(e) = result {
        panic!("scenario failed: {e:#}\nsteps:\n{}", steps.join("\n"));
    }
    println!("{}", steps.join("\n"));
    // The scenario checks each step itself; this checks it ran to its end.
    assert!(steps.last().is_some_and(|s| s.contains("must sign; signed by 1 (b.pem)")), "{steps:?}");
}
