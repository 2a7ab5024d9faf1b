# weft: the context switch for x86-64, System V ABI, ELF, LLVM/GNU assembler
# (Intel syntax, as `global_asm!` assembles it). Included by src/arch/x86_64.rs.
#
# ---------------------------------------------------------------------------
# The saved frame
# ---------------------------------------------------------------------------
# A suspended coroutine is a stack pointer. It points at this frame, which
# the switch pushed on the coroutine's own stack. Its layout depends on the
# cargo feature `fp-control` (WEFT_FP_CONTROL), off by default:
#
#   default build                         with fp-control
#   slot  offset  content                 slot  offset  content
#   ----  ------  ----------------------  ----  ------  ---------------------
#                                           0      0     MXCSR (bytes 0-3),
#                                                        x87 control word
#                                                        (bytes 4-5), pad
#    0      0     rbx                       1      8     rbx
#    1      8     rbp                       2     16     rbp
#    2     16     continuation: the         3     24     continuation
#                 address this context
#                 resumes at
#   ----  ------  ----------------------  ----  ------  ---------------------
#   FRAME_SIZE = 24 bytes                 FRAME_SIZE = 32 bytes
#   (the continuation included)
#
# The frame is pushed when the coroutine's rsp is 8 mod 16 (after the
# suspend's hand-made push of its continuation), so a saved stack pointer is
# 8 mod 16 in the default build and 16-byte aligned with fp-control. Nothing
# needs it aligned: weft_call_on_stack aligns its callback's stack itself
# (CALL_ON_STACK_PAD below).
#
# A *resumer* (the context that resumed a coroutine and waits in
# weft_switch_resume while it runs) leaves less on its own stack: its
# continuation and, with fp-control, the FP slot below it (RESUMER_FRAME_SIZE,
# 8 or 16 bytes; the link slot points at it, 8 mod 16 or 16-byte aligned as
# above). Its rbx and rbp go into two slots under the coroutine's switch top
# instead ("The resumer's rbx and rbp", below).
# src/arch/x86_64.rs mirrors every offset as a const and passes its values in
# as WEFT_RS_*; the `.if` checks below stop the build if the two disagree.
#
# ---------------------------------------------------------------------------
# The slots at the top of a coroutine stack, and the registers
# ---------------------------------------------------------------------------
# Both routines take the coroutine stack's *switch top* in r12: the sp slot
# (its saved stack pointer while it is suspended) is at [r12 - 8], the link
# slot (its resumer's saved stack pointer while it runs) at [r12 - 16], and
# the resumer's rbp and rbx, while it runs, at [r12 - 24] and [r12 - 32]
# (STACK_RESERVED_TOP = 32 bytes in all). The
# word handed across the switch travels in rax, which neither routine
# touches: what one side puts there, the other finds there. rcx and rdx are
# scratch (rcx holds the continuation on the way into a coroutine; with
# fp-control, rdx points at the outgoing frame for the compare).
#
# Why r12: a coroutine always comes back to where it left with its own top
# in r12, whoever continues it: its resumer puts that top in r12 to resume
# it, and a direct switch (weft_switch_direct, below) moves the top it
# continues into r12. So the suspending side's inline asm blocks declare
# r12 an input only, not clobbered, and the compiler may keep the top in it
# across the switch instead of copying it elsewhere and back. A *resumer*
# cannot: a runtime task it resumed may have switched directly to another
# task, and then the coroutine that comes back to it (with its own top in
# r12) is that other one. The resumes declare r12 clobbered.
#
# ---------------------------------------------------------------------------
# Who preserves which callee-saved register
# ---------------------------------------------------------------------------
# The SysV ABI makes rbx, rbp, r12-r15 callee-saved. The switch as a whole
# preserves all six for its Rust callers, but splits the work:
#
#   rbx, rbp    saved by these routines: a coroutine's in its frame, a
#               resumer's in the top slots. Rust's inline asm cannot
#               declare them clobbered (LLVM reserves rbx; rbp may be the
#               frame pointer), so the routines must.
#   r12         the switch top (see above): read by these routines, and
#               written only by weft_switch_direct, which hands it the top
#               of the coroutine it continues.
#   r13-r15     never touched here: they pass through a switch with whatever
#               the outgoing side left in them. The two inline asm blocks that
#               enter these routines (src/arch/x86_64.rs: `resume`'s `call`
#               and `suspend`'s `lea/push/jmp`) declare them clobbered, so the
#               compiler keeps nothing live in them across a switch: it saves
#               the values that are live (spill, or another register) and only
#               those, as it does around any call. That is corosensei's trick:
#               pushes and pops per switch become what the code around the
#               switch needs, which is nothing when it has no live values
#               there, and a save in the function's prologue (once per call of
#               that function, not once per switch) otherwise.
#
# Anything else that enters these routines must obey the same contract: put
# the switch top in r12, and treat r13-r15 (and all caller-saved registers)
# as clobbered.
#
# ---------------------------------------------------------------------------
# Why two entry points: the return-stack predictor
# ---------------------------------------------------------------------------
# The CPU predicts `ret` from a small stack of the addresses its `call`s
# pushed. A symmetric switch (both sides `call` one routine that ends in `ret`)
# returns to the *other* context every time, so every `ret` mispredicts (on
# the development machine: ~24 ns per round trip instead of ~4.5 ns). weft
# keeps calls and returns paired instead:
#
#   resumer                               coroutine
#   -------                               ---------
#   call weft_switch_resume  ---------->  (jmp to its continuation)
#        pushes R; predictor: [.., R]     runs...
#                                         lea rcx,[rip+2f]; push rcx;
#                                         jmp weft_switch_suspend
#   continues at R  <-------------------  ret   (pops R: predicted)
#
# The resume side is an ordinary call; the suspend side pushes its
# continuation by hand and jumps (src/coroutine's inline `suspend`), so the
# suspend's `ret` consumes exactly the entry the resume's `call` made.
#
# That holds only while the coroutine makes no unpaired `ret` of its own:
# if the suspend sits in an out-of-line function, the resumed coroutine
# first returns from it (popping the resumer's entry: a miss), and the next
# suspend's `ret` pops the entry of the call that led to it (another miss).
# Hence `Yielder::suspend` is inline (measured: ~30 ns -> ~16 ns per yield,
# when the runtime's yields took this path). That is the generators' switch.
# The runtime's tasks switch out deep in their calls instead (a park sits in
# a lock's, a channel's or a socket's code, and so does a lock's yield), so
# they leave through a third routine, weft_switch_suspend_unpaired, which
# continues the resumer with an indirect `jmp` instead of that `ret` (see
# there). A coroutine that left that way is entered the same way: the
# resumer pushes
# its continuation by hand and jumps into weft_switch_resume
# (`resume_unpaired` in src/arch/x86_64.rs), so no switch touches the
# predictor's stack. Its top is then the return address of the call that
# led to the last park on this thread, which is exactly where the resumed
# coroutine returns first when it parked at the same place: coroutines
# running the same code (a server's connections, a pool's workers) hand
# off without a mispredicted return. Measured with two coroutines relaying
# through two rendezvous channels in one function (benches/channel.rs,
# WEFT_CHANNEL_COUNT=rendezvous_same_code): 41 -> 31 ns per hand-off.
#
# ---------------------------------------------------------------------------
# Floating-point control state (cargo feature `fp-control`, off by default)
# ---------------------------------------------------------------------------
# The ABI makes the MXCSR control bits (6-15) and the x87 control word
# callee-saved. With the feature on, each switch stores both into the
# outgoing frame (cheap), then compares them with the incoming frame's and
# reloads only when the control bits differ. MXCSR bits 0-5 are sticky
# exception flags that differ between contexts all the time (any inexact
# division sets one): they are ignored by the compare, because `ldmxcsr` is
# slow and serialising. Without the feature (WEFT_FP_CONTROL = 0) the frame
# has no FP slot and the switch never touches the FP state: Rust code cannot
# change it soundly, and `stmxcsr` alone costs ~10 ns per round trip on
# current AMD cores.
#
# ---------------------------------------------------------------------------
# The resumer's rbx and rbp
# ---------------------------------------------------------------------------
# Code that resumes a coroutine usually keeps what it needs next in rbx or
# rbp (callee-saved, so they survive the `call`): the coroutine's record,
# whose switch top the next resume loads. Popped from the resumer's stack,
# they would come back only after the suspend's load of the link slot and
# the pops that follow it; each round trip would then wait for a chain of
# four dependent loads (link slot, rbp, the record's top, the sp slot) where
# one suffices. Loaded from [r12 - 24] and [r12 - 32], they need r12 alone,
# which a switch carries in a register, so they are ready as soon as the
# resumer runs again. Measured with a model of the two switch routines and
# a resumer that reaches the top through rbp (a loop of resume+suspend, 2026-12-06):
# 8.1 ns per round trip with the pops, 6.9 ns with the slots; weft's
# criterion round trip went from 8.54 to 7.12 ns (corosensei 6.31), the
# instruction count unchanged. A direct switch copies the two slots along
# with the link slot (one 16-byte copy: a runtime task's yield costs 2
# instructions and about 0.35 ns more).
#
# ---------------------------------------------------------------------------
# Unwinding and backtraces
# ---------------------------------------------------------------------------
# A fresh stack starts in weft_coroutine_trampoline with rsp pointing at the
# lowest top slot, just under the link slot, where weft_switch_resume stored
# the resumer's stack pointer.
# The trampoline's CFA is computed from that slot (a DWARF expression), so a
# backtrace taken in a coroutine walks its frames, then the trampoline, then
# continues in the resumer right after its `call weft_switch_resume`. The
# trampoline is marked as a signal frame so that gdb accepts the jump between
# stacks. Panics never unwind through it: src/coroutine catches every panic
# at the coroutine's entry function.
#
# A *suspended* coroutine can be walked too (the runtime's dump does):
# weft_call_on_stack runs a callback on the coroutine's own stack, just below
# its saved frame, with CFI at the call site that makes the saved frame the
# callback's caller (CFA = rsp + CALL_ON_STACK_PAD + FRAME_SIZE, rip/rbp/rbx
# at the frame offsets). An unwinder started in the callback walks into the coroutine's
# frames, down to the trampoline. While a coroutine is suspended its link
# slot is stale (the stack pointer of a resumer that has moved on), so the
# caller points it at an *end frame* first: a resumer's frame of zeroes,
# whose continuation 0 ends the walk at the trampoline.

