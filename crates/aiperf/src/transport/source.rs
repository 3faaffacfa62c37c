//! Where the client's connections come from: source addresses (`--local-addresses`, or a
//! spread over `127.0.0.1..127.0.0.N` chosen automatically for loopback targets) and the
//! open-file limit.
//!
//! A TCP connection is named by its four-tuple, so one source address can hold about as many
//! connections to one server address as there are ephemeral ports
//! (`net.ipv4.ip_local_port_range`, 28,232 by default). Past that, connections need more
//! source addresses. Each socket is bound to its source address with
//! `IP_BIND_ADDRESS_NO_PORT` before connecting: the port is then chosen at `connect` time
//! for the four-tuple, so every address gets the whole ephemeral range for each server.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpSocket, TcpStream};

/// Most source addresses one run may name (a /24 holds 256; 1,024 addresses are far more
/// connections than one machine can hold).
pub const MAX_ADDRESSES: usize = 1024;

/// The ephemeral port range when `/proc/sys/net/ipv4/ip_local_port_range` cannot be read
/// (Linux's default).
pub const DEFAULT_PORT_RANGE: (u16, u16) = (32768, 60999);

/// The share of the range the automatic spread plans to use per source address: half.
/// Linux's `connect` looks for a free port of one parity first (since 4.6), scanning the
/// range from a random point, so past about half of it every connect scans far, under a
/// lock: measured (`scripts/many-streams`, docs/performance.md), 19,900 connections from one
/// address cost the client 9.4 s of CPU and a TTFT 7 s late, against 2.0 s and 6 ms over
/// eight addresses (14,000 from one address: 1.4 s). Connections in `TIME_WAIT` and other
/// programs take ports too.
const PORT_SHARE_DIV: usize = 2;

/// The most addresses the automatic spread uses: `127.0.0.1..=127.0.0.254`.
const MAX_AUTO: usize = 254;

/// `--local-addresses`, parsed ([`parse_addresses`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAddresses(pub Vec<IpAddr>);

impl LocalAddresses {
    /// The flag's value parser.
    pub fn parse(s: &str) -> Result<Self, String> {
        parse_addresses(s).map(Self)
    }
}

/// Parses `--local-addresses`: a comma list whose items are addresses (`127.0.0.2`, `::1`)
/// or ranges `FIRST-LAST` (IPv4 within one /24, IPv6 within the last 16 bits), all of one
/// family, none twice, at most [`MAX_ADDRESSES`] in all. The error names the bad value.
pub fn parse_addresses(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut out: Vec<IpAddr> = Vec::new();
    for item in s.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!(
                "`{s}` has an empty item (expected ADDR or FIRST-LAST)"
            ));
        }
        let ips = match item.split_once('-') {
            None => vec![ip(item)?],
            Some((a, b)) => range(ip(a.trim())?, ip(b.trim())?, item)?,
        };
        for a in ips {
            if let Some(first) = out.first() {
                if first.is_ipv4() != a.is_ipv4() {
                    return Err(format!(
                        "`{item}` mixes address families with `{first}`: give IPv4 or IPv6 \
                         addresses, not both"
                    ));
                }
            }
            if out.contains(&a) {
                return Err(format!("`{a}` is listed twice"));
            }
            if out.len() == MAX_ADDRESSES {
                return Err(format!("`{s}` names more than {MAX_ADDRESSES} addresses"));
            }
            out.push(a);
        }
    }
    Ok(out)
}

fn ip(s: &str) -> Result<IpAddr, String> {
    // `[::1]` is accepted as well as `::1`.
    let bare = s
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>()
        .map_err(|_| format!("`{s}` is not an IP address"))
}

