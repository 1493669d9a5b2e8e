//! A `tpm_devid` lab: a swtpm manufactured with an EK certificate chain (`swtpm_setup` + a private
//! `swtpm_localca`), optional owner/endorsement hierarchy passwords, a DevID provisioned with the project's own
//! `spire-server-attestor-tpm-devid provision` (the CSR signed inside the TPM), a file-based DevID CA (RSA root,
//! optionally a P-256 intermediate) issuing the leaf with `sign-csr`, and the agent and server plugin
//! configurations that point at all of it.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};

use crate::pki::openssl;
use crate::process::run_bin;
use crate::swtpm::Swtpm;

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// `rsa2048` or `ecc-p256`.
    pub key_type: &'static str,
    /// DevID password (None: empty).
    pub devid_password: Option<&'static str>,
    /// Owner hierarchy password set on the TPM (None: empty).
    pub owner_password: Option<&'static str>,
    /// Endorsement hierarchy password set on the TPM (None: empty).
    pub endorsement_password: Option<&'static str>,
    /// Issue the leaf from an intermediate (sent in the chain) rather than from the root.
    pub intermediate: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            key_type: "rsa2048",
            devid_password: None,
            owner_password: None,
            endorsement_password: None,
            intermediate: true,
        }
    }
}

/// A ready lab; the swtpm and the files live as long as it does.
#[derive(Debug)]
pub struct DevIdLab {
    /// The agent's TPM.
    pub tpm: Swtpm,
    /// The options it was built with.
    pub options: LabOptions,
    dir: tempfile::TempDir,
}

/// Creates a DevID CA in `dir`: `root.pem`/`root.key` (RSA-2048) and `int.pem`/`int.key` (P-256, issued by the
/// root). `name` prefixes the subjects.
pub fn make_devid_ca(dir: &Path, name: &str) -> anyhow::Result<()> {
    let root_subj = format!("/CN={name}-root");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-subj",
            &root_subj,
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        dir,
    )?;
    crate::pki::p256_csr(dir, "int", &format!("/CN={name}-intermediate"))?;
    crate::pki::issue(
        dir,
        "int",
        "root",
        30,
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )?;
    Ok(())
}

impl DevIdLab {
    /// Builds a lab.
    pub fn new(options: LabOptions) -> anyhow::Result<DevIdLab> {
        let tpm = Swtpm::start_with_ek()?;
        let dir = tempfile::tempdir()?;
        let lab = DevIdLab { tpm, options, dir };
        let p = lab.dir.path();
        for (flag, pw, file) in
            [("o", lab.options.owner_password, "owner.pw"), ("e", lab.options.endorsement_password, "endorsement.pw")]
        {
            if let Some(pw) = pw {
                lab.tpm.tpm2("tpm2_changeauth", &["-c", flag, pw], p)?;
                std::fs::write(p.join(file), pw)?;
            }
        }
        if let Some(pw) = lab.options.devid_password {
            std::fs::write(p.join("devid.pw"), pw)?;
        }
        let dev = lab.tpm.device().to_string();
        let out = p.join("devid").display().to_string();
        let mut args = vec![
            "provision",
            "--tpm-device",
            &dev,
            "--key-type",
            lab.options.key_type,
            "--subject-cn",
            "node-1.example.org",
            "--out-dir",
            &out,
        ];
        let owner_pw = p.join("owner.pw").display().to_string();
        let devid_pw = p.join("devid.pw").display().to_string();
        if lab.options.owner_password.is_some() {
            args.extend(["--owner-password-file", &owner_pw]);
        }
        if lab.options.devid_password.is_some() {
            args.extend(["--devid-password-file", &devid_pw]);
        }
        let (code, _, err) = run_bin("spire-server-attestor-tpm-devid", &args, b"")?;
        ensure!(code == 0, "provision: {err}");
        make_devid_ca(p, "devid")?;
        let s = |f: &str| p.join(f).display().to_string();
        let (cert, key) = if lab.options.intermediate { ("int.pem", "int.key") } else { ("root.pem", "root.key") };
        let mut sign = vec![
            "sign-csr".to_string(),
            "--csr".into(),
            s("devid/devid.csr"),
            "--ca-cert".into(),
            s(cert),
            "--ca-key".into(),
            s(key),
            "--out".into(),
            s("devid/devid.crt.pem"),
        ];
        if lab.options.intermediate {
            sign.extend(["--chain".into(), s("int.pem")]);
        }
        let sign: Vec<&str> = sign.iter().map(String::as_str).collect();
        let (code, _, err) = run_bin("spire-server-attestor-tpm-devid", &sign, b"")?;
        ensure!(code == 0, "sign-csr: {err}");
        let ek_ca = lab.tpm.ek_ca().context("swtpm without EK CA")?;
        std::fs::copy(ek_ca, p.join("endorsement-ca.pem"))?;
        Ok(lab)
    }

