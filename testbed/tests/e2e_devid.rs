//! `tpm_devid` end to end: our agent NodeAttestor and our server NodeAttestor, each loaded over go-plugin by a
//! SPIRE-like host, relayed message by message on a swtpm with a real EK certificate chain, and on a virtual TPM
//! without an EK certificate that the server admits by its EK's hash.

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

/// The `ek:manufacturer`, `ek:model` and `ek:version` selectors are the TCG subjectAltName of the EK certificate
/// the agent sent (made by swtpm_localca), as openssl prints it; `ek:hash` is the EK's line from `devid ek-hash`.
#[test]
fn ek_selectors_are_what_the_ek_certificate_says_as_openssl_reads_it() {
    let lab = DevIdLab::new(LabOptions::default()).unwrap();
    let (agent, server) = load(&lab);
    let exchange = relay(&agent, &server).unwrap();
    let payload: crypto::devid::wire::AttestationRequest = serde_json::from_slice(&exchange.payload).unwrap();
    std::fs::write(lab.path("ek.der"), &payload.ek_cert).unwrap();
    let text =
        testbed::pki::openssl(&["x509", "-inform", "DER", "-noout", "-text", "-in", "ek.der"], lab.dir()).unwrap();
    // e.g. `DirName:/2.23.133.2.1=id:00001014/2.23.133.2.2=swtpm/2.23.133.2.3=id:20191023`
    let dir_name =
        text.lines().find_map(|l| l.trim().strip_prefix("DirName:")).expect("no DirName in the EK certificate");
    let attribute = |oid: &str| {
        dir_name.split('/').find_map(|part| part.strip_prefix(&format!("{oid}="))).map(str::to_owned).unwrap()
    };
    let selectors = &exchange.attributes.selector_values;
    for (kind, oid) in [("manufacturer", "2.23.133.2.1"), ("model", "2.23.133.2.2"), ("version", "2.23.133.2.3")] {
        let want = format!("ek:{kind}:{}", attribute(oid));
        assert!(selectors.contains(&want), "{want} not in {selectors:?}");
    }
    let line = testbed::devid_ca::ek_hash_line(&lab.tpm, "x").unwrap();
    let hash = line.split(' ').next().unwrap().trim_start_matches("sha256:");
    assert!(selectors.contains(&format!("ek:hash:{hash}")), "{selectors:?}");
    assert!(!selectors.iter().any(|s| s.starts_with("ek:name:")), "no inventory, no name: {selectors:?}");
}

#[test]
fn rsa_devid_with_intermediate_attests() {
    round_trip(LabOptions::default());
}

#[test]
fn ecc_devid_with_every_password_and_no_intermediate_attests() {
    round_trip(LabOptions {
        key_type: "ecc-p256",
        devid_password: Some("devid secret"),
        owner_password: Some("owner secret"),
        endorsement_password: Some("endorsement secret"),
        intermediate: false,
    });
}

#[test]
fn ecc_devid_with_intermediate_attests() {
    round_trip(LabOptions { key_type: "ecc-p256", ..LabOptions::default() });
}

#[test]
fn rsa_devid_with_hierarchy_passwords_and_no_intermediate_attests() {
    round_trip(LabOptions {
        owner_password: Some("o"),
        endorsement_password: Some("e"),
        intermediate: false,
        ..LabOptions::default()
    });
}