/// Every address from `a` to `b` inclusive.
fn range(a: IpAddr, b: IpAddr, item: &str) -> Result<Vec<IpAddr>, String> {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let (x, y) = (u32::from(a), u32::from(b));
            if x >> 8 != y >> 8 {
                return Err(format!(
                    "range `{item}` spans more than one /24 (its ends must differ in the last \
                     number only)"
                ));
            }
            if x > y {
                return Err(format!("range `{item}` runs backwards"));
            }
            Ok((x..=y).map(|n| IpAddr::V4(Ipv4Addr::from(n))).collect())
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let (x, y) = (u128::from(a), u128::from(b));
            if x >> 16 != y >> 16 {
                return Err(format!(
                    "range `{item}` spans more than the last 16 bits (its ends must differ in \
                     the last group only)"
                ));
            }
            if x > y {
                return Err(format!("range `{item}` runs backwards"));
            }
            if y - x >= MAX_ADDRESSES as u128 {
                return Err(format!(
                    "range `{item}` names more than {MAX_ADDRESSES} addresses"
                ));
            }
            Ok((x..=y).map(|n| IpAddr::V6(Ipv6Addr::from(n))).collect())
        }
        _ => Err(format!("range `{item}` mixes IPv4 and IPv6")),
    }
}

/// A URL host that is an IP address (`127.0.0.1`, `[::1]`), else `None` (a name).
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// The ephemeral port range (`net.ipv4.ip_local_port_range`, which IPv6 shares), or
/// [`DEFAULT_PORT_RANGE`] where it cannot be read.
pub fn port_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_port_range(&s))
        .unwrap_or(DEFAULT_PORT_RANGE)
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(str::parse::<u16>);
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    (lo <= hi).then_some((lo, hi))
}

/// How many connections one source address is planned to hold to one server address: half
/// the range's ports (at least one).
pub fn usable_ports(range: (u16, u16)) -> usize {
    let ports = usize::from(range.1) - usize::from(range.0) + 1;
    (ports / PORT_SHARE_DIV).max(1)
}

/// The automatic spread: for a target in 127.0.0.0/8 whose run can need more connections
/// than one source address is planned to hold (`need` > [`usable_ports`]), the addresses
/// `127.0.0.1..=127.0.0.N` with N just enough for the need (at most 254); otherwise `None`
/// (one source address, chosen by the kernel, as without this module).
pub fn auto_spread(target: IpAddr, need: usize, range: (u16, u16)) -> Option<Vec<IpAddr>> {
    let IpAddr::V4(v4) = target else {
        return None;
    };
    let per_address = usable_ports(range);
    if !v4.is_loopback() || need <= per_address {
        return None;
    }
    let n = need.div_ceil(per_address).min(MAX_AUTO);
    Some(
        (1..=n as u8)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect(),
    )
}

/// Source addresses handed out round-robin, one per new connection.
#[derive(Debug)]
pub struct Sources {
    addrs: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Sources {
    /// `None` for no address.
    pub fn new(addrs: Vec<IpAddr>) -> Option<Self> {
        (!addrs.is_empty()).then(|| Self {
            addrs,
            next: AtomicUsize::new(0),
        })
    }

    pub fn addresses(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// The next connection's source address.
    pub fn pick(&self) -> IpAddr {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.addrs[i % self.addrs.len()]
    }

    /// Checks that every address can be bound here (a socket bound with
    /// `IP_BIND_ADDRESS_NO_PORT` and closed: no port taken, nothing sent). The error names
    /// the first address that cannot.
    pub fn check(&self) -> Result<(), String> {
        for &a in &self.addrs {
            bound_socket(a).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A socket of `source`'s family bound to it, its port left for `connect` to choose.
fn bound_socket(source: IpAddr) -> io::Result<TcpSocket> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    no_port_at_bind(&socket)?;
    socket.bind(SocketAddr::new(source, 0)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot use source address {source} (--local-addresses): {e}{}",
                if e.raw_os_error() == Some(libc_eaddrnotavail()) {
                    " (it is not an address of this machine)"
                } else {
                    ""
                }
            ),
        )
    })?;
    Ok(socket)
}

#[cfg(unix)]
fn libc_eaddrnotavail() -> i32 {
    libc::EADDRNOTAVAIL
}

#[cfg(not(unix))]
fn libc_eaddrnotavail() -> i32 {
    -1
}

/// `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+): `bind` leaves the port to `connect`, which
/// picks one free for the whole four-tuple. Elsewhere a no-op (each bind then takes a port
/// of its own, so each address still has the whole range).
fn no_port_at_bind(socket: &TcpSocket) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on an open socket with a valid int option value and its size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::from_ref(&one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
    Ok(())
}

/// Connects to `addr`, from `source` when given (else from the address the kernel picks).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    match source {
        None => TcpStream::connect(addr).await,
        Some(src) => bound_socket(src)?.connect(addr).await,
    }
}

