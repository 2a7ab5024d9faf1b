//! Signal handling: alternate signal stacks, `sigaction`, and the few
//! async-signal-safe calls an overflow handler may make.

use std::io;
use std::ptr::NonNull;

/// The signature of an `SA_SIGINFO` handler.
pub(crate) type SigInfoHandler = unsafe extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
/// A signal's installed action, as `install_handler` returns it (for
/// modules outside `sys`, which do not name libc).
pub(crate) type SigAction = libc::sigaction;
/// What the kernel passes an `SA_SIGINFO` handler about the signal.
pub(crate) type SigInfo = libc::siginfo_t;

/// Whether the calling thread already has an alternate signal stack enabled.
pub(crate) fn has_alt_stack() -> bool {
    // SAFETY: stack_t is plain data; all-zero is a valid value to overwrite.
    let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new stack only queries; `current` is valid to write.
    let rc = unsafe { libc::sigaltstack(std::ptr::null(), &mut current) };
    rc == 0 && current.ss_flags & libc::SS_DISABLE == 0
}

/// Makes `[base, base + len)` the calling thread's alternate signal stack.
///
/// # Safety
///
/// - The range is writable memory that stays mapped until [`disable_alt_stack`]
///   runs on this thread or the thread exits.
pub(crate) unsafe fn enable_alt_stack(base: NonNull<u8>, len: usize) -> io::Result<()> {
    let stack = libc::stack_t { ss_sp: base.as_ptr().cast(), ss_flags: 0, ss_size: len };
    // SAFETY: `stack` describes memory the caller keeps mapped while it is in use.
    let rc = unsafe { libc::sigaltstack(&stack, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Disables the calling thread's alternate signal stack.
pub(crate) fn disable_alt_stack() {
    let stack = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
    // SAFETY: SS_DISABLE reads no memory through ss_sp.
    unsafe { libc::sigaltstack(&stack, std::ptr::null_mut()) };
}

/// Hands `value` to the calling thread's exit: `drop_value(value)` runs when
/// the thread exits, after its `thread_local!` destructors (a pthread key's
/// destructor: glibc runs those after the C++-style thread-local
/// destructors that Rust's `thread_local!` uses). For what must outlive
/// every `thread_local!` value of the thread, such as the alternate signal
/// stack a coroutine unwound by one of those destructors may need.
/// Returns false (and does not take `value`) if no key could be made.
///
/// # Safety
///
/// `drop_value` may be called with `value` once, on this thread, at its
/// exit; nothing else frees `value`.
pub(crate) unsafe fn drop_at_thread_exit(
    value: *mut libc::c_void,
    drop_value: unsafe extern "C" fn(*mut libc::c_void),
) -> bool {
    static KEY: std::sync::OnceLock<Option<libc::pthread_key_t>> = std::sync::OnceLock::new();
    static DROP: std::sync::OnceLock<unsafe extern "C" fn(*mut libc::c_void)> = std::sync::OnceLock::new();
    // One destructor per process (the key's): every caller passes the same
    // one, which the first call records.
    let recorded = *DROP.get_or_init(|| drop_value);
    if recorded as usize != drop_value as usize {
        return false;
    }
    let key = KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is valid to write; the destructor is an extern "C"
        // function that lives for the whole program.
        (unsafe { libc::pthread_key_create(&mut key, Some(drop_value)) } == 0).then_some(key)
    });
    let Some(key) = *key else { return false };
    // SAFETY: a key made above; the value is the caller's to hand over.
    unsafe { libc::pthread_setspecific(key, value) == 0 }
}

/// The size to give an alternate signal stack: generous, since the overflow
/// handler formats a message on it.
pub(crate) fn alt_stack_size() -> usize {
    // SAFETY: getauxval has no preconditions; it returns 0 for unknown keys.
    let min = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
    min.max(libc::SIGSTKSZ).max(64 * 1024)
}

/// Installs `handler` for `signal` with `SA_SIGINFO | SA_ONSTACK` and returns
/// the action that was installed before, so the new handler can chain to it.
///
/// # Safety
///
/// - `handler` is async-signal-safe and handles the signal correctly for every
///   thread of the process (it runs on whichever thread faults).
pub(crate) unsafe fn install_handler(signal: libc::c_int, handler: SigInfoHandler) -> io::Result<libc::sigaction> {
    // SAFETY: the caller's promise.
    unsafe { install_handler_with_flags(signal, handler, 0) }
}

/// As [`install_handler`], with `SA_RESTART` too: a system call the signal
/// interrupts is restarted where the kernel can (reads and writes of pipes
/// and sockets without a timeout, waits for child processes), rather than
/// failing with `EINTR`. For signals that are not faults.
///
/// # Safety
///
/// - As for [`install_handler`].
pub(crate) unsafe fn install_restarting_handler(
    signal: libc::c_int,
    handler: SigInfoHandler,
) -> io::Result<libc::sigaction> {
    // SAFETY: the caller's promise.
    unsafe { install_handler_with_flags(signal, handler, libc::SA_RESTART) }
}

/// # Safety
///
/// - As for [`install_handler`].
unsafe fn install_handler_with_flags(
    signal: libc::c_int,
    handler: SigInfoHandler,
    extra_flags: libc::c_int,
) -> io::Result<libc::sigaction> {
    // SAFETY: sigaction is plain data; all-zero is a valid empty action.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | extra_flags;
    // SAFETY: `sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: as above.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid; the caller vouches for the handler.
    let rc = unsafe { libc::sigaction(signal, &action, &mut previous) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(previous)
}

/// Re-installs `action` for `signal` (used to hand a fault to the handler that
/// was there before ours, or to the default action).
///
/// # Safety
///
/// - Same as [`install_handler`]: `action` must be a valid action for `signal`.
pub(crate) unsafe fn restore_handler(signal: libc::c_int, action: &libc::sigaction) {
    // SAFETY: `action` is a valid sigaction (the caller's promise).
    unsafe { libc::sigaction(signal, action, std::ptr::null_mut()) };
}

/// Writes all of `bytes` to standard error with `write(2)`, which is
/// async-signal-safe (no locks, no allocation). Errors are ignored: there is
/// nowhere left to report them.
pub(crate) fn write_stderr(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: `rest` is a valid readable slice for its length.
        let n = unsafe { libc::write(libc::STDERR_FILENO, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        rest = &rest[n as usize..];
    }
}

/// Ends the process with `SIGABRT` (async-signal-safe).
pub(crate) fn abort() -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// What [`install_fault_handler`] calls with the faulting address. It returns
/// if the fault is not its business (the fault then goes to the handler that
/// was installed before ours); it may end the process if it is.
pub(crate) type FaultCallback = fn(fault_address: usize);

static FAULT_CALLBACK: std::sync::OnceLock<FaultCallback> = std::sync::OnceLock::new();
static PREVIOUS_SEGV: std::sync::OnceLock<libc::sigaction> = std::sync::OnceLock::new();
static PREVIOUS_BUS: std::sync::OnceLock<libc::sigaction> = std::sync::OnceLock::new();

/// Installs, once per process, a `SIGSEGV`/`SIGBUS` handler that runs on the
/// alternate signal stack, passes the faulting address to `callback`, and
/// otherwise chains to whatever handler was installed before (std's own
/// thread-overflow reporter, a sanitizer's, or the default action).
///
/// Later calls do nothing, whatever their callback.
pub(crate) fn install_fault_handler(callback: FaultCallback) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = FAULT_CALLBACK.set(callback);
        for (signal, previous) in [(libc::SIGSEGV, &PREVIOUS_SEGV), (libc::SIGBUS, &PREVIOUS_BUS)] {
            // SAFETY: `on_fault` only reads the fault address, calls the
            // callback (whose contract is async-signal-safety) and chains.
            match unsafe { install_handler(signal, on_fault) } {
                Ok(action) => {
                    let _ = previous.set(action);
                }
                Err(e) => write_stderr(format!("weft: cannot install the stack overflow handler: {e}\n").as_bytes()),
            }
        }
    });
}

