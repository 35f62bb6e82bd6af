/* hub/leftover.c - files an end or delete could not remove, tried again.
 *
 * When a job ends or is deleted, its rows stop owning its files before the
 * files go (hub/backup.c).  If the repository refuses the removal (it went
 * read-only, or fails), the files stay behind owned by nobody: the next
 * start of the hub would delete them (hub/recovery.c), but a hub can run
 * for months.  So each such disk is remembered here, shown in the API as
 * the backup's cleanup_pending, and its removal is tried again at the next
 * backup start and at each scheduler tick, until it succeeds.
 *
 * The list changes only with hub->lock held, and then also under
 * hub->leftover_lock; readers that do not hold hub->lock (the API's
 * backup JSON) take leftover_lock alone.  Nothing here is written to disk:
 * after a restart the start-up file check finds the same files unowned.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub-int.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/log.h"

struct hub_leftover {
  struct hub_leftover *next;
  char *backup_id;
  int disk_index;
  char *repo_path;
  char *rel;             /* the image, relative to repo_path */
  char *why;             /* the last error */
};

static void
leftover_free (struct hub_leftover *l)
{
  if (l == NULL)
    return;
  free (l->backup_id);
  free (l->repo_path);
  free (l->rel);
  free (l->why);
  free (l);
}

static struct hub_leftover *
leftover_find (struct hub *hub, const char *backup_id, int disk_index)
{
  for (struct hub_leftover *l = hub->leftovers; l; l = l->next)
    if (l->disk_index == disk_index && strcmp (l->backup_id, backup_id) == 0)
      return l;
  return NULL;
}

void
hub_leftover_add (struct hub *hub, const char *repo_path, const struct cat_disk *d)
{
  struct hub_leftover *l;
  char *why = strdup (error_message ());

  log_error ("backup %s disk %d: %s; its files stay until the hub can remove them "
             "(retried at the next backup start and every minute)", d->backup_job_id,
             d->disk_index, error_message ());
  if (why == NULL)
    return;
  SCOPED_LOCK (&hub->leftover_lock);
  if ((l = leftover_find (hub, d->backup_job_id, d->disk_index)) != NULL) {
    free (l->why);
    l->why = why;
    return;
  }
  l = calloc (1, sizeof *l);
  if (l == NULL || (l->backup_id = strdup (d->backup_job_id)) == NULL ||
      (l->repo_path = strdup (repo_path)) == NULL ||
      (l->rel = strdup (d->qcow2_path)) == NULL) {
    /* Out of memory: the start-up file check still finds them. */
    leftover_free (l);
    free (why);
    return;
  }
  l->disk_index = d->disk_index;
  l->why = why;
  l->next = hub->leftovers;
  hub->leftovers = l;
}

void
hub_leftover_retry (struct hub *hub)
{
  struct hub_leftover **p = &hub->leftovers;

  while (*p) {
    struct hub_leftover *l = *p;
    if (repo_remove_image (l->repo_path, l->rel) == -1) {
      char *why = strdup (error_message ());
      if (why) {
        SCOPED_LOCK (&hub->leftover_lock);
        free (l->why);
        l->why = why;
      }
      p = &l->next;
      continue;
    }
    log_info ("removed the files left by backup %s disk %d", l->backup_id, l->disk_index);
    {
      SCOPED_LOCK (&hub->leftover_lock);
      *p = l->next;
    }
    leftover_free (l);
    hub_usage_changed (hub);
  }
}

char *
hub_leftover_reason (struct hub *hub, const char *backup_id)
{
  char *ret = NULL;

  SCOPED_LOCK (&hub->leftover_lock);
  for (struct hub_leftover *l = hub->leftovers; l; l = l->next)
    if (strcmp (l->backup_id, backup_id) == 0) {
      if (asprintf (&ret, "the files of disk %d could not be removed (%s); the hub "
                    "tries again at the next backup start and every minute",
                    l->disk_index, l->why) == -1)
        ret = NULL;
      break;
    }
  return ret;
}

void
hub_leftover_free (struct hub *hub)
{
  SCOPED_LOCK (&hub->leftover_lock);
  while (hub->leftovers) {
    struct hub_leftover *l = hub->leftovers;
    hub->leftovers = l->next;
    leftover_free (l);
  }
}
