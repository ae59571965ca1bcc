/* tests/unit/regs_x86_64.S — loads distinct values into every callee-saved
 * register, calls rt_yield (so other coroutines run and clobber them),
 * and stores what the registers hold afterwards.
 *
 *   void test_regs_yield(uint64_t seed, uint64_t out[6]);
 */
#if defined(__x86_64__)
    .text
    .globl test_regs_yield
    .type test_regs_yield,@function
test_regs_yield:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    pushq %rsi              /* 7 pushes: %rsp is 16-byte aligned for the call */
    movq %rdi, %rbx
    leaq 1(%rdi), %rbp
    leaq 2(%rdi), %r12
    leaq 3(%rdi), %r13
    leaq 4(%rdi), %r14
    leaq 5(%rdi), %r15
    call rt_yield
    popq %rsi
    movq %rbx, 0(%rsi)
    movq %rbp, 8(%rsi)
    movq %r12, 16(%rsi)
    movq %r13, 24(%rsi)
    movq %r14, 32(%rsi)
    movq %r15, 40(%rsi)
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size test_regs_yield, .-test_regs_yield
#endif
    .section .note.GNU-stack,"",%progbits
