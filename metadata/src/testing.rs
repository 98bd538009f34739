//! Test support: a throwaway single-member etcd (the `etcd` binary on PATH,
//! or the one `SLUICE_ETCD_BIN` names) on free local ports with its data in a
//! temporary directory. A missing binary is an error, never a skip: a test
//! that needs etcd must fail without it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`EtcdProcess::start`] waits for etcd to report healthy.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Start attempts (a free port can be taken between probing and binding).
const START_ATTEMPTS: usize = 3;

/// A running etcd, killed (with its data directory removed) on drop.
#[derive(Debug)]
pub struct EtcdProcess {
    child: Child,
    endpoint: String,
    data_dir: tempfile::TempDir,
}

impl EtcdProcess {
    /// Start etcd and wait (bounded) until it answers `/health`.
    pub fn start() -> io::Result<Self> {
        let binary = std::env::var_os("SLUICE_ETCD_BIN")
            .map_or_else(|| PathBuf::from("etcd"), PathBuf::from);
        Self::start_binary(binary)
    }

    /// Like [`EtcdProcess::start`] with an explicit etcd binary (a path, or a
    /// name looked up on PATH).
    pub fn start_binary(binary: impl AsRef<Path>) -> io::Result<Self> {
        let binary = binary.as_ref();
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(binary) {
                Ok(etcd) => return Ok(etcd),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("etcd did not start")))
    }

    fn start_once(binary: &Path) -> io::Result<Self> {
        let binary = which(binary).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "etcd binary {} not found (install etcd-server or set SLUICE_ETCD_BIN)",
                    binary.display()
                ),
            )
        })?;
        let data_dir = tempfile::Builder::new().prefix("sluice-etcd-").tempdir()?;
        let client = free_port()?;
        let peer = free_port()?;
        let client_url = format!("http://{client}");
        let peer_url = format!("http://{peer}");
        let log_path = data_dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path)?;

        // etcd runs under a tiny shell guard that kills it when this process's
        // end of the stdin pipe closes, so even a test process that dies
        // without running destructors (or a process-wide instance, which is
        // never dropped) leaves no etcd behind. When etcd has exited the
        // guard deletes its data (about 120 MiB of preallocated WAL), which
        // a never-dropped `TempDir` would otherwise leave in /tmp.
        let etcd_data = data_dir.path().join("data");
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 3<&0; data="$1"; shift; "$@" </dev/null & pid=$!; (cat <&3 >/dev/null; kill -9 "$pid" 2>/dev/null) & wait "$pid"; rm -rf "$data""#)
            .arg("sh")
            .arg(&etcd_data)
            .arg(&binary)
            .arg("--name=default")
            .arg(format!("--data-dir={}", etcd_data.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .arg("--initial-cluster-state=new")
            // Short raft ticks: a single member elects itself at once, and
            // the minimum lease TTL (1.5 election timeouts) stays below 1 s.
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .arg("--log-level=warn")
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;

        let mut etcd = EtcdProcess {
            child,
            endpoint: client_url,
            data_dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = etcd.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "etcd exited with {status}: {}",
                    etcd.log_tail()
                )));
            }
            if healthy(client) {
                return Ok(etcd);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "etcd not healthy after {START_TIMEOUT:?}: {}",
                        etcd.log_tail()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:43127`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.data_dir.path().join("etcd.log")).unwrap_or_default();
        let start = log.len().saturating_sub(2000);
        log.get(start..).unwrap_or_default().to_string()
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        // Closing stdin makes the guard kill etcd; kill the guard too.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn which(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return binary.is_file().then(|| binary.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

/// etcd's `/health` over plain HTTP on the client port.
fn healthy(addr: SocketAddr) -> bool {
    let check = || -> io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.set_write_timeout(Some(Duration::from_millis(500)))?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut response = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        Ok(text.contains("\"health\":\"true\""))
    };
    check().unwrap_or(false)
}
