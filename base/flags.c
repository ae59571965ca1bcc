/* base/flags.c — see <bazaar/flags.h>.  The parser never trusts a value:
 * each is checked against its flag's type and range before it is stored,
 * and every message quotes the value bounded and without control bytes. */
#include <bazaar/flags.h>

#include <bazaar/clock.h>
#include <bazaar/error.h>
#include <bazaar/log.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- notations ---------------------------------------------------------- */

int bz_parse_duration(const char *s, int64_t *ns)
{
    if (!s || !*s)
        return -1;
    if (strcmp(s, "0") == 0) {
        *ns = 0;
        return 0;
    }
    /* Go's time.ParseDuration subset: one or more "<decimal><unit>". */
    long double total = 0;
    const char *p = s;
    while (*p) {
        if (!isdigit((unsigned char)*p) && *p != '.')
            return -1;
        char *end;
        errno = 0;
        long double v = strtold(p, &end);
        if (end == p || errno || v < 0)
            return -1;
        /* strtold accepts exponents, "inf" and hex; the notation does not. */
        for (const char *q = p; q < end; q++)
            if (!isdigit((unsigned char)*q) && *q != '.')
                return -1;
        p = end;
        long double unit;
        if (strncmp(p, "ms", 2) == 0) {
            unit = BZ_NS_PER_MS;
            p += 2;
        } else if (strncmp(p, "us", 2) == 0) {
            unit = 1000;
            p += 2;
        } else if (strncmp(p, "ns", 2) == 0) {
            unit = 1;
            p += 2;
        } else if (*p == 's') {
            unit = BZ_NS_PER_S;
            p += 1;
        } else if (*p == 'm') {
            unit = 60.0L * BZ_NS_PER_S;
            p += 1;
        } else if (*p == 'h') {
            unit = 3600.0L * BZ_NS_PER_S;
            p += 1;
        } else {
            return -1;
        }
        total += v * unit;
        if (total > (long double)INT64_MAX / 2)
            return -1;
    }
    *ns = (int64_t)total;
    return 0;
}

int bz_parse_size(const char *s, int64_t *bytes)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    int64_t mul = 1;
    if (*end == '\0' || strcmp(end, "B") == 0)
        mul = 1;
    else if (strcmp(end, "KiB") == 0)
        mul = 1LL << 10;
    else if (strcmp(end, "MiB") == 0)
        mul = 1LL << 20;
    else if (strcmp(end, "GiB") == 0)
        mul = 1LL << 30;
    else
        return -1;
    if (v > (unsigned long long)(INT64_MAX / mul))
        return -1;
    *bytes = (int64_t)v * mul;
    return 0;
}

int bz_parse_rate(const char *s, bz_rate *r)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno || n < 0 || n > INT32_MAX)
        return -1;
    int64_t win = BZ_NS_PER_S;
    if (*end == '/') {
        const char *u = end + 1;
        if (!strcmp(u, "s") || !strcmp(u, "sec") || !strcmp(u, "second"))
            win = BZ_NS_PER_S;
        else if (!strcmp(u, "m") || !strcmp(u, "min") || !strcmp(u, "minute"))
            win = 60 * BZ_NS_PER_S;
        else if (!strcmp(u, "h") || !strcmp(u, "hour"))
            win = 3600 * BZ_NS_PER_S;
        else
            return -1;
    } else if (*end != '\0') {
        return -1;
    }
    r->count = n;
    r->window_ns = win;
    return 0;
}

int bz_parse_addr(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hn;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return -1;
        h = s + 1;
        hn = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hn = (size_t)(colon - s);
        if (memchr(s, ':', hn))
            return -1; /* a bare IPv6 address needs brackets */
    }
    if (hn >= hostlen)
        return -1;
    for (size_t i = 0; i < hn; i++)
        if (!(isalnum((unsigned char)h[i]) || h[i] == '.' || h[i] == '-' || h[i] == ':' || h[i] == '_'))
            return -1;
    const char *ps = colon + 1;
    if (!*ps || strlen(ps) > 5)
        return -1;
    int p = 0;
    for (const char *q = ps; *q; q++) {
        if (!isdigit((unsigned char)*q))
            return -1;
        p = p * 10 + (*q - '0');
    }
    if (p > 65535)
        return -1;
    if (host) {
        memcpy(host, h, hn);
        host[hn] = '\0';
    }
    if (port)
        *port = p;
    return 0;
}

/* ---- the set ---------------------------------------------------------------- */

#define MAX_TABLES 8

struct bz_flags {
    const char *prog, *env;
    struct {
        const bz_flag *t;
        size_t n;
    } tables[MAX_TABLES];
    int ntables;
    const char *const *commands;
    size_t ncommands;
    const char *want;
    const char *const *order;
    size_t norder;
    int command;
};

