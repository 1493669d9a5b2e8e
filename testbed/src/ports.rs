//! Free TCP ports on 127.0.0.1 for the daemons a test starts, reserved so that two tests (each its own process
//! under nextest) can never be handed the same one: a port is ours once we hold an exclusive lock on its file in
//! the system's temporary directory, until this process exits. A port the kernel just gave us may be in the
//! middle of another test's use, so the lock, not the bind, is the reservation.

use std::fs::File;
use std::sync::Mutex;

use anyhow::bail;

/// The lock files held by this process: a reserved port stays ours until the process ends.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

fn reserve(port: u16) -> bool {
    let dir = std::env::temp_dir().join("spire-server-attestor-tpm-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let Ok(file) = File::options().create(true).truncate(false).write(true).open(dir.join(port.to_string())) else {
        return false;
    };
    if file.try_lock().is_err() {
        return false;
    }
    common::sync::lock(&HELD).push(file);
    true
}

fn kernel_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free port, reserved for this process.
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let port = kernel_port()?;
        if reserve(port) {
            return Ok(port);
        }
    }
    bail!("no free port found")
}

/// Two consecutive free ports (P, P + 1), reserved for this process: swtpm's command and control ports.
pub fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let port = kernel_port()?;
        if port < u16::MAX
            && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
            && reserve(port)
            && reserve(port + 1)
        {
            return Ok(port);
        }
    }
    bail!("no free port pair found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_is_never_handed_out_twice() {
        let ports: Vec<u16> = (0..20).map(|_| free_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        // Another process would be refused the lock: here, a second handle on the same file.
        let dir = std::env::temp_dir().join("spire-server-attestor-tpm-ports");
        let other = File::options().write(true).open(dir.join(ports[0].to_string())).unwrap();
        assert!(other.try_lock().is_err(), "a reserved port's lock was taken again");
    }
}
