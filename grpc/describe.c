/*
 * grpc/describe.c — FileDescriptorProtos for the services a program
 * registered with grpc_server_add_service, made from protobuf-c's runtime
 * descriptors, so that reflection describes a program's own services with
 * nothing but protoc-c's output (no descriptor set to build and embed).
 *
 * What the runtime descriptors carry, and so what a description holds:
 * the full names and packages of services, methods, messages and enums;
 * each field's name, number, label, type and type reference, its proto2
 * default, its packed and deprecated flags and its oneof membership; each
 * enum's values, aliases included.  What they lose, and what is made
 * instead (a reflection client resolves types by full name, so none of
 * this changes how it calls a method or reads a message):
 *
 *   the file          one file per package, "<package>.proto" (dots kept;
 *                     "_.proto" for no package), importing the files of
 *                     the types it uses from other packages or from the
 *                     descriptor sets (google.protobuf.Timestamp's
 *                     google/protobuf/timestamp.proto)
 *   the syntax        proto3 when a singular field has no presence (what
 *                     protoc-c emits only for proto3), proto2 when one is
 *                     optional or required or has a default; proto3 when
 *                     nothing tells (only repeated fields, or none)
 *   the order         fields and enum values by number (protobuf-c sorts
 *                     them so), not as declared; methods as declared
 *   oneof names       "oneof_<i>", numbered by their lowest field
 *   streaming         from the grpc_handler entries (protobuf-c's method
 *                     descriptors do not say); a method without an entry
 *                     is described as unary
 *   map fields        a repeated field of a nested "<Field>Entry" message
 *                     whose fields are key = 1 and value = 2 is a map, as
 *                     protoc makes one (a hand-written message of that
 *                     shape is wire-identical to it)
 *   enclosing types   a message only reached as the parent of a nested
 *                     type the services use is described without fields
 *   enum defaults     a proto2 default naming an alias is described by
 *                     the value's first name (the same number)
 *   the rest          options other than packed, deprecated, allow_alias
 *                     and map_entry; comments, reserved ranges, extensions;
 *                     proto3 `optional` (protoc-c 1.4 refuses it anyway)
 *
 * Two packages whose types use each other would import each other's
 * files, which descriptor pools refuse; the .protos themselves cannot do
 * that within one package, across packages it is rare.
 *
 * Everything is built in a scratch arena and packed into one serialized
 * FileDescriptorSet, which reflection then indexes like any other.
 */
#include "grpc/grpc-private.h"

#include <bazaar/log.h>

#include "google/protobuf/descriptor.pb-c.h"

#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Google__Protobuf__DescriptorProto msg_t;
typedef Google__Protobuf__EnumDescriptorProto enum_t;
typedef Google__Protobuf__FieldDescriptorProto field_t;
typedef Google__Protobuf__FileDescriptorProto file_t;

typedef struct node {
    const char *name; /* full, no leading dot */
    const char *pkg;  /* "" for none */
    const ProtobufCMessageDescriptor *m; /* a message (NULL: an enum, or a parent only) */
    const ProtobufCEnumDescriptor *e;
    int parent; /* the enclosing message's node, or -1 */
    int file;
    msg_t *dp;
    enum_t *ep;
} node;

typedef struct dfile {
    const char *pkg;
    file_t fd;
    bool proto2;
} dfile;

typedef struct ctx {
    bz_arena *a;
    const grpc__describe_env *env;
    node *nodes;
    int n, cap;
    dfile *files;
    int nfiles, capfiles;
} ctx;

static const char *or_empty(const char *s) { return s ? s : ""; }

static int find_node(const ctx *x, const char *name)
{
    for (int i = 0; i < x->n; i++)
        if (!strcmp(x->nodes[i].name, name))
            return i;
    return -1;
}

/* A node for name (its enclosing messages first, as parents). */
static int add_node(ctx *x, const char *name, const char *pkg)
{
    int i = find_node(x, name);
    if (i >= 0)
        return i;
    size_t skip = *pkg ? strlen(pkg) + 1 : 0;
    const char *dot = strlen(name) > skip ? strrchr(name + skip, '.') : NULL;
    int parent = dot ? add_node(x, bz_arena_strndup(x->a, name, (size_t)(dot - name)), pkg) : -1;
    x->nodes = grpc__grow(x->nodes, &x->cap, x->n, sizeof *x->nodes);
    x->nodes[x->n] = (node){.name = name, .pkg = pkg, .parent = parent};
    return x->n++;
}

