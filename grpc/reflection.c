/*
 * grpc/reflection.c — grpc.reflection.v1 and v1alpha ServerReflection
 * (grpc.h), per server, over:
 *
 *   - the FileDescriptorSets the program gave (grpc_reflection_add_descriptor_set,
 *     copied: the marketplace gives bazaar.proto's with its imports);
 *   - the library's own set, embedded at build time
 *     (build/gen/grpc_std_descriptors.c: health, reflection, grpc.testing,
 *     the well-known types, google.rpc.Status, as protoc wrote them);
 *   - for every service added with grpc_server_add_service that none of
 *     those declares, FileDescriptorProtos made from its protobuf-c
 *     descriptors (grpc/describe.c), importing the set files of the types
 *     the sets declare.
 *
 * The index is built on the first reflection request (under the server's
 * mutex; registrations come before serving), in that order, a file name
 * given twice kept from the first.  Each file keeps its serialized
 * FileDescriptorProto exactly as it came (a slice of the set's bytes, no
 * re-encoding), its dependencies, and every name it declares goes into a
 * sorted symbol table (messages and nested messages, enums, enum values,
 * fields, oneofs, services, methods, extensions).  The index is read-only
 * afterwards, so calls on any thread share it without locks.
 *
 * ServerReflectionInfo is a bidirectional stream: each request message is
 * answered, in order, by one response that echoes the request
 * (original_request) and its host (valid_host):
 *
 *   list_services                 every service with a registered method
 *                                 (read from the method table at each
 *                                 request, so services registered after
 *                                 reflection are listed too), sorted
 *   file_by_filename              the file and its transitive dependencies
 *   file_containing_symbol        the same for the file declaring a symbol
 *   file_containing_extension     the same for the file declaring extension
 *                                 (containing_type, number)
 *   all_extension_numbers_of_type the extension numbers declared for a
 *                                 message type (none, with these protos:
 *                                 an empty list, as grpc-go and grpc C++
 *                                 answer for a known type)
 *
 * Unknown files, symbols, types and extensions get an error_response with
 * NOT_FOUND, a request with none of these set one with INVALID_ARGUMENT;
 * the stream goes on either way.  A request that is not a valid
 * ServerReflectionRequest (bad protobuf, or a string that is not UTF-8)
 * ends the call with INVALID_ARGUMENT.
 *
 * A file_descriptor_response carries the requested file first, then its
 * transitive dependencies breadth-first, each once (like grpc C++; grpc-go
 * skips dependencies already sent on the stream, which the protocol
 * allows, but a client that resolves each answer on its own then misses
 * them, so every answer here is complete).
 *
 * v1alpha's messages are v1's under another package (same fields, numbers
 * and types), so one handler with v1's generated code serves both; the
 * registration checks the two generated descriptors agree before serving
 * v1alpha that way.
 *
 * Memory: the index lives as long as the server; a call's request and
 * response messages live in a scratch arena reset after each answer, so a
 * long stream does not grow it.
 */
#include "grpc/grpc-private.h"

#include <bazaar/log.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* The standard services' set, embedded at build time (build/gen/grpc_std_descriptors.c). */
extern const unsigned char grpc__std_descriptor_set[];
extern const size_t grpc__std_descriptor_set_len;

typedef Grpc__Reflection__V1__ServerReflectionRequest req_t;
typedef Grpc__Reflection__V1__ServerReflectionResponse resp_t;

#define PATH_V1 "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
#define PATH_V1ALPHA "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

/* ---- the index ---------------------------------------------------------------------------- */

typedef enum sym_kind { SYM_MESSAGE, SYM_ENUM, SYM_ENUM_VALUE, SYM_FIELD, SYM_ONEOF, SYM_SERVICE, SYM_METHOD,
                        SYM_EXTENSION } sym_kind;

typedef struct sym {
    const char *name; /* full name, no leading dot */
    int file;
    sym_kind kind;
} sym;

typedef struct ext {
    const char *extendee; /* full name of the extended message, no leading dot */
    int32_t number;
    int file;
} ext;

