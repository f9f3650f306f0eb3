//! A TCP proxy for the recovery tests: it cuts connections the way a network does.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy in front of `upstream` whose connections can all be cut at once, without a close
/// frame or FIN from either end reaching the other first.
pub struct Proxy {
    pub addr: SocketAddr,
    conns: std::sync::Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let held = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    let mut up = TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
                held.lock().push(conn);
            }
        });
        Proxy { addr, conns, task }
    }

    /// Drops every connection through the proxy, both sides at once.
    pub fn cut(&self) {
        for c in self.conns.lock().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