.ifndef WEFT_FP_CONTROL
.error "WEFT_FP_CONTROL must be set by src/arch/x86_64.rs"
.endif

.if WEFT_FP_CONTROL
.set FRAME_FP,      0
.set FRAME_RBX,     8
.set FRAME_RBP,    16
.set FRAME_CONT,   24
.set FRAME_SIZE,   32
.if FRAME_FP != WEFT_RS_FRAME_FP
.error "the FP slot's offset differs between asm/switch_x86_64_sysv.S and src/arch/x86_64.rs"
.endif
.else
.set FRAME_RBX,     0
.set FRAME_RBP,     8
.set FRAME_CONT,   16
.set FRAME_SIZE,   24
.endif
# The sp and link slots, and the slots of the resumer's rbp and rbx, are
# this far below a stack's switch top; the switch owns STACK_RESERVED_TOP
# bytes there.
.set SP_BELOW_TOP,   8
.set LINK_BELOW_TOP, 16
.set RESUMER_RBP_BELOW_TOP, 24
.set RESUMER_RBX_BELOW_TOP, 32
.set STACK_RESERVED_TOP, 32
# What a resume leaves on the resumer's stack: its continuation and, with
# fp-control, the FP slot below it.
.if WEFT_FP_CONTROL
.set RESUMER_FRAME_SIZE, 16
.else
.set RESUMER_FRAME_SIZE, 8
.endif
# What weft_call_on_stack subtracts from a saved stack pointer to align its
# callback's stack: saved stack pointers are FRAME_SIZE mod 16 (see above).
.set CALL_ON_STACK_PAD, FRAME_SIZE % 16
# MXCSR bits that are control (DAZ, masks, rounding, FZ); 0-5 are sticky flags.
.set MXCSR_CONTROL_MASK, 0xFFC0