static void visit_enum(ctx *x, const ProtobufCEnumDescriptor *e)
{
    if (find_node(x, e->name) >= 0 || x->env->known_type(x->env->arg, e->name))
        return;
    int i = add_node(x, e->name, or_empty(e->package_name));
    x->nodes[i].e = e;
}

static void visit_message(ctx *x, const ProtobufCMessageDescriptor *m)
{
    int i = find_node(x, m->name);
    if (i >= 0 ? x->nodes[i].m != NULL : x->env->known_type(x->env->arg, m->name) != NULL)
        return;
    i = add_node(x, m->name, or_empty(m->package_name));
    x->nodes[i].m = m;
    for (unsigned f = 0; f < m->n_fields; f++) {
        const ProtobufCFieldDescriptor *fd = &m->fields[f];
        if (fd->type == PROTOBUF_C_TYPE_MESSAGE && fd->descriptor)
            visit_message(x, fd->descriptor);
        else if (fd->type == PROTOBUF_C_TYPE_ENUM && fd->descriptor)
            visit_enum(x, fd->descriptor);
    }
}

static int file_of(ctx *x, const char *pkg)
{
    for (int i = 0; i < x->nfiles; i++)
        if (!strcmp(x->files[i].pkg, pkg))
            return i;
    x->files = grpc__grow(x->files, &x->capfiles, x->nfiles, sizeof *x->files);
    dfile *f = &x->files[x->nfiles];
    memset(f, 0, sizeof *f);
    f->pkg = pkg;
    google__protobuf__file_descriptor_proto__init(&f->fd);
    const char *base = *pkg ? pkg : "_";
    const char *name = bz_arena_printf(x->a, "%s.proto", base);
    for (int k = 2; x->env->file_taken(x->env->arg, name) && k < 100; k++)
        name = bz_arena_printf(x->a, "%s.%d.proto", base, k);
    f->fd.name = (char *)name;
    f->fd.package = *pkg ? (char *)pkg : NULL;
    return x->nfiles++;
}

/* ---- fields ------------------------------------------------------------------------------- */

static Google__Protobuf__FieldDescriptorProto__Type type_of(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT32;
    case PROTOBUF_C_TYPE_SINT32: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT32;
    case PROTOBUF_C_TYPE_SFIXED32: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED32;
    case PROTOBUF_C_TYPE_INT64: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT64;
    case PROTOBUF_C_TYPE_SINT64: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT64;
    case PROTOBUF_C_TYPE_SFIXED64: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED64;
    case PROTOBUF_C_TYPE_UINT32: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT32;
    case PROTOBUF_C_TYPE_FIXED32: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED32;
    case PROTOBUF_C_TYPE_UINT64: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT64;
    case PROTOBUF_C_TYPE_FIXED64: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED64;
    case PROTOBUF_C_TYPE_FLOAT: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FLOAT;
    case PROTOBUF_C_TYPE_DOUBLE: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_DOUBLE;
    case PROTOBUF_C_TYPE_BOOL: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BOOL;
    case PROTOBUF_C_TYPE_ENUM: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_ENUM;
    case PROTOBUF_C_TYPE_STRING: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_STRING;
    case PROTOBUF_C_TYPE_BYTES: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BYTES;
    case PROTOBUF_C_TYPE_MESSAGE: return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE;
    }
    return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BYTES;
}

/* protoc's json_name: underscores dropped, the letter after one upper-cased. */
static char *json_name(bz_arena *a, const char *name)
{
    char *out = bz_arena_alloc(a, strlen(name) + 1), *o = out;
    bool up = false;
    for (const char *p = name; *p; p++) {
        if (*p == '_')
            up = true;
        else {
            *o++ = up ? (char)toupper((unsigned char)*p) : *p;
            up = false;
        }
    }
    *o = '\0';
    return out;
}

/* The shortest of %.<prec>g that reads back as v (protoc's SimpleDtoa). */
static char *real(bz_arena *a, double v, int prec, int max, bool is_float)
{
    if (isinf(v))
        return v > 0 ? "inf" : "-inf";
    if (isnan(v))
        return "nan";
    char buf[64];
    for (; prec <= max; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        double back = strtod(buf, NULL);
        if (is_float ? (float)back == (float)v : back == v)
            break;
    }
    return bz_arena_strdup(a, buf);
}

