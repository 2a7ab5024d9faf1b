//! What the `net_*` tests share: a seeded byte stream to send and check,
//! descriptor counts, resource limits, raw socket options set through
//! `libc`, and a loopback listener whose backlog is full (a connect to it
//! hangs).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// xorshift64* (Marsaglia 2003, Vigna 2016): a few instructions per
/// number, reproducible from its seed; weft has no dev-dependencies.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator for `seed` (any value; 0 is mapped away from the fixed point).
    pub fn new(seed: u64) -> XorShift {
        // One SplitMix64 step, so that neighbouring seeds start far apart.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        XorShift((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// A byte stream that a writer produces and a reader checks in any chunk
/// sizes: byte `i` of stream `seed` is a function of `(seed, i)` alone.
#[derive(Clone, Debug)]
pub struct Pattern {
    seed: u64,
    position: u64,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern { seed, position: 0 }
    }

    fn word_at(seed: u64, block: u64) -> u64 {
        let mut z = seed ^ block.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Calls `each(offset in buf, expected bytes)` for each run of bytes
    /// that lies in one 8-byte block of the stream, and advances.
    fn walk(&mut self, len: usize, mut each: impl FnMut(usize, &[u8])) {
        let mut done = 0;
        while done < len {
            let block = self.position / 8;
            let skip = (self.position % 8) as usize;
            let take = (8 - skip).min(len - done);
            let word = Pattern::word_at(self.seed, block).to_le_bytes();
            each(done, &word[skip..skip + take]);
            done += take;
            self.position += take as u64;
        }
    }

    /// Writes the next `buf.len()` bytes of the stream into `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let len = buf.len();
        self.walk(len, |at, bytes| buf[at..at + bytes.len()].copy_from_slice(bytes));
    }

    /// Checks that `buf` holds the next bytes of the stream; panics naming
    /// the first wrong byte.
    pub fn check(&mut self, buf: &[u8], what: &str) {
        let start = self.position;
        self.walk(buf.len(), |at, bytes| {
            if &buf[at..at + bytes.len()] != bytes {
                let k = (0..bytes.len()).find(|&k| buf[at + k] != bytes[k]).unwrap_or(0);
                panic!(
                    "{what}: byte {} of the stream is {:#04x}, expected {:#04x}",
                    start + (at + k) as u64,
                    buf[at + k],
                    bytes[k]
                );
            }
        });
    }

    /// How many bytes have been produced or checked.
    pub fn position(&self) -> u64 {
        self.position
    }
}

/// How many descriptors this process has open (entries of /proc/self/fd,
/// less the one `read_dir` itself holds while it lists them).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count() - 1
}

/// Whether `fd` is an open descriptor of this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads the descriptor's flags; no memory is passed.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// What descriptor `fd` refers to, as (device, inode), if it is open: a
/// socket closed and its number reused at once by another thread's open
/// (a worker's epoll, a file) reads as a different identity, where
/// [`fd_is_open`] would call it still open.
pub fn fd_identity(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: all zeroes is a valid stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `st`, which outlives the call.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: rlimit is plain data; all zeroes is valid.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid resource and a writable rlimit that outlives the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0, "getrlimit");
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: a valid resource and an initialised rlimit.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
    }
    limit.rlim_cur as u64
}

/// A number from a file of /proc/sys (the first field), if readable.
pub fn proc_sys_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.split_whitespace().next()?.parse().ok()
}

/// Sets an integer socket option on `fd`.
pub fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: `value` is a c_int that outlives the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt({level}, {name}) on {fd}: {}", io::Error::last_os_error());
}

/// Reads an integer socket option of `fd`.
pub fn int_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are writable and outlive the call; `len` is value's size.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut libc::c_int).cast(), &mut len) };
    assert_eq!(rc, 0, "getsockopt({level}, {name}) on {fd}: {}", io::Error::last_os_error());
    value
}

