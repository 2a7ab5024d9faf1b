//! Tests of the raw context switch: no `Coroutine`, just a stack, a frame
//! from [`init_stack`], and [`resume`] / [`suspend`] (or assembly helpers that
//! perform exactly the same switch with chosen register contents).
//!
//! Every coroutine here talks to its test through a struct behind the `data`
//! pointer and never returns: at the end it suspends for good, the test stops
//! resuming it and unmaps its stack (nothing on it needs dropping).
//!
//! The register contract under test: the assembly routines preserve rbx, rbp
//! and (with `fp-control`) the FP control state, take the switch top in r12
//! and leave it there (both sides of a switch put the same top in it), and
//! pass r13-r15 through untouched; [`resume`] and [`suspend`] declare
//! r13-r15 clobbered, so the compiler keeps values that are live across a
//! switch out of them (or saves them).
//!
//! What makes these tests able to fail:
//! - the register and FP tests load values on each side that differ from the
//!   other side's, so a switch that forgets to restore something hands one
//!   side the other's values;
//! - the `*_detects_a_wrong_restore*` tests overwrite one slot of a saved frame
//!   while its context is switched out and check that the readout sees the
//!   overwritten value: the readout really observes what the switch restores,
//!   and each `FRAME_*` offset belongs to the register it is named after;
//! - the register test also checks that r13-r15 arrive holding the other
//!   side's values (and r12 the top), so the live-values test (which
//!   scribbles over r13-r15 right before each switch) really hands each side
//!   the other's garbage: a wrapper that forgot to declare r13-r15 clobbered
//!   would let the compiler keep live values there, and they would come back
//!   wrong (checked by hand: with the `out("r13") _` .. `out("r15") _` lines
//!   deleted from both wrappers, that test and most others here fail in
//!   release builds, mostly by crashing, since the tests' own pointers live
//!   in r13-r15 as well).

use super::*;
use crate::sys::mem::{map_anonymous, page_size, protect_none, unmap};
use std::ptr::NonNull;

// ---------------------------------------------------------------------------
// Assembly helpers
// ---------------------------------------------------------------------------

/// The six callee-saved general registers, in this order: rbx, rbp, r12, r13,
/// r14, r15 (the order of the arrays the helpers load and fill).
type Regs = [u64; 6];
const REG_NAMES: [&str; 6] = ["rbx", "rbp", "r12", "r13", "r14", "r15"];
/// The first `SAVED` registers of [`Regs`] (rbx, rbp) are the ones the
/// routines save in the frame; then r12 (the switch top, [`TOP_REG`]); the
/// rest (r13-r15) pass through.
const SAVED: usize = 2;
/// Where r12, which carries the switch top across every switch, is in [`Regs`].
const TOP_REG: usize = 2;
/// Where the switch saves each of the first `SAVED` registers of [`Regs`].
const REG_SLOTS: [usize; SAVED] = [FRAME_RBX, FRAME_RBP];
/// Where a running coroutine's resumer keeps rbx and rbp: bytes below the
/// switch top, in `REG_NAMES` order.
const RESUMER_REG_SLOTS: [usize; SAVED] = [RESUMER_RBX_BELOW_TOP, RESUMER_RBP_BELOW_TOP];

global_asm!(
    // weft_test_resume_with_regs(top, word, load: *const Regs, out: *mut Regs,
    //                            unpaired: usize) -> usize
    //
    // Does what `resume` does (`call weft_switch_resume` with r12 = the
    // coroutine's switch top, rax = the word), or, if `unpaired` is not 0,
    // what `resume_unpaired` does (push the continuation by hand and `jmp`
    // there), but with rbx, rbp, r13-r15
    // set to `load` across the call (`load`'s r12 is not used), and writes
    // what rbx..r15 hold once the call returns into `out`. The caller's own
    // values of all six are saved first and restored last (the switch itself
    // keeps only rbx and rbp, so the helper must keep r12-r15 for its Rust
    // caller).
    "    .p2align 4",
    "    .globl weft_test_resume_with_regs",
    "    .hidden weft_test_resume_with_regs",
    "    .type weft_test_resume_with_regs, @function",
    "weft_test_resume_with_regs:",
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    push rcx", // the out pointer (caller-saved); rsp is now 16-byte aligned
    "    mov rbx, qword ptr [rdx]",
    "    mov rbp, qword ptr [rdx + 8]",
    "    mov r13, qword ptr [rdx + 24]",
    "    mov r14, qword ptr [rdx + 32]",
    "    mov r15, qword ptr [rdx + 40]",
    "    mov rax, rsi", // the word
    "    mov r12, rdi", // the switch top
    "    test r8, r8",
    "    jnz 4f",
    "    call {resume}", // rax = the coroutine's word
    "    jmp 3f",
    "4:",
    "    lea rcx, [rip + 3f]", // rcx is free: the out pointer is on the stack
    "    push rcx",
    "    jmp {resume}",
    "3:",
    "    pop rcx",
    "    mov qword ptr [rcx], rbx",
    "    mov qword ptr [rcx + 8], rbp",
    "    mov qword ptr [rcx + 16], r12",
    "    mov qword ptr [rcx + 24], r13",
    "    mov qword ptr [rcx + 32], r14",
    "    mov qword ptr [rcx + 40], r15",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
    "    .size weft_test_resume_with_regs, . - weft_test_resume_with_regs",
    //
    // weft_test_suspend_with_regs(top, word, load: *const Regs, out: *mut Regs,
    //                             routine) -> usize
    //
    // The coroutine-side twin: does exactly what `suspend` does (push the
    // continuation by hand, `jmp routine` with r12 = the switch top, rax =
    // the word; `routine` is weft_switch_suspend or
    // weft_switch_suspend_unpaired) with rbx, rbp, r13-r15 set to `load`, and
    // after being resumed writes rbx..r15 into `out`. Returns the resumer's
    // word. Saves and restores its caller's six, as the resume helper does.
    "    .p2align 4",
    "    .globl weft_test_suspend_with_regs",
    "    .hidden weft_test_suspend_with_regs",
    "    .type weft_test_suspend_with_regs, @function",
    "weft_test_suspend_with_regs:",
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    push rcx", // 16-byte aligned, as `suspend`'s asm block is
    "    mov rbx, qword ptr [rdx]",
    "    mov rbp, qword ptr [rdx + 8]",
    "    mov r13, qword ptr [rdx + 24]",
    "    mov r14, qword ptr [rdx + 32]",
    "    mov r15, qword ptr [rdx + 40]",
    "    mov rax, rsi", // the word
    "    mov r12, rdi", // the switch top
    "    lea rcx, [rip + 2f]",
    "    push rcx",
    "    jmp r8", // the routine (a scratch register, as rcx is for `suspend`)
    "2:", // resumed: rax = the resumer's word
    "    pop rcx",
    "    mov qword ptr [rcx], rbx",
    "    mov qword ptr [rcx + 8], rbp",
    "    mov qword ptr [rcx + 16], r12",
    "    mov qword ptr [rcx + 24], r13",
    "    mov qword ptr [rcx + 32], r14",
    "    mov qword ptr [rcx + 40], r15",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
    "    .size weft_test_suspend_with_regs, . - weft_test_suspend_with_regs",
    //
    // weft_test_rsp_before_call() -> usize: the caller's rsp at its `call`
    // instruction (before the call pushed the return address).
    "    .p2align 4",
    "    .globl weft_test_rsp_before_call",
    "    .hidden weft_test_rsp_before_call",
    "    .type weft_test_rsp_before_call, @function",
    "weft_test_rsp_before_call:",
    "    lea rax, [rsp + 8]",
    "    ret",
    "    .size weft_test_rsp_before_call, . - weft_test_rsp_before_call",
    //
    // weft_test_entry_record_rsp: an EntryFn that stores rsp, as the
    // trampoline's `call` left it, into the first word of `data` (rsi), then
    // tail-jumps to `align_entry` with all arguments and rsp untouched.
    "    .p2align 4",
    "    .globl weft_test_entry_record_rsp",
    "    .hidden weft_test_entry_record_rsp",
    "    .type weft_test_entry_record_rsp, @function",
    "weft_test_entry_record_rsp:",
    "    mov qword ptr [rsi], rsp",
    "    jmp {align_entry}",
    "    .size weft_test_entry_record_rsp, . - weft_test_entry_record_rsp",
    resume = sym weft_switch_resume,
    align_entry = sym align_entry,
);