typedef struct file {
    const char *name;
    const uint8_t *bytes; /* the serialized FileDescriptorProto (inside one of the sets) */
    size_t len;
    const char **depnames; /* as the file names them */
    int *deps, ndeps;      /* those found, as indexes into files */
} file;

/* A server's reflection: the sets it was given, and the index built from
 * them (and from its services) on the first request. */
struct grpc__refl {
    pthread_mutex_t mu;
    atomic_bool built;
    bz_buf *sets; /* copies of the caller's sets, in the order given */
    int nsets;
    bz_buf synth; /* the set described from protobuf-c's descriptors */
    bz_arena arena; /* names, unpacked descriptors, dependency lists */
    file *files;
    int nfiles, capfiles;
    sym *syms;
    int nsyms, capsyms;
    ext *exts;
    int nexts, capexts;
};

void *grpc__grow(void *p, int *cap, int n, size_t size)
{
    if (n < *cap)
        return p;
    *cap = *cap ? *cap * 2 : 16;
    p = realloc(p, (size_t)*cap * size);
    if (!p)
        abort();
    return p;
}

static const char *join(grpc__refl *X, const char *scope, const char *name)
{
    if (!name)
        name = "";
    if (!scope || !*scope)
        return bz_arena_strdup(&X->arena, name);
    return bz_arena_printf(&X->arena, "%s.%s", scope, name);
}

static void add_sym(grpc__refl *X, const char *name, int f, sym_kind kind)
{
    X->syms = grpc__grow(X->syms, &X->capsyms, X->nsyms, sizeof *X->syms);
    X->syms[X->nsyms++] = (sym){name, f, kind};
}

static const char *undot(const char *s) { return s && *s == '.' ? s + 1 : (s ? s : ""); }

static void add_ext(grpc__refl *X, const Google__Protobuf__FieldDescriptorProto *fd, const char *scope, int f)
{
    add_sym(X, join(X, scope, fd->name), f, SYM_EXTENSION);
    X->exts = grpc__grow(X->exts, &X->capexts, X->nexts, sizeof *X->exts);
    X->exts[X->nexts++] = (ext){bz_arena_strdup(&X->arena, undot(fd->extendee)), fd->number, f};
}

/* Enum values are scoped like the enum itself (C++ scoping rules). */
static void index_enum(grpc__refl *X, const Google__Protobuf__EnumDescriptorProto *e, const char *scope, int f)
{
    add_sym(X, join(X, scope, e->name), f, SYM_ENUM);
    for (size_t i = 0; i < e->n_value; i++)
        add_sym(X, join(X, scope, e->value[i]->name), f, SYM_ENUM_VALUE);
}

static void index_message(grpc__refl *X, const Google__Protobuf__DescriptorProto *m, const char *scope, int f)
{
    const char *full = join(X, scope, m->name);
    add_sym(X, full, f, SYM_MESSAGE);
    for (size_t i = 0; i < m->n_field; i++)
        add_sym(X, join(X, full, m->field[i]->name), f, SYM_FIELD);
    for (size_t i = 0; i < m->n_oneof_decl; i++)
        add_sym(X, join(X, full, m->oneof_decl[i]->name), f, SYM_ONEOF);
    for (size_t i = 0; i < m->n_nested_type; i++)
        index_message(X, m->nested_type[i], full, f);
    for (size_t i = 0; i < m->n_enum_type; i++)
        index_enum(X, m->enum_type[i], full, f);
    for (size_t i = 0; i < m->n_extension; i++)
        add_ext(X, m->extension[i], full, f);
}

