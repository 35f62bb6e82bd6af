/* hub/identity.c - which hub this is, among hubs that share a catalog, and
 * what it owns there.
 *
 * A hub's id ("hub-" and 16 hex digits, random) is made at its first start
 * and kept in DATA-DIR/hub-id.  The catalog records it as the owner of each
 * job and task the hub starts (catalog.h, migration 0007): only the owner
 * exports a job's disks, copies it again after a restart, reaps its lease
 * or carries on its task, and requests that need its storage daemon go to
 * it (hub_job_mine).  Every file the hub creates in a repository is first
 * named by an intent row (hub_file_intend), so that the start-up file
 * check of another hub never deletes a file an instant before its row
 * exists (hub/recovery.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub-int.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

#define HUB_ID_PREFIX "hub-"
#define HUB_ID_HEX 16

static bool
hub_id_valid (const char *s)
{
  if (strncmp (s, HUB_ID_PREFIX, strlen (HUB_ID_PREFIX)) != 0)
    return false;
  s += strlen (HUB_ID_PREFIX);
  for (int i = 0; i < HUB_ID_HEX; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return s[HUB_ID_HEX] == '\0';
}

/* Make a new id into hub->hub_id and write it to path. */
static int
identity_make (struct hub *hub, const char *path)
{
  unsigned char raw[HUB_ID_HEX / 2];
  char line[sizeof hub->hub_id + 1];
  size_t n = strlen (HUB_ID_PREFIX);

  if (id_random (raw, sizeof raw) == -1)
    return -1;
  memcpy (hub->hub_id, HUB_ID_PREFIX, n);
  for (size_t i = 0; i < sizeof raw; i++)
    snprintf (hub->hub_id + n + 2 * i, 3, "%02x", raw[i]);
  snprintf (line, sizeof line, "%s\n", hub->hub_id);
  if (repo_write_atomic (path, line, strlen (line)) == -1) {
    error_prefix ("writing the hub id");
    return -1;
  }
  log_info ("this hub's id is %s (new, kept in %s)", hub->hub_id, path);
  return 0;
}

int
hub_identity_open (struct hub *hub)
{
  CLEANUP_FREE char *path = NULL;
  char line[64];
  FILE *f;

  if (asprintf (&path, "%s/hub-id", hub->cfg.data_dir) == -1) {
    path = NULL;
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  f = fopen (path, "re");
  if (f == NULL) {
    if (errno == ENOENT)
      return identity_make (hub, path);
    error_set_errno (ERR_INVALID, errno, "reading the hub id %s", path);
    return -1;
  }
  if (fgets (line, sizeof line, f) == NULL)
    line[0] = '\0';
  fclose (f);
  line[strcspn (line, "\n")] = '\0';
  if (!hub_id_valid (line)) {
    error_set (ERR_INVALID, "%s is not a hub id (one line \"hub-\" and %d lowercase hex "
               "digits): restore it, or remove it to give this hub a new id (the jobs "
               "of the old one are then nobody's)", path, HUB_ID_HEX);
    return -1;
  }
  snprintf (hub->hub_id, sizeof hub->hub_id, "%.*s", (int) sizeof hub->hub_id - 1, line);
  log_info ("this hub's id is %s", hub->hub_id);
  return 0;
}

const char *
hub_id (struct hub *hub)
{
  return hub->hub_id;
}

void
hub_identity_claim (struct hub *hub)
{
  int64_t n;

  if (catalog_hub_claim (hub->cat, hub->hub_id, &n) == -1)
    log_error ("claiming the running jobs that no hub owns: %s", error_message ());
  else if (n > 0)
    log_warn ("%lld running job(s) or task(s) owned by no hub (made before the catalog "
              "recorded owners) are now this hub's", (long long) n);
}

bool
hub_owns (struct hub *hub, const char *owner_hub)
{
  return owner_hub && strcmp (owner_hub, hub->hub_id) == 0;
}

int
hub_job_mine (struct hub *hub, const struct cat_job *job)
{
  if (hub_owns (hub, job->owner_hub))
    return 0;
  error_set (ERR_CONFLICT, "backup %s is run by hub %s, not by this one (%s): send this "
             "request to that hub", job->id, job->owner_hub ? job->owner_hub : "(none)",
             hub->hub_id);
  return -1;
}

int
hub_file_intend (struct hub *hub, const struct cat_repository *repo, const char *rel,
                 const char *job_id)
{
  return catalog_intent_add (hub->cat, repo->id, rel, hub->hub_id, job_id);
}

void
hub_file_undo (struct hub *hub, const struct cat_repository *repo, const char *rel)
{
  struct error_saved saved;

  error_save (&saved);
  if (repo_remove_image (repo->path, rel) == -1)
    log_error ("%s (the next start deletes it)", error_message ());
  else if (catalog_intent_remove (hub->cat, repo->id, rel) == -1)
    log_warn ("repository %s: forgetting the intent of %s: %s (harmless: the next start "
              "does)", repo->id, rel, error_message ());
  error_restore (&saved);
}
