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

/// Maps `len` bytes of private anonymous read-write memory, lazily
/// committed like [`map_anonymous`]'s, at an address that is a multiple of
/// `align` (a power of two, a multiple of the page size): it maps
/// `len + align` bytes and unmaps what lies before and after the aligned
/// range. The result is a mapping of its own for [`unmap`].
pub(crate) fn map_aligned(len: usize, align: usize) -> io::Result<NonNull<u8>> {
    assert!(
        align.is_power_of_two() && align % PAGE_SIZE == 0 && len % PAGE_SIZE == 0,
        "map_aligned({len}, {align}): the alignment must be a power of two and both multiples of the page size"
    );
    let span = len.checked_add(align).ok_or_else(|| io::Error::from_raw_os_error(ENOMEM))?;
    // SAFETY: as in `map_anonymous`: a fresh anonymous mapping aliases nothing.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = ptr as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let (head, tail) = (aligned - start, span - (aligned - start) - len);
    // SAFETY: both ranges lie inside the mapping just made, which nothing
    // else knows of; the pages kept are `[aligned, aligned + len)`.
    unsafe {
        if head > 0 {
            libc::munmap(ptr, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
    }
    NonNull::new(aligned as *mut u8).ok_or_else(|| io::Error::other("mmap returned a null mapping"))
}

/// Gives the pages of `[addr, addr + len)` back to the kernel
/// (`MADV_DONTNEED`): they stop counting in the process's RSS, and read as
/// zeros if touched again.
///
/// # Safety
///
/// - `addr` is page-aligned, `len` a multiple of the page size, and the
///   range lies inside a private anonymous mapping the caller owns.
/// - Nothing in the range is in use: its contents are lost.
pub(crate) unsafe fn discard(addr: NonNull<u8>, len: usize) {
    // SAFETY: the caller owns the range and no longer needs its contents.
    let rc = unsafe { libc::madvise(addr.as_ptr().cast(), len, libc::MADV_DONTNEED) };
    debug_assert_eq!(rc, 0, "madvise failed: {}", io::Error::last_os_error());
}

/// `vm.max_map_count`: how many mappings the kernel lets one process hold.
/// `None` when `/proc` cannot be read.
pub(crate) fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?.trim().parse().ok()
}
