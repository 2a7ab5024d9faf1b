//! Raw stack walks: the return addresses of the calling thread, taken with
//! libgcc's unwinder (`_Unwind_Backtrace`, which std links for its own
//! panics), and the module an address belongs to (`dladdr`), for printing
//! it as `module+offset` (what `addr2line -e module offset` takes). No
//! symbols and no allocation of its own: `Runtime::dump` symbolises with
//! `std::backtrace`, once per distinct stack; the stall monitor prints
//! addresses.
//!
//! # Inside a signal handler
//!
//! [`walk_into`] is meant to run in a signal handler on the thread being
//! walked (the stall monitor's probe): it does not allocate, and libgcc's
//! unwinder walks through the kernel's signal frame (it recognises the
//! `__restore_rt` trampoline) into the interrupted code. POSIX does not list
//! `_Unwind_Backtrace` as async-signal-safe: finding an address's unwind
//! tables goes through `dl_iterate_phdr`, which takes the loader's lock (a
//! recursive one, so a thread interrupted inside the loader re-enters it
//! rather than deadlocks, but may then read its lists mid-update) and
//! updates libgcc's small lookup cache (a thread interrupted inside
//! libgcc's own lookup could see that cache change under it). So the caller
//! does not walk a thread that is panicking (see `runtime::monitor`), the
//! one long stay in the unwinder; what remains is a thread interrupted
//! within the microseconds of a `dlopen` or of another stack walk
//! (`std::backtrace` capturing). This is what glibc's `backtrace(3)` does
//! too, and what profilers that walk from a signal handler rely on.

use std::ffi::{CStr, c_int, c_void};

/// `_Unwind_Reason_Code` values the callback returns: go on walking, or stop.
const URC_NO_REASON: c_int = 0;
const URC_END_OF_STACK: c_int = 5;

type TraceFn = extern "C" fn(context: *mut c_void, arg: *mut c_void) -> c_int;

unsafe extern "C" {
    fn _Unwind_Backtrace(trace: TraceFn, arg: *mut c_void) -> c_int;
    fn _Unwind_GetIP(context: *mut c_void) -> usize;
}

/// Calls `visit` with the return address of each frame of the calling
/// thread's stack, innermost first (the first is inside this function's
/// callee chain), until it returns `false` or the walk ends.
pub(crate) fn walk(visit: &mut dyn FnMut(usize) -> bool) {
    extern "C" fn each(context: *mut c_void, arg: *mut c_void) -> c_int {
        // SAFETY: `arg` is the `&mut &mut dyn FnMut` passed below, alive for
        // the whole walk; `context` is the unwinder's, valid in this call.
        let (visit, ip) = unsafe { (&mut *arg.cast::<&mut dyn FnMut(usize) -> bool>(), _Unwind_GetIP(context)) };
        // A panic must not cross the unwinder's C frames: stop the walk.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ip != 0 && visit(ip))) {
            Ok(true) => URC_NO_REASON,
            _ => URC_END_OF_STACK,
        }
    }
    let mut visit = visit;
    // SAFETY: `each` matches `_Unwind_Trace_Fn`, and the argument outlives
    // the call (the unwinder only passes it back to `each`).
    unsafe { _Unwind_Backtrace(each, (&raw mut visit).cast()) };
}

/// Writes the return addresses of the calling thread's frames, innermost
/// first, into `out` (as many as fit) and returns how many it wrote. Does
/// not allocate; see the module docs for its use in a signal handler.
pub(crate) fn walk_into(out: &mut [usize]) -> usize {
    let mut len = 0;
    walk(&mut |ip| {
        if len == out.len() {
            return false;
        }
        out[len] = ip;
        len += 1;
        true
    });
    len
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
