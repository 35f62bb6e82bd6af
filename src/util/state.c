/* util/state.c - the one table of text forms for each vocabulary of
 * util/state.h. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "util/state.h"

static const char *const job_status_names[] = {
  [JOB_RUNNING] = "running",
  [JOB_FINISHING] = "finishing",
  [JOB_COMPLETED] = "completed",
  [JOB_FAILED] = "failed",
  [JOB_CANCELLED] = "cancelled",
  [JOB_REMOVING] = "removing",
};

static const char *const task_kind_names[] = {
  [TASK_PRUNE] = "prune",
  [TASK_VERIFY] = "verify",
};

static const char *const task_status_names[] = {
  [TASK_RUNNING] = "running",
  [TASK_COMPLETED] = "completed",
  [TASK_FAILED] = "failed",
};

static const char *const verify_state_names[] = {
  [VERIFY_NONE] = "none",
  [VERIFY_OK] = "ok",
  [VERIFY_CORRUPT] = "corrupt",
};

static const char *const disk_status_names[] = {
  [DISK_PENDING] = "pending",
  [DISK_RUNNING] = "running",
  [DISK_COMPLETED] = "completed",
  [DISK_FAILED] = "failed",
};

static const char *const backup_type_names[] = {
  [BACKUP_FULL] = "full",
  [BACKUP_INCREMENTAL] = "incremental",
};

static const char *const repo_type_names[] = {
  [REPO_LOCAL] = "local",
  [REPO_NFS] = "nfs",
  [REPO_CIFS] = "cifs",
};

static const char *const job_driver_names[] = {
  [DRIVER_AGENT] = "agent",
  [DRIVER_HUB] = "hub",
};

#define N_OF(a) (sizeof (a) / sizeof (a)[0])

static const char *
name_of (const char *const *names, size_t n, int v)
{
  return v >= 0 && (size_t) v < n && names[v] ? names[v] : "?";
}

static int
parse (const char *const *names, size_t n, const char *s, int *out)
{
  for (size_t i = 0; s && i < n; i++)
    if (names[i] && strcmp (names[i], s) == 0) {
      *out = (int) i;
      return 0;
    }
  return -1;
}

/* "a", "b" or "c" into buf. */
static void
words (const char *const *names, size_t n, char *buf, size_t len)
{
  size_t used = 0;

  buf[0] = '\0';
  for (size_t i = 0; i < n && used < len; i++) {
    int w = snprintf (buf + used, len - used, "%s\"%s\"",
                      i == 0 ? "" : i + 1 == n ? " or " : ", ", names[i]);
    if (w < 0)
      break;
    used += (size_t) w;
  }
}

/* One name/parse/words set per vocabulary, over its table. */
#define STATE_VOCABULARY(type, prefix, table)                            \
  const char *                                                          \
  prefix##_name (enum type v)                                           \
  {                                                                     \
    return name_of (table, N_OF (table), (int) v);                      \
  }                                                                     \
  int                                                                   \
  prefix##_parse (const char *s, enum type *out)                        \
  {                                                                     \
    int v;                                                              \
    if (parse (table, N_OF (table), s, &v) == -1)                       \
      return -1;                                                        \
    *out = (enum type) v;                                               \
    return 0;                                                           \
  }                                                                     \
  void                                                                  \
  prefix##_words (char *buf, size_t len)                                \
  {                                                                     \
    words (table, N_OF (table), buf, len);                              \
  }

STATE_VOCABULARY (job_status, job_status, job_status_names)
STATE_VOCABULARY (disk_status, disk_status, disk_status_names)
STATE_VOCABULARY (backup_type, backup_type, backup_type_names)
STATE_VOCABULARY (job_driver, job_driver, job_driver_names)
STATE_VOCABULARY (repo_type, repo_type, repo_type_names)
STATE_VOCABULARY (task_kind, task_kind, task_kind_names)
STATE_VOCABULARY (task_status, task_status, task_status_names)
STATE_VOCABULARY (verify_state, verify_state, verify_state_names)
