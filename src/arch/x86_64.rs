//! x86-64 System V: assembles `asm/switch_x86_64_sysv.S`, mirrors its frame
//! layout, builds the first frame of a fresh stack, and performs the
//! coroutine-side half of a switch.
//!
//! The routines in the `.S` save only rbx, rbp and (with the cargo feature
//! `fp-control`) the FP control state; [`resume`] and [`suspend`] pass the
//! switch top in r12, which arrives unchanged on the other side (both sides
//! of a switch name the same stack), and declare r13-r15 clobbered, so the
//! compiler preserves those where they hold live values (see the `.S`
//! header). Together the switch preserves every callee-saved register for
//! its Rust callers.
//!
//! Every function here takes a stack's *switch top*: the address below
//! which the switch owns four slots (the sp slot, the link slot, and the
//! resumer's rbp and rbx while the coroutine runs) and builds the first
//! frame. Whoever owns the stack may keep data of its own
//! above it (`stack` keeps the overflow report's header there).
//!
//! # A fresh stack, ready for its first resume (default build)
//!
//! ```text
//!  switch top (16-byte aligned)
//!  +----------------------------+ top
//!  | sp slot                    |  <- the coroutine's saved stack pointer
//!  +----------------------------+ top - 8    while it is suspended
//!  | link slot                  |  <- weft_switch_resume stores the resumer's
//!  +----------------------------+ top - 16   stack pointer here,
//!  | resumer's rbp              |  <- and its rbp
//!  +----------------------------+ top - 24
//!  | resumer's rbx              |  <- and rbx; the trampoline runs with rsp
//!  +----------------------------+ top - 32   here (STACK_RESERVED_TOP)
//!  | continuation = trampoline  |
//!  | rbp = entry data           |  (the trampoline zeroes rbp before the call)
//!  | rbx = entry function       |  <- initial saved stack pointer (in sp slot)
//!  +----------------------------+ top - 32 - FRAME_SIZE
//!  | (free stack, grows down)   |
//! ```
//!
//! With `fp-control` the frame has one more slot below rbx: the creator's
//! MXCSR and x87 control word (the table at the top of the `.S`).
//!
//! # A suspended coroutine and its resumer
//!
//! ```text
//!  coroutine stack                      resumer stack
//!  +---------------------+              +---------------------+
//!  | sp slot  ---------+ |              |                     |
//!  | link slot  -------+-+----------->  | return addr R       |  while the
//!  | resumer's rbp, rbx| |              | Coroutine::resume   |  coroutine runs
//!  | trampoline's frame| |              | user code           |
//!  | entry, user frames| |              |                     |
//!  | frame          <--+ |              |                     |
//!  +---------------------+              +---------------------+
//! ```
//!
//! The resumer's rbx and rbp sit under the coroutine's top rather than on
//! the resumer's stack so that the suspend reloads them with addresses
//! computed from r12 alone, not from the stack pointer it has just loaded
//! (the `.S`, "The resumer's rbx and rbp"). With `fp-control` the resumer
//! also leaves its FP control state on its stack, below R.

use std::arch::{asm, global_asm};

#[cfg(test)]
mod tests;