static void index_file(grpc__refl *X, const Google__Protobuf__FileDescriptorProto *fd, int f)
{
    const char *pkg = fd->package ? fd->package : "";
    for (size_t i = 0; i < fd->n_message_type; i++)
        index_message(X, fd->message_type[i], pkg, f);
    for (size_t i = 0; i < fd->n_enum_type; i++)
        index_enum(X, fd->enum_type[i], pkg, f);
    for (size_t i = 0; i < fd->n_service; i++) {
        const Google__Protobuf__ServiceDescriptorProto *s = fd->service[i];
        const char *full = join(X, pkg, s->name);
        add_sym(X, full, f, SYM_SERVICE);
        for (size_t j = 0; j < s->n_method; j++)
            add_sym(X, join(X, full, s->method[j]->name), f, SYM_METHOD);
    }
    for (size_t i = 0; i < fd->n_extension; i++)
        add_ext(X, fd->extension[i], pkg, f);
}

static int sym_cmp(const void *a, const void *b)
{
    const sym *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    /* a name declared twice: the first file wins */
    return c ? c : (x->file > y->file) - (x->file < y->file);
}

/* Reads a varint at *p (< end): 0, or -1 if truncated or too long. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

/* Calls fn on each FileDescriptorProto of a FileDescriptorSet (field 1:
 * repeated FileDescriptorProto file), as a slice of its bytes: 0, or -1
 * if the bytes are not a protobuf message. */
static int each_file(const uint8_t *p, size_t n, void (*fn)(void *arg, const uint8_t *p, size_t n), void *arg)
{
    const uint8_t *end = p + n;
    while (p < end) {
        uint64_t key, len;
        if (varint(&p, end, &key) != 0)
            return -1;
        switch (key & 7) {
        case 0:
            if (varint(&p, end, &len) != 0)
                return -1;
            continue;
        case 1:
            len = 8;
            break;
        case 5:
            len = 4;
            break;
        case 2:
            if (varint(&p, end, &len) != 0)
                return -1;
            break;
        default:
            return -1;
        }
        if (len > (uint64_t)(end - p))
            return -1;
        if (key == (1 << 3 | 2) && fn)
            fn(arg, p, (size_t)len);
        p += len;
    }
    return 0;
}

static int find_file(const grpc__refl *X, const char *name)
{
    for (int i = 0; i < X->nfiles; i++)
        if (!strcmp(X->files[i].name, name))
            return i;
    return -1;
}

/* Adds one file of a set (unpacked, its symbols indexed, its dependencies
 * resolved later); a file whose name is taken is skipped: the first wins. */
static void add_file(void *arg, const uint8_t *p, size_t n)
{
    grpc__refl *X = arg;
    ProtobufCAllocator al = grpc__arena_allocator(&X->arena);
    Google__Protobuf__FileDescriptorProto *fd = google__protobuf__file_descriptor_proto__unpack(&al, n, p);
    if (!fd || !fd->name) {
        bz_log_err("grpc reflection: a file of a descriptor set is malformed; skipped");
        return;
    }
    if (find_file(X, fd->name) >= 0)
        return;
    X->files = grpc__grow(X->files, &X->capfiles, X->nfiles, sizeof *X->files);
    int f = X->nfiles++;
    X->files[f] = (file){.name = fd->name, .bytes = p, .len = n, .ndeps = (int)fd->n_dependency};
    X->files[f].depnames = bz_arena_calloc(&X->arena, fd->n_dependency + 1, sizeof(char *));
    for (size_t j = 0; j < fd->n_dependency; j++)
        X->files[f].depnames[j] = fd->dependency[j];
    index_file(X, fd, f);
}

/* Resolves the dependencies of files [from, X->nfiles) by name. */
static void resolve_deps(grpc__refl *X, int from)
{
    for (int i = from; i < X->nfiles; i++) {
        file *f = &X->files[i];
        int n = f->ndeps;
        f->deps = bz_arena_calloc(&X->arena, (size_t)n + 1, sizeof *f->deps);
        f->ndeps = 0;
        for (int j = 0; j < n; j++) {
            int d = find_file(X, f->depnames[j]);
            if (d >= 0)
                f->deps[f->ndeps++] = d;
            else
                bz_log_err("grpc reflection: a dependency is missing from the descriptor sets",
                           BZ_F_STR("file", f->name), BZ_F_STR("dependency", f->depnames[j]));
        }
    }
}

