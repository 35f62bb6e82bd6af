/* util/proc.h - running helper programs (qemu-img) and collecting what they
 * say. */
#ifndef STRATA_UTIL_PROC_H
#define STRATA_UTIL_PROC_H

#include <sys/types.h>

/* Run argv[0] (searched in PATH) with its standard output and error
 * captured, and wait for it.  Returns 0 when it exits with status 0.
 * Otherwise -1, with ERR_INTERNAL set to the command's name and the last
 * line it printed.  If output is not NULL, *output receives what it printed
 * (at most 64 KiB, NUL-terminated, owned by the caller) in both cases. */
int proc_run (const char *const argv[], char **output);
/* The same with only standard output in *output: standard error (whose
 * last line still makes the error message) is kept apart, so that a
 * program's warnings never break what it prints for parsing (qemu-img
 * check --output=json lists leaked clusters on standard error). */
int proc_run_stdout (const char *const argv[], char **output);

/* Start argv as a supervised child: it gets PR_SET_PDEATHSIG(SIGKILL), so it
 * is killed when the calling thread ends (stop it before that thread
 * returns) or the process dies; stdin from /dev/null and stdout
 * and stderr appended to log_path (or /dev/null when NULL).  argv[0] is
 * searched in PATH.  Returns 0 with *pid set; the caller must end it with
 * proc_stop.  -1 with ERR_INTERNAL when it cannot be started. */
int proc_spawn (const char *const argv[], const char *log_path, pid_t *pid);

/* Whether the child pid still runs; reaps it (without blocking) when it
 * has exited, storing its wait status in *status if not NULL. */
int proc_alive (pid_t pid, int *status);

/* End a child started by proc_spawn: SIGTERM, a bounded wait, then SIGKILL,
 * and reap it.  Safe to call on an already reaped pid (<= 0 is a no-op). */
void proc_stop (pid_t pid);

#endif