/// Byte offsets of the saved frame; see the table at the top of the `.S`.
/// With `fp-control` the frame starts with the FP slot, and every other
/// slot is 8 bytes further up.
#[cfg(feature = "fp-control")]
pub(crate) const FRAME_FP: usize = 0;
#[cfg(feature = "fp-control")]
const FP_SLOT_SIZE: usize = 8;
#[cfg(not(feature = "fp-control"))]
const FP_SLOT_SIZE: usize = 0;
pub(crate) const FRAME_RBX: usize = FP_SLOT_SIZE;
pub(crate) const FRAME_RBP: usize = FP_SLOT_SIZE + 8;
pub(crate) const FRAME_CONT: usize = FP_SLOT_SIZE + 16;
/// The whole frame, the continuation included: 24 bytes, 32 with
/// `fp-control`.
pub(crate) const FRAME_SIZE: usize = FP_SLOT_SIZE + 24;
/// The sp slot (the suspended coroutine's stack pointer) sits this many
/// bytes below the switch top.
pub(crate) const SP_BELOW_TOP: usize = 8;
/// The link slot (the resumer's stack pointer) sits this many bytes below
/// the switch top.
pub(crate) const LINK_BELOW_TOP: usize = 16;
/// The resumer's rbp, while the coroutine runs, sits this many bytes below
/// the switch top.
pub(crate) const RESUMER_RBP_BELOW_TOP: usize = 24;
/// The resumer's rbx, while the coroutine runs, sits this many bytes below
/// the switch top.
pub(crate) const RESUMER_RBX_BELOW_TOP: usize = 32;
/// Bytes below the switch top that the switch owns (the sp and link slots,
/// the resumer's rbp and rbx); the trampoline runs with rsp pointing at the
/// lowest of them.
pub(crate) const STACK_RESERVED_TOP: usize = 32;
/// What a resume leaves on the resumer's own stack, where the link slot
/// points: its continuation, below it (`fp-control`) its FP control state.
pub(crate) const RESUMER_FRAME_SIZE: usize = FP_SLOT_SIZE + 8;

const _: () = assert!(FRAME_SIZE == FRAME_CONT + 8, "the continuation is the last slot");
const _: () = assert!(FRAME_SIZE % 8 == 0, "frame slots are 8 bytes (the .S aligns call_on_stack's callback)");
const _: () = assert!(STACK_RESERVED_TOP % 16 == 0, "the trampoline needs rsp 16-byte aligned before its call");
const _: () = assert!(
    SP_BELOW_TOP < LINK_BELOW_TOP
        && LINK_BELOW_TOP < RESUMER_RBP_BELOW_TOP
        && RESUMER_RBP_BELOW_TOP < RESUMER_RBX_BELOW_TOP
        && RESUMER_RBX_BELOW_TOP == STACK_RESERVED_TOP
);
const _: () = assert!(FRAME_RBP == FRAME_RBX + 8 && FRAME_CONT == FRAME_RBP + 8);

/// MXCSR at process start per the System V ABI: all exceptions masked,
/// round to nearest.
#[cfg(feature = "fp-control")]
pub(crate) const DEFAULT_MXCSR: u32 = 0x1F80;
/// The x87 control word at process start: exceptions masked, extended
/// precision, round to nearest.
#[cfg(feature = "fp-control")]
pub(crate) const DEFAULT_X87_CW: u16 = 0x037F;

/// Whether the switch preserves the FP control state (cargo feature `fp-control`).
pub(crate) const FP_CONTROL: bool = cfg!(feature = "fp-control");

/// The FP slot's offset as the `.S` checks it (not checked, and not there,
/// without `fp-control`).
#[cfg(feature = "fp-control")]
const RS_FRAME_FP: usize = FRAME_FP;
#[cfg(not(feature = "fp-control"))]
const RS_FRAME_FP: usize = 0;

// The .S checks each WEFT_RS_* against its own offsets and stops the build
// with an error if any differ.
global_asm!(
    ".set WEFT_FP_CONTROL, {fp}",
    ".set WEFT_RS_FRAME_FP, {fp_slot}",
    ".set WEFT_RS_FRAME_RBX, {rbx}",
    ".set WEFT_RS_FRAME_RBP, {rbp}",
    ".set WEFT_RS_FRAME_CONT, {cont}",
    ".set WEFT_RS_FRAME_SIZE, {size}",
    ".set WEFT_RS_SP_BELOW_TOP, {sp}",
    ".set WEFT_RS_LINK_BELOW_TOP, {link}",
    ".set WEFT_RS_RESUMER_RBP_BELOW_TOP, {resumer_rbp}",
    ".set WEFT_RS_RESUMER_RBX_BELOW_TOP, {resumer_rbx}",
    ".set WEFT_RS_STACK_RESERVED_TOP, {reserved}",
    ".set WEFT_RS_RESUMER_FRAME_SIZE, {resumer_frame}",
    include_str!("../../asm/switch_x86_64_sysv.S"),
    fp = const FP_CONTROL as u8,
    fp_slot = const RS_FRAME_FP,
    rbx = const FRAME_RBX,
    rbp = const FRAME_RBP,
    cont = const FRAME_CONT,
    size = const FRAME_SIZE,
    sp = const SP_BELOW_TOP,
    link = const LINK_BELOW_TOP,
    resumer_rbp = const RESUMER_RBP_BELOW_TOP,
    resumer_rbx = const RESUMER_RBX_BELOW_TOP,
    reserved = const STACK_RESERVED_TOP,
    resumer_frame = const RESUMER_FRAME_SIZE,
);