unsafe extern "sysv64" {
    fn weft_test_resume_with_regs(
        top: *mut u8,
        word: usize,
        load: *const Regs,
        out: *mut Regs,
        unpaired: usize,
    ) -> usize;
    fn weft_test_suspend_with_regs(
        top: *mut u8,
        word: usize,
        load: *const Regs,
        out: *mut Regs,
        routine: unsafe extern "sysv64" fn(),
    ) -> usize;
    safe fn weft_test_rsp_before_call() -> usize;
    fn weft_test_entry_record_rsp(word: usize, data: *mut (), top: *mut u8) -> !;
}

// ---------------------------------------------------------------------------
// Shared scaffolding
// ---------------------------------------------------------------------------

/// A saved stack pointer mod 16: a frame is pushed from an rsp that is
/// 16-byte aligned before the continuation's push (a `call`, or the
/// suspend's hand-made push), so it ends FRAME_SIZE below an aligned address.
const SAVED_SP_MOD_16: usize = (16 - FRAME_SIZE % 16) % 16;

/// Usable bytes of a test stack (a guard page sits below them).
const STACK_SIZE: usize = 64 * 1024;

/// An mmap'd stack with a guard page at its low end, unmapped on drop.
struct TestStack {
    base: NonNull<u8>,
    len: usize,
}

impl TestStack {
    fn new() -> Self {
        let page = page_size();
        let len = STACK_SIZE.next_multiple_of(page) + page;
        let base = map_anonymous(len).expect("mmap a test stack");
        // SAFETY: the first page of the mapping we just made; nothing uses it.
        unsafe { protect_none(base, page) }.expect("protect the guard page");
        Self { base, len }
    }

    /// The (page-aligned, so 16-byte aligned) top of the stack.
    fn top(&self) -> *mut u8 {
        self.base.as_ptr().wrapping_add(self.len)
    }

    fn contains(&self, addr: usize) -> bool {
        (self.base.as_ptr() as usize + page_size()..self.top() as usize).contains(&addr)
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        // SAFETY: exactly our mapping; a coroutine left suspended on it is
        // never resumed, and nothing on it needs dropping.
        unsafe { unmap(self.base, self.len) };
    }
}

/// Ends the process: a coroutine was resumed after its last suspend, or
/// something it cannot report by panicking (it must not unwind) went wrong.
fn die(what: &str) -> ! {
    eprintln!("arch test coroutine: {what}; aborting");
    std::process::abort()
}

/// The coroutine's saved stack pointer (its sp slot) while it is suspended.
///
/// # Safety
///
/// `top` is the top of a stack prepared by [`init_stack`].
unsafe fn saved_sp(top: *mut u8) -> *mut u8 {
    // SAFETY: the sp slot lies in the stack's reserved top (caller's promise).
    unsafe { sp_slot(top).read() }
}

/// Reads the 8-byte slot at `offset` of the frame at `frame`.
///
/// # Safety
///
/// `frame` is a saved frame that is not running.
unsafe fn frame_word(frame: *mut u8, offset: usize) -> u64 {
    // SAFETY: offset < FRAME_SIZE and frames are 16-byte aligned (caller).
    unsafe { frame.add(offset).cast::<u64>().read() }
}

/// Overwrites the 8-byte slot at `offset` of the frame at `frame`.
///
/// # Safety
///
/// `frame` is a saved frame whose context is switched out.
unsafe fn set_frame_word(frame: *mut u8, offset: usize, value: u64) {
    // SAFETY: offset < FRAME_SIZE and frames are 16-byte aligned (caller).
    unsafe { frame.add(offset).cast::<u64>().write(value) }
}

// ---------------------------------------------------------------------------
// 1. Callee-saved registers: rbx and rbp kept, r12 the top, r13-r15 passed through
// ---------------------------------------------------------------------------

const RESUMER: u64 = 0xA5;
const COROUTINE: u64 = 0xC3;
const REG_ROUNDS: usize = 8;
/// A value no pattern produces.
const TAMPERED: u64 = 0x7A3B_E5ED_0BAD_F00D;

