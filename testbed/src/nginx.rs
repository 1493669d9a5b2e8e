//! A private nginx (Debian's) serving a directory on a free loopback port, as the web server in front of
//! signer-unix's published token. Started in the foreground, stopped by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// A running nginx.
#[derive(Debug)]
pub struct Nginx {
    child: Option<Child>,
    port: u16,
    prefix: tempfile::TempDir,
    root: PathBuf,
    https: bool,
}

use crate::ports::free_port;

impl Nginx {
    /// Serves `root` at `http://127.0.0.1:PORT/`. `/slow/NAME` serves the same files at 1 byte per second,
    /// `/error/` always answers 500: the misbehaving upstreams the verifier must survive.
    pub fn start(root: &Path) -> anyhow::Result<Nginx> {
        Self::start_with(root, None)
    }

    /// Like [`Nginx::start`], serving https with `tls` = (certificate chain, key) when given.
    pub fn start_with(root: &Path, tls: Option<(&Path, &Path)>) -> anyhow::Result<Nginx> {
        let nginx = which("nginx")?;
        let prefix = tempfile::tempdir()?;
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let conf = prefix.path().join("nginx.conf");
            let p = prefix.path().display();
            let r = root.display();
            let listen = match tls {
                None => format!("listen 127.0.0.1:{port};"),
                Some((cert, key)) => format!(
                    "listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};",
                    cert.display(),
                    key.display()
                ),
            };
            std::fs::write(
                &conf,
                format!(
                    "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\n\
                     error_log {p}/error.log warn;\nevents {{ worker_connections 256; }}\n\
                     http {{\n  access_log {p}/access.log;\n  client_body_temp_path {p}/body;\n\
                     proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n\
                     scgi_temp_path {p}/scgi;\n  default_type application/octet-stream;\n\
                     server {{\n    {listen}\n    root {r};\n\
                     location /slow/ {{ alias {r}/; limit_rate 1; }}\n\
                     location /error/ {{ return 500 \"upstream broken\\n\"; }}\n  }}\n}}\n"
                ),
            )?;
            let log = std::fs::File::create(prefix.path().join("stderr.log"))?;
            let mut child = Command::new(&nginx)
                .args(["-p", &p.to_string(), "-c", &conf.display().to_string(), "-e", &format!("{p}/error.log")])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting nginx")?;
            // Exited (another nginx took the port first: try another) or listening.
            let up = crate::wait::wait_until(format!("nginx to listen on {port}"), Duration::from_secs(10), || {
                if let Some(status) = child.try_wait()? {
                    let err = std::fs::read_to_string(prefix.path().join("error.log")).unwrap_or_default();
                    return Ok(Some(Err(format!("nginx exited ({status}): {err}"))));
                }
                Ok(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok().then_some(Ok(())))
            });
            match up {
                Ok(Ok(())) => {
                    return Ok(Nginx { child: Some(child), port, prefix, root: root.to_owned(), https: tls.is_some() })
                }
                Ok(Err(exited)) => last_err = Some(exited),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            }
        }
        bail!("nginx did not start: {}", last_err.unwrap_or_default())
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{}", self.port, path)
    }

    /// The served directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("access.log")).unwrap_or_default()
    }

    /// Stops nginx (the web server goes down; the test goes on).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not installed (make test installs it: apt-get install {name})")
}