.if FRAME_RBX != WEFT_RS_FRAME_RBX || FRAME_RBP != WEFT_RS_FRAME_RBP
.error "frame offsets differ between asm/switch_x86_64_sysv.S and src/arch/x86_64.rs"
.endif
.if FRAME_CONT != WEFT_RS_FRAME_CONT || FRAME_SIZE != WEFT_RS_FRAME_SIZE
.error "frame offsets differ between asm/switch_x86_64_sysv.S and src/arch/x86_64.rs"
.endif
.if SP_BELOW_TOP != WEFT_RS_SP_BELOW_TOP || LINK_BELOW_TOP != WEFT_RS_LINK_BELOW_TOP
.error "the top slots' places differ between asm/switch_x86_64_sysv.S and src/arch/x86_64.rs"
.endif
.if RESUMER_RBP_BELOW_TOP != WEFT_RS_RESUMER_RBP_BELOW_TOP || RESUMER_RBX_BELOW_TOP != WEFT_RS_RESUMER_RBX_BELOW_TOP
.error "the top slots' places differ between asm/switch_x86_64_sysv.S and src/arch/x86_64.rs"
.endif
.if RESUMER_RBX_BELOW_TOP != RESUMER_RBP_BELOW_TOP + 8
.error "weft_switch_direct copies the resumer's rbx and rbp slots as one 16-byte block"
.endif
.if STACK_RESERVED_TOP != WEFT_RS_STACK_RESERVED_TOP || RESUMER_FRAME_SIZE != WEFT_RS_RESUMER_FRAME_SIZE
.error "the top slots' places differ between asm/switch_x86_64_sysv.S and src/arch/x86_64.rs"
.endif