bz_flags *bz_flags_new(const char *prog, const char *env)
{
    bz_flags *fs = calloc(1, sizeof *fs);
    if (!fs)
        abort();
    fs->prog = prog;
    fs->env = env;
    return fs;
}

void bz_flags_free(bz_flags *fs)
{
    free(fs);
}

static const bz_flag *find(const bz_flags *fs, const char *name, size_t n)
{
    for (int k = 0; k < fs->ntables; k++)
        for (size_t i = 0; i < fs->tables[k].n; i++) {
            const bz_flag *f = &fs->tables[k].t[i];
            if (strlen(f->name) == n && memcmp(f->name, name, n) == 0)
                return f;
        }
    return NULL;
}

void bz_flags_add(bz_flags *fs, const bz_flag *table, size_t n)
{
    if (fs->ntables == MAX_TABLES)
        abort();
    for (size_t i = 0; i < n; i++)
        if (find(fs, table[i].name, strlen(table[i].name)))
            abort(); /* a name in two tables: a bug in the tables, not input */
    fs->tables[fs->ntables].t = table;
    fs->tables[fs->ntables].n = n;
    fs->ntables++;
}

void bz_flags_commands(bz_flags *fs, const char *const *names, size_t n, const char *want)
{
    fs->commands = names;
    fs->ncommands = n;
    fs->want = want;
}

void bz_flags_order(bz_flags *fs, const char *const *names, size_t n)
{
    fs->order = names;
    fs->norder = n;
}

int bz_flags_command(const bz_flags *fs)
{
    return fs->command;
}