unsafe extern "sysv64" {
    /// Called only from [`resume`]'s inline `call`: switches from the caller
    /// to the coroutine whose switch top is in r12, storing the caller's
    /// stack pointer in its link slot.
    fn weft_switch_resume();
    /// Entered only by `jmp` from [`suspend`]; never called.
    fn weft_switch_suspend();
    /// Entered only by `jmp` from [`suspend_unpaired`]; never called.
    fn weft_switch_suspend_unpaired();
    /// Entered only by `jmp` from [`switch_direct`]; never called.
    fn weft_switch_direct();
    /// The first continuation of a fresh stack; never called.
    fn weft_coroutine_trampoline();
    /// The return address the trampoline pushes for the entry function: a
    /// label, never called.
    fn weft_coroutine_trampoline_ret();
    /// Runs a callback on a suspended coroutine's stack; see [`call_on_stack`].
    fn weft_call_on_stack(sp: *mut u8, callback: unsafe extern "sysv64" fn(*mut ()), data: *mut ());
    /// The return address of `weft_call_on_stack`'s call of the callback: a
    /// label, never called.
    fn weft_call_on_stack_ret();
}

/// The return addresses that bound a suspended coroutine's own frames in a
/// walk started inside [`call_on_stack`]'s callback: the frame whose return
/// address is `first` (in `weft_call_on_stack`) is the last one that is not
/// the coroutine's; the one whose return address is `last` (in the
/// trampoline) is the last frame of the coroutine's stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalkBounds {
    pub(crate) first: usize,
    pub(crate) last: usize,
}

/// See [`WalkBounds`].
pub(crate) fn walk_bounds() -> WalkBounds {
    WalkBounds {
        first: weft_call_on_stack_ret as *const () as usize,
        last: weft_coroutine_trampoline_ret as *const () as usize,
    }
}

/// A resumer's frame of zeroes: pointed at by a suspended coroutine's link
/// slot while [`call_on_stack`] runs, its continuation 0 ends an unwinder's
/// walk at the trampoline (see the `.S`).
#[repr(C, align(16))]
struct EndFrame([u64; RESUMER_FRAME_SIZE / 8]);

/// Runs `callback(data)` on the suspended coroutine stack whose top is
/// `top`, just below its saved frame, with that frame as the callback's
/// caller for unwinders (see `weft_call_on_stack` in the `.S`): a backtrace
/// taken in the callback walks the coroutine's frames and ends at its
/// trampoline. The coroutine's frame and everything above it are left as
/// they were (the link slot is restored before returning).
///
/// # Safety
///
/// - `top` is the top of a stack prepared by [`init_stack`] whose coroutine
///   is suspended (its sp slot holds a frame saved by [`suspend`], on this
///   stack) and cannot be resumed or dropped while this runs.
/// - At least as many bytes as the callback needs are free, mapped stack
///   between the saved stack pointer and the stack's guard page.
/// - `callback` does not unwind (a panic out of it aborts, as any panic out
///   of an `extern` function does) and does not resume or suspend this
///   coroutine.
pub(crate) unsafe fn call_on_stack(top: *mut u8, callback: unsafe extern "sysv64" fn(*mut ()), data: *mut ()) {
    let end = EndFrame([0; RESUMER_FRAME_SIZE / 8]);
    let link = link_slot(top);
    // The link slot is only read by a running coroutine (its suspend) and
    // by unwinders, and we put back what was there before anything resumes it.
    // SAFETY: a prepared stack's top slots are readable and writable (the
    // caller's promise), and the link slot is restored, as just said.
    unsafe {
        let stale = link.read();
        link.write((&raw const end).cast_mut().cast());
        weft_call_on_stack(sp_slot(top).read(), callback, data);
        link.write(stale);
    }
    // The end frame lives until here: the callback's walk read it.
    let _ = &end;
}

