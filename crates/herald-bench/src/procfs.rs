//! What the benchmark reads about processes from `/proc`, and the open-file limit.
//!
//! CPU time comes from `/proc/<pid>/stat` (user + system, in clock ticks, so 10 ms resolution on
//! Linux: fine for runs of seconds), resident memory from `VmRSS` in `/proc/<pid>/status`. Both
//! count the whole process, all threads.

use std::io;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{sysconf, SysconfVar};

/// CPU time and resident memory of a process at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux we know of).
fn ticks_per_sec() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// Reads the usage of `pid` ("self" for this process).
pub fn usage(pid: &str) -> io::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_usage(&stat, &status, ticks_per_sec())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc format"))
}

fn parse_usage(stat: &str, status: &str, ticks: f64) -> Option<Usage> {
    // The command name may contain spaces and parentheses: fields are counted after the last ')'.
    // After it come field 3 (state) onwards; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(Usage {
        cpu_secs: (utime + stime) as f64 / ticks,
        rss_bytes: rss_kb * 1024,
    })
}

/// Raises this process's soft limit on open files to the hard limit and returns it. Children
/// (the server, when the benchmark starts it) inherit it.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard)
}

/// The pid of the process listening on TCP `port` (IPv4 or IPv6), found through the socket's
/// inode in `/proc/net/tcp*` and the `/proc/<pid>/fd` links. Needs permission to read the
/// other process's fds (same user, or root).
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if wanted.iter().any(|w| link.as_os_str() == w.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Inodes of the sockets listening on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == LISTEN).then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// A one-line description of the machine: CPU model, core count, kernel.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{model}, {cores} cores, Linux {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "4242 (herald (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 3 0 100 1000000 500 18446744073709551615";
        let status = "Name:\therald\nVmPeak:\t  10000 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        let u = parse_usage(stat, status, 100.0).unwrap();
        assert_eq!(u.cpu_secs, 3.0);
        assert_eq!(u.rss_bytes, 2048 * 1024);
    }

    #[test]
    fn reads_its_own_usage() {
        let u = usage("self").unwrap();
        assert!(u.rss_bytes > 0);
    }

    #[test]
    fn finds_listening_sockets() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 8080), vec![12345]);
        assert!(listening_inodes(table, 8081).is_empty());
    }

    #[test]
    fn finds_its_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(listener_pid(port), Some(std::process::id()));
    }
}
