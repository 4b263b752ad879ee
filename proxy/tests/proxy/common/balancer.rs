//! A real TCP load balancer in front of several proxies: HAProxy (Debian's), round robin,
//! in TCP mode (TLS passes through to the proxies, as through an AWS NLB).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Balancer {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Balancer {
    /// HAProxy on a free port, balancing new connections over `backends` in turn.
    pub fn start(backends: &[SocketAddr]) -> Balancer {
        Self::start_with(backends, "")
    }

    /// The same, connecting to the backends from the loopback address `source` and sending
    /// each a PROXY protocol v2 header first (as an NLB target group with proxy protocol v2).
    pub fn start_proxy_v2(backends: &[SocketAddr], source: &str) -> Balancer {
        Self::start_with(backends, &format!(" send-proxy-v2 source {source}"))
    }

    fn start_with(backends: &[SocketAddr], server_options: &str) -> Balancer {
        let dir = tempfile::tempdir().unwrap();
        let port = dbgw_db::cluster::free_port().unwrap();
        let mut config = format!(
            "global\n  maxconn 512\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n\
             frontend postgres\n  bind 127.0.0.1:{port}\n  default_backend proxies\n\
             backend proxies\n  balance roundrobin\n"
        );
        for (i, b) in backends.iter().enumerate() {
            config.push_str(&format!("  server replica{i} {b}{server_options}\n"));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let binary = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("haproxy");
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("haproxy runs (scripts/install.sh test installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        testkit::eventually_blocking("haproxy answers", Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr)
        });
        Balancer {
            addr,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
