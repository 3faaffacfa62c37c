//! Kernel receive timestamps: when the kernel took a segment off the wire, not when a task got
//! round to reading it.
//!
//! A socket with [`enable_rx`] has the kernel stamp every segment it receives (software
//! timestamps, `SO_TIMESTAMPNS`); [`recv`] reads like `recv(2)` and returns the stamp of the
//! data read (for TCP, of the last segment the read took) as Unix nanoseconds on
//! `CLOCK_REALTIME`. [`lag_ns`] turns a stamp into how long ago it was, which is what callers
//! want: the time between the kernel receiving data and the reader seeing it (the read lag),
//! and, subtracted from a monotonic reading taken at the same moment, the arrival on the
//! monotonic clock. Taking the difference at once keeps a wall-clock step out of it.
//!
//! Sends too: a socket with [`enable_tx`] has the kernel stamp the moment each write's last
//! byte left for the device (software transmit stamps, `SO_TIMESTAMPING`), queued on the
//! socket's error queue, which [`take_tx`] drains.
//!
//! Elsewhere than Linux there are no stamps: [`enable_rx`] and [`enable_tx`] say so and
//! [`recv`] is a plain read.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// Turns the kernel's receive stamping on for the whole process, now. Linux switches it on
/// system-wide lazily, after the first socket asks (deferred work), so the first segments a
/// fresh socket receives may come unstamped; a socket held open for the process's life
/// (asked once, here) keeps it on. Call early: when the transport or the mock is set up.
pub fn keep_enabled() {
    #[cfg(target_os = "linux")]
    {
        static HOLD: std::sync::OnceLock<Option<std::os::fd::OwnedFd>> = std::sync::OnceLock::new();
        HOLD.get_or_init(|| {
            use std::os::fd::{FromRawFd, OwnedFd};
            // SAFETY: socket(2) with constant arguments; a returned fd >= 0 is ours to own.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return None;
            }
            // SAFETY: `fd` was just opened and is owned by nothing else.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            enable_rx(fd).then_some(owned)
        });
    }
}

/// Asks the kernel to stamp what `fd` receives. `false` when it cannot (not Linux, or the
/// option was refused); reads then carry no stamp.
pub fn enable_rx(fd: RawFd) -> bool {
    #[cfg(target_os = "linux")]
    {
        set_socket_option(fd, libc::SO_TIMESTAMPNS, 1)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        false
    }
}

/// Reads what `fd` has into `buf` without blocking (`WouldBlock` when there is nothing):
/// the bytes read, and the kernel's receive stamp of them (Unix ns) when there is one.
pub fn recv(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<(usize, Option<u64>)> {
    #[cfg(target_os = "linux")]
    {
        recvmsg_stamped(fd, buf, 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: `buf` is writable for its length; recv writes at most that many bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize, None))
    }
}

/// How a socket's writes are stamped ([`enable_tx`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStamps {
    Off,
    /// Each stamp carries the byte offset of its write's last byte (`SOF_TIMESTAMPING_OPT_ID`,
    /// counted from 0 at the first byte written after this was set): [`take_tx`] finds a
    /// write's own stamp by it, and stops there.
    Keyed,
    /// Stamps without an offset (a kernel that refused `OPT_ID`): the latest is taken.
    Unkeyed,
}

/// Asks the kernel to stamp each write's departure on `fd` (software transmit stamps, to the
/// error queue, without the payload). Call on a connected socket, before anything is written.
pub fn enable_tx(fd: RawFd) -> TxStamps {
    #[cfg(target_os = "linux")]
    {
        let flags = libc::SOF_TIMESTAMPING_TX_SOFTWARE
            | libc::SOF_TIMESTAMPING_SOFTWARE
            | libc::SOF_TIMESTAMPING_OPT_TSONLY;
        let keyed = flags | libc::SOF_TIMESTAMPING_OPT_ID;
        if set_socket_option(fd, libc::SO_TIMESTAMPING, keyed as libc::c_int) {
            TxStamps::Keyed
        } else if set_socket_option(fd, libc::SO_TIMESTAMPING, flags as libc::c_int) {
            TxStamps::Unkeyed
        } else {
            TxStamps::Off
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        TxStamps::Off
    }
}

/// Reads `fd`'s error queue of transmit stamps without blocking (Unix ns). With `key` (a
/// [`TxStamps::Keyed`] socket: the offset of the wanted write's last byte), the stamp of that
/// write, reading no further than it; stamps of earlier writes are dropped on the way, and
/// `None` if it is not queued yet. Without, the queue is drained and its latest stamp
/// returned.
pub fn take_tx(fd: RawFd, key: Option<u32>) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let mut latest = None;
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        // Bounded: a queue holds a stamp per write, and a request is one or two writes.
        for _ in 0..64 {
            let mut got_key = None;
            match recvmsg_full(fd, &mut byte, libc::MSG_ERRQUEUE, &mut got_key) {
                Ok((_, Some(s))) => match key {
                    Some(k) if got_key == Some(k) => return Some(s),
                    Some(_) => {}
                    None => latest = Some(s),
                },
                Ok((_, None)) => {}
                Err(_) => break, // EAGAIN: drained (or no queue at all)
            }
        }
        latest
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, key);
        None
    }
}