#[test]
fn refusals_reach_the_host_as_invalid_argument_with_the_reason_and_bad_configs_are_named() {
    let lab = DevIdLab::new(LabOptions::default()).unwrap();
    let (agent, server) = load(&lab);
    // A server that trusts another DevID CA refuses with SPIRE's reason.
    let other = tempfile::tempdir().unwrap();
    testbed::devid::make_devid_ca(other.path(), "other").unwrap();
    let hcl = format!(
        "devid_ca_path = \"{}\"\nendorsement_ca_path = \"{}\"\n",
        other.path().join("root.pem").display(),
        lab.path("endorsement-ca.pem").display()
    );
    server.configure(&hcl, "example.org").unwrap();
    match relay(&agent, &server) {
        Err(testbed::host::RelayError::Server(s)) => {
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
            assert!(s.message().contains("unable to verify DevID signature"), "{}", s.message());
        }
        other => panic!("expected a server refusal, got {other:?}"),
    }
    assert_eq!(lab.tpm_leftovers().unwrap(), "");
    // Configuration errors name the key; the last good configuration stays.
    let agent_cases = [
        ("", "devid_cert_path is required"),
        ("devid_cert_path = \"/nonexistent\"\ndevid_priv_path = \"/x\"\ndevid_pub_path = \"/y\"\ntpm_device_path = \"swtpm:host=127.0.0.1,port=1\"", "devid_priv_path"),
        ("bogus = 1", "unknown key \"bogus\""),
        ("devid_cert_path = 5", "devid_cert_path: expected a string"),
    ];
    let mismatched = lab.agent_hcl().replace(
        &lab.path("devid/devid.crt.pem").display().to_string(),
        &other.path().join("root.pem").display().to_string(),
    );
    let agent_cases: Vec<(&str, &str)> =
        agent_cases.into_iter().chain([(mismatched.as_str(), "does not certify the key in devid_pub_path")]).collect();
    for (hcl, want) in agent_cases {
        let err = agent.configure(hcl, "example.org").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{hcl}");
        assert!(err.message().contains(want), "{hcl}: {}", err.message());
        assert!(!agent.validate(hcl, "example.org").unwrap().valid, "{hcl}");
    }
    let server_cases = [
        ("", "devid_ca_path is required"),
        ("devid_ca_path = \"/etc/hostname\"", "endorsement_ca_path is required"),
        ("devid_ca_path = \"/nonexistent\"\nendorsement_ca_path = \"/nonexistent\"", "devid_ca_path /nonexistent"),
        ("check_ak_attributes = \"yes\"", "check_ak_attributes: expected true or false"),
    ];
    for (hcl, want) in server_cases {
        let err = server.configure(hcl, "example.org").unwrap_err();
        assert!(err.message().contains(want), "{hcl}: {}", err.message());
    }
    // A quote signed by an unrestricted AK proves nothing: the AK check cannot be turned off while quoting.
    let unproven = format!("{}\ncheck_ak_attributes = false\npcr_selection = \"sha256:0,7\"\n", lab.server_hcl());
    let err = server.configure(&unproven, "example.org").unwrap_err();
    assert!(err.message().contains("must stay true with pcr_selection"), "{}", err.message());
    let missing_td = server.configure(&lab.server_hcl(), "").unwrap_err();
    assert!(missing_td.message().contains("trust domain"), "{}", missing_td.message());
    // The agent still attests with its last good configuration once the server is fixed.
    server.configure(&lab.server_hcl(), "example.org").unwrap();
    relay(&agent, &server).unwrap();
}

#[test]
fn check_command_reports_each_step_and_names_the_failing_one() {
    let lab = DevIdLab::new(LabOptions { devid_password: Some("pw"), ..LabOptions::default() }).unwrap();
    let s = |f: &str| lab.path(f).display().to_string();
    let dev = lab.tpm.device().to_string();
    let args = |devid_ca: &str, pw: &str| {
        vec![
            "check".to_string(),
            "--tpm-device".into(),
            dev.clone(),
            "--devid-cert".into(),
            s("devid/devid.crt.pem"),
            "--devid-priv".into(),
            s("devid/devid.priv.blob"),
            "--devid-pub".into(),
            s("devid/devid.pub.blob"),
            "--devid-password-file".into(),
            s(pw),
            "--devid-ca".into(),
            s(devid_ca),
            "--endorsement-ca".into(),
            s("endorsement-ca.pem"),
            "--trust-domain".into(),
            "td.test".into(),
        ]
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        testbed::process::run_bin("spire-server-attestor-tpm-devid", &a, b"").unwrap()
    };
    let (code, out, err) = run(args("root.pem", "devid.pw"));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("\nok    ").count() + usize::from(out.starts_with("ok    ")), 6, "{out}");
    assert!(out.contains("agent ID   spiffe://td.test/spire/agent/tpm_devid/"), "{out}");
    assert!(out.contains("selector   tpm_devid:subject:cn:node-1.example.org"), "{out}");
    // The wrong DevID CA: the server step fails and says why.
    std::fs::write(lab.path("wrong.pw"), "nope").unwrap();
    let (code, out, _) = run(args("endorsement-ca.pem", "devid.pw"));
    assert_ne!(code, 0);
    assert!(out.contains("FAIL  server: DevID chain") && out.contains("unknown authority"), "{out}");
    // The wrong DevID password: the TPM step fails and names the password, not its value.
    let (code, out, _) = run(args("root.pem", "wrong.pw"));
    assert_ne!(code, 0);
    assert!(out.contains("FAIL  agent:") && out.contains("DevID password was refused"), "{out}");
    assert!(!out.contains("nope"), "{out}");

    // The server's PCR quote and policy: the added selectors when the boot state matches, and the PCR that
    // differs when it does not.
    let pcr7 = pcrread(&lab, "sha256", 7);
    std::fs::write(lab.path("pcr-policy.yaml"), format!("lab:\n  \"sha256:7\": \"{pcr7}\"\n")).unwrap();
    let quoted = |a: Vec<String>| {
        let mut a = a;
        a.extend(
            ["--pcr-selection", "sha256:0,7", "--pcr-policy", &s("pcr-policy.yaml"), "--require-pcr-policy"]
                .map(String::from),
        );
        a
    };
    let (code, out, err) = run(quoted(args("root.pem", "devid.pw")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("PCR quote sha256:0,7, policy required"), "{out}");
    assert!(out.contains(&format!("selector   tpm_devid:pcr:sha256:7:{pcr7}")), "{out}");
    assert!(out.contains("selector   tpm_devid:boot:lab") && out.contains("selector   tpm_devid:ek:hash:"), "{out}");
    lab.tpm.tpm2("tpm2_pcrextend", &[&format!("7:sha256={}", "cc".repeat(32))], lab.dir()).unwrap();
    let now7 = pcrread(&lab, "sha256", 7);
    let (code, out, _) = run(quoted(args("root.pem", "devid.pw")));
    assert_ne!(code, 0);
    assert!(out.contains(&format!("FAIL  server: proof of possession, proof of residency, the PCR quote and policy: no pcr_policy entry matches the quoted PCRs: lab: sha256:7 is {now7}, the entry wants {pcr7}")), "{out}");
}

