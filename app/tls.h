/*
 * app/tls.h — --tls-cert / --tls-key for the serve command: the server
 * context both addresses share, and its reload on SIGHUP.
 */
#ifndef APP_TLS_H
#define APP_TLS_H

#include "base/config.h"
#include <bazaar/tls.h>

/* Loads the pair named by cfg (both flags set).  NULL with a one-line
 * message naming the flags in err (the caller exits 2).  No runtime
 * needed: called before rt_run. */
rt_tls_server *app_tls_open(const bz_config *cfg, char *err, size_t errlen);

/* From inside rt_run: each SIGHUP re-reads cfg's files (on the offload
 * pool) and swaps the pair in for new handshakes; a bad file is logged
 * (one error line) and the current pair kept.  s and cfg must live until
 * rt_run returns. */
void app_tls_reload_on_sighup(rt_tls_server *s, const bz_config *cfg);

#endif
