//! End to end, HA: three swtpm, two signer-unix + signer-http pairs, two nginx, one verifier with two keysets;
//! the same scenario `make testbed` prints.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::panic)]

#[test]
fn ha_chain_scenario() {
    let mut steps = Vec::new();
    if let Err(e) = testbed::ha::run(&mut |s: &str| steps.push(s.to_owned())) {
        panic!("scenario failed: {e:#}\nsteps:\n{}", steps.join("\n"));
    }
    // The scenario checks each step itself; this checks it ran to its end (the backup step is near it).
    assert!(steps.iter().any(|s| s.contains("c stood in for b")), "the backup step did not run: {steps:?}");
    assert_eq!(steps.last().map(String::as_str), Some("SPIRE unloads the plugins: Deinit, Shutdown, both exit 0."));
}
