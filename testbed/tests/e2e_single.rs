//! End to end, single server: real binaries, two swtpm, nginx; the same scenario `make testbed` prints.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn single_server_primary_backup_scenario() {
    let mut steps = Vec::new();
    let result = testbed::single::run(&mut |s: &str| steps.push(s.to_owned()));
    if let Err(e) = result {
        panic!("scenario failed: {e:#}\nsteps:\n{}", steps.join("\n"));
    }
    // The scenario checks each step itself; this checks it ran to its end.
    assert!(steps.last().is_some_and(|s| s.starts_with("  after the token's exp: 503")), "{steps:?}");
}