/* protoc's CEscape, for a bytes default. */
static char *c_escape(bz_arena *a, const ProtobufCBinaryData *b)
{
    char *out = bz_arena_alloc(a, b->len * 4 + 1), *o = out;
    for (size_t i = 0; i < b->len; i++) {
        unsigned char c = b->data[i];
        switch (c) {
        case '\n': *o++ = '\\', *o++ = 'n'; break;
        case '\r': *o++ = '\\', *o++ = 'r'; break;
        case '\t': *o++ = '\\', *o++ = 't'; break;
        case '"': *o++ = '\\', *o++ = '"'; break;
        case '\'': *o++ = '\\', *o++ = '\''; break;
        case '\\': *o++ = '\\', *o++ = '\\'; break;
        default:
            if (c < 0x20 || c >= 0x7f)
                o += sprintf(o, "\\%03o", c);
            else
                *o++ = (char)c;
        }
    }
    *o = '\0';
    return out;
}

/* Whether the field declares a default (protoc-c points proto3 strings,
 * and proto2 ones without a default, at its shared empty string). */
static bool has_default(const ProtobufCFieldDescriptor *f)
{
    return f->default_value && !(f->type == PROTOBUF_C_TYPE_STRING && f->default_value == protobuf_c_empty_string);
}

/* A proto2 default as FieldDescriptorProto.default_value writes it. */
static char *default_of(bz_arena *a, const ProtobufCFieldDescriptor *f)
{
    const void *v = f->default_value;
    if (!has_default(f))
        return NULL;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: return bz_arena_printf(a, "%d", (int)*(const int32_t *)v);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: return bz_arena_printf(a, "%lld", (long long)*(const int64_t *)v);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return bz_arena_printf(a, "%u", (unsigned)*(const uint32_t *)v);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return bz_arena_printf(a, "%llu", (unsigned long long)*(const uint64_t *)v);
    case PROTOBUF_C_TYPE_FLOAT: return real(a, *(const float *)v, FLT_DIG, FLT_DIG + 3, true);
    case PROTOBUF_C_TYPE_DOUBLE: return real(a, *(const double *)v, DBL_DIG, DBL_DIG + 2, false);
    case PROTOBUF_C_TYPE_BOOL: return *(const protobuf_c_boolean *)v ? "true" : "false";
    case PROTOBUF_C_TYPE_STRING: return bz_arena_strdup(a, (const char *)v);
    case PROTOBUF_C_TYPE_BYTES: return c_escape(a, v);
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)v);
        return ev ? bz_arena_strdup(a, ev->name) : NULL;
    }
    case PROTOBUF_C_TYPE_MESSAGE: return NULL;
    }
    return NULL;
}

static char *ref(bz_arena *a, const char *full) { return bz_arena_printf(a, ".%s", full); }

/* protoc's map entry name for a field: "foo_bar" → "FooBarEntry". */
static bool is_map_entry(bz_arena *a, const ProtobufCMessageDescriptor *m, const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE || !f->descriptor)
        return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    char *camel = json_name(a, f->name);
    camel[0] = (char)toupper((unsigned char)camel[0]);
    if (strcmp(e->name, bz_arena_printf(a, "%s.%sEntry", m->name, camel)))
        return false;
    return e->n_fields == 2 && e->fields[0].id == 1 && !strcmp(e->fields[0].name, "key") && e->fields[1].id == 2 &&
           !strcmp(e->fields[1].name, "value") && e->fields[0].label != PROTOBUF_C_LABEL_REPEATED &&
           e->fields[1].label != PROTOBUF_C_LABEL_REPEATED;
}

#define LABEL(l) GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_##l

static bool packable(ProtobufCType t)
{
    return t != PROTOBUF_C_TYPE_STRING && t != PROTOBUF_C_TYPE_BYTES && t != PROTOBUF_C_TYPE_MESSAGE;
}

