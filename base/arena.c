/* base/arena.c — see arena.h. */
#include <bazaar/arena.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 16u

struct bz_arena_chunk {
    bz_arena_chunk *next;
    size_t size; /* usable bytes after the header */
    _Alignas(16) char data[];
};

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fputs("bazaar: out of memory\n", stderr);
        abort();
    }
    return p;
}

void bz_arena_init(bz_arena *a, size_t chunk_size)
{
    a->head = NULL;
    a->cur = a->end = NULL;
    a->chunk_size = chunk_size ? chunk_size : 4096;
    a->total = 0;
    a->defers = NULL;
}

static void new_chunk(bz_arena *a, size_t need)
{
    size_t size = a->chunk_size - sizeof(bz_arena_chunk);
    if (need > size)
        size = need;
    bz_arena_chunk *c = xmalloc(sizeof(*c) + size);
    c->size = size;
    c->next = a->head;
    a->head = c;
    a->cur = c->data;
    a->end = c->data + size;
    a->total += sizeof(*c) + size;
}

void *bz_arena_alloc(bz_arena *a, size_t size)
{
    if (size == 0)
        size = 1;
    uintptr_t p = ((uintptr_t)a->cur + (ALIGN - 1)) & ~(uintptr_t)(ALIGN - 1);
    if (!a->cur || size > (uintptr_t)a->end - p) {
        if (size > SIZE_MAX - ALIGN - sizeof(bz_arena_chunk)) {
            fputs("bazaar: arena allocation too large\n", stderr);
            abort();
        }
        new_chunk(a, size + ALIGN);
        p = ((uintptr_t)a->cur + (ALIGN - 1)) & ~(uintptr_t)(ALIGN - 1);
    }
    a->cur = (char *)(p + size);
    return (void *)p;
}

void *bz_arena_calloc(bz_arena *a, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) {
        fputs("bazaar: arena allocation overflow\n", stderr);
        abort();
    }
    void *p = bz_arena_alloc(a, n * size);
    memset(p, 0, n * size);
    return p;
}

char *bz_arena_strndup(bz_arena *a, const char *s, size_t n)
{
    char *d = bz_arena_alloc(a, n + 1);
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *bz_arena_strdup(bz_arena *a, const char *s)
{
    return bz_arena_strndup(a, s, strlen(s));
}

char *bz_arena_vprintf(bz_arena *a, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        n = 0;
    char *d = bz_arena_alloc(a, (size_t)n + 1);
    vsnprintf(d, (size_t)n + 1, fmt, ap);
    return d;
}

char *bz_arena_printf(bz_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *d = bz_arena_vprintf(a, fmt, ap);
    va_end(ap);
    return d;
}

void bz_arena_defer_fn(bz_arena *a, void (*fn)(void *), void *arg)
{
    bz_arena_defer *d = bz_arena_alloc(a, sizeof(*d));
    d->fn = fn;
    d->arg = arg;
    d->next = a->defers;
    a->defers = d;
}

static void buf_release(void *b) { bz_buf_free(b); }

bz_buf *bz_arena_buf(bz_arena *a)
{
    bz_buf *b = bz_arena_calloc(a, 1, sizeof *b);
    bz_arena_defer_fn(a, buf_release, b);
    return b;
}

static void run_defers(bz_arena *a)
{
    /* A defer may allocate from the arena or register another defer; take
     * the list first so those run too and none runs twice. */
    while (a->defers) {
        bz_arena_defer *d = a->defers;
        a->defers = d->next;
        d->fn(d->arg);
    }
}

void bz_arena_reset(bz_arena *a)
{
    run_defers(a);
    if (!a->head)
        return;
    /* Keep the oldest chunk if it is an ordinary one. */
    bz_arena_chunk *c = a->head, *keep = NULL;
    while (c) {
        bz_arena_chunk *next = c->next;
        if (!next && c->size + sizeof(*c) == a->chunk_size)
            keep = c;
        else {
            a->total -= sizeof(*c) + c->size;
            free(c);
        }
        c = next;
    }
    a->head = keep;
    if (keep) {
        keep->next = NULL;
        a->cur = keep->data;
        a->end = keep->data + keep->size;
    } else {
        a->cur = a->end = NULL;
    }
}

void bz_arena_free(bz_arena *a)
{
    run_defers(a);
    bz_arena_chunk *c = a->head;
    while (c) {
        bz_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->cur = a->end = NULL;
    a->total = 0;
}