# With fp-control: pushes the FP slot (MXCSR and the x87 control word) of
# the context that is leaving, the lowest slot of its frame; drops it again
# (already compared) on the way back in. Nothing without the feature.
.macro PUSH_FP_SLOT
.if WEFT_FP_CONTROL
    sub rsp, 8                          # the FP slot
    .cfi_adjust_cfa_offset 8
    stmxcsr dword ptr [rsp]             # save MXCSR (control bits and flags)
    fnstcw word ptr [rsp + 4]           # save the x87 control word
.endif
.endm
.macro DROP_FP_SLOT
.if WEFT_FP_CONTROL
    add rsp, 8                          # the FP slot (already handled)
    .cfi_adjust_cfa_offset -8
.endif
.endm

# Pushes rbp, rbx and (fp-control) the FP control state: the frame's slots
# from the continuation's down (r12-r15 are the compiler's business, see
# above). On entry [rsp] is the continuation; CFI tracks every push.
.macro PUSH_FRAME
    push rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rbp, 0
    push rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rbx, 0
    PUSH_FP_SLOT
.endm

# Before the stack switch (fp-control): rdx := the outgoing frame, for
# CHECK_FP_CONTROL. Nothing to do without the feature.
.macro SAVE_OUTGOING
.if WEFT_FP_CONTROL
    mov rdx, rsp
.endif
.endm

# After the stack switch (fp-control): rdx = the outgoing frame, rsp = the
# incoming frame. Reloads MXCSR / the x87 control word only if their control
# bits differ. Uses rcx. The reloads are out of line (labels 8/9) to keep
# the common path straight.
.macro CHECK_FP_CONTROL
.if WEFT_FP_CONTROL
    .cfi_remember_state                 # the reloads below run in this state
    mov ecx, dword ptr [rdx]            # outgoing MXCSR (same-size store: forwarded)
    xor ecx, dword ptr [rsp]            # differs from the incoming one where set
    test ecx, MXCSR_CONTROL_MASK        # ignore the sticky flags
    jnz 8f
7:
    movzx ecx, word ptr [rdx + 4]       # outgoing x87 control word
    cmp cx, word ptr [rsp + 4]
    jne 9f
6:
.endif
.endm

# The out-of-line reloads for CHECK_FP_CONTROL; placed after the routine's
# final jump so the common path never runs them.
.macro FP_CONTROL_RELOADS
.if WEFT_FP_CONTROL
    .cfi_restore_state
8:
    ldmxcsr dword ptr [rsp]             # incoming MXCSR, flags and all
    jmp 7b
9:
    fldcw word ptr [rsp + 4]            # incoming x87 control word
    jmp 6b
.endif
.endm

# Pops the incoming frame down to its continuation, leaving [rsp] = the
# continuation.
.macro POP_FRAME
    DROP_FP_SLOT
    pop rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore rbx
    pop rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore rbp
.endm