/// Sets the `SOL_SOCKET` option `name` of `fd` to the int `value`; `false` when refused.
#[cfg(target_os = "linux")]
fn set_socket_option(fd: RawFd, name: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: a valid pointer to an int and its length; a bad fd or option is an error.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// One non-blocking `recvmsg` into `buf` with `flags`: the bytes read and the kernel's stamp
/// among its control messages (`SCM_TIMESTAMPNS`, else the software one of
/// `SCM_TIMESTAMPING`), if any came whole.
#[cfg(target_os = "linux")]
fn recvmsg_stamped(
    fd: RawFd,
    buf: &mut [MaybeUninit<u8>],
    flags: libc::c_int,
) -> io::Result<(usize, Option<u64>)> {
    recvmsg_full(fd, buf, flags, &mut None)
}

/// `linux/errqueue.h`: a stamp taken when the data left for the device.
#[cfg(target_os = "linux")]
const SCM_TSTAMP_SND: u32 = 0;

/// [`recvmsg_stamped`], and for an error-queue transmit stamp of a keyed socket its key (the
/// `ee_data` of the `IP_RECVERR` / `IPV6_RECVERR` message) into `key`.
#[cfg(target_os = "linux")]
fn recvmsg_full(
    fd: RawFd,
    buf: &mut [MaybeUninit<u8>],
    flags: libc::c_int,
    key: &mut Option<u32>,
) -> io::Result<(usize, Option<u64>)> {
    // Room for the stamps in every form a socket may ask for (SCM_TIMESTAMPNS 16 + 16 bytes,
    // SCM_TIMESTAMPING 16 + 48) and an error-queue message's IP_RECVERR (16 + 32), 8-aligned.
    let mut control = [0u64; 32];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid (null name, no iov yet); its fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `iov` (into `buf`, which the kernel only writes) and at
    // `control`, both live for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let (mut ns, mut software) = (None, None);
    if msg.msg_flags & libc::MSG_CTRUNC == 0 {
        // SAFETY: walking the control messages the kernel wrote into `control`, with the
        // length it set; an SCM_TIMESTAMPNS message holds a timespec, an SCM_TIMESTAMPING
        // one three (the first the software stamp), an IP(V6)_RECVERR one a
        // sock_extended_err (read only when its length says it is all there).
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let recverr = ((*c).cmsg_level == libc::SOL_IP
                    && (*c).cmsg_type == libc::IP_RECVERR)
                    || ((*c).cmsg_level == libc::SOL_IPV6 && (*c).cmsg_type == libc::IPV6_RECVERR);
                let whole = (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(std::mem::size_of::<libc::sock_extended_err>() as u32)
                        as usize;
                if recverr && whole {
                    let e = std::ptr::read_unaligned(
                        libc::CMSG_DATA(c).cast::<libc::sock_extended_err>(),
                    );
                    if e.ee_origin == libc::SO_EE_ORIGIN_TIMESTAMPING && e.ee_info == SCM_TSTAMP_SND
                    {
                        *key = Some(e.ee_data);
                    }
                }
                if (*c).cmsg_level == libc::SOL_SOCKET {
                    let slot = match (*c).cmsg_type {
                        libc::SCM_TIMESTAMPNS => Some(&mut ns),
                        libc::SCM_TIMESTAMPING => Some(&mut software),
                        _ => None,
                    };
                    if let Some(slot) = slot {
                        let ts =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                        if ts.tv_sec > 0 && ts.tv_nsec >= 0 {
                            *slot = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                        }
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
    }
    Ok((n as usize, ns.or(software)))
}

/// The wall clock now (Unix ns, `CLOCK_REALTIME`, the kernel stamps' clock).
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// How long ago (ns) the kernel stamped `stamp_ns`: 0 for a stamp from the future (a clock
/// step between the two readings).
pub fn lag_ns(stamp_ns: u64) -> u64 {
    realtime_ns().saturating_sub(stamp_ns)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_read_carries_the_time_the_kernel_received_the_data() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        keep_enabled();
        assert!(enable_rx(server.as_raw_fd()));
        // Let the kernel's deferred switch-on run (see `keep_enabled`).
        std::thread::sleep(std::time::Duration::from_millis(20));
        let before = realtime_ns();
        client.write_all(b"hello").unwrap();
        // The data sits in the socket while this thread sleeps: the stamp is its arrival, not
        // the read below.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let after_sleep = realtime_ns();
        let mut buf = [MaybeUninit::<u8>::uninit(); 64];
        let (n, stamp) = recv(server.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(n, 5);
        // SAFETY: recv initialised the first n bytes.
        let got: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        assert_eq!(got, b"hello");
        let stamp = stamp.expect("a kernel stamp");
        assert!(
            stamp >= before,
            "stamp {stamp} before the write at {before}"
        );
        assert!(
            stamp + 20_000_000 <= after_sleep,
            "stamp {stamp} is not the arrival (read at {after_sleep})"
        );
        assert!(lag_ns(stamp) >= 20_000_000);
    }

    #[test]
    fn an_unstamped_socket_reads_without_a_stamp_and_an_empty_one_would_block() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut buf = [MaybeUninit::<u8>::uninit(); 8];
        let e = recv(server.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        client.write_all(b"x").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(recv(server.as_raw_fd(), &mut buf).unwrap(), (1, None));
        assert_eq!(
            recv(-1, &mut buf).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }

    /// A write's departure is stamped between the moments before and after it, and the
    /// receiving side's reads keep their own stamps when both kinds are on.
    #[test]
    fn a_write_is_stamped_when_it_left() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        keep_enabled();
        assert_eq!(enable_tx(client.as_raw_fd()), TxStamps::Keyed);
        assert!(enable_rx(client.as_raw_fd()));
        assert_eq!(take_tx(client.as_raw_fd(), None), None, "nothing sent yet");
        let before = realtime_ns();
        client.write_all(b"request").unwrap();
        let after = realtime_ns();
        // Let the stamp reach the queue (loopback stamps it within the write).
        std::thread::sleep(std::time::Duration::from_millis(5));
        let tx = take_tx(client.as_raw_fd(), None).expect("a transmit stamp");
        assert!(before <= tx && tx <= after, "{before} <= {tx} <= {after}");
        assert_eq!(take_tx(client.as_raw_fd(), None), None, "drained");
        // An answer read on the same socket still carries its receive stamp.
        std::thread::sleep(std::time::Duration::from_millis(20));
        (&server).write_all(b"answer").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let mut buf = [MaybeUninit::<u8>::uninit(); 64];
        let (n, stamp) = recv(client.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(n, 6);
        assert!(stamp.expect("a receive stamp") > tx);
    }

    /// A keyed socket's stamps are found by their write's last byte: earlier writes'
    /// stamps are passed over, a write not yet stamped is not confused with them.
    #[test]
    fn a_writes_own_stamp_is_found_by_its_offset() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let fd = client.as_raw_fd();
        assert_eq!(enable_tx(fd), TxStamps::Keyed);
        let mut sent = 0u64;
        let mut times = Vec::new();
        for (i, len) in [7usize, 300, 1].into_iter().enumerate() {
            std::thread::sleep(std::time::Duration::from_millis(3));
            let before = realtime_ns();
            client.write_all(&vec![b'x'; len]).unwrap();
            times.push((before, realtime_ns()));
            sent += len as u64;
            if i == 0 {
                // The first write's stamp, found at once by its offset.
                let s = take_tx(fd, Some(sent as u32 - 1)).expect("its stamp");
                assert!(times[0].0 <= s && s <= times[0].1);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        // The third write's stamp: the second's is passed over on the way.
        let s = take_tx(fd, Some(sent as u32 - 1)).expect("its stamp");
        assert!(times[2].0 <= s && s <= times[2].1, "{times:?} {s}");
        // A write that was never made has no stamp, and the queue is empty.
        assert_eq!(take_tx(fd, Some(sent as u32 + 99)), None);
        assert_eq!(take_tx(fd, None), None);
    }

    #[test]
    fn a_stamp_from_the_future_is_no_lag() {
        assert_eq!(lag_ns(realtime_ns() + 1_000_000_000), 0);
    }
}
