/* base/redisurl.c — the Redis --cache URL grammar (see redisurl.h). */
#include "base/redisurl.h"

#include <bazaar/flags.h>
#include <bazaar/error.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>


bool bz_redis_url_is(const char *url)
{
    return !strncmp(url, "redis://", 8) || !strncmp(url, "rediss://", 9) ||
           !strncmp(url, "redis-sentinel://", 17);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decodes s[0, n) into out (cap bytes, NUL-terminated). */
static int decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
                return -1;
            c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        }
        if (c == '\0' || k + 1 >= cap)
            return -1;
        out[k++] = c;
    }
    out[k] = '\0';
    return 0;
}

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

int bz_redis_url_parse(const char *url, bz_redis_url *u, char *why, size_t whylen)
{
    memset(u, 0, sizeof *u);
    const char *form;
    const char *p;
    if (!strncmp(url, "redis://", 8)) {
        form = "redis://[user:pass@]host:port/N";
        p = url + 8;
    } else if (!strncmp(url, "redis-sentinel://", 17)) {
        form = "redis-sentinel://[user:pass@]host:port[,host:port...]/MASTER/N";
        u->sentinel = true;
        p = url + 17;
    } else if (!strncmp(url, "rediss://", 9)) {
        form = "rediss://[user:pass@]host:port/N[?ca=PATH]";
        u->tls = true;
        p = url + 9;
    } else {
        return bz_fail_msg(why, whylen, "want redis://[user:pass@]host:port/N or redis-sentinel://...");
    }
    char rest[1100];
    const char *query = strchr(p, '?');
    if (strchr(p, '#'))
        return bz_fail_msg(why, whylen, "want %s (no fragment)", form);
    if (query && !u->tls)
        return bz_fail_msg(why, whylen, "want %s (no query)", form);
    if (query) {
        /* the one parameter: ca=PATH (percent-decoded) */
        if (strncmp(query + 1, "ca=", 3) || strchr(query + 1, '&'))
            return bz_fail_msg(why, whylen, "want %s (the only parameter is ca=PATH)", form);
        if (decode(query + 4, strlen(query + 4), u->ca, sizeof u->ca) != 0 || !u->ca[0])
            return bz_fail_msg(why, whylen, "bad ca= path (empty, bad percent-encoding, or longer than %zu bytes)",
                        sizeof u->ca - 1);
        /* the rest is parsed without the query */
        size_t n = (size_t)(query - p);
        if (n >= sizeof rest)
            return bz_fail_msg(why, whylen, "want %s (too long)", form);
        memcpy(rest, p, n);
        rest[n] = '\0';
        p = rest;
    }
    /* userinfo: up to the last '@' before the path (a raw '@' in a password
     * is taken as part of it) */
    const char *path = strchr(p, '/');
    const char *end = path ? path : p + strlen(p);
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    /* a '/' in a raw password ends the authority early: then the '@' is
     * after the first '/' */
    if (!at && path) {
        const char *q = strchr(path, '@');
        if (q)
            return bz_fail_msg(why, whylen, "a '/' in the password must be written %%2F");
    }
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return bz_fail_msg(why, whylen, "want user:pass@ or :pass@ before the host (a user needs a password)");
        if (decode(p, (size_t)(colon - p), u->user, sizeof u->user) != 0)
            return bz_fail_msg(why, whylen, "bad user name in %s (percent-encoding, or longer than %zu bytes)", form,
                        sizeof u->user - 1);
        if (decode(colon + 1, (size_t)(at - colon - 1), u->pass, sizeof u->pass) != 0)
            return bz_fail_msg(why, whylen, "bad password in %s (percent-encoding, or longer than %zu bytes)", form,
                        sizeof u->pass - 1);
        if (!u->pass[0])
            return bz_fail_msg(why, whylen, "empty password after ':' in %s", form);
        u->has_pass = true;
        p = at + 1;
    }
    /* host:port, or the sentinels' comma-separated list */
    size_t hn = (size_t)(end - p);
    if (hn == 0)
        return bz_fail_msg(why, whylen, "want %s (no host)", form);
    const char *q = p;
    while (q < end) {
        const char *comma = memchr(q, ',', (size_t)(end - q));
        const char *e = comma ? comma : end;
        char hp[300];
        if (u->naddrs == (u->sentinel ? BZ_REDIS_MAX_ADDRS : 1))
            return u->sentinel ? bz_fail_msg(why, whylen, "at most %d sentinels in %s", BZ_REDIS_MAX_ADDRS, form)
                               : bz_fail_msg(why, whylen, "one host:port in %s", form);
        if ((size_t)(e - q) >= sizeof hp || e == q)
            return bz_fail_msg(why, whylen, "want %s (bad host:port)", form);
        memcpy(hp, q, (size_t)(e - q));
        hp[e - q] = '\0';
        bz_redis_addr *a = &u->addrs[u->naddrs++];
        if (bz_parse_addr(hp, a->host, sizeof a->host, &a->port) != 0 || !a->host[0] || a->port <= 0)
            return bz_fail_msg(why, whylen, "want %s (bad host:port \"%s\")", form, hp);
        q = comma ? comma + 1 : end;
        if (comma && q == end)
            return bz_fail_msg(why, whylen, "want %s (empty host:port after ',')", form);
    }
    /* path: [/MASTER]/N */
    const char *d = path ? path + 1 : NULL;
    if (u->sentinel) {
        if (!d || !*d || *d == '/')
            return bz_fail_msg(why, whylen, "want %s (the master's name is missing)", form);
        const char *s2 = strchr(d, '/');
        size_t mn = s2 ? (size_t)(s2 - d) : strlen(d);
        if (mn >= sizeof u->master)
            return bz_fail_msg(why, whylen, "master name longer than %zu bytes", sizeof u->master - 1);
        for (size_t i = 0; i < mn; i++)
            if (!isgraph((unsigned char)d[i]))
                return bz_fail_msg(why, whylen, "want %s (the master's name has a bad character)", form);
        memcpy(u->master, d, mn);
        u->master[mn] = '\0';
        d = s2 ? s2 + 1 : NULL;
    }
    if (d) {
        size_t n = strlen(d);
        if (n > 2 || !all_digits(d, n))
            return bz_fail_msg(why, whylen, "want %s with N a database number (0-99)", form);
        u->db = (d[0] - '0') * (n == 2 ? 10 : 1) + (n == 2 ? d[1] - '0' : 0);
    }
    return 0;
}
