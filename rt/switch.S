/*
 * rt/switch.S — coroutine context switch.
 *
 *   void rt__switch(void **save_sp, void *to_sp);
 *
 * Pushes the callee-saved registers and the floating-point control state
 * that the ABI requires a callee to preserve onto the current stack, stores
 * the stack pointer in *save_sp, loads to_sp and pops the same frame from
 * it.  A new coroutine's stack is prepared (rt/mctx.c) so that the first
 * switch "returns" into rt__trampoline, which calls entry(arg).
 */
#if defined(__x86_64__)
    .text
    .globl rt__switch
    .hidden rt__switch
    .type rt__switch,@function
    .p2align 4
rt__switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)          /* SSE control/status: rounding, exceptions */
    fnstcw 4(%rsp)          /* x87 control word */
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size rt__switch, .-rt__switch

    .globl rt__trampoline
    .hidden rt__trampoline
    .type rt__trampoline,@function
    .p2align 4
rt__trampoline:
    /* Entered by rt__switch's ret with %rsp 16-byte aligned. */
    movq %r12, %rdi         /* arg */
    callq *%r13             /* entry(arg); never returns */
    ud2
    .size rt__trampoline, .-rt__trampoline

#elif defined(__aarch64__)
    .text
    .globl rt__switch
    .hidden rt__switch
    .type rt__switch,%function
    .p2align 4
rt__switch:
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x9, fpcr
    str x9, [sp, #160]
    mov x9, sp
    str x9, [x0]
    mov sp, x1
    ldr x9, [sp, #160]
    msr fpcr, x9
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    add sp, sp, #176
    ret
    .size rt__switch, .-rt__switch

    .globl rt__trampoline
    .hidden rt__trampoline
    .type rt__trampoline,%function
    .p2align 4
rt__trampoline:
    mov x0, x19             /* arg */
    blr x20                 /* entry(arg); never returns */
    brk #0
    .size rt__trampoline, .-rt__trampoline
#endif

#if defined(__linux__) && defined(__ELF__)
    .section .note.GNU-stack,"",%progbits
#endif