/// A distinctive value for register `reg` of `side` in `round`: every side,
/// round and register gets a different one, none of them zero.
fn pattern(side: u64, round: usize, reg: usize) -> u64 {
    ((reg as u64 + 1) * 0x1111_0000_0000_0000) | (side << 32) | ((round as u64) << 16) | (reg as u64 + 1)
}

fn patterns(side: u64, round: usize) -> Regs {
    std::array::from_fn(|reg| pattern(side, round, reg))
}

/// Compares the registers numbered `regs` one by one, naming the first that
/// differs.
fn assert_regs(got: &Regs, want: &Regs, regs: std::ops::Range<usize>, context: &str) {
    for reg in regs {
        let (name, got, want) = (REG_NAMES[reg], got[reg], want[reg]);
        assert_eq!(got, want, "{context}: {name} is {got:#x}, want {want:#x}");
    }
}

/// What the resumer finds after the switch back in `round` (< REG_ROUNDS):
/// its own rbx and rbp; in r12, `top`; in r13-r15, what the coroutine
/// loaded before its suspend.
fn resumer_after(round: usize, top: *mut u8) -> Regs {
    let (own, other) = (patterns(RESUMER, round), patterns(COROUTINE, round));
    std::array::from_fn(|reg| match reg {
        _ if reg < SAVED => own[reg],
        TOP_REG => top as u64,
        _ => other[reg],
    })
}

/// What the coroutine finds when resumed after `round`: its own rbx and rbp;
/// in r12, `top`; in r13-r15, what the resumer loaded for the next round's
/// resume.
fn coroutine_after(round: usize, top: *mut u8) -> Regs {
    let (own, other) = (patterns(COROUTINE, round), patterns(RESUMER, round + 1));
    std::array::from_fn(|reg| match reg {
        _ if reg < SAVED => own[reg],
        TOP_REG => top as u64,
        _ => other[reg],
    })
}

/// Where a register test's coroutine and the test meet.
#[repr(C)]
struct RegShared {
    /// What the coroutine found in its registers after each resume.
    seen: [Regs; REG_ROUNDS],
    /// The resumer's saved stack pointer, as the coroutine found it in its
    /// link slot before its first suspend.
    link_at_start: usize,
    /// Before its first suspend the coroutine overwrites this slot of its
    /// resumer's saved registers (bytes below the switch top; `usize::MAX`
    /// for none) with [`TAMPERED`]: a wrong restore, on purpose.
    tamper_resumer_slot: usize,
}

impl RegShared {
    fn new(tamper_resumer_slot: usize) -> Self {
        Self { seen: [[0; 6]; REG_ROUNDS], link_at_start: 0, tamper_resumer_slot }
    }
}

/// Entry of the register tests: in each round, loads its own pattern and
/// suspends with the round number; the resumer's word is the next round.
///
/// # Safety
///
/// `data` is a `RegShared` that outlives every resume of this stack.
unsafe extern "sysv64" fn regs_entry(word: usize, data: *mut (), top: *mut u8) -> ! {
    let shared = data.cast::<RegShared>();
    // SAFETY: we run inside a resume of `top`'s stack: its link slot holds
    // the resumer's saved frame, and the slots below the top its rbx and
    // rbp, which stay switched out until we suspend.
    unsafe {
        (*shared).link_at_start = link_slot(top).read() as usize;
        let below = (*shared).tamper_resumer_slot;
        if below != usize::MAX {
            top.sub(below).cast::<u64>().write(TAMPERED);
        }
    }
    let mut round = word;
    while round < REG_ROUNDS {
        let load = patterns(COROUTINE, round);
        // Both suspend routines, in turns: they differ only in how they
        // continue the resumer (`ret` or `jmp`).
        let routine = if round % 2 == 0 { weft_switch_suspend } else { weft_switch_suspend_unpaired };
        // SAFETY: runs on `top`'s stack inside a resume of it, like
        // `suspend`; `load` and `seen[round]` are valid; the helper restores
        // every callee-saved register it uses.
        round = unsafe { weft_test_suspend_with_regs(top, round, &load, &raw mut (*shared).seen[round], routine) };
    }
    // SAFETY: as above; nothing on this stack needs dropping.
    unsafe { suspend(top, usize::MAX) };
    die("a register test coroutine was resumed after its end")
}

/// Runs the register exchange for `REG_ROUNDS` rounds, plus one resume that
/// lets the coroutine record its last round and suspend for good. Returns,
/// per resume, what the resumer found in its registers after the switch back.
///
/// Every switch here goes through the helpers, which keep the real register
/// values of this function and of the coroutine's Rust code out of reach: a
/// broken switch fails an assertion instead of corrupting the test itself
/// (except on a fresh stack, whose trampoline needs rbx and rbp intact).
fn run_register_rounds(stack: &TestStack, shared: *mut RegShared) -> [Regs; REG_ROUNDS + 1] {
    let top = stack.top();
    // SAFETY: the top of our own stack, 16-byte aligned, with writable pages
    // below it; `shared` outlives the coroutine's use of it (we stop resuming
    // before returning).
    unsafe { init_stack(top, regs_entry, shared.cast()) };
    let mut after = [[0; 6]; REG_ROUNDS + 1];
    for (round, out) in after.iter_mut().enumerate() {
        let load = patterns(RESUMER, round);
        // The coroutine is suspended on `top`'s stack (fresh, or suspended by
        // its previous round) and always comes back with a suspend.
        // Both ways in, in turns (`resume`, and `resume_unpaired` every
        // third round).
        let unpaired = usize::from(round % 3 == 2);
        // SAFETY: as just said; the helper performs `resume`'s switch and
        // restores our callee-saved registers.
        let back = unsafe { weft_test_resume_with_regs(top, round, &load, out, unpaired) };
        let want = if round < REG_ROUNDS { round } else { usize::MAX };
        assert_eq!(back, want, "the coroutine's word in round {round}");
        // SAFETY: suspended just now; the sp slot holds its frame.
        let sp = unsafe { saved_sp(top) } as usize;
        assert_eq!(sp % 16, SAVED_SP_MOD_16, "saved stack pointer {sp:#x} (FRAME_SIZE {FRAME_SIZE})");
        assert!(stack.contains(sp), "saved stack pointer {sp:#x} must lie on the coroutine's stack");
    }
    after
}

