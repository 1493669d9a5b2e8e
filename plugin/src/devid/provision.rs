//! `spire-server-attestor-tpm-devid provision`: creates the DevID in the agent's TPM and writes
//! `devid.priv.blob`, `devid.pub.blob` (SPIRE's format) and `devid.csr` into the output directory.

use std::path::{Path, PathBuf};

use tpm::devid::DevIdBlobs;
use tpm::Password;
use tpm::{KeyType, Tpm, TpmDevice};

/// What `provision` needs.
#[derive(Debug)]
pub struct ProvisionRequest {
    /// The agent's TPM.
    pub device: TpmDevice,
    /// RSA-2048 or ECC P-256.
    pub key_type: KeyType,
    /// Subject CN of the CSR.
    pub subject_cn: String,
    /// The DevID key's password (empty by default).
    pub devid_password: Password,
    /// The owner hierarchy's password (empty by default).
    pub owner_password: Password,
    /// Where the three files go.
    pub out_dir: PathBuf,
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The TPM refused or failed.
    #[error(transparent)]
    Tpm(#[from] tpm::TpmError),
    /// The CSR could not be built.
    #[error(transparent)]
    Csr(#[from] super::csr::CsrError),
    /// A file could not be written.
    #[error("{path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        cause: std::io::Error,
    },
    /// The output directory already holds a DevID.
    #[error("{0} already exists; refusing to overwrite a DevID (move it away first)")]
    Exists(PathBuf),
}

/// Reads a password file (trailing newline removed). Passwords never come from the command line.
pub fn read_password(path: &Path) -> std::io::Result<Password> {
    let mut bytes = std::fs::read(path)?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(Password::new(bytes))
}

fn write(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<(), ProvisionError> {
    let path = dir.join(name);
    common::fsutil::write_atomic(&path, &format!(".{name}.tmp"), data, mode)
        .map_err(|source| ProvisionError::Write { path, cause: source })
}

/// Creates the DevID and writes its files; returns the blobs.
pub fn provision(req: &ProvisionRequest) -> Result<DevIdBlobs, ProvisionError> {
    std::fs::create_dir_all(&req.out_dir)
        .map_err(|source| ProvisionError::Write { path: req.out_dir.clone(), cause: source })?;
    for name in ["devid.priv.blob", "devid.pub.blob"] {
        let p = req.out_dir.join(name);
        if p.exists() {
            return Err(ProvisionError::Exists(p));
        }
    }
    let tpm = Tpm::open(&req.device)?;
    let blobs = tpm.create_devid(req.key_type, &req.owner_password, &req.devid_password)?;
    let csr = super::csr::build(blobs.key.spki_der(), req.key_type, &req.subject_cn, |digest| {
        tpm.sign_with_devid(&blobs, &req.owner_password, &req.devid_password, digest)
    })?;
    write(&req.out_dir, "devid.priv.blob", &blobs.private, 0o600)?;
    write(&req.out_dir, "devid.pub.blob", &blobs.public, 0o644)?;
    write(&req.out_dir, "devid.csr", csr.as_bytes(), 0o644)?;
    Ok(blobs)
}
