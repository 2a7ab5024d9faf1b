//! Thread identity.

/// The kernel's id of the calling thread (`gettid(2)`).
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}