unsafe extern "C" fn on_fault(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers; for
    // SIGSEGV and SIGBUS si_addr is the faulting address.
    let address = unsafe { (*info).si_addr() } as usize;
    // A signal sent by kill, tgkill or sigqueue (si_code <= 0: SI_USER,
    // SI_TKILL, SI_QUEUE) is no fault: its si_addr holds the sender's pid
    // and uid, and returning re-runs nothing, so a default action must be
    // raised again rather than left to a faulting instruction.
    // SAFETY: as above; si_code is set for every signal.
    let sent = unsafe { (*info).si_code } <= 0;
    if !sent && let Some(callback) = FAULT_CALLBACK.get() {
        callback(address);
    }
    let previous = if signal == libc::SIGBUS { PREVIOUS_BUS.get() } else { PREVIOUS_SEGV.get() };
    let Some(previous) = previous else {
        // Not recorded (a race with installation): fall back to the default
        // action; returning re-runs the faulting instruction, which then kills
        // the process with the right signal.
        // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask.
        let default: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: SIG_DFL is valid for any signal.
        unsafe { restore_handler(signal, &default) };
        if sent {
            reraise(signal);
        }
        return;
    };
    // SAFETY: called from the handler for `signal` with the kernel's
    // arguments; `previous` was the process's action for it.
    if !unsafe { call_handler(previous, signal, info, context) } {
        if sent && previous.sa_sigaction == libc::SIG_IGN {
            // Ignored, as it would have been without us; our handler stays
            // for the faults it is there for.
            return;
        }
        // SIG_DFL or SIG_IGN: put it back; returning re-runs the faulting
        // instruction, which then gets the default action (the kernel
        // forces it on a fault even where the action was SIG_IGN). A sent
        // signal with SIG_DFL is raised again instead.
        // SAFETY: `previous` was the process's action for this signal.
        unsafe { restore_handler(signal, previous) };
        if sent {
            reraise(signal);
        }
    }
}