/// Small kernel buffers on `fd` (the kernel doubles the value and applies
/// a floor), so that writes of a few KiB are already partial.
pub fn set_small_buffers(fd: &impl AsRawFd, bytes: libc::c_int) {
    set_int_option(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, bytes);
    set_int_option(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
}

/// SO_LINGER {on, 0}: closing `fd` sends a RST instead of a FIN (and leaves
/// no TIME_WAIT behind).
pub fn set_linger_zero(fd: &impl AsRawFd) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `linger` outlives the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER): {}", io::Error::last_os_error());
}

/// Sets the backlog of a listening socket again (Linux applies a second
/// `listen` to the queue length).
pub fn set_backlog(fd: &impl AsRawFd, backlog: libc::c_int) {
    // SAFETY: no pointers.
    let rc = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
    assert_eq!(rc, 0, "listen: {}", io::Error::last_os_error());
}

/// A loopback listener created with `listen(fd, 0)` whose accept queue has
/// been filled with connections nobody accepts, so that the kernel drops
/// the SYN of any further connect: such a connect hangs (until the SYN
/// retries give up, minutes later). Holds the queued connections.
pub struct FullBacklog {
    pub listener: std::net::TcpListener,
    pub addr: SocketAddr,
    _queued: Vec<std::net::TcpStream>,
}

impl FullBacklog {
    /// The listener with its queue full, or `None` (and a note on stderr)
    /// if this kernel kept accepting handshakes: then no connect hangs here.
    pub fn new() -> Option<FullBacklog> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
        set_backlog(&listener, 0);
        let addr = listener.local_addr().expect("its address");
        let mut queued = Vec::new();
        // Linux queues backlog + 1 connections; a few more may complete
        // while SYN-ACKs are in flight. A connect that takes longer than
        // the probe's timeout is the sign that SYNs are now dropped.
        for _ in 0..64 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(stream) => queued.push(stream),
                Err(err) if err.kind() == io::ErrorKind::TimedOut => {
                    return Some(FullBacklog { listener, addr, _queued: queued });
                }
                Err(err) => panic!("filling the backlog of {addr}: {err}"),
            }
        }
        eprintln!(
            "note: the kernel completed {} handshakes on a listener with backlog 0 and never dropped a SYN; \
             no connect can be made to hang here, the check is skipped",
            queued.len()
        );
        None
    }
}

/// A std listener whose backlog is `backlog` (std's default is 128; bursts of
/// thousands of connects would overflow it and wait for SYN retries).
pub fn listener_with_backlog(backlog: libc::c_int) -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    set_backlog(&listener, backlog);
    listener
}

/// The name of the worker thread running the caller ("weft-r<runtime>-w<index>").
pub fn worker_name() -> String {
    std::thread::current().name().unwrap_or("<unnamed>").to_owned()
}

/// A coroutine's handle; it returns its value and the name of its worker.
pub type OnWorker<T> = weft::JoinHandle<(T, String)>;

/// Spawns `first` and `second` so that they run on different workers of
/// the 2-worker `rt`: `first` starts, spawns `second`, and spins (holding
/// its worker) until `second` has started, which only the other worker can
/// do (a started coroutine never moves). Returns both handles; each
/// coroutine returns its value and its worker's name.
pub fn on_two_workers<A, B>(
    rt: &weft::Runtime,
    first: impl FnOnce() -> A + Send + 'static,
    second: impl FnOnce() -> B + Send + 'static,
) -> (OnWorker<A>, OnWorker<B>)
where
    A: Send + 'static,
    B: Send + 'static,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = rt.spawn(move || {
        let started = Arc::new(AtomicBool::new(false));
        let second = {
            let started = Arc::clone(&started);
            weft::spawn(move || {
                started.store(true, Ordering::Release);
                (second(), worker_name())
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !started.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < deadline, "the other worker never started the second coroutine");
            std::hint::spin_loop();
        }
        tx.send(second).unwrap();
        (first(), worker_name())
    });
    (handle, rx.recv().unwrap())
}

/// A fresh directory for a test's Unix socket files (under the system's
/// temporary directory, named by `name` and this process), removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("weft-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory for socket files");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
