//! Raw stack walks for the stall monitor: the return addresses of the
//! calling thread, taken with libgcc's unwinder (`_Unwind_Backtrace`, which
//! std links for its own panics) into a caller's fixed buffer, and the
//! module an address belongs to (`dladdr`), for printing it as
//! `module+offset` (what `addr2line -e module offset` takes).
//!
//! # Inside a signal handler
//!
//! [`walk_into`] is meant to run in a signal handler on the thread being
//! walked: it does not allocate, and libgcc's unwinder walks through the
//! kernel's signal frame (it recognises the `__restore_rt` trampoline) into
//! the interrupted code. POSIX does not list `_Unwind_Backtrace` as
//! async-signal-safe: finding an address's unwind tables goes through
//! `dl_iterate_phdr`, which takes the loader's lock (a recursive one, so a
//! thread interrupted inside the loader re-enters it rather than deadlocks,
//! but may then read its lists mid-update) and updates libgcc's small
//! lookup cache (a thread interrupted inside libgcc's own lookup could see
//! that cache change under it). So the caller does not walk a thread that
//! is panicking (see `runtime::monitor`), the one long stay in the
//! unwinder; what remains is a thread interrupted within the microseconds
//! of a `dlopen` or of another stack walk (`std::backtrace` capturing).
//! This is what glibc's `backtrace(3)` does too, and what profilers that
//! walk from a signal handler rely on.

use std::ffi::{CStr, c_int, c_void};

/// `_URC_NO_REASON`: go on walking.
const URC_NO_REASON: c_int = 0;
/// `_URC_END_OF_STACK` would end it; any other non-zero code stops the walk.
const URC_NORMAL_STOP: c_int = 4;

type TraceFn = extern "C" fn(context: *mut c_void, arg: *mut c_void) -> c_int;

unsafe extern "C" {
    fn _Unwind_Backtrace(trace: TraceFn, arg: *mut c_void) -> c_int;
    fn _Unwind_GetIP(context: *mut c_void) -> usize;
}

/// Where the walk writes.
struct Frames<'a> {
    out: &'a mut [usize],
    len: usize,
}

extern "C" fn record_frame(context: *mut c_void, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `&mut Frames` that `walk_into` passed, alive for
    // the whole walk and used by nobody else meanwhile.
    let frames = unsafe { &mut *arg.cast::<Frames<'_>>() };
    if frames.len == frames.out.len() {
        return URC_NORMAL_STOP;
    }
    // SAFETY: `context` is the unwinder's own context for this frame.
    let ip = unsafe { _Unwind_GetIP(context) };
    if ip == 0 {
        return URC_NORMAL_STOP;
    }
    frames.out[frames.len] = ip;
    frames.len += 1;
    URC_NO_REASON
}

/// Writes the return addresses of the calling thread's frames, innermost
/// first, into `out` (as many as fit) and returns how many it wrote. Does
/// not allocate; see the module docs for its use in a signal handler.
pub(crate) fn walk_into(out: &mut [usize]) -> usize {
    let mut frames = Frames { out, len: 0 };
    // SAFETY: `record_frame` matches the callback type libgcc expects, and
    // `frames` outlives the call (the walk is synchronous).
    unsafe { _Unwind_Backtrace(record_frame, (&raw mut frames).cast()) };
    frames.len
}

/// The file and load address of the module (executable or shared library)
/// that holds `address`, if the loader knows one.
pub(crate) fn module_of(address: usize) -> Option<(String, usize)> {
    // SAFETY: Dl_info is plain data; all-zero is a valid value to overwrite.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables and writes `info`.
    if unsafe { libc::dladdr(address as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr set dli_fname to a NUL-terminated string owned by the
    // loader, valid while the module stays loaded (it holds this address).
    let file = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned();
    Some((file, info.dli_fbase as usize))
}