static const sym *find_sym(const grpc__refl *X, const char *name)
{
    int lo = 0, hi = X->nsyms;
    while (lo < hi) { /* the first entry >= name */
        int mid = lo + (hi - lo) / 2;
        if (strcmp(X->syms[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < X->nsyms && !strcmp(X->syms[lo].name, name) ? &X->syms[lo] : NULL;
}

/* The file declaring a message or enum type (full name, no leading dot),
 * for the descriptions made from protobuf-c's descriptors. */
static const char *known_type(void *arg, const char *name)
{
    const grpc__refl *X = arg;
    const sym *s = find_sym(X, name);
    return s && (s->kind == SYM_MESSAGE || s->kind == SYM_ENUM) ? X->files[s->file].name : NULL;
}

static bool file_taken(void *arg, const char *name) { return find_file(arg, name) >= 0; }

static void sort_syms(grpc__refl *X)
{
    if (X->nsyms)
        qsort(X->syms, (size_t)X->nsyms, sizeof *X->syms, sym_cmp);
}

/* The index: the caller's sets first (their files win a name twice
 * given), then the standard set, then the services that none of them
 * declares, described from their descriptors. */
static void build(const grpc_server *g)
{
    grpc__refl *X = g->refl;
    bz_arena_init(&X->arena, 64 << 10);
    for (int i = 0; i < X->nsets; i++)
        each_file((const uint8_t *)X->sets[i].data, X->sets[i].len, add_file, X);
    if (each_file(grpc__std_descriptor_set, grpc__std_descriptor_set_len, add_file, X) != 0)
        bz_log_err("grpc reflection: the standard descriptor set is malformed");
    resolve_deps(X, 0);
    sort_syms(X);
    const grpc__service **todo = calloc((size_t)g->nsvcs + 1, sizeof *todo);
    if (!todo)
        abort();
    int n = 0;
    for (int i = 0; i < g->nsvcs; i++) {
        const sym *s = find_sym(X, g->svcs[i].d->name);
        if (!s || s->kind != SYM_SERVICE)
            todo[n++] = &g->svcs[i];
    }
    if (n && grpc__describe(todo, n, &(grpc__describe_env){known_type, file_taken, X}, &X->synth) == 0) {
        int from = X->nfiles;
        each_file((const uint8_t *)X->synth.data, X->synth.len, add_file, X);
        resolve_deps(X, from);
        sort_syms(X);
    }
    free(todo);
}

static void ensure_built(const grpc_server *g)
{
    grpc__refl *X = g->refl;
    if (atomic_load_explicit(&X->built, memory_order_acquire))
        return;
    pthread_mutex_lock(&X->mu);
    if (!atomic_load_explicit(&X->built, memory_order_relaxed)) {
        build(g);
        atomic_store_explicit(&X->built, true, memory_order_release);
    }
    pthread_mutex_unlock(&X->mu);
}

/* ---- answers ------------------------------------------------------------------------------ */

/* A client's name, safe to quote in an error message (printable ASCII,
 * bounded). */
static const char *quote(bz_arena *a, const char *s)
{
    size_t n = strlen(s), max = 200;
    char *q = bz_arena_alloc(a, (n < max ? n : max) + 4);
    size_t j = 0;
    for (size_t i = 0; i < n && i < max; i++)
        q[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (n > max) {
        memcpy(q + j, "...", 3);
        j += 3;
    }
    q[j] = '\0';
    return q;
}

static void error_answer(bz_arena *a, resp_t *out, grpc_code code, const char *msg)
{
    Grpc__Reflection__V1__ErrorResponse *e = bz_arena_alloc(a, sizeof *e);
    grpc__reflection__v1__error_response__init(e);
    e->error_code = (int32_t)code;
    e->error_message = (char *)msg;
    out->message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    out->error_response = e;
}

/* The file and its transitive dependencies, breadth-first, each once. */
static void files_answer(const grpc__refl *X, bz_arena *a, resp_t *out, int f)
{
    bool *seen = bz_arena_calloc(a, (size_t)X->nfiles, sizeof *seen);
    int *queue = bz_arena_alloc(a, (size_t)X->nfiles * sizeof *queue);
    ProtobufCBinaryData *bin = bz_arena_alloc(a, (size_t)X->nfiles * sizeof *bin);
    int head = 0, tail = 0;
    seen[f] = true;
    queue[tail++] = f;
    while (head < tail) {
        const file *cur = &X->files[queue[head]];
        bin[head].data = (uint8_t *)cur->bytes;
        bin[head].len = cur->len;
        head++;
        for (int i = 0; i < cur->ndeps; i++)
            if (!seen[cur->deps[i]]) {
                seen[cur->deps[i]] = true;
                queue[tail++] = cur->deps[i];
            }
    }
    Grpc__Reflection__V1__FileDescriptorResponse *r = bz_arena_alloc(a, sizeof *r);
    grpc__reflection__v1__file_descriptor_response__init(r);
    r->n_file_descriptor_proto = (size_t)tail;
    r->file_descriptor_proto = bin;
    out->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    out->file_descriptor_response = r;
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every service with a registered method, sorted, each once. */
static void list_answer(bz_arena *a, resp_t *out, const grpc_server *g)
{
    int n = g->n;
    const grpc_method **ms = bz_arena_alloc(a, (size_t)(n ? n : 1) * sizeof *ms);
    n = grpc_server_methods(g, ms, n);
    char **names = bz_arena_alloc(a, (size_t)(n ? n : 1) * sizeof *names);
    int k = 0;
    for (int i = 0; i < n; i++) {
        const char *p = ms[i]->path;
        const char *slash = p[0] == '/' ? strrchr(p + 1, '/') : NULL;
        if (!slash || slash == p + 1)
            continue;
        names[k++] = bz_arena_strndup(a, p + 1, (size_t)(slash - p - 1));
    }
    if (k)
        qsort(names, (size_t)k, sizeof *names, str_cmp);
    Grpc__Reflection__V1__ServiceResponse *svcs = bz_arena_alloc(a, (size_t)(k ? k : 1) * sizeof *svcs);
    Grpc__Reflection__V1__ServiceResponse **svcp = bz_arena_alloc(a, (size_t)(k ? k : 1) * sizeof *svcp);
    size_t ns = 0;
    for (int i = 0; i < k; i++) {
        if (ns && !strcmp(svcs[ns - 1].name, names[i]))
            continue;
        grpc__reflection__v1__service_response__init(&svcs[ns]);
        svcs[ns].name = names[i];
        svcp[ns] = &svcs[ns];
        ns++;
    }
    Grpc__Reflection__V1__ListServiceResponse *r = bz_arena_alloc(a, sizeof *r);
    grpc__reflection__v1__list_service_response__init(r);
    r->n_service = ns;
    r->service = svcp;
    out->message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    out->list_services_response = r;
}

static void extension_numbers_answer(const grpc__refl *X, bz_arena *a, resp_t *out, const char *type)
{
    const sym *s = find_sym(X, undot(type));
    if (!s || s->kind != SYM_MESSAGE) {
        error_answer(a, out, GRPC_NOT_FOUND, bz_arena_printf(a, "message type %s not found", quote(a, type)));
        return;
    }
    int32_t *nums = bz_arena_alloc(a, (size_t)(X->nexts ? X->nexts : 1) * sizeof *nums);
    size_t n = 0;
    for (int i = 0; i < X->nexts; i++)
        if (!strcmp(X->exts[i].extendee, s->name))
            nums[n++] = X->exts[i].number;
    Grpc__Reflection__V1__ExtensionNumberResponse *r = bz_arena_alloc(a, sizeof *r);
    grpc__reflection__v1__extension_number_response__init(r);
    r->base_type_name = (char *)s->name;
    r->n_extension_number = n;
    r->extension_number = nums;
    out->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
    out->all_extension_numbers_response = r;
}

static void extension_answer(const grpc__refl *X, bz_arena *a, resp_t *out,
                             const Grpc__Reflection__V1__ExtensionRequest *er)
{
    const char *type = er && er->containing_type ? er->containing_type : "";
    int32_t num = er ? er->extension_number : 0;
    for (int i = 0; i < X->nexts; i++)
        if (X->exts[i].number == num && !strcmp(X->exts[i].extendee, undot(type))) {
            files_answer(X, a, out, X->exts[i].file);
            return;
        }
    error_answer(a, out, GRPC_NOT_FOUND,
                 bz_arena_printf(a, "extension %d of type %s not found", (int)num, quote(a, type)));
}

static void answer(bz_arena *a, const grpc_server *g, req_t *in, resp_t *out)
{
    const grpc__refl *X = g->refl;
    out->valid_host = in->host ? in->host : (char *)"";
    out->original_request = in;
    switch (in->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        list_answer(a, out, g);
        return;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME: {
        const char *name = in->file_by_filename ? in->file_by_filename : "";
        int f = find_file(X, name);
        if (f < 0)
            error_answer(a, out, GRPC_NOT_FOUND, bz_arena_printf(a, "file %s not found", quote(a, name)));
        else
            files_answer(X, a, out, f);
        return;
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL: {
        const char *name = in->file_containing_symbol ? in->file_containing_symbol : "";
        const sym *s = find_sym(X, undot(name));
        if (!s)
            error_answer(a, out, GRPC_NOT_FOUND, bz_arena_printf(a, "symbol %s not found", quote(a, name)));
        else
            files_answer(X, a, out, s->file);
        return;
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        extension_answer(X, a, out, in->file_containing_extension);
        return;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        extension_numbers_answer(X, a, out, in->all_extension_numbers_of_type ? in->all_extension_numbers_of_type : "");
        return;
    default:
        error_answer(a, out, GRPC_INVALID_ARGUMENT, "the request sets none of the reflection requests");
        return;
    }
}

/* Strict UTF-8 (no overlong forms, surrogates or values past U+10FFFF). */
static bool utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int n;
        uint32_t cp, min;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        p++;
        for (int i = 0; i < n; i++, p++) {
            if ((*p & 0xc0) != 0x80) /* also stops at the NUL */
                return false;
            cp = cp << 6 | (*p & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
    }
    return true;
}

/* proto3 strings must be UTF-8: a request with one that is not is not a
 * valid message (and could not be echoed in original_request). */
static bool strings_ok(const req_t *in)
{
    const char *s[] = {in->host, NULL, NULL};
    switch (in->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        s[1] = in->file_by_filename;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        s[1] = in->file_containing_symbol;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        s[1] = in->file_containing_extension ? in->file_containing_extension->containing_type : NULL;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        s[1] = in->all_extension_numbers_of_type;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        s[1] = in->list_services;
        break;
    default:
        break;
    }
    for (int i = 0; i < 2; i++)
        if (s[i] && !utf8_ok(s[i]))
            return false;
    return true;
}

/* ServerReflectionInfo: one answer per request, in order, until the
 * client ends its stream. */
static int info(grpc_call *c, void *data)
{
    const grpc_server *g = data;
    ensure_built(g);
    bz_arena scratch;
    bz_arena_init(&scratch, 16 << 10);
    int rc;
    for (;;) {
        bz_arena_reset(&scratch);
        req_t *in;
        rc = grpc_recv_in(c, &grpc__reflection__v1__server_reflection_request__descriptor, &scratch,
                          (ProtobufCMessage **)&in);
        if (rc != 0)
            break;
        if (!strings_ok(in)) {
            grpc_finish(c, GRPC_INVALID_ARGUMENT, "the request message is not a valid %s: a string is not UTF-8",
                        grpc__reflection__v1__server_reflection_request__descriptor.name);
            break;
        }
        resp_t out = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
        answer(&scratch, g, in, &out);
        if (grpc_send(c, &out.base) != 0)
            break;
    }
    bz_arena_free(&scratch);
    if (rc == 1)
        return grpc_finish(c, GRPC_OK, NULL);
    return 0; /* the status is set, or the client went away */
}

/* ---- registration ------------------------------------------------------------------------- */

/* Whether two generated message descriptors have the same wire form and C
 * layout (v1alpha's messages against v1's). */
static bool same_message(const ProtobufCMessageDescriptor *x, const ProtobufCMessageDescriptor *y, int depth)
{
    if (x == y)
        return true;
    if (!x || !y || depth > 8 || x->n_fields != y->n_fields || x->sizeof_message != y->sizeof_message)
        return false;
    for (unsigned i = 0; i < x->n_fields; i++) {
        const ProtobufCFieldDescriptor *a = &x->fields[i], *b = &y->fields[i];
        if (a->id != b->id || a->label != b->label || a->type != b->type || a->offset != b->offset ||
            a->quantifier_offset != b->quantifier_offset || a->flags != b->flags || strcmp(a->name, b->name))
            return false;
        if (a->type == PROTOBUF_C_TYPE_MESSAGE && !same_message(a->descriptor, b->descriptor, depth + 1))
            return false;
    }
    return true;
}

static grpc__refl *refl_of(grpc_server *g)
{
    if (!g->refl) {
        g->refl = calloc(1, sizeof *g->refl);
        if (!g->refl)
            abort();
        pthread_mutex_init(&g->refl->mu, NULL);
    }
    return g->refl;
}

void grpc__refl_free(grpc__refl *X)
{
    if (!X)
        return;
    for (int i = 0; i < X->nsets; i++)
        bz_buf_free(&X->sets[i]);
    free(X->sets);
    bz_buf_free(&X->synth);
    if (atomic_load(&X->built))
        bz_arena_free(&X->arena);
    free(X->files);
    free(X->syms);
    free(X->exts);
    pthread_mutex_destroy(&X->mu);
    free(X);
}

/* Counts the files of a set that are not FileDescriptorProtos with a name. */
bool grpc__refl_built(const grpc__refl *X) { return X && atomic_load(&X->built); }

static void count_bad(void *arg, const uint8_t *p, size_t n)
{
    Google__Protobuf__FileDescriptorProto *fd = google__protobuf__file_descriptor_proto__unpack(NULL, n, p);
    if (!fd || !fd->name)
        ++*(int *)arg;
    if (fd)
        google__protobuf__file_descriptor_proto__free_unpacked(fd, NULL);
}

int grpc_reflection_add_descriptor_set(grpc_server *g, const void *bytes, size_t n)
{
    grpc__refl *X = refl_of(g);
    int bad = 0;
    if (atomic_load(&X->built)) {
        bz_log_err("grpc reflection: a descriptor set added after the first reflection request; not served");
        return -1;
    }
    if (!bytes || each_file(bytes, n, count_bad, &bad) != 0 || bad) {
        bz_log_err("grpc reflection: not a FileDescriptorSet; not served", BZ_F_INT("bytes", (int64_t)n));
        return -1;
    }
    bz_buf *sets = realloc(X->sets, (size_t)(X->nsets + 1) * sizeof *sets);
    if (!sets)
        abort();
    X->sets = sets;
    X->sets[X->nsets] = BZ_BUF_INIT;
    bz_buf_append(&X->sets[X->nsets], bytes, n);
    X->nsets++;
    return 0;
}

void grpc_reflection_register(grpc_server *g)
{
    refl_of(g);
    grpc_server_add(g, &(grpc_method){PATH_V1, info, g, true, true});
    if (same_message(&grpc__reflection__v1__server_reflection_request__descriptor,
                     &grpc__reflection__v1alpha__server_reflection_request__descriptor, 0) &&
        same_message(&grpc__reflection__v1__server_reflection_response__descriptor,
                     &grpc__reflection__v1alpha__server_reflection_response__descriptor, 0))
        grpc_server_add(g, &(grpc_method){PATH_V1ALPHA, info, g, true, true});
    else
        bz_log_err("grpc reflection: v1alpha's messages differ from v1's; serving v1 only");
}