    /// The lab's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A file in the lab's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The agent plugin's `plugin_data` (HCL), pointing at this lab's files and TPM.
    pub fn agent_hcl(&self) -> String {
        let mut hcl = format!(
            "tpm_device_path = \"{}\"\ndevid_cert_path = \"{}\"\ndevid_priv_path = \"{}\"\ndevid_pub_path = \"{}\"\n",
            self.tpm.device(),
            self.path("devid/devid.crt.pem").display(),
            self.path("devid/devid.priv.blob").display(),
            self.path("devid/devid.pub.blob").display(),
        );
        for (key, pw) in [
            ("devid_password", self.options.devid_password),
            ("owner_hierarchy_password", self.options.owner_password),
            ("endorsement_hierarchy_password", self.options.endorsement_password),
        ] {
            if let Some(pw) = pw {
                hcl.push_str(&format!("{key} = \"{pw}\"\n"));
            }
        }
        hcl
    }

    /// The server plugin's `plugin_data` (HCL): the DevID root and the EK CA chain.
    pub fn server_hcl(&self) -> String {
        format!(
            "devid_ca_path = \"{}\"\nendorsement_ca_path = \"{}\"\n",
            self.path("root.pem").display(),
            self.path("endorsement-ca.pem").display()
        )
    }

    /// The transient objects and sessions currently in the TPM (tpm2_getcap), to prove nothing was left behind.
    pub fn tpm_leftovers(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        for cap in ["handles-transient", "handles-loaded-session", "handles-saved-session"] {
            out.push_str(self.tpm.tpm2("tpm2_getcap", &[cap], self.dir())?.trim());
        }
        Ok(out)
    }
}

/// The chain-building attack on a tpm_devid server: a leaf whose issuer is "evil", and intermediates that are
/// all self-issued `CA:TRUE` certificates named "evil" under one key, so any of them verifies any other. The
/// anchors are an unrelated DevID root: no path can succeed, so a naive builder tries them all.
#[derive(Debug)]
pub struct ExplosiveChain {
    /// The leaf.
    pub leaf: crypto::devid::Cert,
    /// 7 copies of one CA (same name, key and no SAN; serials differ).
    pub copies: Vec<crypto::devid::Cert>,
    /// 7 copies that differ in their subjectAltName.
    pub distinct: Vec<crypto::devid::Cert>,
    /// The trust anchors.
    pub anchors: Vec<crypto::devid::Cert>,
}

impl ExplosiveChain {
    /// Makes the certificates with openssl in `dir`, the attacker's key P-256.
    pub fn new(dir: &Path) -> anyhow::Result<ExplosiveChain> {
        ExplosiveChain::with_key(dir, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
    }

    /// The same certificates under an attacker's key made with `genpkey_args` (e.g. RSA-8192, the costliest
    /// signature check an agent can make the server do).
    pub fn with_key(dir: &Path, genpkey_args: &[&str]) -> anyhow::Result<ExplosiveChain> {
        use crypto::devid::chain::parse_pem_bundle;
        let load = |name: &str| -> anyhow::Result<crypto::devid::Cert> {
            parse_pem_bundle(&std::fs::read(dir.join(name))?)
                .map_err(anyhow::Error::msg)?
                .into_iter()
                .next()
                .context("no certificate")
        };
        make_devid_ca(dir, "trusted")?;
        let mut genpkey = vec!["genpkey"];
        genpkey.extend_from_slice(genpkey_args);
        genpkey.extend(["-out", "k.key"]);
        openssl(&genpkey, dir)?;
        let self_issued = |n: usize, san: bool| -> anyhow::Result<crypto::devid::Cert> {
            let (serial, out) = ((n + 1).to_string(), format!("i{n}.pem"));
            let san_ext = format!("subjectAltName=URI:spiffe://evil/{n}");
            let mut args = vec![
                "req",
                "-x509",
                "-key",
                "k.key",
                "-subj",
                "/CN=evil",
                "-days",
                "3",
                "-set_serial",
                &serial,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
                "-out",
                &out,
            ];
            if san {
                args.extend(["-addext", &san_ext]);
            }
            openssl(&args, dir)?;
            load(&out)
        };
        let _issuer = self_issued(99, false)?;
        openssl(&["req", "-new", "-key", "k.key", "-subj", "/CN=leaf", "-out", "leaf.csr"], dir)?;
        std::fs::write(dir.join("leaf.ext"), "basicConstraints=CA:FALSE\n")?;
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "i99.pem",
                "-CAkey",
                "k.key",
                "-set_serial",
                "7",
                "-days",
                "3",
                "-extfile",
                "leaf.ext",
                "-out",
                "leaf.pem",
            ],
            dir,
        )?;
        Ok(ExplosiveChain {
            leaf: load("leaf.pem")?,
            copies: (0..7).map(|n| self_issued(n, false)).collect::<anyhow::Result<_>>()?,
            distinct: (10..17).map(|n| self_issued(n, true)).collect::<anyhow::Result<_>>()?,
            anchors: parse_pem_bundle(&std::fs::read(dir.join("root.pem"))?).map_err(anyhow::Error::msg)?,
        })
    }
}
