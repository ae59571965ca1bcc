/* base/version.c — see <bazaar/version.h>. */
#include <bazaar/version.h>

/* The library's own BAZAAR_VERSION, compiled in: a program built against
 * older headers still learns which library it runs with. */
const char *bazaar_version(void)
{
    return BAZAAR_VERSION;
}
