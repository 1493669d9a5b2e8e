//! `tpm_devid` end to end: our agent NodeAttestor and our server NodeAttestor, each loaded over go-plugin by a
//! SPIRE-like host, relayed message by message on a swtpm with a real EK certificate chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use testbed::devid::{DevIdLab, LabOptions};
use testbed::host::{relay, PluginHost};

const AGENT: &str = "spire-agent-nodeattestor-tpm-devid";
const SERVER: &str = "spire-server-nodeattestor-tpm-devid";

fn load(lab: &DevIdLab) -> (PluginHost, PluginHost) {
    let agent = PluginHost::launch(AGENT, "NodeAttestor").unwrap();
    agent.init().unwrap();
    agent.configure(&lab.agent_hcl(), "example.org").unwrap();
    let server = PluginHost::launch(SERVER, "NodeAttestor").unwrap();
    server.init().unwrap();
    server.configure(&lab.server_hcl(), "example.org").unwrap();
    (agent, server)
}

fn round_trip(options: LabOptions) {
    let label = format!("{options:?}");
    let lab = DevIdLab::new(options).unwrap();
    let (agent, server) = load(&lab);
    let exchange = relay(&agent, &server).unwrap_or_else(|e| {
        panic!("{label}: {e}\nagent: {:?}\nserver: {:?}", agent.stderr_lines(), server.stderr_lines())
    });
    let a = &exchange.attributes;
    assert!(a.can_reattest, "{label}");
    assert!(a.spiffe_id.starts_with("spiffe://example.org/spire/agent/tpm_devid/"), "{label}: {}", a.spiffe_id);
    let fp = a.spiffe_id.rsplit('/').next().unwrap();
    assert_eq!(fp.len(), 40, "{label}");
    assert!(
        a.selector_values.contains(&"subject:cn:node-1.example.org".to_string()),
        "{label}: {:?}",
        a.selector_values
    );
    let issuer = if lab.options.intermediate { "devid-intermediate" } else { "devid-root" };
    assert!(a.selector_values.contains(&format!("issuer:cn:{issuer}")), "{label}: {:?}", a.selector_values);
    let cas = a.selector_values.iter().filter(|s| s.starts_with("ca:fingerprint:")).count();
    assert_eq!(cas, if lab.options.intermediate { 2 } else { 1 }, "{label}: {:?}", a.selector_values);
    assert_eq!(lab.tpm_leftovers().unwrap(), "", "{label}: objects or sessions left in the TPM");
    // SPIRE's agent opens a new stream for every re-attestation: a second one passes too.
    relay(&agent, &server).unwrap();
}

#[test]
fn rsa_devid_with_intermediate_attests() {
    round_trip(LabOptions::default());
}
