/*
 * bazaar/flags.h — command-line flags with environment twins, as Go's
 * `flag` package gives them, for a service's own settings.
 *
 * A service declares its flags as a table: a name, a type, a default in
 * the flag's own notation, help text, where to store the value, and its
 * range.  Every flag has an environment twin, PREFIX_NAME in upper case
 * (--db-max-open ↔ BAZAAR_DB_MAX_OPEN for the prefix "BAZAAR").  Values
 * are applied defaults < environment < flags; `--flag value` and
 * `--flag=value` both work.  Each value is checked here, once, so the
 * service receives typed, valid settings: a bad value is a one-line
 * message naming the flag (or the variable) for exit status 2 — never a
 * crash, never a silent default.
 *
 *     static char db[256];
 *     static int64_t ttl;
 *     static const bz_flag flags[] = {
 *         {.name = "db", .type = BZ_FLAG_STRING, .def = "sqlite://todo.db", .dst = db, .cap = sizeof db,
 *          .help = "sqlite://PATH or postgres://..."},
 *         {.name = "cache-ttl", .type = BZ_FLAG_DURATION, .def = "60s", .dst = &ttl, .min = 1,
 *          .help = "how long a cached answer lives"},
 *     };
 *     bz_flags *fs = bz_flags_new("todo", "TODO");
 *     bz_flags_add(fs, flags, 2);
 *     char err[512];
 *     int rc = bz_flags_parse(fs, argc, argv, err, sizeof err);   // BZ_FLAGS_OK, _HELP, _VERSION or -1
 *
 * The usage text (--help) and an environment file (systemd
 * EnvironmentFile= syntax, every variable commented out at its default)
 * are printed from the same tables, so neither can drift from the parser.
 *
 * Subcommands (`prog migrate --db ...`) are optional: with
 * bz_flags_commands the first argument, when it does not start with '-',
 * names one, and each flag says which commands take it (cmds, a bit per
 * command index; 0 = every command).
 *
 * Also here: the notations the flags read, for code that reads the same
 * notations elsewhere (durations "1m30s", sizes "256MiB", rates "10/min",
 * addresses "[::1]:8080").
 */
#ifndef BZ_FLAGS_H
#define BZ_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#pragma GCC visibility push(default)

/* "N per window": 100 (per second), 10/min, 5/h. */
typedef struct bz_rate {
    int64_t count;     /* 0 = off */
    int64_t window_ns; /* length of the window */
} bz_rate;

typedef enum bz_flag_type {
    BZ_FLAG_STRING,   /* char[cap]; any value that fits */
    BZ_FLAG_INT,      /* int: a whole number in [min, max] (max 0: INT_MAX) */
    BZ_FLAG_INT64,    /* int64_t: a whole number in [min, max] (max 0: no bound) */
    BZ_FLAG_DURATION, /* int64_t nanoseconds: "250ms", "5s", "1h30m", "0"; ≥ min */
    BZ_FLAG_SIZE,     /* int64_t bytes: "1048576", "64KiB", "8MiB", "1GiB"; ≥ min */
    BZ_FLAG_RATE,     /* bz_rate: "0", "100", "10/min" */
    BZ_FLAG_BOOL,     /* bool: on/off, true/false, 1/0 */
    BZ_FLAG_ENUM,     /* int: the index of the value in choices (NULL-terminated) */
    BZ_FLAG_ADDR,     /* char[cap]: "[host]:port"; with BZ_FLAG_OFF, "off" stores "" */
    BZ_FLAG_FILE,     /* char[cap]: a readable file's path, or "" (none) */
    BZ_FLAG_FUNC,     /* parse(value, dst, why, whylen) does it all */
} bz_flag_type;

/* bz_flag.opts */
#define BZ_FLAG_OFF 1u /* BZ_FLAG_ADDR: "off" is accepted and stored as "" */