/// The function a fresh stack starts in: receives the resumer's word, the
/// data pointer given to [`init_stack`] and the top of its stack. It must
/// never return; it leaves for the last time with [`suspend`].
pub(crate) type EntryFn = unsafe extern "sysv64" fn(word: usize, data: *mut (), top: *mut u8) -> !;

/// Writes the first frame on a fresh stack (see the drawing above) and stores
/// its stack pointer in the stack's sp slot, ready for [`resume`]. With
/// `fp-control` the coroutine starts with the FP control state of the thread
/// that calls this, as a new thread inherits its creator's (POSIX).
///
/// # Safety
///
/// - `top` is 16-byte aligned and the `STACK_RESERVED_TOP + FRAME_SIZE` bytes
///   below it are writable memory owned by the caller.
#[inline] // a few stores, from the first resume
pub(crate) unsafe fn init_stack(top: *mut u8, entry: EntryFn, data: *mut ()) {
    debug_assert_eq!(top as usize % 16, 0, "stack top must be 16-byte aligned");
    let frame = top.wrapping_sub(STACK_RESERVED_TOP + FRAME_SIZE);
    #[cfg(feature = "fp-control")]
    {
        let mut fp_state: u64 = DEFAULT_MXCSR as u64 | (DEFAULT_X87_CW as u64) << 32;
        // SAFETY: stores the current MXCSR and x87 control word into a local
        // u64; reads no other memory and changes no state.
        unsafe {
            asm!(
                "stmxcsr dword ptr [{p}]",
                "fnstcw word ptr [{p} + 4]",
                p = in(reg) &mut fp_state as *mut u64,
                options(nostack, preserves_flags),
            );
        }
        // SAFETY: the FP slot lies in the writable region the caller gave
        // us, 8-byte aligned (frame is 8 mod 16 or 16-aligned).
        unsafe { frame.add(FRAME_FP).cast::<u64>().write(fp_state) };
    }
    // The trampoline takes the entry function from rbx and its data from
    // rbp, then zeroes rbp (the end of frame-pointer chains) before the call.
    let words: [(usize, u64); 3] = [
        (FRAME_RBX, entry as usize as u64),
        (FRAME_RBP, data as u64),
        (FRAME_CONT, weft_coroutine_trampoline as *const () as usize as u64),
    ];
    for (offset, value) in words {
        // SAFETY: `frame + offset` lies in the writable region the caller gave
        // us (offset < FRAME_SIZE) and is 8-byte aligned (top is 16-aligned,
        // and every size subtracted from it is a multiple of 8).
        unsafe { frame.add(offset).cast::<u64>().write(value) };
    }
    // SAFETY: the sp slot is inside the reserved top of the caller's region.
    unsafe { sp_slot(top).write(frame) };
}

/// The sp slot of the stack whose top is `top`.
#[inline(always)]
pub(crate) fn sp_slot(top: *mut u8) -> *mut *mut u8 {
    top.wrapping_sub(SP_BELOW_TOP).cast()
}

/// Asks the CPU to start loading the line of the slots under `top` (the
/// sp slot first), for a resume that will come soon, so that a later
/// [`prefetch_frame`] reads the sp slot from cache. A hint: it never
/// faults, whatever `top` is, and changes nothing a program can observe.
#[inline(always)]
pub(crate) fn prefetch_slots(top: *mut u8) {
    prefetch(sp_slot(top).cast());
}

/// The stage after [`prefetch_slots`]: asks the CPU to start loading the saved frame of the
/// coroutine suspended on the stack whose top is `top` (its resume pops
/// it, and returns into the code above it on its stack), reading the sp
/// slot that [`prefetch_slots`] brought in earlier.
///
/// # Safety
///
/// `top` is the switch top of a suspended coroutine's stack, which stays
/// mapped for the call: its sp slot is read.
#[inline(always)]
pub(crate) unsafe fn prefetch_frame(top: *mut u8) {
    // SAFETY: the caller's promise: the slot is mapped and holds the saved
    // stack pointer.
    let sp = unsafe { sp_slot(top).read() };
    prefetch(sp);
    prefetch(sp.wrapping_add(64));
}