/// The agent plugin's log is what SPIRE's log shows an operator: a refused DevID password is our one error
/// naming it, with no record from libtss2's own logging (the old plugin never quieted it) or tss-esapi's
/// internals, and no colour escapes.
#[test]
fn a_wrong_devid_password_is_one_readable_error_without_tss_internals() {
    let lab = DevIdLab::new(LabOptions { devid_password: Some("pw"), ..LabOptions::default() }).unwrap();
    let agent = PluginHost::launch(AGENT, "NodeAttestor").unwrap();
    agent.init().unwrap();
    let hcl = lab.agent_hcl().replace("devid_password = \"pw\"", "devid_password = \"nope\"");
    assert_ne!(hcl, lab.agent_hcl(), "the lab's agent config names its DevID password");
    agent.configure(&hcl, "example.org").unwrap();
    let err = agent.aid_attestation().unwrap_err();
    assert!(err.message().contains("DevID password"), "{}", err.message());
    let log = agent.stderr_lines().join("\n");
    testbed::logs::assert_readable("the agent plugin's log", &log);
    assert!(!log.contains("nope"), "the password reached the log:\n{log}");
}

/// The PCR value `tpm2_pcrread` reports for `bank:index`, lowercase hex.
fn pcrread(lab: &DevIdLab, bank: &str, index: u8) -> String {
    let out = lab.tpm.tpm2("tpm2_pcrread", &[&format!("{bank}:{index}")], lab.dir()).unwrap();
    let line =
        out.lines().find(|l| l.trim_start().starts_with(&format!("{index} :"))).unwrap_or_else(|| panic!("{out}"));
    line.rsplit("0x").next().unwrap().trim().to_ascii_lowercase()
}