void bz_flags_env_name(const bz_flags *fs, const char *name, char *out, size_t cap)
{
    size_t k = (size_t)snprintf(out, cap, "%s_", fs->env);
    if (k >= cap)
        k = cap - 1;
    for (const char *p = name; *p && k + 1 < cap; p++)
        out[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[k] = '\0';
}

/* Every flag once, in the order usage shows them: the ordered names, then
 * the rest in table order. */
static void each(const bz_flags *fs, void (*fn)(const bz_flags *fs, const bz_flag *f, void *arg), void *arg)
{
    for (size_t i = 0; i < fs->norder; i++) {
        const bz_flag *f = find(fs, fs->order[i], strlen(fs->order[i]));
        if (f)
            fn(fs, f, arg);
    }
    for (int k = 0; k < fs->ntables; k++)
        for (size_t i = 0; i < fs->tables[k].n; i++) {
            const bz_flag *f = &fs->tables[k].t[i];
            bool listed = false;
            for (size_t j = 0; j < fs->norder && !listed; j++)
                listed = !strcmp(fs->order[j], f->name);
            if (!listed)
                fn(fs, f, arg);
        }
}

/* ---- one value ------------------------------------------------------------ */

static bool copy_str(char *dst, size_t cap, const char *v)
{
    size_t n = strlen(v);
    if (n >= cap)
        return false;
    memcpy(dst, v, n + 1);
    return true;
}

/* "want a, b or c" from an enum's choices. */
static int want_choices(const bz_flag *f, char *why, size_t whylen)
{
    size_t n = 0, k = 0;
    while (f->choices[n])
        n++;
    k += (size_t)snprintf(why, whylen, "want ");
    for (size_t i = 0; i < n && k < whylen; i++)
        k += (size_t)snprintf(why + k, whylen - k, "%s%s",
                              i == 0       ? ""
                              : i + 1 == n ? " or "
                                           : ", ",
                              f->choices[i]);
    return -1;
}

/* Applies value v to flag f; on error writes why (no flag name) to why. */
static int set_value(const bz_flag *f, const char *v, char *why, size_t whylen)
{
    void *dst = f->dst;
    switch (f->type) {
    case BZ_FLAG_STRING:
        if (f->parse && f->parse(v, dst, why, whylen) != 0)
            return -1;
        if (!copy_str(dst, f->cap, v))
            return bz_fail_msg(why, whylen, "too long (at most %zu bytes)", f->cap - 1);
        return 0;
    case BZ_FLAG_FUNC:
        return f->parse(v, dst, why, whylen);
    case BZ_FLAG_ADDR:
        if ((f->opts & BZ_FLAG_OFF) && strcmp(v, "off") == 0) {
            ((char *)dst)[0] = '\0';
            return 0;
        }
        if (bz_parse_addr(v, NULL, f->cap, NULL) != 0 || !copy_str(dst, f->cap, v))
            return bz_fail_msg(why, whylen, "want [host]:port, e.g. :8080 or 127.0.0.1:8080%s",
                               (f->opts & BZ_FLAG_OFF) ? ", or off" : "");
        return 0;
    case BZ_FLAG_FILE:
        /* A readable file (its content is checked by whoever loads it);
         * "" is none. */
        if (!copy_str(dst, f->cap, v))
            return bz_fail_msg(why, whylen, "too long");
        if (*v && access(v, R_OK) != 0)
            return bz_fail_msg(why, whylen, "cannot read it: %s", strerror(errno));
        return 0;
    case BZ_FLAG_BOOL:
        if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1"))
            *(bool *)dst = true;
        else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0"))
            *(bool *)dst = false;
        else
            return bz_fail_msg(why, whylen, "want on or off");
        return 0;
    case BZ_FLAG_INT:
    case BZ_FLAG_INT64: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (!*v || *end || errno || !(isdigit((unsigned char)*v) || *v == '-'))
            return bz_fail_msg(why, whylen, "want a whole number");
        if (n < f->min)
            return bz_fail_msg(why, whylen, "want a whole number >= %lld", (long long)f->min);
        int64_t max = f->max ? f->max : f->type == BZ_FLAG_INT ? INT_MAX : INT64_MAX;
        if (n > max)
            return bz_fail_msg(why, whylen, "want a whole number <= %lld", (long long)max);
        if (f->type == BZ_FLAG_INT64)
            *(int64_t *)dst = n;
        else
            *(int *)dst = (int)n;
        return 0;
    }
    case BZ_FLAG_DURATION: {
        int64_t ns;
        if (bz_parse_duration(v, &ns) != 0)
            return bz_fail_msg(why, whylen, "want a duration like 250ms, 5s, 1m or 1h30m");
        if (ns < f->min)
            return f->min <= 1 ? bz_fail_msg(why, whylen, "want a duration > 0")
                               : bz_fail_msg(why, whylen, "want a duration >= %lldms",
                                             (long long)(f->min / BZ_NS_PER_MS));
        *(int64_t *)dst = ns;
        return 0;
    }
    case BZ_FLAG_SIZE: {
        int64_t b;
        if (bz_parse_size(v, &b) != 0)
            return bz_fail_msg(why, whylen, "want a size in bytes, optionally with KiB, MiB or GiB");
        if (b < f->min)
            return bz_fail_msg(why, whylen, "want a size >= %lld bytes", (long long)f->min);
        *(int64_t *)dst = b;
        return 0;
    }
    case BZ_FLAG_RATE:
        if (bz_parse_rate(v, dst) != 0)
            return bz_fail_msg(why, whylen, "want N (per second) or N/s, N/min, N/h");
        return 0;
    case BZ_FLAG_ENUM:
        for (int i = 0; f->choices[i]; i++)
            if (!strcmp(v, f->choices[i])) {
                *(int *)dst = i;
                return 0;
            }
        return want_choices(f, why, whylen);
    }
    return bz_fail_msg(why, whylen, "unknown flag type");
}

/* Printable form of a user-supplied value for error messages: bounded, no
 * control bytes (a message is one line whatever was typed). */
static void show(char *out, size_t cap, const char *raw)
{
    /* a URL's password is never shown, even in a refusal */
    char v[1100];
    bz_redact_url(raw, v, sizeof v);
    size_t k = 0;
    for (const char *p = v; *p && k + 4 < cap; p++)
        out[k++] = ((unsigned char)*p < 0x20 || *p == 0x7f) ? '?' : *p;
    if (strlen(v) > k)
        out[k++] = '.', out[k++] = '.', out[k++] = '.';
    out[k] = '\0';
}

static bool takes(const bz_flag *f, int command)
{
    return !f->cmds || (f->cmds & (1u << command));
}