# The resumer's half of a resume: on entry [rsp] is its continuation. With
# fp-control, its FP control state goes below that, on its stack (the
# resumer's frame: what the link slot will point at); its rbx and rbp go
# into the slots under the coroutine's switch top, where the suspend that
# continues the resumer reads them back with loads that need r12 only (see
# "The resumer's rbx and rbp" above). DW_CFA_expression rules (0x10) say
# where: DW_OP_breg12 (0x7c) plus a one-byte SLEB128 offset.
.macro SAVE_RESUMER
    PUSH_FP_SLOT
    mov qword ptr [r12 - RESUMER_RBP_BELOW_TOP], rbp
    .cfi_escape 0x10, 6, 2, 0x7c, (-RESUMER_RBP_BELOW_TOP) & 0x7f
    mov qword ptr [r12 - RESUMER_RBX_BELOW_TOP], rbx
    .cfi_escape 0x10, 3, 2, 0x7c, (-RESUMER_RBX_BELOW_TOP) & 0x7f
.endm

# The resumer's half of a suspend (or of the end of a coroutine), once rsp
# points at the resumer's frame again: CFI for that frame, rbx and rbp back
# from the top slots, the FP slot (already compared) dropped. [rsp] is then
# the resumer's continuation.
.macro RESUMER_FRAME_CFI
    .cfi_def_cfa_offset RESUMER_FRAME_SIZE
    .cfi_offset rip, -8
    .cfi_escape 0x10, 6, 2, 0x7c, (-RESUMER_RBP_BELOW_TOP) & 0x7f
    .cfi_escape 0x10, 3, 2, 0x7c, (-RESUMER_RBX_BELOW_TOP) & 0x7f
.endm
.macro RESTORE_RESUMER
    mov rbx, qword ptr [r12 - RESUMER_RBX_BELOW_TOP]
    .cfi_restore rbx
    mov rbp, qword ptr [r12 - RESUMER_RBP_BELOW_TOP]
    .cfi_restore rbp
    DROP_FP_SLOT
.endm

# The CFI of a coroutine's frame, once rsp points at it (after the switch
# in a resume or a direct switch).
.macro COROUTINE_FRAME_CFI
    .cfi_def_cfa_offset FRAME_SIZE
    .cfi_offset rip, FRAME_CONT - FRAME_SIZE
    .cfi_offset rbp, FRAME_RBP - FRAME_SIZE
    .cfi_offset rbx, FRAME_RBX - FRAME_SIZE
.endm

    .text

# ---------------------------------------------------------------------------
# weft_switch_resume: enter a suspended (or fresh) coroutine.
#
# Called with `call` (extern "sysv64") from the resumer:
#   r12  the coroutine stack's switch top: its frame's address is in the sp
#        slot [r12 - 8]; the resumer's goes into the link slot [r12 - 16],
#        its rbp and rbx into [r12 - 24] and [r12 - 32]
#   rax  a word for the coroutine; it arrives in rax at the continuation
# Returns, when the coroutine suspends, with rax = the coroutine's word.
# Preserves rbx, rbp and (fp-control) the MXCSR control bits and the x87
# control word; r12-r15 come back as the coroutine left them (the caller
# declares them clobbered).
# ---------------------------------------------------------------------------
    .p2align 4
    .globl weft_switch_resume
    .hidden weft_switch_resume
    .type weft_switch_resume, @function
weft_switch_resume:
    .cfi_startproc
    SAVE_RESUMER
    mov qword ptr [r12 - LINK_BELOW_TOP], rsp   # link slot := the resumer's frame
    SAVE_OUTGOING                       # rdx = outgoing frame, for the FP compare
    mov rsp, qword ptr [r12 - SP_BELOW_TOP]     # now on the coroutine's stack
    COROUTINE_FRAME_CFI
    CHECK_FP_CONTROL
    POP_FRAME
    pop rcx                             # the coroutine's continuation
    .cfi_adjust_cfa_offset -8
    .cfi_register rip, rcx
    jmp rcx                             # an indirect jump: no return-stack entry
    FP_CONTROL_RELOADS
    .cfi_endproc
    .size weft_switch_resume, . - weft_switch_resume