/// Two boot states made with `tpm2_pcrextend` (PCR 7 extended with different measurements; the TPM restarted in
/// between, as a reboot resets the PCRs): the `pcr:` selectors follow `tpm2_pcrread`; the policy names the first
/// state (`boot:appliance`) and, with `require_pcr_policy`, refuses the second, saying which PCR differs.
#[test]
fn the_boot_state_follows_the_pcrs_and_the_policy_admits_one_state_and_refuses_the_other() {
    let mut lab = DevIdLab::new(LabOptions::default()).unwrap();
    lab.tpm.tpm2("tpm2_pcrextend", &[&format!("7:sha256={}", "aa".repeat(32))], lab.dir()).unwrap();
    let (pcr0, appliance) = (pcrread(&lab, "sha256", 0), pcrread(&lab, "sha256", 7));
    std::fs::write(
        lab.path("pcr-policy.yaml"),
        format!("appliance:\n  \"sha256:0\": \"{pcr0}\"\n  \"sha256:7\": \"{appliance}\"\n"),
    )
    .unwrap();
    let agent = PluginHost::launch(AGENT, "NodeAttestor").unwrap();
    agent.init().unwrap();
    agent.configure(&lab.agent_hcl(), "example.org").unwrap();
    let server = |extra: &str| {
        let server = PluginHost::launch(SERVER, "NodeAttestor").unwrap();
        server.init().unwrap();
        server
            .configure(&format!("{}pcr_selection = \"sha256:0,7\"\n{extra}", lab.server_hcl()), "example.org")
            .unwrap();
        server
    };
    let policy = format!("pcr_policy = \"{}\"\nrequire_pcr_policy = true\n", lab.path("pcr-policy.yaml").display());
    let (plain, strict) = (server(""), server(&policy));

    let first = relay(&agent, &plain).unwrap();
    let s = &first.attributes.selector_values;
    assert!(s.contains(&format!("pcr:sha256:7:{appliance}")) && s.contains(&format!("pcr:sha256:0:{pcr0}")), "{s:?}");
    assert!(!s.iter().any(|x| x.starts_with("boot:")), "no policy, no boot: {s:?}");
    let admitted = relay(&agent, &strict).unwrap();
    assert!(admitted.attributes.selector_values.contains(&"boot:appliance".to_owned()), "{admitted:?}");
    assert_eq!(admitted.attributes.spiffe_id, first.attributes.spiffe_id, "the agent ID does not depend on the quote");

    // Another boot: the PCRs reset, PCR 7 measures something else.
    lab.tpm.restart().unwrap();
    lab.tpm.tpm2("tpm2_pcrextend", &[&format!("7:sha256={}", "bb".repeat(32))], lab.dir()).unwrap();
    let other = pcrread(&lab, "sha256", 7);
    assert_ne!(other, appliance);
    let second = relay(&agent, &plain).unwrap();
    assert!(second.attributes.selector_values.contains(&format!("pcr:sha256:7:{other}")), "{second:?}");
    let refused = relay(&agent, &strict).unwrap_err().to_string();
    assert!(refused.contains(&format!("appliance: sha256:7 is {other}, the entry wants {appliance}")), "{refused}");

    // The real TPM's answer, tampered with on the way: a PCR value altered to the policy's (the digest gives it
    // away), or the quote dropped (as SPIRE's agent plugin, which sends none) under require_pcr_policy.
    type Tamper = fn(&mut serde_json::Value);
    let rows: [(&str, Tamper, &str); 2] = [
        (
            "a PCR value altered",
            |r| r["PCRQuote"]["PCRValues"][1] = serde_json::json!(hex_to_b64(&pcr_b())),
            "not the ones quoted",
        ),
        ("no quote", |r| drop(r.as_object_mut().unwrap().remove("PCRQuote")), "no PCR quote"),
    ];
    for (what, tamper, says) in rows {
        let (mut a, payload) = agent.aid_attestation().unwrap();
        let (mut st, challenge) = strict.attest_begin(payload).unwrap();
        let response = agent.agent_answer(&mut a, challenge).unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&response).unwrap();
        tamper(&mut json);
        let err = strict.attest_finish(&mut st, serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert!(err.message().contains(says), "{what}: {says:?} not in {}", err.message());
    }
}

/// 32 bytes of 0xbb: a PCR value no TPM here holds.
fn pcr_b() -> String {
    "bb".repeat(32)
}

