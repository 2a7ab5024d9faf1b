//! x86-64 System V: assembles `asm/switch_x86_64_sysv.S`, mirrors its frame
//! layout, builds the first frame of a fresh stack, and performs the
//! coroutine-side half of a switch.
//!
//! # A fresh stack, ready for its first resume
//!
//! ```text
//!  top (16-byte aligned, highest address)
//!  +----------------------------+ top
//!  | unused                     |
//!  +----------------------------+ top - 8
//!  | link slot                  |  <- weft_switch_resume stores the resumer's
//!  +----------------------------+ top - 16   stack pointer here; the trampoline
//!  | continuation = trampoline  |            runs with rsp here
//!  | rbp = 0                    |
//!  | rbx = entry function       |
//!  | r12 = entry data           |
//!  | r13, r14, r15 = 0          |
//!  | MXCSR | x87 CW (creator's) |  <- initial saved stack pointer
//!  +----------------------------+ top - 16 - FRAME_SIZE
//!  | (free stack, grows down)   |
//! ```
//!
//! # A suspended coroutine and its resumer
//!
//! ```text
//!  coroutine stack                      resumer stack
//!  +---------------------+              +---------------------+
//!  | link slot  ---------+----------->  | frame (64 bytes)    |  while the
//!  | trampoline's frame  |              |   ... return addr R |  coroutine runs
//!  | entry, user frames  |              | Coroutine::resume   |
//!  | frame (64 bytes) <--+-- saved sp   | user code           |
//!  +---------------------+              +---------------------+
//! ```

use std::arch::{asm, global_asm};

#[cfg(test)]
mod tests;

/// Byte offsets of the saved frame; see the table at the top of the `.S`.
pub(crate) const FRAME_FP: usize = 0;
pub(crate) const FRAME_R15: usize = 8;
pub(crate) const FRAME_R14: usize = 16;
pub(crate) const FRAME_R13: usize = 24;
pub(crate) const FRAME_R12: usize = 32;
pub(crate) const FRAME_RBX: usize = 40;
pub(crate) const FRAME_RBP: usize = 48;
pub(crate) const FRAME_CONT: usize = 56;
/// The whole frame, the continuation included.
pub(crate) const FRAME_SIZE: usize = 64;
/// The link slot sits this many bytes below the top of a stack.
pub(crate) const LINK_BELOW_TOP: usize = 16;
/// Bytes at the top of every stack that the switch owns (link slot + padding).
pub(crate) const STACK_RESERVED_TOP: usize = LINK_BELOW_TOP;

const _: () = assert!(FRAME_SIZE == FRAME_CONT + 8, "the continuation is the last slot");
const _: () = assert!(FRAME_SIZE % 16 == 0, "saved stack pointers must stay 16-byte aligned");
const _: () = assert!(LINK_BELOW_TOP % 16 == 0, "the trampoline needs rsp 16-byte aligned before its call");
const _: () = assert!(FRAME_R15 == FRAME_FP + 8 && FRAME_R14 == FRAME_R15 + 8 && FRAME_R13 == FRAME_R14 + 8);
const _: () = assert!(FRAME_R12 == FRAME_R13 + 8 && FRAME_RBX == FRAME_R12 + 8 && FRAME_RBP == FRAME_RBX + 8);
const _: () = assert!(FRAME_CONT == FRAME_RBP + 8);

/// Whether the switch preserves the FP control state (cargo feature `fp-control`).
pub(crate) const FP_CONTROL: bool = cfg!(feature = "fp-control");

// The .S checks each WEFT_RS_* against its own offsets and stops the build
// with an error if any differ.
global_asm!(
    ".set WEFT_FP_CONTROL, {fp}",
    ".set WEFT_RS_FRAME_FP, {fp_slot}",
    ".set WEFT_RS_FRAME_R15, {r15}",
    ".set WEFT_RS_FRAME_R14, {r14}",
    ".set WEFT_RS_FRAME_R13, {r13}",
    ".set WEFT_RS_FRAME_R12, {r12}",
    ".set WEFT_RS_FRAME_RBX, {rbx}",
    ".set WEFT_RS_FRAME_RBP, {rbp}",
    ".set WEFT_RS_FRAME_CONT, {cont}",
    ".set WEFT_RS_FRAME_SIZE, {size}",
    include_str!("../../asm/switch_x86_64_sysv.S"),
    fp = const FP_CONTROL as u8,
    fp_slot = const FRAME_FP,
    r15 = const FRAME_R15,
    r14 = const FRAME_R14,
    r13 = const FRAME_R13,
    r12 = const FRAME_R12,
    rbx = const FRAME_RBX,
    rbp = const FRAME_RBP,
    cont = const FRAME_CONT,
    size = const FRAME_SIZE,
);

