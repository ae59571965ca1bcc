/* cache/spec.c — cache_spec_check: the --cache grammar checked once, by the
 * same parser the Redis backend reads its settings with (base/redisurl.h). */
#include <bazaar/cache.h>

#include <bazaar/error.h>
#include "base/redisurl.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

int cache_spec_check(const char *v, char *why, size_t whylen)
{
    if (!strcmp(v, "memory") || !strcmp(v, "none"))
        return 0;
    if (!bz_redis_url_is(v))
        return bz_fail_msg(why, whylen,
                           "want memory, none, redis://[user:pass@]host:port/N, rediss://... or "
                           "redis-sentinel://host:port[,host:port...]/MASTER/N");
    bz_redis_url u;
    if (bz_redis_url_parse(v, &u, why, whylen) != 0)
        return -1;
    if (u.ca[0] && access(u.ca, R_OK) != 0)
        return bz_fail_msg(why, whylen, "cannot read the CA file %s: %s", u.ca, strerror(errno));
    return 0;
}