static void build_message(ctx *x, node *nd, bool proto2)
{
    bz_arena *a = x->a;
    msg_t *dp = nd->dp;
    const ProtobufCMessageDescriptor *m = nd->m;
    if (!m)
        return; /* an enclosing message only */
    dp->n_field = m->n_fields;
    dp->field = bz_arena_calloc(a, m->n_fields + 1, sizeof *dp->field);
    /* oneofs: the fields sharing a case member (quantifier_offset) */
    unsigned *oneof_at = bz_arena_calloc(a, m->n_fields + 1, sizeof *oneof_at);
    int noneofs = 0;
    for (unsigned i = 0; i < m->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &m->fields[i];
        field_t *fp = bz_arena_alloc(a, sizeof *fp);
        google__protobuf__field_descriptor_proto__init(fp);
        fp->name = (char *)f->name;
        fp->has_number = true;
        fp->number = (int32_t)f->id;
        fp->has_label = true;
        /* proto3's singular fields (protoc-c's LABEL_NONE) are optional in a descriptor */
        fp->label = f->label == PROTOBUF_C_LABEL_REQUIRED   ? LABEL(REQUIRED)
                    : f->label == PROTOBUF_C_LABEL_REPEATED ? LABEL(REPEATED)
                                                            : LABEL(OPTIONAL);
        fp->has_type = true;
        fp->type = type_of(f->type);
        if ((f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_ENUM) && f->descriptor)
            fp->type_name = ref(a, f->type == PROTOBUF_C_TYPE_MESSAGE
                                       ? ((const ProtobufCMessageDescriptor *)f->descriptor)->name
                                       : ((const ProtobufCEnumDescriptor *)f->descriptor)->name);
        fp->default_value = proto2 ? default_of(a, f) : NULL;
        fp->json_name = json_name(a, f->name);
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            int k = 0;
            while (k < noneofs && oneof_at[k] != f->quantifier_offset)
                k++;
            if (k == noneofs)
                oneof_at[noneofs++] = f->quantifier_offset;
            fp->has_oneof_index = true;
            fp->oneof_index = k;
        }
        bool packed = (f->flags & PROTOBUF_C_FIELD_FLAG_PACKED) != 0;
        bool deprecated = (f->flags & PROTOBUF_C_FIELD_FLAG_DEPRECATED) != 0;
        bool packed_differs = f->label == PROTOBUF_C_LABEL_REPEATED && packable(f->type) && packed == proto2;
        if (packed_differs || deprecated) {
            fp->options = bz_arena_alloc(a, sizeof *fp->options);
            google__protobuf__field_options__init(fp->options);
            fp->options->has_packed = packed_differs;
            fp->options->packed = packed;
            fp->options->has_deprecated = deprecated;
            fp->options->deprecated = deprecated;
        }
        if (is_map_entry(a, m, f)) {
            int e = find_node(x, ((const ProtobufCMessageDescriptor *)f->descriptor)->name);
            if (e >= 0 && x->nodes[e].dp) {
                msg_t *ed = x->nodes[e].dp;
                ed->options = bz_arena_alloc(a, sizeof *ed->options);
                google__protobuf__message_options__init(ed->options);
                ed->options->has_map_entry = true;
                ed->options->map_entry = true;
            }
        }
        dp->field[i] = fp;
    }
    dp->n_oneof_decl = (size_t)noneofs;
    dp->oneof_decl = bz_arena_calloc(a, (size_t)noneofs + 1, sizeof *dp->oneof_decl);
    for (int k = 0; k < noneofs; k++) {
        Google__Protobuf__OneofDescriptorProto *o = bz_arena_alloc(a, sizeof *o);
        google__protobuf__oneof_descriptor_proto__init(o);
        o->name = bz_arena_printf(a, "oneof_%d", k);
        dp->oneof_decl[k] = o;
    }
}

static void build_enum(ctx *x, node *nd, bool proto2)
{
    bz_arena *a = x->a;
    const ProtobufCEnumDescriptor *e = nd->e;
    enum_t *ep = nd->ep;
    /* values[] holds each number once, by number; values_by_name has every
     * name, aliases too */
    ep->value = bz_arena_calloc(a, e->n_value_names + e->n_values + 1, sizeof *ep->value);
    size_t n = 0;
    for (unsigned i = 0; i < e->n_values; i++) {
        Google__Protobuf__EnumValueDescriptorProto *v = bz_arena_alloc(a, sizeof *v);
        google__protobuf__enum_value_descriptor_proto__init(v);
        v->name = (char *)e->values[i].name;
        v->has_number = true;
        v->number = e->values[i].value;
        /* proto3 wants the zero value first */
        if (!proto2 && v->number == 0 && n > 0) {
            memmove(ep->value + 1, ep->value, n * sizeof *ep->value);
            ep->value[0] = v;
            n++;
        } else {
            ep->value[n++] = v;
        }
    }
    bool alias = false;
    for (unsigned i = 0; i < e->n_value_names; i++) {
        const ProtobufCEnumValueIndex *vi = &e->values_by_name[i];
        if (vi->index >= e->n_values || !strcmp(vi->name, e->values[vi->index].name))
            continue;
        Google__Protobuf__EnumValueDescriptorProto *v = bz_arena_alloc(a, sizeof *v);
        google__protobuf__enum_value_descriptor_proto__init(v);
        v->name = (char *)vi->name;
        v->has_number = true;
        v->number = e->values[vi->index].value;
        ep->value[n++] = v;
        alias = true;
    }
    ep->n_value = n;
    if (alias) {
        ep->options = bz_arena_alloc(a, sizeof *ep->options);
        google__protobuf__enum_options__init(ep->options);
        ep->options->has_allow_alias = true;
        ep->options->allow_alias = true;
    }
}