/// Raises `signal` again from its own handler, after its default action was
/// put back: blocked while the handler runs, it is delivered, with that
/// action, when the handler returns. `raise` is async-signal-safe.
fn reraise(signal: libc::c_int) {
    // SAFETY: raise(3) takes any signal number and touches no memory of ours.
    unsafe { libc::raise(signal) };
}

/// Calls the handler of `action` for `signal` as the kernel would have
/// (with `info` and `context` if it was installed with `SA_SIGINFO`).
/// Returns `false`, calling nothing, when `action` is `SIG_DFL` or
/// `SIG_IGN`.
///
/// # Safety
///
/// - Called from a signal handler for `signal`, with the kernel's `info`
///   and `context`; `action` was the process's action for `signal`.
unsafe fn call_handler(
    action: &libc::sigaction,
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) -> bool {
    match action.sa_sigaction {
        libc::SIG_DFL | libc::SIG_IGN => false,
        handler if action.sa_flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: with SA_SIGINFO the stored address is a three-argument
            // handler.
            let handler: SigInfoHandler = unsafe { std::mem::transmute::<usize, SigInfoHandler>(handler) };
            // SAFETY: forwarding the kernel's arguments unchanged.
            unsafe { handler(signal, info, context) };
            true
        }
        handler => {
            type PlainHandler = unsafe extern "C" fn(libc::c_int);
            // SAFETY: without SA_SIGINFO the stored address is a one-argument handler.
            let handler: PlainHandler = unsafe { std::mem::transmute::<usize, PlainHandler>(handler) };
            // SAFETY: called as the kernel would have.
            unsafe { handler(signal) };
            true
        }
    }
}

/// `SIGURG`: ignored by default, so one sent to a thread that has no
/// handler for it is harmless (Go's runtime uses it to preempt goroutines
/// for the same reason). The stall monitor asks a worker thread for its
/// running coroutine and backtrace with it.
pub(crate) const SIGURG: libc::c_int = libc::SIGURG;

