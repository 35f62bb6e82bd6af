/* util/id.h - identifiers, names and timestamps.
 *
 * Ids are built from [A-Za-z0-9._-] only: a readable prefix, a slug of the
 * VM name, the UTC time and a random suffix, so that two ids made in the same
 * second still differ.  A VM name is free text and never reaches a path raw:
 * only its slug does.
 */
#ifndef STRATA_UTIL_ID_H
#define STRATA_UTIL_ID_H

#include <stdbool.h>
#include <time.h>
#include <stddef.h>

#define ID_MAX 128            /* longest id we make or accept */
#define VM_NAME_MAX 255       /* bytes */

/* Fill buf with n random bytes from the kernel.  Returns 0 or -1. */
int id_random (void *buf, size_t n);

/* Make "PREFIX-SLUG-YYYYmmddTHHMMSS-RANDOM" (SLUG omitted when vm_name is
 * NULL).  Returns a malloc'd string owned by the caller, or NULL. */
char *id_new (const char *prefix, const char *vm_name);

/* A fresh unguessable NBD export name (128 random bits).  Caller frees. */
char *id_export_name (void);

/* True when s is a well-formed id: 1..ID_MAX chars of [A-Za-z0-9._-], not
 * "." or "..". */
bool id_valid (const char *s);

/* Check a VM name: 1..255 bytes of valid UTF-8 with no control characters
 * (C0, DEL, C1, and the separators U+2028/U+2029), no '/' or '\\', not "." or
 * "..", no leading or trailing space.  Returns 0
 * or -1 with ERR_INVALID set saying what is wrong. */
int id_check_vm_name (const char *name);

/* Current UTC time as "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (>= 32 bytes). */
void id_now (char *buf, size_t len);
/* The same form for a given time (whole seconds, ".000"). */
void id_time_format (time_t t, char *buf, size_t len);
/* Read that form back (milliseconds dropped).  -1 when s is not in it. */
int id_time_parse (const char *s, time_t *out);

#endif
