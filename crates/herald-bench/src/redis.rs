//! What a cluster's Redis did: its command counts (`INFO commandstats`) and CPU time
//! (`INFO cpu`), read over a plain RESP connection before and after each step, so that a step
//! reports Redis commands per API call.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// Redis's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Calls per command (lower case), `INFO` itself left out. Commands that scripts run count
    /// under their own names beside the `evalsha` that ran them.
    pub calls: BTreeMap<String, u64>,
    /// `used_cpu_user + used_cpu_sys`, seconds.
    pub cpu_secs: f64,
}

impl Counters {
    /// Every command counted.
    pub fn total(&self) -> u64 {
        self.calls.values().sum()
    }

    /// What happened between `self` (earlier) and `later`.
    pub fn since(&self, later: &Counters) -> Counters {
        let calls = later
            .calls
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(self.calls.get(k).copied().unwrap_or(0)),
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect();
        Counters {
            calls,
            cpu_secs: (later.cpu_secs - self.cpu_secs).max(0.0),
        }
    }
}

/// Reads the counters of the Redis at `addr`.
pub async fn counters(addr: SocketAddr) -> anyhow::Result<Counters> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to Redis at {addr}"))?;
        let mut stream = BufReader::new(stream);
        stream
            .get_mut()
            .write_all(b"INFO commandstats\r\nINFO cpu\r\n")
            .await?;
        let stats = bulk(&mut stream).await?;
        let cpu = bulk(&mut stream).await?;
        Ok(parse(&stats, &cpu))
    })
    .await
    .map_err(|_| anyhow!("Redis at {addr} did not answer INFO within 5 s"))?
}

/// Reads one RESP bulk string.
async fn bulk(r: &mut BufReader<TcpStream>) -> anyhow::Result<String> {
    let mut header = String::new();
    r.read_line(&mut header).await?;
    let len: usize = header
        .strip_prefix('$')
        .and_then(|n| n.trim_end().parse().ok())
        .ok_or_else(|| anyhow!("unexpected Redis reply {:?}", header.trim_end()))?;
    if len > 1 << 20 {
        bail!("Redis INFO reply of {len} bytes");
    }
    let mut body = vec![0; len + 2];
    r.read_exact(&mut body).await?;
    body.truncate(len);
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Parses `INFO commandstats` (`cmdstat_<name>:calls=N,usec=…`) and `INFO cpu`.
fn parse(stats: &str, cpu: &str) -> Counters {
    let mut out = Counters::default();
    for line in stats.lines() {
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        if name == "info" {
            continue;
        }
        if let Some(calls) = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
        {
            out.calls.insert(name.to_ascii_lowercase(), calls);
        }
    }
    for line in cpu.lines() {
        if let Some((k, v)) = line.trim_end().split_once(':') {
            if k == "used_cpu_user" || k == "used_cpu_sys" {
                out.cpu_secs += v.parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_and_cpu_parse_and_subtract() {
        let stats = "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\ncmdstat_publish:calls=20,usec=9\r\ncmdstat_info:calls=7,usec=1\r\n";
        let cpu = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\nused_cpu_sys_children:9.0\r\n";
        let a = parse(stats, cpu);
        assert_eq!(a.calls.get("evalsha"), Some(&10));
        assert_eq!(a.calls.get("info"), None);
        assert_eq!(a.total(), 30);
        assert!((a.cpu_secs - 3.75).abs() < 1e-9);
        let b = parse(
            &stats
                .replace("calls=10", "calls=14")
                .replace("calls=20", "calls=28"),
            &cpu.replace("2.250000", "2.750000"),
        );
        let d = a.since(&b);
        assert_eq!(d.total(), 12);
        assert_eq!(d.calls.get("publish"), Some(&8));
        assert!((d.cpu_secs - 0.5).abs() < 1e-9);
    }
}