# ---------------------------------------------------------------------------
# weft_switch_suspend: leave the running coroutine for its resumer.
#
# Entered with `jmp`, never `call`: the coroutine has pushed its continuation
# by hand (see the drawing above), so [rsp] is a return address exactly as if
# it had been called.
#   r12  the running coroutine stack's switch top: our frame's address goes
#        into its sp slot [r12 - 8]; the resumer's is in the link slot
#        [r12 - 16]
#   rax  a word for the resumer; `weft_switch_resume` returns it in rax
# When the coroutine is resumed, control continues at the pushed address with
# rax = the resumer's word, and rbx, rbp and (fp-control) the FP control
# state restored; r12-r15 arrive as the resumer left them (the coroutine's
# asm block declares them clobbered).
#
# weft_switch_suspend_unpaired: the same, except that it continues the
# resumer with an indirect `jmp` instead of the `ret` that pairs with the
# resumer's `call`. For a suspend deep in the coroutine's calls (a park
# inside a channel's `send`, a socket's `read`), where the pairing is lost
# anyway: resumed, the coroutine first returns out of frames whose calls
# the predictor never saw (its top is the resumer's `call`: a miss, which
# consumes that entry), and then the `ret` of the next suspend would pop
# the entry of the call that led to it (a second miss). The `jmp` is
# predicted by the branch target buffer instead, and leaves that entry for
# the coroutine's own `ret` when it is next resumed. A generator's
# `suspend`, usually in its own frame, keeps the paired `ret`, which is
# cheaper still there. Measured on the rendezvous-channel ping-pong of
# benches/channel.rs: 51 -> 45 ns per hand-off; with every suspend unpaired,
# the generator round trip of benches/switch.rs went from 3.45 to 3.9 ns,
# hence the two routines. The runtime's tasks use only this one, yields
# included (`Task::switch_out`).
# ---------------------------------------------------------------------------
.macro SUSPEND_BODY
    PUSH_FRAME
    mov qword ptr [r12 - SP_BELOW_TOP], rsp     # the coroutine's saved stack pointer
    SAVE_OUTGOING                       # rdx = outgoing frame, for the FP compare
    mov rsp, qword ptr [r12 - LINK_BELOW_TOP]   # back on the resumer's stack
    RESUMER_FRAME_CFI
    CHECK_FP_CONTROL
    RESTORE_RESUMER
.endm

    .p2align 4
    .globl weft_switch_suspend
    .hidden weft_switch_suspend
    .type weft_switch_suspend, @function
weft_switch_suspend:
    .cfi_startproc
    SUSPEND_BODY
    ret                                 # to just after its `call weft_switch_resume`
    FP_CONTROL_RELOADS
    .cfi_endproc
    .size weft_switch_suspend, . - weft_switch_suspend

    .p2align 4
    .globl weft_switch_suspend_unpaired
    .hidden weft_switch_suspend_unpaired
    .type weft_switch_suspend_unpaired, @function
weft_switch_suspend_unpaired:
    .cfi_startproc
    SUSPEND_BODY
    pop rcx                             # the resumer's continuation
    .cfi_adjust_cfa_offset -8
    .cfi_register rip, rcx
    jmp rcx                             # an indirect jump: the predictor's
                                        # return stack is left alone
    FP_CONTROL_RELOADS
    .cfi_endproc
    .size weft_switch_suspend_unpaired, . - weft_switch_suspend_unpaired

# ---------------------------------------------------------------------------
# weft_switch_direct: leave the running coroutine for another suspended one,
# without passing through the resumer in between: a runtime task's yield,
# straight to the next task its worker would run (`Yielder::switch_to` in
# src/coroutine, `WorkerLocal::yield_direct` in src/runtime/worker.rs).
#
# Entered with `jmp`, as the suspends are (the continuation pushed by hand).
#   r12  the running coroutine stack's switch top: our frame's address goes
#        into its sp slot, as in a suspend
#   rsi  the switch top of the suspended coroutine to continue. It takes over
#        our link slot (the resumer that both run under, waiting in its
#        resume), so that its next suspend continues that resumer; and r12
#        becomes its top, as if its own resumer had resumed it
#   rax  a word for the coroutine continued: its suspend returns it
# The resumer is continued later by whichever coroutine suspends first, with
# that coroutine's top in r12 (hence the resumes' clobbered r12, above), so
# the resumer's rbx and rbp move with the link slot. Both frames are
# coroutine frames, so the CFI holds on both stacks, and a coroutine that
# left this way is resumed, walked and unwound as one that suspended.
# ---------------------------------------------------------------------------
    .p2align 4
    .globl weft_switch_direct
    .hidden weft_switch_direct
    .type weft_switch_direct, @function