/// Passes a signal that is not ours to the action that was installed
/// before ours: its handler, called as the kernel would have; nothing for
/// `SIG_DFL` or `SIG_IGN` (only for signals whose default is to be
/// ignored, such as [`SIGURG`]).
///
/// # Safety
///
/// - Called from a signal handler for `signal`, with the kernel's `info`
///   and `context`; `previous` was the process's action for `signal`, and
///   `signal`'s default action is to ignore it.
pub(crate) unsafe fn forward_ignorable(
    previous: &libc::sigaction,
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the caller's promise; for SIG_DFL and SIG_IGN nothing is
    // called, which is right for a signal whose default is to be ignored.
    unsafe { call_handler(previous, signal, info, context) };
}

/// The instruction pointer at which the kernel interrupted the thread,
/// from a handler's `context` (a `ucontext_t`).
///
/// # Safety
///
/// - `context` is the third argument the kernel passed to an `SA_SIGINFO`
///   handler that is still running.
pub(crate) unsafe fn interrupted_ip(context: *mut libc::c_void) -> usize {
    // SAFETY: for SA_SIGINFO handlers the kernel passes a valid ucontext_t.
    unsafe { (*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize] as usize }
}

/// Sends `signal` to thread `tid` of this process (`tgkill(2)`).
pub(crate) fn signal_thread(tid: u32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: getpid and tgkill take plain integers; tgkill checks that
    // `tid` belongs to our process, so a stale tid cannot hit another one.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid as libc::pid_t, signal) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Saves the calling thread's `errno` and puts it back when dropped: a
/// signal handler that makes system calls must leave `errno` as the
/// interrupted code had it (it may be between a failed call and reading it).
pub(crate) struct ErrnoGuard(libc::c_int);

impl ErrnoGuard {
    pub(crate) fn save() -> ErrnoGuard {
        // SAFETY: __errno_location returns this thread's errno slot, always valid.
        ErrnoGuard(unsafe { *libc::__errno_location() })
    }
}

impl Drop for ErrnoGuard {
    fn drop(&mut self) {
        // SAFETY: as in `save`.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

// ---------------------------------------------------------------------------
// Signals forwarded to a pipe (the runtime's dump on a signal)
// ---------------------------------------------------------------------------

/// Signals that cannot carry a dump: SIGSEGV and SIGBUS belong to the stack
/// overflow handler (and to real faults), SIGURG to the stall monitor's
/// probe, SIGKILL and SIGSTOP cannot be caught.
const RESERVED_SIGNALS: [(libc::c_int, &str); 5] = [
    (libc::SIGSEGV, "SIGSEGV: weft's stack-overflow report and real faults need it"),
    (libc::SIGBUS, "SIGBUS: weft's stack-overflow report and real faults need it"),
    (libc::SIGURG, "SIGURG: weft's stall monitor asks worker threads what they run with it"),
    (libc::SIGKILL, "SIGKILL cannot be caught"),
    (libc::SIGSTOP, "SIGSTOP cannot be caught"),
];

/// Checks that `signal` is a signal number a dump can be printed on.
pub(crate) fn check_dump_signal(signal: libc::c_int) -> io::Result<()> {
    if signal < 1 || signal > libc::SIGRTMAX() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{signal} is not a signal number (1 to {})", libc::SIGRTMAX()),
        ));
    }
    // Between the classic signals (up to 31) and SIGRTMIN, glibc keeps a
    // few real-time signals for its threads and refuses to hand them out.
    if (32..libc::SIGRTMIN()).contains(&signal) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot print dumps on signal {signal}: glibc reserves signals 32 to {} for its threads; use \
                 SIGUSR1, SIGUSR2 or SIGRTMIN+n ({} and up)",
                libc::SIGRTMIN() - 1,
                libc::SIGRTMIN()
            ),
        ));
    }
    if let Some((_, why)) = RESERVED_SIGNALS.iter().find(|(s, _)| *s == signal) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot print dumps on signal {signal}: {why}"),
        ));
    }
    Ok(())
}

