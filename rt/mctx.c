/* rt/mctx.c — machine contexts: the assembly switch (x86-64, aarch64) or
 * the ucontext fallback.  See rt__mctx_make / rt__mctx_swap. */
#include "rt/rt-private.h"

#include <stdint.h>
#include <string.h>

#ifdef RT_ASM_SWITCH

void rt__switch(void **save_sp, void *to_sp);
void rt__trampoline(void);

void rt__mctx_make(rt__mctx *m, void *lo, size_t size, void (*entry)(void *), void *arg)
{
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)top;
#if defined(__x86_64__)
    /* Frame popped by rt__switch, top down: return address, rbp, rbx, r12,
     * r13, r14, r15, then MXCSR (low 32 bits) and the x87 control word. */
    *--sp = (uint64_t)(uintptr_t)rt__trampoline;
    *--sp = 0;                         /* rbp: ends frame-pointer walks */
    *--sp = 0;                         /* rbx */
    *--sp = (uint64_t)(uintptr_t)arg;  /* r12 */
    *--sp = (uint64_t)(uintptr_t)entry; /* r13 */
    *--sp = 0;                         /* r14 */
    *--sp = 0;                         /* r15 */
    *--sp = 0x1F80ull | (0x037Full << 32); /* default MXCSR, x87 CW */
#else
    /* 176-byte frame: x19..x30 (x19 = arg, x20 = entry, x30 = trampoline),
     * d8..d15, fpcr. */
    sp -= 176 / 8;
    memset(sp, 0, 176);
    sp[0] = (uint64_t)(uintptr_t)arg;
    sp[1] = (uint64_t)(uintptr_t)entry;
    sp[11] = (uint64_t)(uintptr_t)rt__trampoline;
#endif
    m->sp = sp;
}

void rt__mctx_swap(rt__mctx *from, rt__mctx *to) { rt__switch(&from->sp, to->sp); }

#else /* ucontext fallback */

#include <stdlib.h>

static void uc_entry(unsigned hi, unsigned lo, unsigned fhi, unsigned flo)
{
    void *arg = (void *)(((uintptr_t)hi << 32) | lo);
    void (*entry)(void *) = (void (*)(void *))(((uintptr_t)fhi << 32) | flo);
    entry(arg);
    abort();
}

void rt__mctx_make(rt__mctx *m, void *lo, size_t size, void (*entry)(void *), void *arg)
{
    getcontext(&m->uc);
    m->uc.uc_stack.ss_sp = lo;
    m->uc.uc_stack.ss_size = size;
    m->uc.uc_link = NULL;
    uintptr_t a = (uintptr_t)arg, f = (uintptr_t)entry;
    makecontext(&m->uc, (void (*)(void))uc_entry, 4, (unsigned)(a >> 32), (unsigned)a,
                (unsigned)(f >> 32), (unsigned)f);
}

void rt__mctx_swap(rt__mctx *from, rt__mctx *to) { swapcontext(&from->uc, &to->uc); }

#endif