unsafe extern "sysv64" {
    /// See the `.S`: switches from the caller to the coroutine whose frame is
    /// at `coroutine_sp`, storing the caller's stack pointer in `*link`.
    fn weft_switch_resume(coroutine_sp: *mut u8, link: *mut *mut u8, word: usize) -> usize;
    /// Entered only by `jmp` from [`suspend`]; never called.
    fn weft_switch_suspend();
    /// The first continuation of a fresh stack; never called.
    fn weft_coroutine_trampoline();
}

/// The function a fresh stack starts in: receives the resumer's word and the
/// data pointer given to [`init_stack`]. It must never return; it leaves for
/// the last time with [`suspend`].
pub(crate) type EntryFn = unsafe extern "sysv64" fn(word: usize, data: *mut ()) -> !;

/// Writes the first frame on a fresh stack (see the drawing above) and returns
/// the stack pointer to pass to [`resume`]. The coroutine starts with the FP
/// control state of the thread that calls this, as a new thread inherits its
/// creator's (POSIX).
///
/// # Safety
///
/// - `top` is 16-byte aligned and the `STACK_RESERVED_TOP + FRAME_SIZE` bytes
///   below it are writable memory owned by the caller.
pub(crate) unsafe fn init_stack(top: *mut u8, entry: EntryFn, data: *mut ()) -> *mut u8 {
    debug_assert_eq!(top as usize % 16, 0, "stack top must be 16-byte aligned");
    let frame = top.wrapping_sub(STACK_RESERVED_TOP + FRAME_SIZE);
    let mut fp_state = 0u64;
    // SAFETY: stores the current MXCSR and x87 control word into a local u64;
    // reads no other memory and changes no state.
    unsafe {
        asm!(
            "stmxcsr dword ptr [{p}]",
            "fnstcw word ptr [{p} + 4]",
            p = in(reg) &mut fp_state as *mut u64,
            options(nostack, preserves_flags),
        );
    }
    let words: [(usize, u64); 8] = [
        (FRAME_FP, fp_state),
        (FRAME_R15, 0),
        (FRAME_R14, 0),
        (FRAME_R13, 0),
        (FRAME_R12, data as u64),
        (FRAME_RBX, entry as usize as u64),
        (FRAME_RBP, 0), // ends frame-pointer chains
        (FRAME_CONT, weft_coroutine_trampoline as *const () as usize as u64),
    ];
    for (offset, value) in words {
        // SAFETY: `frame + offset` lies in the writable region the caller gave
        // us (offset < FRAME_SIZE) and is 8-byte aligned (frame is 16-aligned).
        unsafe { frame.add(offset).cast::<u64>().write(value) };
    }
    frame
}

/// The link slot of the stack whose top is `top`.
pub(crate) fn link_slot(top: *mut u8) -> *mut *mut u8 {
    top.wrapping_sub(LINK_BELOW_TOP).cast()
}

/// Switches into a coroutine; returns the word it passes back when it suspends.
///
/// # Safety
///
/// - `coroutine_sp` is a frame built by [`init_stack`] or saved by [`suspend`],
///   on a stack that is mapped and not running anywhere.
/// - `link` is the link slot of that same stack ([`link_slot`]).
/// - The coroutine will, eventually, come back with [`suspend`] using the
///   same `link`; until then the caller's stack frames stay untouched.
#[inline(always)]
pub(crate) unsafe fn resume(coroutine_sp: *mut u8, link: *mut *mut u8, word: usize) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { weft_switch_resume(coroutine_sp, link, word) }
}

/// The coroutine-side half of a switch: saves the running coroutine's frame,
/// stores its stack pointer in `*sp_out`, and continues its resumer (whose
/// stack pointer is in `*link`) with `word`. Returns the word of the next
/// resume.
///
/// The continuation is pushed by hand and the routine entered with `jmp`, so
/// the routine's `ret` pairs with the resumer's `call` (see the `.S`).
///
/// # Safety
///
/// - Runs on a coroutine stack whose link slot is `link`, inside a
///   [`resume`] that has not yet returned.
/// - `sp_out` is valid for writes until the switch completes.
/// - If this coroutine will never be resumed, no live value on its stack may
///   need dropping (the caller gives up on them).
#[inline(always)]
pub(crate) unsafe fn suspend(sp_out: *mut *mut u8, link: *mut *mut u8, word: usize) -> usize {
    let back: usize;
    // SAFETY: the caller's promises make the switch valid. Every
    // callee-saved register, rbx and rbp included, is saved and restored by
    // the routine; the rest are declared clobbered with clobber_abi; the
    // stack pointer is the same at `2:` as on entry to this block.
    unsafe {
        asm!(
            "lea rax, [rip + 2f]",
            "push rax",
            "jmp {switch}",
            "2:",
            switch = sym weft_switch_suspend,
            in("rdi") sp_out,
            in("rsi") link,
            in("rdx") word,
            lateout("rax") back,
            clobber_abi("sysv64"),
        );
    }
    back
}
