/* db/pgurl.c — our own options in a postgres:// URL.  libpq refuses query
 * parameters it does not know, so ours are taken out here and the rest of
 * the URL goes to libpq untouched (hosts, ports, sslmode,
 * target_session_attrs, application_name, connect_timeout, ...). */
#include "db/db-private.h"

#include <stdlib.h>
#include <string.h>

/* Removes "statement_cache=on|off" from url's query.  On success *out is a
 * malloc'd URL for libpq and *no_cache is true for "off". */
int db__pg_url(const char *url, char **out, bool *no_cache, bz_error *err)
{
    *no_cache = false;
    size_t n = strlen(url);
    char *o = malloc(n + 1);
    if (!o)
        abort();
    const char *q = strchr(url, '?');
    if (!q) {
        memcpy(o, url, n + 1);
        *out = o;
        return 0;
    }
    size_t len = (size_t)(q - url);
    memcpy(o, url, len);
    char sep = '?';
    for (const char *p = q + 1; *p;) {
        size_t pn = strcspn(p, "&");
        static const char key[] = "statement_cache=";
        if (pn >= sizeof key - 1 && !memcmp(p, key, sizeof key - 1)) {
            const char *v = p + sizeof key - 1;
            size_t vn = pn - (sizeof key - 1);
            if (vn == 3 && !memcmp(v, "off", 3)) {
                *no_cache = true;
            } else if (!(vn == 2 && !memcmp(v, "on", 2))) {
                free(o);
                return bz_err_set(err, BZ_ERR_INVALID, "bad PostgreSQL URL: statement_cache wants on or off"), -1;
            }
        } else if (pn) {
            o[len++] = sep;
            sep = '&';
            memcpy(o + len, p, pn);
            len += pn;
        }
        p += pn;
        if (*p == '&')
            p++;
    }
    o[len] = '\0';
    *out = o;
    return 0;
}