/// Asks the CPU to start loading the line at `line`. A hint: it never
/// faults, whatever the address, and changes nothing a program can
/// observe.
#[inline(always)]
pub(crate) fn prefetch(line: *const u8) {
    // SAFETY: PREFETCHT0 is a hint with no architectural effect: it does
    // not fault on any address and writes nothing (SSE, baseline on
    // x86-64).
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.cast()) };
}

/// The link slot of the stack whose top is `top`.
#[inline(always)]
pub(crate) fn link_slot(top: *mut u8) -> *mut *mut u8 {
    top.wrapping_sub(LINK_BELOW_TOP).cast()
}

/// Switches into the coroutine whose stack has switch top `top`; returns
/// the word it passes back when it suspends.
///
/// The routine is reached with a direct `call` from inline asm (an `extern`
/// call would go through the GOT in a position-independent executable); the
/// `ret` of the coroutine's later [`suspend`] pairs with this `call` (see the
/// `.S`), while [`suspend_unpaired`] comes back with a `jmp`.
///
/// # Safety
///
/// - `top` is the switch top of a stack prepared by [`init_stack`] whose
///   coroutine is suspended (its sp slot holds a frame built by `init_stack`
///   or saved by [`suspend`]) and runs nowhere else.
/// - The coroutine will, eventually, come back with [`suspend`] using this
///   stack's slots; until then the caller's stack frames stay untouched.
#[inline(always)]
pub(crate) unsafe fn resume(top: *mut u8, word: usize) -> usize {
    let back: usize;
    // Registers: the routine takes the switch top in r12 and passes rax
    // through untouched both ways (the word); it saves and restores rbx, rbp
    // (which asm cannot declare clobbered) and, with fp-control, the FP
    // control state. r12 comes back holding the top of whichever coroutine
    // suspends to us: this one, or, if it was a runtime task that switched
    // straight to another ([`switch_direct`]), that other one; so it is
    // clobbered. r13-r15 come back as the coroutine
    // left them and are declared clobbered here, the caller-saved ones with
    // clobber_abi, so the compiler keeps nothing live in any of them across
    // the block. It returns with rsp as before the `call`; rsp is 16-byte
    // aligned at the `call`, as on entry to any asm block that may use the
    // stack.
    // SAFETY: the caller's promises make the switch valid; registers and the
    // stack are handled as just described.
    unsafe {
        asm!(
            "call {switch}",
            switch = sym weft_switch_resume,
            inout("r12") top => _,
            inlateout("rax") word => back,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("sysv64"),
        );
    }
    back
}

/// The asm block of [`suspend`], [`suspend_unpaired`], [`resume_unpaired`]
/// and [`switch_direct`]: pushes the continuation by hand and jumps into the
/// switch routine `$routine`; evaluates to the word that comes back.
/// Unsafe to expand: the expansion's caller makes that function's promises.
macro_rules! jump_into {
    // `$regs` says what r12 does: `in` for a suspend or a direct switch (r12
    // arrives at `2:` unchanged, because whoever continues a suspended
    // coroutine puts its top there: its resumer, or another coroutine's
    // direct switch), `inout ... => _` for a resume (r12 arrives holding the
    // top of whichever coroutine suspends to us, see `resume`). A direct
    // switch also passes the other top in rsi, which the routine consumes.
    ($routine:ident, $word:expr, $($regs:tt)*) => {{
        let back: usize;
        // Registers: as in `resume` (r12 the switch top; rax the word both
        // ways; rcx scratch for the continuation); r13-r15 arrive at `2:` as
        // the other side left them. The stack pointer is the same at `2:` as
        // on entry to this block.
        asm!(
            "lea rcx, [rip + 2f]",
            "push rcx",
            "jmp {switch}",
            "2:",
            switch = sym $routine,
            $($regs)*
            inlateout("rax") $word => back,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("sysv64"),
        );
        back
    }};
}

