/*
 * <bazaar/version.h> — which libbazaar this is.
 *
 * The macros are the version of the headers a program was compiled
 * against; bazaar_version() is the version of the library it runs with
 * (the shared library may be newer: same SONAME, libbazaar.so.0, means a
 * compatible ABI — docs/ARCHITECTURE.md, "The library").  While the major
 * is 0 the SONAME is .so.0 and a MINOR bump may change the API; an
 * incompatible ABI change also bumps the SONAME.  The Makefile reads the
 * three numbers below for the shared library's real name
 * (libbazaar.so.MAJOR.MINOR.PATCH) and for bazaar.pc.
 */
#ifndef BAZAAR_VERSION_H
#define BAZAAR_VERSION_H

#pragma GCC visibility push(default)

#define BAZAAR_VERSION_MAJOR 0
#define BAZAAR_VERSION_MINOR 1
#define BAZAAR_VERSION_PATCH 0
/* The three numbers as a string; kept a plain literal (not built from the
 * numbers) so it can stand in string concatenation. */
#define BAZAAR_VERSION "0.1.0"
/* One number to compare in #if: 0.1.0 is 100, 1.2.3 is 10203. */
#define BAZAAR_VERSION_NUMBER (BAZAAR_VERSION_MAJOR * 10000 + BAZAAR_VERSION_MINOR * 100 + BAZAAR_VERSION_PATCH)

/* The version of the library linked at run time, "MAJOR.MINOR.PATCH". */
const char *bazaar_version(void);

#pragma GCC visibility pop
#endif
