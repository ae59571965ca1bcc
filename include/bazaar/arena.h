/*
 * base/arena.h — region allocator with a per-request lifetime.
 *
 * An arena hands out memory by bumping a pointer inside large chunks and
 * frees everything at once with bz_arena_reset() or bz_arena_free().  A
 * request owns one arena: everything a handler allocates for that request
 * goes away in one go when the response is done (DESIGN.md, Memory).
 *
 * Arenas are not thread-safe; one coroutine (or one thread) owns each.
 * Allocation failure aborts the process: it is the "core allocation
 * failure" of DESIGN.md, the one failure we do not propagate.
 */
#ifndef BZ_ARENA_H
#define BZ_ARENA_H

#include <bazaar/buf.h>

#include <stdarg.h>
#include <stddef.h>

#pragma GCC visibility push(default)

typedef struct bz_arena_chunk bz_arena_chunk;

/* Cleanup registered on an arena: runs (last registered first) when the arena
 * is reset or freed — the "defer list" for request-scoped resources. */
typedef struct bz_arena_defer {
    void (*fn)(void *arg);
    void *arg;
    struct bz_arena_defer *next;
} bz_arena_defer;

typedef struct bz_arena {
    bz_arena_chunk *head;   /* chunk being carved; older chunks follow */
    char *cur;              /* next free byte in head */
    char *end;              /* one past the last byte of head */
    size_t chunk_size;      /* size of ordinary chunks */
    size_t total;           /* bytes reserved from malloc, for accounting */
    bz_arena_defer *defers; /* cleanups, most recent first */
} bz_arena;

/* Prepares an empty arena whose chunks are chunk_size bytes (0 = 4 KiB).
 * Nothing is allocated until the first bz_arena_alloc. */
void bz_arena_init(bz_arena *a, size_t chunk_size);

/* Returns size bytes aligned to 16 (max_align_t).  Never NULL. */
void *bz_arena_alloc(bz_arena *a, size_t size);

/* Like bz_arena_alloc, zero-filled. */
void *bz_arena_calloc(bz_arena *a, size_t n, size_t size);

/* Copies n bytes of s and appends a NUL. */
char *bz_arena_strndup(bz_arena *a, const char *s, size_t n);
char *bz_arena_strdup(bz_arena *a, const char *s);

/* printf into the arena. */
char *bz_arena_printf(bz_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
char *bz_arena_vprintf(bz_arena *a, const char *fmt, va_list ap);

/* Registers fn(arg) to run when the arena is reset or freed. */
void bz_arena_defer_fn(bz_arena *a, void (*fn)(void *), void *arg);

/* A growable buffer (empty, heap-backed as any bz_buf) whose bytes are
 * freed when the arena is reset or freed: a request's scratch text (a
 * cache value, a record being encoded) without a bz_buf_free on each path. */
bz_buf *bz_arena_buf(bz_arena *a);

/* Runs the defers, then drops every chunk but the first one (kept for the
 * next request, so a steady-state request does no malloc at all). */
void bz_arena_reset(bz_arena *a);

/* Runs the defers and returns every chunk to malloc. */
void bz_arena_free(bz_arena *a);

#pragma GCC visibility pop
#endif
