//! `make testbed`: runs the scenarios on swtpm TPMs, real daemons and nginx, printing each step.

fn main() {
    let mut step = 0;
    let mut report = |line: &str| {
        if line.starts_with("  ") {
            println!("     {}", line.trim_start());
        } else {
            step += 1;
            println!("{step:>3}. {line}");
        }
    };
    println!("== Single SPIRE server: primary TPM + offline backup TPM");
    if let Err(e) = testbed::single::run(&mut report) {
        eprintln!("FAILED: {e:#}");
        std::process::exit(1);
    }
    println!("\n== SPIRE HA: servers a and b co-sign each other's bundles; shared offline backup TPM c");
    step = 0;
    let mut report = |line: &str| {
        if line.starts_with("  ") {
            println!("     {}", line.trim_start());
        } else {
            step += 1;
            println!("{step:>3}. {line}");
        }
    };
    if let Err(e) = testbed::ha::run(&mut report) {
        eprintln!("FAILED: {e:#}");
        std::process::exit(1);
    }
    println!("== all scenarios passed");
}