fn hex_to_b64(hex: &str) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A virtual TPM without an EK certificate, through our agent and server plugins (relayed by the SPIRE-like
/// host): refused without `endorsement_hashes_path`, accepted with its hash listed (with `ek:hash` and `ek:name`),
/// refused when the listed hash is another EK's, and admitted again as soon as the inventory file lists it, with
/// no reload of the plugin. Each `ek_policy` that cannot be met by what is configured refuses to configure.
#[test]
fn a_virtual_tpm_attests_by_its_ek_hash_under_each_ek_policy() {
    use testbed::devid_ca::{agent_hcl, ek_hash_line, CaOptions, CaSite};
    use testbed::swtpm::Swtpm;
    let (v, other) = (Swtpm::start().unwrap(), Swtpm::start().unwrap());
    let v_line = ek_hash_line(&v, "node-v").unwrap();
    let ca = CaSite::start(&CaOptions { inventory: Some(format!("{v_line}\n")), ..CaOptions::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v");
    let (code, err) = ca.enroll(&v, &out, &[]).unwrap();
    assert_eq!(code, 0, "{err}");
    let manufacturers = dir.path().join("manufacturers.pem");
    std::fs::write(&manufacturers, std::fs::read(&ca.tls_ca).unwrap()).unwrap();
    let hashes = dir.path().join("ek-hashes");
    let agent = PluginHost::launch(AGENT, "NodeAttestor").unwrap();
    agent.init().unwrap();
    agent.configure(&agent_hcl(&v, &out), "example.org").unwrap();
    let server_with = |extra: &str| {
        let server = PluginHost::launch(SERVER, "NodeAttestor").unwrap();
        server.init().unwrap();
        let hcl = format!("devid_ca_path = \"{}\"\n{extra}", ca.ca_cert.display());
        server.configure(&hcl, "example.org").map(|_| server)
    };
    let hashes_key = format!("endorsement_hashes_path = \"{}\"\n", hashes.display());
    let ca_key = format!("endorsement_ca_path = \"{}\"\n", manufacturers.display());

    // SPIRE's trust (endorsement CAs only): no EK certificate, no attestation.
    let spires = server_with(&ca_key).unwrap();
    let refused = relay(&agent, &spires).unwrap_err().to_string();
    assert!(refused.contains("missing endorsement certificate"), "{refused}");

    // Listed: admitted, with the EK's hash and the inventory's name; ca_or_hash (both files) too.
    std::fs::write(&hashes, format!("{}\n", v_line.replace("node-v", "vm-17"))).unwrap();
    let hash = v_line.split(' ').next().unwrap().trim_start_matches("sha256:").to_owned();
    for extra in [hashes_key.clone(), format!("{hashes_key}{ca_key}"), format!("{hashes_key}ek_policy = \"hash\"\n")] {
        let server = server_with(&extra).unwrap();
        let admitted = relay(&agent, &server).unwrap_or_else(|e| panic!("{extra}: {e}"));
        let s = &admitted.attributes.selector_values;
        assert!(s.contains(&format!("ek:hash:{hash}")) && s.contains(&"ek:name:vm-17".to_owned()), "{extra}: {s:?}");
        assert!(s.contains(&"subject:cn:node-v".to_owned()) && !s.iter().any(|x| x.starts_with("ek:model")), "{s:?}");
    }
    // ca_and_hash needs a certificate as well.
    let both = server_with(&format!("{hashes_key}{ca_key}ek_policy = \"ca_and_hash\"\n")).unwrap();
    let refused = relay(&agent, &both).unwrap_err().to_string();
    assert!(refused.contains("missing endorsement certificate"), "{refused}");

    // Another EK's hash listed: refused, naming this EK's hash; then the file lists it, and the same plugin
    // (no new Configure) admits it at the next attestation.
    let server = server_with(&hashes_key).unwrap();
    std::fs::write(&hashes, format!("{}\n", ek_hash_line(&other, "other").unwrap())).unwrap();
    let refused = relay(&agent, &server).unwrap_err().to_string();
    assert!(refused.contains(&format!("EK sha256:{hash} is not in the inventory")), "{refused}");
    std::fs::write(&hashes, format!("{v_line}\n")).unwrap();
    let admitted = relay(&agent, &server).unwrap();
    assert!(admitted.attributes.selector_values.contains(&"ek:name:node-v".to_owned()));
    // A broken edit keeps the last good inventory.
    std::fs::write(&hashes, "sha256:not-hex broken\n").unwrap();
    relay(&agent, &server).unwrap();

    // Configurations that cannot work are refused, naming the key.
    for (extra, says) in [
        (String::new(), "endorsement_ca_path is required"),
        (format!("{ca_key}ek_policy = \"hash\"\n"), "ek_policy"),
        (format!("{hashes_key}ek_policy = \"ca\"\n"), "ek_policy"),
        (format!("{hashes_key}ek_policy = \"ca_and_hash\"\n"), "ek_policy"),
        (format!("{hashes_key}ek_policy = \"either\"\n"), "ek_policy"),
        (
            format!("endorsement_hashes_path = \"{}\"\n", dir.path().join("missing").display()),
            "endorsement_hashes_path",
        ),
    ] {
        let err = server_with(&extra).err().unwrap_or_else(|| panic!("{extra}: configured")).to_string();
        assert!(err.contains(says), "{extra}: {says:?} not in {err}");
    }
}