/// The routines restore rbx and rbp on both sides, bring the top back in r12,
/// and leave r13-r15 as the other side had them (the wrappers' callers are
/// told they are clobbered).
#[test]
fn rbx_rbp_survive_both_directions_r12_keeps_the_top_and_r13_to_r15_pass_through() {
    let stack = TestStack::new();
    let mut shared = RegShared::new(usize::MAX);
    let after = run_register_rounds(&stack, &raw mut shared);
    for (round, regs) in after.iter().enumerate() {
        let context = format!("resumer, after the switch back in round {round}");
        if round < REG_ROUNDS {
            assert_regs(regs, &resumer_after(round, stack.top()), 0..6, &context);
        } else {
            // The last suspend is the Rust `suspend` in regs_entry: r12
            // holds the top, r13-r15 whatever its code left there.
            assert_regs(regs, &resumer_after(round - 1, stack.top()), TOP_REG..TOP_REG + 1, &context);
            assert_regs(regs, &patterns(RESUMER, round), 0..SAVED, &context);
        }
    }
    for (round, regs) in shared.seen.iter().enumerate() {
        let context = format!("coroutine, when resumed after round {round}");
        assert_regs(regs, &coroutine_after(round, stack.top()), 0..6, &context);
    }
    assert_eq!(shared.link_at_start % 16, SAVED_SP_MOD_16, "the resumer's saved stack pointer");
}

/// Negative control for the resumer side: the coroutine overwrites one
/// register's slot among its resumer's saved registers (under the switch
/// top), and the readout must show exactly that register changed. Proves
/// the test observes what `weft_switch_suspend` restores, and that each
/// RESUMER_*_BELOW_TOP is the slot of the register it is named after.
#[test]
fn register_test_detects_a_wrong_restore_in_the_resumer() {
    for (reg, &slot) in RESUMER_REG_SLOTS.iter().enumerate() {
        let stack = TestStack::new();
        let mut shared = RegShared::new(slot);
        let after = run_register_rounds(&stack, &raw mut shared);
        let mut want = resumer_after(0, stack.top());
        want[reg] = TAMPERED;
        assert_eq!(after[0], want, "round 0 with {} ({slot} bytes below the top) overwritten", REG_NAMES[reg]);
        // The later rounds are untouched.
        for (round, regs) in after.iter().enumerate().take(REG_ROUNDS).skip(1) {
            assert_eq!(*regs, resumer_after(round, stack.top()), "round {round}");
        }
    }
}

/// Negative control for the coroutine side: the test overwrites one
/// register's slot of the suspended coroutine's frame before resuming it.
#[test]
fn register_test_detects_a_wrong_restore_in_the_coroutine() {
    for (reg, &slot) in REG_SLOTS.iter().enumerate() {
        let stack = TestStack::new();
        let top = stack.top();
        let mut shared = RegShared::new(usize::MAX);
        let shared_ptr = &raw mut shared;
        // SAFETY: as in run_register_rounds.
        unsafe { init_stack(top, regs_entry, shared_ptr.cast()) };
        let mut out = [0; 6];
        // SAFETY: as in run_register_rounds; round 0 starts the coroutine.
        let back = unsafe { weft_test_resume_with_regs(top, 0, &patterns(RESUMER, 0), &mut out, 0) };
        assert_eq!(back, 0);
        // SAFETY: the coroutine is suspended; its frame is switched out.
        unsafe {
            let frame = saved_sp(top);
            assert_eq!(
                frame_word(frame, slot),
                pattern(COROUTINE, 0, reg),
                "{} saved at offset {slot}",
                REG_NAMES[reg]
            );
            set_frame_word(frame, slot, TAMPERED);
        }
        // SAFETY: as above; the coroutine records round 0 and suspends in round 1.
        let back = unsafe { resume(top, 1) };
        assert_eq!(back, 1);
        let mut want = patterns(COROUTINE, 0);
        want[reg] = TAMPERED;
        // SAFETY: the coroutine is suspended; nothing else touches `shared`.
        let seen = unsafe { (*shared_ptr).seen[0] };
        // Resumed by the Rust `resume`: r13-r15 hold whatever this function's
        // code left there, so only the saved registers are compared.
        assert_eq!(
            seen[..SAVED],
            want[..SAVED],
            "coroutine's registers with {} (frame offset {slot}) overwritten",
            REG_NAMES[reg]
        );
    }
}

// ---------------------------------------------------------------------------
// 1b. r13-r15 through the Rust wrappers: live values survive
// ---------------------------------------------------------------------------
//
// The routines do not keep r13-r15; `resume` and `suspend` declare them
// clobbered, and the compiler must keep whatever is live across a switch
// elsewhere (r12 comes back holding the top, which the wrappers say: it is
// their input). These tests hold more values live across every switch than
// the routines preserve (rbx, rbp, and the top in r12), with r13-r15
// scribbled over by the other side just before each switch, and check that
// every value comes back.

/// Rounds of the live-values exchange.
const LIVE_ROUNDS: usize = 16;

/// Overwrites r13-r15 with values derived from `seed` and declares them
/// clobbered. Placed right before a switch, it hands the other side these
/// values in r13-r15 (which pass through the routines; see the register test
/// above), so anything the other side wrongly kept there is lost.
#[inline(always)]
fn scribble_r13_to_r15(seed: u64) {
    // SAFETY: writes only the three registers it declares as outputs.
    unsafe {
        asm!(
            "lea r13, [{s} + 1]",
            "lea r14, [{s} + 2]",
            "lea r15, [{s} + 3]",
            s = in(reg) seed,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            options(nomem, nostack, preserves_flags),
        );
    }
}

