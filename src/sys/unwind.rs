//! Walking the calling thread's stack with the system unwinder
//! (`_Unwind_Backtrace` from libgcc_s, which std links on Linux): return
//! addresses only, no symbols, no allocation of its own. Symbolising is
//! left to `std::backtrace`, once per distinct stack.

use std::ffi::{c_int, c_void};

/// `_Unwind_Reason_Code` values the callback returns.
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
