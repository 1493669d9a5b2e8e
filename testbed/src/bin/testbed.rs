//! `make testbed`: runs the scenarios on swtpm TPMs, real daemons, nginx and the real SPIRE, printing each step.

type Scenario = fn(testbed::single::Report<'_>) -> anyhow::Result<()>;

fn main() {
    let scenarios: [(&str, Scenario); 9] = [
        ("Single SPIRE server: primary TPM + offline backup TPM", testbed::single::run),
        ("SPIRE HA: servers a and b co-sign each other's bundles; shared offline backup TPM c", testbed::ha::run),
        (
            "Trust that heals itself: the lost primary replaced by a signed keyset update; HA moved to 2 of 3",
            testbed::heal::run,
        ),
        ("tpm_devid: the agent proves its DevID lives in a genuine TPM", testbed::devid_scenario::run),
        (
            "The real SPIRE v1.13.3: an agent bootstraps through the verifier; forged token; CA rotation; TPM lost",
            testbed::real_spire::single,
        ),
        ("The real SPIRE: tpm_devid between our plugins and SPIRE's own, RSA and ECC", testbed::real_spire::devid),
        ("The real SPIRE: a node powered down too long heals itself", testbed::real_spire::powered_down),
        (
            "The real SPIRE: a fleet enrolls itself (the enrollment CA, tokens, the inventory, revocation)",
            testbed::fleet::run,
        ),
        ("The real SPIRE: keys in the TPM (KeyManager \"tpm\" on the server and the agent)", testbed::keys_in_tpm::run),
    ];
    for (title, scenario) in scenarios {
        println!("\n== {title}");
        let mut step = 0;
        let mut report = |line: &str| {
            if line.starts_with("  ") {
                println!("     {}", line.trim_start());
            } else {
                step += 1;
                println!("{step:>3}. {line}");
            }
        };
        if let Err(e) = scenario(&mut report) {
            eprintln!("FAILED: {e:#}");
            std::process::exit(1);
        }
    }
    println!("\n== all scenarios passed");
}