/// Makes twelve values the compiler cannot predict (each through
/// `black_box`, so none can be recomputed from another), runs `$switch` while
/// all of them are live, and evaluates to how many changed. Twelve is more
/// than rbx and rbp can hold, so without the wrappers' clobbers the register
/// allocator would put some of them in r13-r15.
macro_rules! changed_across {
    ($seed:expr, $switch:block) => {{
        let seed: u64 = $seed;
        let keys: [u64; 12] = std::array::from_fn(|i| (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let v0 = std::hint::black_box(seed ^ keys[0]);
        let v1 = std::hint::black_box(seed ^ keys[1]);
        let v2 = std::hint::black_box(seed ^ keys[2]);
        let v3 = std::hint::black_box(seed ^ keys[3]);
        let v4 = std::hint::black_box(seed ^ keys[4]);
        let v5 = std::hint::black_box(seed ^ keys[5]);
        let v6 = std::hint::black_box(seed ^ keys[6]);
        let v7 = std::hint::black_box(seed ^ keys[7]);
        let v8 = std::hint::black_box(seed ^ keys[8]);
        let v9 = std::hint::black_box(seed ^ keys[9]);
        let v10 = std::hint::black_box(seed ^ keys[10]);
        let v11 = std::hint::black_box(seed ^ keys[11]);
        $switch
        [v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11]
            .iter()
            .zip(keys)
            .filter(|&(v, key)| *v != seed ^ key)
            .count()
    }};
}

#[repr(C)]
struct LiveShared {
    /// Per round, how many of the coroutine's live values changed across its
    /// suspend (`usize::MAX`: the round never ran).
    changed: [usize; LIVE_ROUNDS],
}

/// Entry of the live-values test: in each round holds twelve values across a
/// `suspend`, with r13-r15 scribbled just before it.
///
/// # Safety
///
/// `data` is a `LiveShared` that outlives every resume of this stack.
unsafe extern "sysv64" fn live_entry(word: usize, data: *mut (), top: *mut u8) -> ! {
    let shared = data.cast::<LiveShared>();
    let mut round = word;
    while round < LIVE_ROUNDS {
        let next: usize;
        let changed = changed_across!(pattern(COROUTINE, round, 0), {
            scribble_r13_to_r15(pattern(COROUTINE, round, 4));
            // SAFETY: runs on `top`'s stack inside a resume of it.
            next = unsafe { suspend(top, round) };
        });
        // SAFETY: the test waits in resume while we use `shared`.
        unsafe { (*shared).changed[round] = changed };
        round = next;
    }
    // SAFETY: as above; nothing on this stack needs dropping.
    unsafe { suspend(top, usize::MAX) };
    die("the live-values test coroutine was resumed after its end")
}

/// Values live across `resume` (in the resumer) and across `suspend` (in the
/// coroutine) survive, although the routines do not keep r13-r15 and each
/// side fills r13-r15 with its own garbage right before switching.
#[test]
fn live_values_survive_resume_and_suspend() {
    let stack = TestStack::new();
    let top = stack.top();
    let mut shared = LiveShared { changed: [usize::MAX; LIVE_ROUNDS] };
    let shared_ptr = &raw mut shared;
    // SAFETY: our own stack's top; `shared` outlives the coroutine's use.
    unsafe { init_stack(top, live_entry, shared_ptr.cast()) };
    for round in 0..=LIVE_ROUNDS {
        let back: usize;
        let changed = changed_across!(pattern(RESUMER, round, 0), {
            scribble_r13_to_r15(pattern(RESUMER, round, 4));
            // SAFETY: the coroutine is suspended (fresh, or by its previous
            // round) and always comes back with a suspend.
            back = unsafe { resume(top, round) };
        });
        assert_eq!(changed, 0, "the resumer's live values that changed across resume in round {round}");
        let want = if round < LIVE_ROUNDS { round } else { usize::MAX };
        assert_eq!(back, want, "the coroutine's word in round {round}");
    }
    // SAFETY: the coroutine has suspended for good; nothing else touches `shared`.
    let changed = unsafe { (*shared_ptr).changed };
    assert_eq!(changed, [0; LIVE_ROUNDS], "the coroutine's live values that changed across suspend, per round");
}

// ---------------------------------------------------------------------------
// 2. FP control state: MXCSR control bits and the x87 control word
// ---------------------------------------------------------------------------

// Only with the cargo feature `fp-control`: without it the frame has no FP
// slot and the switch promises nothing about the FP state (CI runs these
// tests with the feature on).
#[cfg(feature = "fp-control")]
mod fp {
    use super::*;

    const MXCSR_DEFAULT: u32 = 0x1F80;
    const FCW_DEFAULT: u16 = 0x037F;
    /// MXCSR bits 6-15: DAZ, exception masks, rounding, FZ. Bits 0-5 are the
    /// sticky exception flags.
    const MXCSR_CONTROL: u32 = 0xFFC0;
    const MXCSR_FLAGS: u32 = 0x003F;

    /// MXCSR: all exceptions masked, rounding toward zero (RC = 11).
    const R_MXCSR: u32 = MXCSR_DEFAULT | 0x6000;
    /// x87: rounding toward zero (RC = 11), precision control double (PC = 10).
    const R_FCW: u16 = 0x0C00 | 0x0200 | 0x007F;
    /// MXCSR: rounding up (RC = 10), flush-to-zero, denormals-are-zero, and the
    /// denormal-operand exception unmasked (harmless: with DAZ it never fires).
    const C_MXCSR: u32 = (MXCSR_DEFAULT & !0x0100) | 0x4000 | 0x8000 | 0x0040;
    /// x87: rounding up (RC = 10), precision control single (PC = 00).
    const C_FCW: u16 = 0x0800 | 0x007F;
    /// The creator's state when the stack is built: rounding down everywhere.
    const INIT_MXCSR: u32 = MXCSR_DEFAULT | 0x2000;
    const INIT_FCW: u16 = 0x0400 | 0x037F;

    /// Per round, the state the resumer sets before resuming and the state the
    /// coroutine sets before suspending. Between them: both parts differ, only
    /// MXCSR differs, only the control word differs, neither differs (only the
    /// sticky flags do), and back.
    const FP_ROUNDS: usize = 8;
    const RESUMER_FP: [(u32, u16); FP_ROUNDS] = [
        (R_MXCSR, R_FCW),
        (R_MXCSR, R_FCW),
        (R_MXCSR, R_FCW),
        (R_MXCSR, R_FCW),
        (MXCSR_DEFAULT, FCW_DEFAULT),
        (MXCSR_DEFAULT, FCW_DEFAULT),
        (R_MXCSR, R_FCW),
        (C_MXCSR, C_FCW),
    ];
    const COROUTINE_FP: [(u32, u16); FP_ROUNDS] = [
        (C_MXCSR, C_FCW),
        (C_MXCSR, R_FCW),
        (R_MXCSR, C_FCW),
        (R_MXCSR, R_FCW),
        (C_MXCSR, C_FCW),
        (MXCSR_DEFAULT, FCW_DEFAULT),
        (C_MXCSR, C_FCW),
        (R_MXCSR, R_FCW),
    ];

    /// The current MXCSR and x87 control word.
    fn fp_state() -> (u32, u16) {
        let mut mxcsr = 0u32;
        let mut fcw = 0u16;
        // SAFETY: stores into the two locals only; changes no state.
        unsafe {
            asm!(
                "stmxcsr dword ptr [{m}]",
                "fnstcw word ptr [{c}]",
                m = in(reg) &raw mut mxcsr,
                c = in(reg) &raw mut fcw,
                options(nostack, preserves_flags),
            );
        }
        (mxcsr, fcw)
    }

    /// Loads MXCSR (flags included) and the x87 control word.
    ///
    /// # Safety
    ///
    /// Until the defaults are back ([`FpDefaultsOnDrop`]), the calling thread
    /// does no floating-point arithmetic whose result matters; every state used
    /// here keeps all exceptions that can occur masked.
    unsafe fn set_fp_state(mxcsr: u32, fcw: u16) {
        // SAFETY: reads the two locals only; the caller accepts the new modes.
        unsafe {
            asm!(
                "ldmxcsr dword ptr [{m}]",
                "fldcw word ptr [{c}]",
                m = in(reg) &mxcsr,
                c = in(reg) &fcw,
                options(nostack, preserves_flags, readonly),
            );
        }
    }

    /// 1 / 3 in SSE: sets MXCSR's sticky precision (inexact) flag.
    fn inexact_division() {
        // SAFETY: a register-only division; the inexact exception is masked in
        // every MXCSR these tests use.
        unsafe {
            asm!(
                "divsd {a}, {b}",
                a = inout(xmm_reg) 1.0f64 => _,
                b = in(xmm_reg) 3.0f64,
                options(nomem, nostack),
            );
        }
    }

    /// Puts this thread back on the default FP state, even if a test panics.
    struct FpDefaultsOnDrop;

    impl Drop for FpDefaultsOnDrop {
        fn drop(&mut self) {
            // SAFETY: the defaults.
            unsafe { set_fp_state(MXCSR_DEFAULT, FCW_DEFAULT) };
        }
    }

    #[repr(C)]
    struct FpShared {
        /// The coroutine's state on entry (inherited from `init_stack`'s caller).
        at_entry: (u32, u16),
        /// The coroutine's state right after each resume.
        seen: [(u32, u16); FP_ROUNDS],
        /// Before suspending in round 0, the coroutine overwrites its resumer's
        /// saved FP slot with this (MXCSR, control word), if set: a wrong restore.
        tamper_resumer: Option<(u32, u16)>,
    }

    /// Entry of the FP tests: in each round sets `COROUTINE_FP[round]`, sets or
    /// clears the sticky flags (the opposite of the resumer), suspends with the
    /// round number, and records its state when resumed.
    ///
    /// # Safety
    ///
    /// `data` is an `FpShared` that outlives every resume of this stack.
    unsafe extern "sysv64" fn fp_entry(word: usize, data: *mut (), top: *mut u8) -> ! {
        let shared = data.cast::<FpShared>();
        // SAFETY: the test waits in resume while we use `shared`.
        unsafe { (*shared).at_entry = fp_state() };
        let mut round = word;
        while round < FP_ROUNDS {
            let (mxcsr, fcw) = COROUTINE_FP[round];
            // SAFETY: all exceptions that can occur stay masked; the test
            // restores the defaults on its thread at the end.
            unsafe { set_fp_state(mxcsr, fcw) };
            if round % 2 == 0 {
                inexact_division();
            }
            // SAFETY: the resumer's frame is switched out while we run.
            unsafe {
                if let (0, Some((mxcsr, fcw))) = (round, (*shared).tamper_resumer) {
                    let frame = link_slot(top).read();
                    set_frame_word(frame, FRAME_FP, u64::from(mxcsr) | (u64::from(fcw) << 32));
                }
            }
            // SAFETY: runs on `top`'s stack inside a resume of it. Both
            // suspend routines, in turns (the FP check is in both).
            let next = unsafe { if round % 3 == 1 { suspend_unpaired(top, round) } else { suspend(top, round) } };
            let now = fp_state();
            // SAFETY: the test waits in resume while we use `shared`.
            unsafe { (*shared).seen[round] = now };
            round = next;
        }
        // SAFETY: as above; nothing on this stack needs dropping.
        unsafe { suspend(top, usize::MAX) };
        die("an FP test coroutine was resumed after its end")
    }

    /// Runs the FP exchange and returns the resumer's state after each round's
    /// switch back. Leaves non-default FP state behind: the caller holds an
    /// [`FpDefaultsOnDrop`].
    fn run_fp_rounds(stack: &TestStack, shared: *mut FpShared) -> [(u32, u16); FP_ROUNDS] {
        let top = stack.top();
        // SAFETY: exceptions stay masked; the caller restores the defaults.
        unsafe { set_fp_state(INIT_MXCSR, INIT_FCW) };
        // SAFETY: our own stack's top; `shared` outlives the coroutine's use.
        unsafe { init_stack(top, fp_entry, shared.cast()) };
        let mut after = [(0, 0); FP_ROUNDS];
        for (round, state) in after.iter_mut().enumerate() {
            let (mxcsr, fcw) = RESUMER_FP[round];
            // SAFETY: as above.
            unsafe { set_fp_state(mxcsr, fcw) };
            if round % 2 == 1 {
                inexact_division();
            }
            // SAFETY: the coroutine is suspended on `top`'s stack and always
            // comes back with a suspend. Both ways in, in turns.
            let back = unsafe { if round % 3 == 2 { resume_unpaired(top, round) } else { resume(top, round) } };
            *state = fp_state();
            assert_eq!(back, round, "the coroutine's word in round {round}");
        }
        // SAFETY: as above; the coroutine records its last round, then ends.
        let back = unsafe { resume(top, FP_ROUNDS) };
        assert_eq!(back, usize::MAX);
        after
    }

    #[test]
    fn fp_control_state_survives_both_directions() {
        let _defaults = FpDefaultsOnDrop;
        let stack = TestStack::new();
        let mut shared = FpShared { at_entry: (0, 0), seen: [(0, 0); FP_ROUNDS], tamper_resumer: None };
        // The division below really sets a sticky flag, so the flags differ
        // between the two sides at every switch (each side divides in alternate
        // rounds, after clearing its flags).
        // SAFETY: exceptions stay masked; `_defaults` restores the defaults.
        unsafe { set_fp_state(MXCSR_DEFAULT, FCW_DEFAULT) };
        inexact_division();
        let flags = fp_state().0 & MXCSR_FLAGS;
        let after = run_fp_rounds(&stack, &raw mut shared);
        drop(_defaults);
        assert_eq!(flags, 0x20, "1 / 3 sets the precision flag and only it");
        let (mxcsr, fcw) = shared.at_entry;
        assert_eq!(mxcsr & MXCSR_CONTROL, INIT_MXCSR & MXCSR_CONTROL, "coroutine's MXCSR on entry: {mxcsr:#06x}");
        assert_eq!(fcw, INIT_FCW, "coroutine's x87 control word on entry: {fcw:#06x}");
        for round in 0..FP_ROUNDS {
            let (mxcsr, fcw) = after[round];
            let (want_mxcsr, want_fcw) = RESUMER_FP[round];
            assert_eq!(
                mxcsr & MXCSR_CONTROL,
                want_mxcsr & MXCSR_CONTROL,
                "resumer's MXCSR after round {round}: {mxcsr:#06x}, want {want_mxcsr:#06x} (flags aside)"
            );
            assert_eq!(fcw, want_fcw, "resumer's x87 control word after round {round}: {fcw:#06x}");
            let (mxcsr, fcw) = shared.seen[round];
            let (want_mxcsr, want_fcw) = COROUTINE_FP[round];
            assert_eq!(
                mxcsr & MXCSR_CONTROL,
                want_mxcsr & MXCSR_CONTROL,
                "coroutine's MXCSR when resumed after round {round}: {mxcsr:#06x}, want {want_mxcsr:#06x} (flags aside)"
            );
            assert_eq!(fcw, want_fcw, "coroutine's x87 control word when resumed after round {round}: {fcw:#06x}");
        }
    }

    /// Negative control for the FP test: the coroutine overwrites its resumer's
    /// saved FP slot, and the resumer must come back with that state.
    #[test]
    fn fp_test_detects_a_wrong_restore() {
        let _defaults = FpDefaultsOnDrop;
        let stack = TestStack::new();
        let tampered = (MXCSR_DEFAULT | 0x2000, 0x0400 | 0x007F); // rounding down; PC single
        let mut shared = FpShared { at_entry: (0, 0), seen: [(0, 0); FP_ROUNDS], tamper_resumer: Some(tampered) };
        let after = run_fp_rounds(&stack, &raw mut shared);
        drop(_defaults);
        let (mxcsr, fcw) = after[0];
        assert_eq!(mxcsr & MXCSR_CONTROL, tampered.0, "resumer's MXCSR with its saved slot overwritten");
        assert_eq!(fcw, tampered.1, "resumer's x87 control word with its saved slot overwritten");
        assert_eq!(after[1].0 & MXCSR_CONTROL, RESUMER_FP[1].0 & MXCSR_CONTROL, "round 1 is untouched");
    }
}

// ---------------------------------------------------------------------------
// 3. Stack alignment
// ---------------------------------------------------------------------------

#[repr(C)]
struct AlignShared {
    /// rsp on entry to the entry function (written by the asm shim; must stay
    /// the first field).
    entry_rsp: usize,
    /// The entry function's arguments.
    entry_word: usize,
    entry_top: usize,
    /// rsp at call sites inside the coroutine: in the entry function before
    /// and after a suspend, and inside a nested frame.
    call_sites: [usize; 3],
    /// The resumer's saved stack pointer, from the link slot.
    resumer_frame: usize,
}

/// A call one frame deeper, with an odd-sized local.
#[inline(never)]
fn rsp_in_a_nested_frame(bytes: &mut [u8; 24]) -> usize {
    bytes[0] = 1;
    std::hint::black_box(bytes);
    weft_test_rsp_before_call()
}

/// Reached by `jmp` from `weft_test_entry_record_rsp`, with rsp as the
/// trampoline's `call` left it.
///
/// # Safety
///
/// `data` is an `AlignShared` that outlives every resume of this stack.
unsafe extern "sysv64" fn align_entry(word: usize, data: *mut (), top: *mut u8) -> ! {
    let shared = data.cast::<AlignShared>();
    let here = weft_test_rsp_before_call();
    // SAFETY: the test waits in resume while we use `shared`; the link slot
    // holds the resumer's frame while we run.
    unsafe {
        (*shared).entry_word = word;
        (*shared).entry_top = top as usize;
        (*shared).call_sites[0] = here;
        (*shared).resumer_frame = link_slot(top).read() as usize;
    }
    // SAFETY: runs on `top`'s stack inside a resume of it.
    unsafe { suspend(top, 1) };
    let here = weft_test_rsp_before_call();
    let nested = rsp_in_a_nested_frame(&mut [0; 24]);
    // SAFETY: as above.
    unsafe {
        (*shared).call_sites[1] = here;
        (*shared).call_sites[2] = nested;
        suspend(top, 2);
    }
    die("the alignment test coroutine was resumed after its end")
}

#[test]
fn rsp_is_aligned_at_entry_and_at_call_sites() {
    // The helper itself, on this (ordinary) thread: call sites are aligned.
    assert_eq!(weft_test_rsp_before_call() % 16, 0, "weft_test_rsp_before_call is off by a push");
    let stack = TestStack::new();
    let top = stack.top();
    let mut shared = AlignShared { entry_rsp: 0, entry_word: 0, entry_top: 0, call_sites: [0; 3], resumer_frame: 0 };
    let shared_ptr = &raw mut shared;
    // SAFETY: our own stack's top; `shared` outlives the coroutine's use.
    unsafe { init_stack(top, weft_test_entry_record_rsp, shared_ptr.cast()) };
    // SAFETY: the coroutine is suspended (fresh) and always comes back.
    assert_eq!(unsafe { resume(top, 0x5EED) }, 1);
    // SAFETY: suspended now.
    let sp = unsafe { saved_sp(top) } as usize;
    assert_eq!(sp % 16, SAVED_SP_MOD_16, "the coroutine's saved stack pointer {sp:#x}");
    // SAFETY: as above.
    assert_eq!(unsafe { resume(top, 0) }, 2);

    let entry_rsp = shared.entry_rsp;
    assert_eq!(entry_rsp % 16, 8, "rsp on entry to the entry function: {entry_rsp:#x} (ABI: 8 mod 16)");
    assert_eq!(
        entry_rsp,
        top as usize - STACK_RESERVED_TOP - 8,
        "the trampoline calls the entry function with rsp at the lowest top slot"
    );
    for (i, rsp) in shared.call_sites.iter().enumerate() {
        assert_eq!(rsp % 16, 0, "rsp at call site {i} in the coroutine: {rsp:#x}");
        assert!(stack.contains(*rsp), "call site {i} runs on the coroutine's stack");
    }
    assert_eq!(shared.entry_word, 0x5EED, "the entry function's word");
    assert_eq!(shared.entry_top, top as usize, "the entry function's top");
    assert_eq!(
        shared.resumer_frame % 16,
        SAVED_SP_MOD_16,
        "the resumer's saved stack pointer: {:#x}",
        shared.resumer_frame
    );
    assert!(!stack.contains(shared.resumer_frame), "the resumer's frame is on the resumer's stack");
}

// ---------------------------------------------------------------------------
// 4. Words
// ---------------------------------------------------------------------------

const WORDS: [usize; 8] = [0, 1, usize::MAX, 1 << 63, 0xDEAD_BEEF_CAFE_F00D, 0x8000_0000, 0xFFFF_FFFF, 42];

/// What the coroutine answers to `word`.
fn reply(word: usize) -> usize {
    word.rotate_left(13) ^ 0x5555_AAAA_0F0F_F0F0
}

#[repr(C)]
struct WordShared {
    received: [usize; WORDS.len()],
}

/// Records each word it gets (the first as its argument, the rest as the
/// return of `suspend`) and answers with `reply(word)`.
///
/// # Safety
///
/// `data` is a `WordShared` that outlives every resume of this stack.
unsafe extern "sysv64" fn word_entry(word: usize, data: *mut (), top: *mut u8) -> ! {
    let shared = data.cast::<WordShared>();
    let mut word = word;
    for i in 0..WORDS.len() {
        // SAFETY: the test waits in resume while we use `shared`.
        unsafe { (*shared).received[i] = word };
        // SAFETY: runs on `top`'s stack inside a resume of it; after the
        // last word nothing on this stack needs dropping.
        word = unsafe { suspend(top, reply(word)) };
    }
    die("the word test coroutine was resumed after its last word")
}

#[test]
fn words_cross_the_switch_both_ways() {
    let stack = TestStack::new();
    let top = stack.top();
    let mut shared = WordShared { received: [0x0BAD; WORDS.len()] };
    let shared_ptr = &raw mut shared;
    // SAFETY: our own stack's top; `shared` outlives the coroutine's use.
    unsafe { init_stack(top, word_entry, shared_ptr.cast()) };
    for (i, &word) in WORDS.iter().enumerate() {
        // SAFETY: the coroutine is suspended and always comes back.
        let back = unsafe { resume(top, word) };
        assert_eq!(back, reply(word), "answer to word {i} ({word:#x})");
    }
    assert_eq!(shared.received, WORDS, "words as the coroutine received them");
}

/// A coroutine that resumes another: each stack's link slot brings each
/// suspend back to its own resumer.
#[repr(C)]
struct NestShared {
    inner_top: *mut u8,
    log: Vec<(&'static str, usize)>,
}

/// # Safety
///
/// `data` is a `NestShared` that outlives every resume of this stack.
unsafe extern "sysv64" fn inner_entry(word: usize, data: *mut (), top: *mut u8) -> ! {
    let shared = data.cast::<NestShared>();
    let mut word = word;
    loop {
        // SAFETY: our resumer (the outer coroutine) waits in resume.
        unsafe { (*shared).log.push(("inner got", word)) };
        // SAFETY: runs on `top`'s stack inside a resume of it.
        word = unsafe { suspend(top, word + 1) };
    }
}

/// # Safety
///
/// `data` is a `NestShared` whose `inner_top` is a stack prepared with
/// `inner_entry`, both outliving every resume of this stack.
unsafe extern "sysv64" fn outer_entry(word: usize, data: *mut (), top: *mut u8) -> ! {
    let shared = data.cast::<NestShared>();
    let mut word = word;
    loop {
        // SAFETY: the test waits in resume; the inner coroutine is suspended
        // and always comes back; then we run on `top`'s stack inside a resume.
        unsafe {
            (*shared).log.push(("outer got", word));
            let inner = resume((*shared).inner_top, word * 10);
            (*shared).log.push(("outer's inner answered", inner));
            word = suspend(top, inner * 10);
        }
    }
}

#[test]
fn nested_resumes_return_to_their_own_resumers() {
    let outer = TestStack::new();
    let inner = TestStack::new();
    let mut shared = NestShared { inner_top: inner.top(), log: Vec::new() };
    let shared_ptr = &raw mut shared;
    // SAFETY: our own stacks' tops; `shared` outlives both coroutines' use.
    unsafe {
        init_stack(inner.top(), inner_entry, shared_ptr.cast());
        init_stack(outer.top(), outer_entry, shared_ptr.cast());
    }
    for word in [1, 2, 3] {
        // SAFETY: the outer coroutine is suspended and always comes back.
        let back = unsafe { resume(outer.top(), word) };
        assert_eq!(back, (word * 10 + 1) * 10);
    }
    let log = std::mem::take(&mut shared.log);
    let want: Vec<_> = [1, 2, 3]
        .into_iter()
        .flat_map(|w| [("outer got", w), ("inner got", w * 10), ("outer's inner answered", w * 10 + 1)])
        .collect();
    assert_eq!(log, want);
}
