/* util/proc.h - running helper programs (qemu-img) and collecting what they
 * say. */
#ifndef STRATA_UTIL_PROC_H
#define STRATA_UTIL_PROC_H

/* Run argv[0] (searched in PATH) with its standard output and error
 * captured, and wait for it.  Returns 0 when it exits with status 0.
 * Otherwise -1, with ERR_INTERNAL set to the command's name and the last
 * line it printed.  If output is not NULL, *output receives what it printed
 * (at most 64 KiB, NUL-terminated, owned by the caller) in both cases. */
int proc_run (const char *const argv[], char **output);

#endif
