/*
 * bazaar/bazaar.h — every public header of libbazaar in one include:
 *
 *     #include <bazaar/bazaar.h>
 *     cc app.c $(pkg-config --cflags --libs bazaar)
 *
 * The layers, bottom up (each header is its module's reference):
 *   base     arena.h buf.h clock.h error.h errlog.h log.h metrics.h rand.h
 *            trace.h breaker.h flags.h version.h
 *   runtime  rt.h (coroutines, contexts, timers, offload) tls.h
 *   http     http.h (server, router, middleware, responses, SSE)
 *   grpc     grpc.h (server, calls, metadata, status details, health, reflection)
 *   db       db.h db-stats.h (pool, queries, transactions, retry, migrations)
 *   cache    cache.h (cache-aside, single-flight, locks, rate limits, pub/sub)
 *   service  service.h (the lifecycle: flags, listeners, signals, drain,
 *            /healthz /readyz /metrics, sd_notify)
 */
#ifndef BAZAAR_BAZAAR_H
#define BAZAAR_BAZAAR_H

#include <bazaar/arena.h>
#include <bazaar/breaker.h>
#include <bazaar/buf.h>
#include <bazaar/clock.h>
#include <bazaar/error.h>
#include <bazaar/errlog.h>
#include <bazaar/flags.h>
#include <bazaar/log.h>
#include <bazaar/metrics.h>
#include <bazaar/rand.h>
#include <bazaar/trace.h>
#include <bazaar/rt.h>
#include <bazaar/tls.h>
#include <bazaar/http.h>
#include <bazaar/grpc.h>
#include <bazaar/db.h>
#include <bazaar/db-stats.h>
#include <bazaar/cache.h>
#include <bazaar/service.h>
#include <bazaar/version.h>

/* (Nothing declared here: each header exports its own.) */
#pragma GCC visibility push(default)
#pragma GCC visibility pop

#endif
