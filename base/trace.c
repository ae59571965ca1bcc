/* base/trace.c — see trace.h. */
#include <bazaar/trace.h>

#include <bazaar/rand.h>

#include <string.h>

static int hexdig(char c) { return (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1; }

/* n lower-case hex digits at p; *nonzero tells whether any was not '0'. */
static bool hex_run(const char *p, size_t n, bool *nonzero)
{
    bool nz = false;
    for (size_t i = 0; i < n; i++) {
        if (hexdig(p[i]) < 0)
            return false;
        nz |= p[i] != '0';
    }
    if (nonzero)
        *nonzero = nz;
    return true;
}

bool bz_traceparent_valid(bz_str v)
{
    /* version(2) - trace-id(32) - parent-id(16) - flags(2) */
    if (v.n < 55 || !v.p)
        return false;
    const char *p = v.p;
    bool nz;
    if (!hex_run(p, 2, NULL) || p[2] != '-')
        return false;
    if (p[0] == 'f' && p[1] == 'f')
        return false; /* version 255 is forbidden */
    bool v00 = p[0] == '0' && p[1] == '0';
    if (v00 && v.n != 55)
        return false; /* version 00 has exactly these fields */
    if (!v00 && v.n > 55 && p[55] != '-')
        return false; /* a later version may only add fields after a '-' */
    if (!hex_run(p + 3, 32, &nz) || !nz || p[35] != '-')
        return false;
    if (!hex_run(p + 36, 16, &nz) || !nz || p[52] != '-')
        return false;
    return hex_run(p + 53, 2, NULL);
}

/* tracestate: list-members of printable ASCII, at most 512 bytes (the
 * specification's limit for what must be propagated).  Anything else is
 * dropped rather than passed on. */
static bool tracestate_ok(bz_str s)
{
    if (s.n == 0 || s.n > BZ_TRACESTATE_MAX)
        return false;
    for (size_t i = 0; i < s.n; i++)
        if ((unsigned char)s.p[i] < 0x20 || (unsigned char)s.p[i] > 0x7e)
            return false;
    return true;
}

bool bz_trace_start(bz_trace *t, bz_str traceparent, bz_str tracestate)
{
    bool ok = bz_traceparent_valid(traceparent);
    if (ok) {
        memcpy(t->trace_id, traceparent.p + 3, 32);
        t->trace_id[32] = '\0';
        memcpy(t->parent_id, traceparent.p + 36, 16);
        t->parent_id[16] = '\0';
        t->flags = (uint8_t)(hexdig(traceparent.p[53]) * 16 + hexdig(traceparent.p[54]));
    } else {
        do /* never all zero (the first digit decides 15 times in 16) */
            bz_rand_hex(t->trace_id, 32);
        while (t->trace_id[0] == '0' && !strcmp(t->trace_id, "00000000000000000000000000000000"));
        t->parent_id[0] = '\0';
        t->flags = 0;
    }
    t->from_caller = ok;
    do
        bz_rand_hex(t->span_id, 16);
    while (t->span_id[0] == '0' && !strcmp(t->span_id, "0000000000000000"));
    t->tracestate = ok && tracestate_ok(tracestate) ? tracestate : BZ_STR_NULL;
    return ok;
}

void bz_trace_format(const bz_trace *t, char out[56])
{
    /* By hand: it answers every traced request (traceresponse) and goes
     * on every outgoing call's traceparent, and printf's format parsing
     * showed in the request profile. */
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "00-", 3);
    memcpy(out + 3, t->trace_id, 32);
    out[35] = '-';
    memcpy(out + 36, t->span_id, 16);
    out[52] = '-';
    out[53] = hex[t->flags >> 4];
    out[54] = hex[t->flags & 15];
    out[55] = '\0';
}