/* ---- files -------------------------------------------------------------------------------- */

static void add_dep(ctx *x, dfile *f, const char *type)
{
    int i = find_node(x, type);
    const char *name = i >= 0 ? x->files[x->nodes[i].file].fd.name : x->env->known_type(x->env->arg, type);
    if (!name || !strcmp(name, f->fd.name))
        return;
    for (size_t k = 0; k < f->fd.n_dependency; k++)
        if (!strcmp(f->fd.dependency[k], name))
            return;
    char **d = bz_arena_alloc(x->a, (f->fd.n_dependency + 1) * sizeof *d);
    if (f->fd.n_dependency)
        memcpy(d, f->fd.dependency, f->fd.n_dependency * sizeof *d);
    d[f->fd.n_dependency++] = (char *)name;
    f->fd.dependency = d;
}

/* Appends p to an arena array of pointers (few elements: copied each time). */
#define APPEND(a, arr, n, p)                                                                                          \
    do {                                                                                                              \
        void **x__new = bz_arena_alloc((a), ((n) + 1) * sizeof(void *));                                              \
        if (n)                                                                                                        \
            memcpy(x__new, (arr), (n) * sizeof(void *));                                                              \
        x__new[(n)++] = (p);                                                                                          \
        (arr) = (void *)x__new;                                                                                       \
    } while (0)

static Google__Protobuf__ServiceDescriptorProto *build_service(ctx *x, dfile *f, const grpc__service *s)
{
    bz_arena *a = x->a;
    Google__Protobuf__ServiceDescriptorProto *sp = bz_arena_alloc(a, sizeof *sp);
    google__protobuf__service_descriptor_proto__init(sp);
    sp->name = (char *)s->d->short_name;
    sp->n_method = s->d->n_methods;
    sp->method = bz_arena_calloc(a, s->d->n_methods + 1, sizeof *sp->method);
    for (unsigned i = 0; i < s->d->n_methods; i++) {
        const ProtobufCMethodDescriptor *md = &s->d->methods[i];
        Google__Protobuf__MethodDescriptorProto *mp = bz_arena_alloc(a, sizeof *mp);
        google__protobuf__method_descriptor_proto__init(mp);
        mp->name = (char *)md->name;
        mp->input_type = ref(a, md->input->name);
        mp->output_type = ref(a, md->output->name);
        if (s->client_streaming[i]) {
            mp->has_client_streaming = true;
            mp->client_streaming = true;
        }
        if (s->server_streaming[i]) {
            mp->has_server_streaming = true;
            mp->server_streaming = true;
        }
        add_dep(x, f, md->input->name);
        add_dep(x, f, md->output->name);
        sp->method[i] = mp;
    }
    return sp;
}