weft_switch_direct:
    .cfi_startproc
    PUSH_FRAME
    mov qword ptr [r12 - SP_BELOW_TOP], rsp     # our saved stack pointer
    mov rcx, qword ptr [r12 - LINK_BELOW_TOP]   # the resumer we ran under ...
    mov qword ptr [rsi - LINK_BELOW_TOP], rcx   # ... is the other one's now,
    movups xmm0, xmmword ptr [r12 - RESUMER_RBX_BELOW_TOP]  # with its rbx and
    movups xmmword ptr [rsi - RESUMER_RBX_BELOW_TOP], xmm0  # rbp (one 16-byte copy)
    mov r12, rsi
    SAVE_OUTGOING                       # rdx = outgoing frame, for the FP compare
    mov rsp, qword ptr [r12 - SP_BELOW_TOP]     # now on the other coroutine's stack
    CHECK_FP_CONTROL
    POP_FRAME
    pop rcx                             # its continuation
    .cfi_adjust_cfa_offset -8
    .cfi_register rip, rcx
    jmp rcx                             # an indirect jump, as the unpaired switches
    FP_CONTROL_RELOADS
    .cfi_endproc
    .size weft_switch_direct, . - weft_switch_direct

# ---------------------------------------------------------------------------
# weft_coroutine_trampoline: the first continuation of every fresh stack.
#
# src/arch/x86_64.rs builds the first frame so that weft_switch_resume
# "returns" here with rsp at the lowest of the top slots, the resumer's rbx
# (STACK_RESERVED_TOP below the switch top: 16-byte aligned), rbx = the entry
# function, rbp = its data pointer and rax = the resumer's word. It zeroes rbp
# (the end of the frame-pointer chain) and calls (push + jmp, see below)
#   entry(word: usize /*rdi*/, data: *mut () /*rsi*/, top: *mut u8 /*rdx*/) -> !
# where `top` is the switch top, and which never returns: a finished
# coroutine leaves with weft_switch_suspend.
#
# CFI: the caller of this frame is the resumer, stopped in weft_switch_resume
# with its frame at [link slot]. So CFA = [link slot] + RESUMER_FRAME_SIZE
# (the link slot at rsp + 16 here), the resumer's rip sits just below the
# CFA, and its rbx and rbp in the top slots at rsp and rsp + 8 (DW_CFA_expression
# rules, 0x10, with DW_OP_breg7, 0x77: both move by 8 with the push below).
# Its r12-r15 are not saved anywhere: the unwinder carries them
# over unchanged, so they read wrong in the resumer's innermost frame only,
# where they are dead anyway (its asm block clobbers them); every function
# around such a block saves r12-r15 for its own caller in its prologue, under
# its own CFI, so the frames further out read right.
# ---------------------------------------------------------------------------
# The trampoline's CFI with rsp `below` bytes under the lowest top slot:
# CFA = [link slot] + RESUMER_FRAME_SIZE (DW_CFA_def_cfa_expression, 0x0f,
# 5 bytes: DW_OP_breg7 (rsp) to the link slot, DW_OP_deref,
# DW_OP_plus_uconst), and the resumer's rbp and rbx in their top slots
# (DW_CFA_expression, 0x10, 2 bytes: DW_OP_breg7 to the slot). Every offset
# fits one ULEB128 byte.
.macro TRAMPOLINE_CFI below
    .cfi_escape 0x0f, 5, 0x77, \below + STACK_RESERVED_TOP - LINK_BELOW_TOP, 0x06, 0x23, RESUMER_FRAME_SIZE
    .cfi_escape 0x10, 6, 2, 0x77, \below + STACK_RESERVED_TOP - RESUMER_RBP_BELOW_TOP
    .cfi_escape 0x10, 3, 2, 0x77, \below + STACK_RESERVED_TOP - RESUMER_RBX_BELOW_TOP
.endm

    .p2align 4
    .globl weft_coroutine_trampoline
    .hidden weft_coroutine_trampoline
    .type weft_coroutine_trampoline, @function