/// Raises the open-file limit's soft value to its hard one, and the hard one to `want` when
/// the process may (root, `CAP_SYS_RESOURCE`). Returns the soft limit afterwards (`None`
/// where it cannot be read).
pub fn raise_fd_limit(want: u64) -> Option<u64> {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit on RLIMIT_NOFILE with a valid struct.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return None;
        }
        let want = want as libc::rlim_t;
        if want > rl.rlim_max {
            let higher = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &higher) == 0 {
                return Some(want);
            }
        }
        if rl.rlim_cur < rl.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: rl.rlim_max,
                ..rl
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(raised.rlim_cur);
            }
        }
        Some(rl.rlim_cur)
    }
    #[cfg(not(unix))]
    {
        let _ = want;
        None
    }
}

/// The hard open-file limit (`None` where it cannot be read).
pub fn fd_hard_limit() -> Option<u64> {
    #[cfg(unix)]
    // SAFETY: getrlimit on RLIMIT_NOFILE with a valid struct.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        (libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0).then_some(rl.rlim_max)
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lists_and_ranges_parse() {
        assert_eq!(
            parse_addresses("127.0.0.2-127.0.0.4").unwrap(),
            vec![v4("127.0.0.2"), v4("127.0.0.3"), v4("127.0.0.4")]
        );
        assert_eq!(
            parse_addresses("10.0.0.1, 10.0.0.9,10.0.1.0-10.0.1.1").unwrap(),
            vec![
                v4("10.0.0.1"),
                v4("10.0.0.9"),
                v4("10.0.1.0"),
                v4("10.0.1.1")
            ]
        );
        assert_eq!(parse_addresses("127.0.0.5-127.0.0.5").unwrap().len(), 1);
        assert_eq!(parse_addresses("127.0.0.0-127.0.0.255").unwrap().len(), 256);
        assert_eq!(
            parse_addresses("fd00::1-fd00::3,[::1]").unwrap(),
            vec![v4("fd00::1"), v4("fd00::2"), v4("fd00::3"), v4("::1")]
        );
        assert_eq!(parse_addresses("fd00::0-fd00::3ff").unwrap().len(), 1024);
    }

    #[test]
    fn bad_values_are_named() {
        for (input, says) in [
            ("", "empty item"),
            ("127.0.0.1,", "empty item"),
            ("localhost", "`localhost` is not an IP address"),
            ("127.0.0.300", "`127.0.0.300` is not an IP address"),
            (
                "127.0.0.9-127.0.0.2",
                "`127.0.0.9-127.0.0.2` runs backwards",
            ),
            ("127.0.0.2-127.0.1.2", "more than one /24"),
            ("127.0.0.1,::1", "mixes address families"),
            ("127.0.0.1-::1", "mixes IPv4 and IPv6"),
            ("127.0.0.1,127.0.0.1", "`127.0.0.1` is listed twice"),
            (
                "127.0.0.1-127.0.0.3,127.0.0.2",
                "`127.0.0.2` is listed twice",
            ),
            ("fd00::1-fd00:0:0:1::1", "last 16 bits"),
            ("fd00::ffff-fd00::1", "runs backwards"),
            ("fd00::0-fd00::400", "more than 1024"),
            ("127.0.0.2-", "`` is not an IP address"),
        ] {
            let err = parse_addresses(input).unwrap_err();
            assert!(err.contains(says), "{input:?}: {err}");
        }
        // Five /24s of 256 each: past the cap.
        let many: Vec<String> = (0..5).map(|i| format!("10.0.{i}.0-10.0.{i}.255")).collect();
        let err = parse_addresses(&many.join(",")).unwrap_err();
        assert!(err.contains("more than 1024"), "{err}");
    }

    #[test]
    fn port_ranges_read_from_proc_text() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1024 65535"), Some((1024, 65535)));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("x"), None);
        let (lo, hi) = port_range();
        assert!(lo <= hi);
    }

    #[test]
    fn the_spread_starts_past_one_address_ports() {
        let range = (32768, 60999); // 28,232 ports, 14,116 planned per address
        let per = usable_ports(range);
        assert_eq!(per, 14116);
        assert_eq!(usable_ports((5000, 5000)), 1);
        let lo = v4("127.0.0.1");
        assert_eq!(auto_spread(lo, per, range), None);
        assert_eq!(auto_spread(lo, 64, range), None);
        let two = auto_spread(lo, per + 1, range).unwrap();
        assert_eq!(two, vec![v4("127.0.0.1"), v4("127.0.0.2")]);
        let spread = auto_spread(v4("127.1.2.3"), 100_000, range).unwrap();
        assert_eq!(spread.len(), 100_000usize.div_ceil(per));
        assert_eq!(spread.len(), 8);
        assert_eq!(spread[7], v4("127.0.0.8"));
        // 19,900 (the measured case): two addresses.
        assert_eq!(auto_spread(lo, 19_900, range).unwrap().len(), 2);
        // Every address holds its share.
        assert!(spread.len() * per >= 100_000);
        // Not loopback, or not IPv4: never.
        assert_eq!(auto_spread(v4("10.0.0.1"), 100_000, range), None);
        assert_eq!(auto_spread(v4("::1"), 100_000, range), None);
        // A narrow range: sooner, and never past 127.0.0.254.
        assert_eq!(auto_spread(lo, 100, (60000, 60099)).unwrap().len(), 2);
        assert_eq!(auto_spread(lo, 50, (60000, 60099)), None);
        let all = auto_spread(lo, 10_000_000, (60000, 60009)).unwrap();
        assert_eq!(all.len(), 254);
        assert_eq!(all[253], v4("127.0.0.254"));
    }

    #[test]
    fn sources_go_round_robin() {
        let s = Sources::new(vec![v4("127.0.0.2"), v4("127.0.0.3")]).unwrap();
        let picked: Vec<IpAddr> = (0..4).map(|_| s.pick()).collect();
        assert_eq!(
            picked,
            [
                v4("127.0.0.2"),
                v4("127.0.0.3"),
                v4("127.0.0.2"),
                v4("127.0.0.3")
            ]
        );
    }

    #[tokio::test]
    async fn connections_leave_from_their_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = Sources::new(vec![v4("127.0.0.2"), v4("127.0.0.3")]).unwrap();
        s.check().unwrap();
        let mut clients = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..4 {
            let src = s.pick();
            let c = connect(addr, Some(src)).await.unwrap();
            assert_eq!(c.local_addr().unwrap().ip(), src);
            let (_, peer) = listener.accept().await.unwrap();
            peers.push(peer.ip());
            clients.push(c);
        }
        assert_eq!(
            peers,
            [
                v4("127.0.0.2"),
                v4("127.0.0.3"),
                v4("127.0.0.2"),
                v4("127.0.0.3")
            ]
        );
    }

    #[tokio::test]
    async fn an_address_not_of_this_machine_is_named() {
        // TEST-NET-3: never assigned to a machine.
        let s = Sources::new(vec![v4("127.0.0.2"), v4("203.0.113.7")]).unwrap();
        let err = s.check().unwrap_err();
        assert!(err.contains("203.0.113.7"), "{err}");
        assert!(err.contains("not an address of this machine"), "{err}");
        let err = connect("127.0.0.1:9".parse().unwrap(), Some(v4("203.0.113.7")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("203.0.113.7"), "{err}");
    }

    #[test]
    fn the_fd_limit_is_raised_to_at_least_the_soft_one() {
        let hard = fd_hard_limit().unwrap();
        let soft = raise_fd_limit(0).unwrap();
        assert_eq!(soft, hard);
    }
}