int grpc__describe(const grpc__service *const *svcs, int nsvcs, const grpc__describe_env *env, bz_buf *out)
{
    bz_arena arena;
    bz_arena_init(&arena, 16 << 10);
    ctx x = {.a = &arena, .env = env};
    for (int s = 0; s < nsvcs; s++)
        for (unsigned i = 0; i < svcs[s]->d->n_methods; i++) {
            visit_message(&x, svcs[s]->d->methods[i].input);
            visit_message(&x, svcs[s]->d->methods[i].output);
        }
    for (int s = 0; s < nsvcs; s++)
        file_of(&x, or_empty(svcs[s]->d->package));
    for (int i = 0; i < x.n; i++)
        x.nodes[i].file = file_of(&x, x.nodes[i].pkg);
    /* the syntax of each file, from its fields' labels and defaults */
    bool *proto3 = calloc((size_t)x.nfiles + 1, sizeof *proto3);
    if (!proto3)
        abort();
    for (int i = 0; i < x.n; i++) {
        const ProtobufCMessageDescriptor *m = x.nodes[i].m;
        for (unsigned k = 0; m && k < m->n_fields; k++) {
            const ProtobufCFieldDescriptor *f = &m->fields[k];
            if (f->label == PROTOBUF_C_LABEL_NONE)
                proto3[x.nodes[i].file] = true;
            else if (f->label != PROTOBUF_C_LABEL_REPEATED || has_default(f))
                x.files[x.nodes[i].file].proto2 = true;
        }
    }
    int rc = 0;
    for (int i = 0; i < x.nfiles; i++)
        if (x.files[i].proto2 && proto3[i]) {
            bz_log_err("grpc reflection: a package mixes proto2 and proto3 messages; not described",
                       BZ_F_STR("package", x.files[i].pkg));
            rc = -1;
        }
    free(proto3);
    if (rc != 0)
        goto out;
    /* each type's descriptor, then each in its parent or its file */
    for (int i = 0; i < x.n; i++) {
        node *nd = &x.nodes[i];
        const char *shortname = strrchr(nd->name, '.') ? strrchr(nd->name, '.') + 1 : nd->name;
        if (nd->e) {
            nd->ep = bz_arena_alloc(&arena, sizeof *nd->ep);
            google__protobuf__enum_descriptor_proto__init(nd->ep);
            nd->ep->name = (char *)shortname;
        } else {
            nd->dp = bz_arena_alloc(&arena, sizeof *nd->dp);
            google__protobuf__descriptor_proto__init(nd->dp);
            nd->dp->name = (char *)shortname;
        }
    }
    for (int i = 0; i < x.n; i++) {
        node *nd = &x.nodes[i];
        dfile *f = &x.files[nd->file];
        if (nd->e)
            build_enum(&x, nd, f->proto2);
        else
            build_message(&x, nd, f->proto2);
        for (unsigned k = 0; nd->m && k < nd->m->n_fields; k++) {
            const ProtobufCFieldDescriptor *fd = &nd->m->fields[k];
            if ((fd->type == PROTOBUF_C_TYPE_MESSAGE || fd->type == PROTOBUF_C_TYPE_ENUM) && fd->descriptor)
                add_dep(&x, f, fd->type == PROTOBUF_C_TYPE_MESSAGE
                                   ? ((const ProtobufCMessageDescriptor *)fd->descriptor)->name
                                   : ((const ProtobufCEnumDescriptor *)fd->descriptor)->name);
        }
        if (nd->parent >= 0) {
            msg_t *p = x.nodes[nd->parent].dp;
            if (nd->e)
                APPEND(&arena, p->enum_type, p->n_enum_type, nd->ep);
            else
                APPEND(&arena, p->nested_type, p->n_nested_type, nd->dp);
        } else if (nd->e) {
            APPEND(&arena, f->fd.enum_type, f->fd.n_enum_type, nd->ep);
        } else {
            APPEND(&arena, f->fd.message_type, f->fd.n_message_type, nd->dp);
        }
    }
    for (int s = 0; s < nsvcs; s++) {
        dfile *f = &x.files[file_of(&x, or_empty(svcs[s]->d->package))];
        Google__Protobuf__ServiceDescriptorProto *sp = build_service(&x, f, svcs[s]);
        APPEND(&arena, f->fd.service, f->fd.n_service, sp);
    }
    /* the set: field 1, each file */
    for (int i = 0; i < x.nfiles; i++) {
        file_t *fd = &x.files[i].fd;
        if (!x.files[i].proto2)
            fd->syntax = "proto3";
        size_t n = google__protobuf__file_descriptor_proto__get_packed_size(fd);
        uint8_t hdr[11];
        size_t h = 0;
        hdr[h++] = 1 << 3 | 2;
        size_t v = n;
        do {
            hdr[h] = (uint8_t)(v & 0x7f);
            v >>= 7;
            if (v)
                hdr[h] |= 0x80;
            h++;
        } while (v);
        bz_buf_append(out, hdr, h);
        bz_buf_reserve(out, n + 1);
        google__protobuf__file_descriptor_proto__pack(fd, (uint8_t *)out->data + out->len);
        out->len += n;
    }
out:
    free(x.nodes);
    free(x.files);
    bz_arena_free(&arena);
    return rc;
}