typedef struct bz_flag {
    const char *name; /* without "--": "http-addr" */
    bz_flag_type type;
    const char *def;            /* the default in the flag's notation; NULL: computed by the
                                   caller, who fills dst before parsing ("(see text)") */
    void *dst;                  /* where the value goes (the type says what it points to) */
    size_t cap;                 /* STRING, ADDR, FILE: sizeof the char array at dst */
    int64_t min, max;           /* INT, INT64: bounds; DURATION, SIZE: min only */
    const char *const *choices; /* ENUM */
    unsigned opts;              /* BZ_FLAG_OFF */
    unsigned cmds;              /* bit i: command i takes this flag; 0 = every command */
    const char *help;           /* one line, for --help and the env file */
    /* FUNC: checks and stores v; 0, or -1 with why (no flag name: the
     * parser adds it).  Also runs after a STRING is stored, as an extra check. */
    int (*parse)(const char *v, void *dst, char *why, size_t whylen);
} bz_flag;

typedef struct bz_flags bz_flags;

/* prog names the program in messages ("todo: invalid value ..."); env is
 * the prefix of the environment twins ("TODO" → TODO_HTTP_ADDR).  Both are
 * borrowed and must outlive the set. */
bz_flags *bz_flags_new(const char *prog, const char *env);
void bz_flags_free(bz_flags *fs);

/* Adds a table (borrowed: it must outlive the set).  Several tables may be
 * added (the lifecycle's standard flags, then the service's own); a name
 * given twice is a bug in the tables and aborts. */
void bz_flags_add(bz_flags *fs, const bz_flag *table, size_t n);

/* Optional subcommands: names[0..n) (the first is the default); want is
 * what an unknown command's message lists ("serve, migrate or seed"),
 * NULL to list every name. */
void bz_flags_commands(bz_flags *fs, const char *const *names, size_t n, const char *want);

/* Optional order for usage and the env file: these names first, in this
 * order, then every other flag in table order. */
void bz_flags_order(bz_flags *fs, const char *const *names, size_t n);

enum { BZ_FLAGS_OK = 0, BZ_FLAGS_HELP = 1, BZ_FLAGS_VERSION = 2 };

/* Applies the defaults, then the environment (getenv; only the flags the
 * command takes), then argv[1..].  Returns BZ_FLAGS_OK, BZ_FLAGS_HELP
 * (-h/--help seen), BZ_FLAGS_VERSION (--version seen), or -1 with a
 * one-line message (no newline) in err: the caller prints it and exits 2. */
int bz_flags_parse(bz_flags *fs, int argc, char **argv, char *err, size_t errlen);
/* The command parse found (an index into bz_flags_commands' names; 0 without commands). */
int bz_flags_command(const bz_flags *fs);

/* Each flag as two lines: "--name  help" and "default: D; env PREFIX_NAME". */
void bz_flags_usage(const bz_flags *fs, FILE *out);
/* Each flag as "# --name: help" and "#PREFIX_NAME=default" (commented out),
 * after a blank line.  A flag the default command does not take says which
 * command takes it ("(prog seed only)"). */
void bz_flags_env_template(const bz_flags *fs, FILE *out);
/* The environment twin of a flag name: PREFIX_NAME. */
void bz_flags_env_name(const bz_flags *fs, const char *name, char *out, size_t cap);

/* ---- notations ------------------------------------------------------------ */

int bz_parse_duration(const char *s, int64_t *ns); /* "1m30s", "250ms", "0"; 0 or -1 */
int bz_parse_size(const char *s, int64_t *bytes);  /* "256MiB", "1048576" */
int bz_parse_rate(const char *s, bz_rate *r);      /* "0", "100", "10/min" */
/* "[::1]:80", ":8080", "127.0.0.1:8080": host (may be NULL) and port (may be NULL). */
int bz_parse_addr(const char *s, char *host, size_t hostlen, int *port);

#pragma GCC visibility pop

#endif