/// A signal given as a number (`10`) or a name (`SIGUSR1`, `USR1`).
pub(crate) fn parse_signal(text: &str) -> io::Result<libc::c_int> {
    let text = text.trim();
    if let Ok(number) = text.parse::<libc::c_int>() {
        return Ok(number);
    }
    let name = text.strip_prefix("SIG").unwrap_or(text);
    let known = [
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("QUIT", libc::SIGQUIT),
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("TERM", libc::SIGTERM),
        ("WINCH", libc::SIGWINCH),
        ("PWR", libc::SIGPWR),
    ];
    known.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, s)| s).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{text:?} is not a signal number or a known name (USR1, USR2, QUIT, HUP, INT, TERM, WINCH, PWR)"),
        )
    })
}

/// The write end of the pipe that [`forward_to_pipe`]'s handler writes to
/// (`u32::MAX`: none yet). Set once, before any handler is installed.
static PIPE_WRITE: crate::loom::process::AtomicU32 = crate::loom::process::AtomicU32::new(u32::MAX);

/// The read end of the signal pipe: [`wait`](SignalPipe::wait) returns the
/// next forwarded signal.
#[derive(Debug)]
pub(crate) struct SignalPipe {
    read: libc::c_int,
}

/// The process's signal pipe, created on first use (close-on-exec; the
/// write end non-blocking, so a handler never blocks on a full pipe: a
/// signal that finds it full is dropped, a dump being due anyway).
pub(crate) fn signal_pipe() -> io::Result<&'static SignalPipe> {
    static PIPE: std::sync::OnceLock<SignalPipe> = std::sync::OnceLock::new();
    if let Some(pipe) = PIPE.get() {
        return Ok(pipe);
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints to write.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fds[1] is the write end we just created.
    unsafe { libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK) };
    match PIPE.set(SignalPipe { read: fds[0] }) {
        // Release: a handler that reads the fd (Acquire) uses an open pipe.
        Ok(()) => PIPE_WRITE.store(fds[1] as u32, crate::loom::process::Ordering::Release),
        Err(_) => {
            // Another thread won the race: ours is not needed.
            // SAFETY: both fds are ours and unused.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
        }
    }
    Ok(PIPE.get().expect("set above"))
}

impl SignalPipe {
    /// Blocks until a forwarded signal arrives; returns its number.
    pub(crate) fn wait(&self) -> libc::c_int {
        let mut byte = 0u8;
        loop {
            // SAFETY: reads one byte into a local; `self.read` stays open
            // for the life of the process.
            let n = unsafe { libc::read(self.read, (&raw mut byte).cast(), 1) };
            if n == 1 {
                return libc::c_int::from(byte);
            }
            // EINTR, or (never expected) an error: try again after a pause
            // rather than spin.
            if n < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// Makes `signal` (checked with [`check_dump_signal`]) write its number to
/// the signal pipe ([`signal_pipe`], which must exist) instead of its
/// previous action.
pub(crate) fn forward_to_pipe(signal: libc::c_int) -> io::Result<()> {
    unsafe extern "C" fn forward(signal: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: errno is thread-local; saved and restored around write(2),
        // both async-signal-safe, so the interrupted code sees its own errno.
        unsafe {
            let errno = *libc::__errno_location();
            // Acquire: pairs with signal_pipe's Release store.
            let fd = PIPE_WRITE.load(crate::loom::process::Ordering::Acquire);
            if fd != u32::MAX {
                let byte = signal as u8;
                libc::write(fd as libc::c_int, (&raw const byte).cast(), 1);
            }
            *libc::__errno_location() = errno;
        }
    }
    // SAFETY: `forward` only reads an atomic and calls write(2): it is
    // async-signal-safe and right for any thread.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = forward as SigInfoHandler as usize;
    // SA_ONSTACK: a signal sent to the process often lands on a worker that
    // runs a coroutine, whose stack may be near its guard page; the
    // alternate stack takes the kernel's signal frame instead.
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    // SAFETY: `sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: a valid action for a catchable signal (the caller checked it).
    if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