/// [`resume`] for a coroutine that last suspended with
/// [`suspend_unpaired`] (a runtime task): the continuation is pushed by hand and
/// the routine entered with `jmp`, so the switch leaves the CPU's
/// return-stack predictor as it is. Its top is then the return address
/// of the call that led to the last unpaired suspend on this thread, which
/// is where the resumed coroutine returns first whenever it parked at the
/// same place (many coroutines running the same code, as a server's
/// connections do); a `call` here would push an entry that return always
/// mispredicts. Otherwise the same as `resume`.
///
/// # Safety
///
/// As [`resume`].
#[inline(always)]
pub(crate) unsafe fn resume_unpaired(top: *mut u8, word: usize) -> usize {
    // SAFETY: as in `resume`, whose registers and stack handling the
    // expansion shares (r12 the switch top, rax the word both ways).
    unsafe { jump_into!(weft_switch_resume, word, inout("r12") top => _,) }
}

/// The coroutine-side half of a switch: saves the running coroutine's frame,
/// stores its stack pointer in the sp slot of its stack (whose switch top is
/// `top`), and continues its resumer (whose stack pointer is in the link
/// slot) with `word`. Returns the word of the next resume.
///
/// The continuation is pushed by hand and the routine entered with `jmp`, so
/// the routine's `ret` pairs with the resumer's `call` (see the `.S`).
///
/// # Safety
///
/// - Runs inside a [`resume`] of the coroutine stack whose switch top is
///   `top` that has not yet returned: on that stack, or on the stack of a
///   coroutine resumed from it (transitively), which then stays suspended
///   inside this call until the next resume of `top` returns here. The
///   switch saves and restores whatever stack it runs on; the link slot of
///   `top` says where to continue.
/// - If this coroutine will never be resumed, no live value on its stack may
///   need dropping (the caller gives up on them).
#[inline(always)]
pub(crate) unsafe fn suspend(top: *mut u8, word: usize) -> usize {
    // SAFETY: the caller's promises, as `jump_into` needs them.
    unsafe { jump_into!(weft_switch_suspend, word, in("r12") top,) }
}

/// [`suspend`] for a coroutine that suspends deep inside its own calls (a
/// runtime task: a park, a lock's yield): the routine continues the resumer with an indirect `jmp` rather
/// than the `ret` that pairs with its `call`, which such a suspend would
/// mispredict (see `weft_switch_suspend_unpaired` in the `.S`). Otherwise
/// the same, frame and registers alike: a coroutine suspended either way is
/// resumed, walked and unwound the same way.
///
/// # Safety
///
/// As [`suspend`].
#[inline(always)]
pub(crate) unsafe fn suspend_unpaired(top: *mut u8, word: usize) -> usize {
    // SAFETY: the caller's promises, as `jump_into` needs them.
    unsafe { jump_into!(weft_switch_suspend_unpaired, word, in("r12") top,) }
}

/// Leaves the running coroutine (switch top `from`) for the suspended
/// coroutine whose switch top is `to`, without returning to the resumer in
/// between: `to` takes over `from`'s link slot, so its next suspend
/// continues the resumer that `from` ran under (see `weft_switch_direct` in
/// the `.S`). `to` gets `word` from its suspend; returns the word that
/// continues `from` later (from its resumer, or from another direct
/// switch). The frame saved on `from`'s stack is a suspend's: `from` is
/// resumed, walked and unwound as a suspended coroutine.
///
/// # Safety
///
/// - As [`suspend`] for `from`: this runs inside a resume of `from` that has
///   not returned, on `from`'s stack or a stack resumed from it.
/// - `to` is the switch top of a different stack whose coroutine is
///   suspended by [`suspend_unpaired`] or by this function (its frame
///   continues with an indirect jump), runs nowhere else, and expects
///   `word` from its suspend.
/// - The resumer that `from` ran under stays in its resume until a
///   coroutine suspends to it, and then takes whichever did (it declares
///   r12 clobbered, as [`resume`] does).
#[inline(always)]
pub(crate) unsafe fn switch_direct(from: *mut u8, to: *mut u8, word: usize) -> usize {
    // SAFETY: the caller's promises, as `jump_into` needs them.
    unsafe { jump_into!(weft_switch_direct, word, in("r12") from, inout("rsi") to => _,) }
}