weft_coroutine_trampoline:
    .cfi_startproc
    .cfi_signal_frame
    .cfi_offset rip, -8                 # just below the CFA, in every row
    TRAMPOLINE_CFI 0
    mov rdi, rax                        # entry's first argument: the word
    mov rsi, rbp                        # entry's second argument: its data
    xor ebp, ebp                        # rbp = 0 ends frame-pointer chains
    lea rdx, [rsp + STACK_RESERVED_TOP] # entry's third argument: the switch top
    # A call without `call`: push the return address and jump. A `call` would
    # push an entry on the CPU's return-stack predictor that no `ret` ever
    # pops (entry never returns: the coroutine leaves with
    # weft_switch_suspend's `ret`, to its resumer), so that `ret` and every
    # `ret` after it in the resumer would be mispredicted, one create+run
    # costing several pipeline flushes (corosensei's trampoline does the
    # same). Unwinders see exactly what a `call` leaves.
    lea rcx, [rip + weft_coroutine_trampoline_ret]
    push rcx                            # entry's return address
    # For the jmp the top slots are 8 bytes further from rsp (an unwinder
    # that stops here, from a signal, reads them there).
    TRAMPOLINE_CFI 8
    jmp rbx                             # never returns
    # An unwinder that comes back from entry's frame has popped the return
    # address (rsp is at the lowest top slot again) and looks up the row of the
    # byte before it (return address - 1): this int3, never executed, so
    # that the jmp's row above does not apply there.
    TRAMPOLINE_CFI 0
    int3
    .globl weft_coroutine_trampoline_ret
    .hidden weft_coroutine_trampoline_ret
weft_coroutine_trampoline_ret:          # the return address pushed above: the
                                        # last frame of every coroutine's walk
    ud2                                 # keeps the return address inside this
                                        # function for the unwinder's lookup
    .cfi_endproc
    .size weft_coroutine_trampoline, . - weft_coroutine_trampoline

# ---------------------------------------------------------------------------
# weft_call_on_stack: run a callback on a suspended coroutine's stack.
#
# Called with `call` (extern "sysv64"):
#   rdi  the coroutine's saved stack pointer (a frame as above); the callback
#        runs with its stack just below that frame (CALL_ON_STACK_PAD below
#        it, so that rsp is 16-byte aligned at the callback's call)
#   rsi  the callback, extern "sysv64" fn(data)
#   rdx  data, the callback's argument
# Returns when the callback returns, on the caller's stack, with rbx and rbp
# preserved (pushed here); everything else is as after any call (the
# callback is an ordinary SysV function, so r12-r15 survive it).
#
# The callback runs on the coroutine's stack below its saved frame, which it
# does not touch: the frame, and everything above it, is exactly as the
# coroutine left it, so it can be resumed later as if nothing happened. The
# caller makes sure there is room below the frame (the stack's guard page
# is below) and that the coroutine cannot run meanwhile.
#
# CFI at the call site: the saved frame is the callback's caller, i.e.
# CFA = rsp + CALL_ON_STACK_PAD + FRAME_SIZE, with rip, rbp and rbx at their
# frame offsets (as the trampoline says for its resumer, and as
# weft_switch_suspend's own CFI said when it stored the frame). So a
# backtrace taken in the callback reads: callback, weft_call_on_stack, the
# coroutine's frames from where it suspended down to its entry, then
# weft_coroutine_trampoline, whose caller is found through the link slot
# (see "Unwinding and backtraces"). weft_call_on_stack_ret marks the call's
# return address, so a walker can tell where the coroutine's own frames
# begin.
# ---------------------------------------------------------------------------
    .p2align 4
    .globl weft_call_on_stack
    .hidden weft_call_on_stack
    .type weft_call_on_stack, @function
weft_call_on_stack:
    .cfi_startproc
    PUSH_FRAME                          # rbp, rbx (and, with fp-control, the FP
                                        # slot: a switch frame's shape; the FP
                                        # state is not needed here)
    mov rbx, rsp                        # our stack pointer, kept across the
                                        # callback in a callee-saved register
    .cfi_remember_state
    lea rsp, [rdi - CALL_ON_STACK_PAD]  # on the coroutine's stack, below its frame
    .cfi_def_cfa rsp, CALL_ON_STACK_PAD + FRAME_SIZE
    .cfi_offset rip, FRAME_CONT - FRAME_SIZE
    .cfi_offset rbp, FRAME_RBP - FRAME_SIZE
    .cfi_offset rbx, FRAME_RBX - FRAME_SIZE
    mov rdi, rdx                        # the callback's argument
    call rsi                            # rsp is 16-byte aligned here
    .globl weft_call_on_stack_ret
    .hidden weft_call_on_stack_ret
weft_call_on_stack_ret:
    mov rsp, rbx                        # back on our own stack
    .cfi_restore_state
    POP_FRAME
    ret
    .cfi_endproc
    .size weft_call_on_stack, . - weft_call_on_stack
