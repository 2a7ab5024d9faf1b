//! Memory mappings: reserve, protect, release and advise anonymous memory.

use std::io;
use std::ptr::NonNull;

/// `errno` for "out of memory", which mmap and mprotect also return when the
/// process would exceed `vm.max_map_count`.
pub(crate) const ENOMEM: i32 = libc::ENOMEM;

/// The size of a base page. x86-64 Linux always uses 4 KiB base pages (huge
/// pages are opt-in per mapping), so this is a constant rather than a
/// `sysconf` call on every stack operation; `page_size_matches_kernel`
/// checks it against the kernel.
pub(crate) const PAGE_SIZE: usize = 4096;

/// The size of a page.
#[inline(always)]
pub(crate) const fn page_size() -> usize {
    PAGE_SIZE
}

#[cfg(test)]
#[test]
fn page_size_matches_kernel() {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert_eq!(size as usize, PAGE_SIZE, "weft assumes 4 KiB pages");
}

/// Maps `len` bytes of private anonymous read-write memory that the kernel
/// commits lazily (`MAP_NORESERVE`): untouched pages cost no memory.
///
/// The error is the raw OS error; callers add context (see `stack`).
pub(crate) fn map_anonymous(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choice
    // aliases nothing; the arguments are plain values.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned a null mapping"))
}

/// Makes `[addr, addr + len)` inaccessible (`PROT_NONE`).
///
/// # Safety
///
/// - `addr` is page-aligned and the range lies inside a mapping the caller owns.
/// - Nothing reads or writes the range afterwards (any access faults).
pub(crate) unsafe fn protect_none(addr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: the caller owns the range and promises not to touch it.
    let rc = unsafe { libc::mprotect(addr.as_ptr().cast(), len, libc::PROT_NONE) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Releases a mapping.
///
/// # Safety
///
/// - `[addr, addr + len)` is exactly a mapping returned by [`map_anonymous`]
///   (possibly re-protected) that the caller owns.
/// - No reference into the range outlives this call.
pub(crate) unsafe fn unmap(addr: NonNull<u8>, len: usize) {
    // SAFETY: the caller owns the whole mapping and nothing points into it.
    let rc = unsafe { libc::munmap(addr.as_ptr().cast(), len) };
    debug_assert_eq!(rc, 0, "munmap failed: {}", io::Error::last_os_error());
}

/// `vm.max_map_count`: how many mappings the kernel lets one process hold.
/// `None` when `/proc` cannot be read.
pub(crate) fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?.trim().parse().ok()
}
