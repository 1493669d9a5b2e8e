//! End to end with the real SPIRE v1.13.3 (built once per machine by `ci/spire.sh`): spire-server loads our
//! plugins, spire-agent bootstraps through our verifier; swtpm TPMs, the real daemons and nginx. The same
//! scenarios `make testbed` prints. Every test's name starts with `real_spire_`: `ci/test.sh` runs them as a lane
//! of their own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

fn run(scenario: fn(testbed::single::Report<'_>) -> anyhow::Result<()>) -> Vec<String> {
    let mut steps = Vec::new();
    let result = scenario(&mut |s: &str| steps.push(s.to_owned()));
    if let Err(e) = result {
        panic!("scenario failed: {e:#}\nsteps:\n{}", steps.join("\n"));
    }
    println!("{}", steps.join("\n"));
    steps
}

/// (a) bootstrap, PEM and SPIFFE; (b) forged token; (c) CA rotation; (d) primary TPM lost.
#[test]
fn real_spire_one_server_bootstrap_forgery_rotation_and_tpm_loss() {
    let steps = run(testbed::real_spire::single);
    assert!(steps.iter().any(|s| s.starts_with("(d)")), "the scenario stopped before (d)");
}

/// (f) tpm_devid against SPIRE's built-in plugins, RSA and ECC.
#[test]
fn real_spire_tpm_devid_against_spires_own_plugins() {
    let steps = run(testbed::real_spire::devid);
    assert_eq!(steps.iter().filter(|s| s.contains("-> our server plugin")).count(), 4, "{steps:?}");
    assert!(steps.iter().any(|s| s.contains("refuses it")), "the forgery step did not run");
}

/// (g) A node powered down too long re-bootstraps with nothing changed on it.
#[test]
fn real_spire_node_powered_down_too_long_rebootstraps() {
    let steps = run(testbed::real_spire::powered_down);
    assert!(steps.iter().any(|s| s.contains("serving SVIDs again")), "{steps:?}");
}

/// (h) A fleet enrolls itself: three nodes enroll with the CA and attest; one is revoked and refused.
#[test]
fn real_spire_fleet_enrolls_itself() {
    let steps = run(testbed::fleet::run);
    assert_eq!(steps.iter().filter(|s| s.contains("admitted: spiffe://")).count(), 3, "{steps:?}");
    assert!(steps.iter().any(|s| s.contains("is refused")), "{steps:?}");
}

/// (e) Two spire-servers co-signing each other's bundles; one agent per side.
#[test]
fn real_spire_ha_two_servers_cosign_and_both_sides_bootstrap() {
    let steps = run(testbed::real_spire::ha);
    assert_eq!(steps.iter().filter(|s| s.contains("whose chain verifies")).count(), 2, "{steps:?}");
}

/// spire-server refuses to start on a wrong plugin checksum and on bad plugin_data, naming the cause.
#[test]
fn real_spire_refuses_bad_plugin_configs_at_start() {
    let rows = testbed::real_spire::refused_configs().unwrap();
    for (case, line) in &rows {
        println!("{case}: {line}");
    }
    assert_eq!(rows.len(), 4);
}

/// (i) Keys in the TPM: the server's CA and JWT keys and the agent's SVID key made in TPMs, in no file.
#[test]
fn real_spire_keys_in_the_tpm() {
    let steps = run(testbed::keys_in_tpm::run);
    for step in ["CA rotation", "cleared under the running agent", "cleared while it was down"] {
        assert!(steps.iter().any(|s| s.contains(step)), "no step {step:?}: {steps:?}");
    }
}