int bz_flags_parse(bz_flags *fs, int argc, char **argv, char *err, size_t errlen)
{
    char why[200], shown[80], env[64];
    for (int k = 0; k < fs->ntables; k++)
        for (size_t i = 0; i < fs->tables[k].n; i++) {
            const bz_flag *f = &fs->tables[k].t[i];
            if (f->def && set_value(f, f->def, why, sizeof why) != 0)
                return bz_fail_msg(err, errlen, "%s: internal error: bad default for --%s", fs->prog,
                                   f->name);
        }

    /* Subcommand: the first argument when it does not start with '-'. */
    int argi = 1;
    fs->command = 0;
    if (fs->ncommands && argc > 1 && argv[1][0] != '-') {
        size_t k;
        for (k = 0; k < fs->ncommands; k++)
            if (!strcmp(argv[1], fs->commands[k]))
                break;
        if (k == fs->ncommands) {
            show(shown, sizeof shown, argv[1]);
            if (fs->want)
                return bz_fail_msg(err, errlen, "%s: unknown command \"%s\" (want %s)", fs->prog, shown,
                                   fs->want);
            char list[256];
            size_t n = 0;
            for (size_t i = 0; i < fs->ncommands && n < sizeof list; i++)
                n += (size_t)snprintf(list + n, sizeof list - n, "%s%s",
                                      i == 0                   ? ""
                                      : i + 1 == fs->ncommands ? " or "
                                                               : ", ",
                                      fs->commands[i]);
            return bz_fail_msg(err, errlen, "%s: unknown command \"%s\" (want %s)", fs->prog, shown, list);
        }
        fs->command = (int)k;
        argi = 2;
    }

    /* Environment first, so flags override it. */
    for (int k = 0; k < fs->ntables; k++)
        for (size_t i = 0; i < fs->tables[k].n; i++) {
            const bz_flag *f = &fs->tables[k].t[i];
            if (!takes(f, fs->command))
                continue;
            bz_flags_env_name(fs, f->name, env, sizeof env);
            const char *v = getenv(env);
            if (v && set_value(f, v, why, sizeof why) != 0) {
                show(shown, sizeof shown, v);
                return bz_fail_msg(err, errlen, "%s: invalid value \"%s\" for %s (--%s): %s", fs->prog, shown,
                                   env, f->name, why);
            }
        }

    for (int i = argi; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return BZ_FLAGS_HELP;
        if (!strcmp(a, "--version"))
            return BZ_FLAGS_VERSION;
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            show(shown, sizeof shown, a);
            return bz_fail_msg(err, errlen, "%s: unexpected argument \"%s\" (flags look like --name value)",
                               fs->prog, shown);
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const bz_flag *f = find(fs, name, nlen);
        if (!f) {
            show(shown, sizeof shown, a);
            if (eq && (size_t)(eq - a) < sizeof shown)
                shown[eq - a] = '\0';
            return bz_fail_msg(err, errlen, "%s: unknown flag %s (see %s --help)", fs->prog, shown, fs->prog);
        }
        if (!takes(f, fs->command))
            return bz_fail_msg(err, errlen, "%s: flag --%s does not apply to \"%s\"", fs->prog, f->name,
                               fs->commands[fs->command]);
        const char *v;
        if (eq) {
            v = eq + 1;
        } else {
            if (i + 1 >= argc)
                return bz_fail_msg(err, errlen, "%s: flag --%s needs a value", fs->prog, f->name);
            v = argv[++i];
        }
        if (set_value(f, v, why, sizeof why) != 0) {
            show(shown, sizeof shown, v);
            return bz_fail_msg(err, errlen, "%s: invalid value \"%s\" for --%s: %s", fs->prog, shown, f->name,
                               why);
        }
    }
    return BZ_FLAGS_OK;
}

/* ---- usage and the environment file ------------------------------------------ */

static void usage_one(const bz_flags *fs, const bz_flag *f, void *arg)
{
    char env[64], name[64];
    bz_flags_env_name(fs, f->name, env, sizeof env);
    snprintf(name, sizeof name, "--%s", f->name);
    fprintf(arg, "  %-26s %s\n  %-26s default: %s; env %s\n", name, f->help, "",
            f->def ? f->def : "(see text)", env);
}

void bz_flags_usage(const bz_flags *fs, FILE *out)
{
    each(fs, usage_one, out);
}

static void template_one(const bz_flags *fs, const bz_flag *f, void *arg)
{
    FILE *out = arg;
    char env[64], only[128] = "";
    bz_flags_env_name(fs, f->name, env, sizeof env);
    /* The file is for the default command: a flag only others take says so. */
    if (fs->ncommands && !takes(f, 0)) {
        size_t k = (size_t)snprintf(only, sizeof only, " (%s ", fs->prog);
        int listed = 0;
        for (size_t c = 0; c < fs->ncommands && k < sizeof only; c++)
            if (f->cmds & (1u << c))
                k += (size_t)snprintf(only + k, sizeof only - k, "%s%s", listed++ ? ", " : "",
                                      fs->commands[c]);
        if (k < sizeof only)
            snprintf(only + k, sizeof only - k, " only)");
    }
    fprintf(out, "\n# --%s: %s%s\n", f->name, f->help, only);
    if (f->def)
        fprintf(out, "#%s=%s\n", env, f->def);
    else
        fprintf(out, "# default: computed (see the text above)\n#%s=\n", env);
}

void bz_flags_env_template(const bz_flags *fs, FILE *out)
{
    each(fs, template_one, out);
}
