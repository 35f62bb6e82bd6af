/* virt/virt.c - libvirt domains as backup sources, through the libvirt C
 * API: the disks of a domain, a pull-mode backup job with a checkpoint,
 * the deletion of strata's checkpoints.
 *
 * CHECKPOINTS
 *
 * Each backup makes one checkpoint, "strata-<backup id>", over the domain's
 * qcow2 disks (raw disks cannot hold a bitmap: they are copied in full
 * every time and get no change id).  A tracked disk's change id is
 * "<checkpoint>:<target>": the target recorded with the disk, so that a
 * disk index that names another disk after one was removed is taken in
 * full rather than continued from the other disk's chain.  An incremental names the disk's previous checkpoint per disk
 * (backupmode='incremental' incremental='...'), so disks of one backup may
 * differ: a disk added since, or one whose checkpoint does not cover it,
 * is exported in full while the others are incremental.  QEMU exposes the
 * changed blocks as the export's bitmap "backup-<target>", which the copy
 * engine reads through the meta context qemu:dirty-bitmap:backup-<target>.
 *
 * The two-phase rule of the QCOW2 sources holds here too: the previous
 * checkpoint is deleted only once the hub recorded the new point
 * (virt_backup_commit); a failed backup deletes its own new one
 * (virt_backup_abort), so the previous one stays usable.  Deleting a
 * checkpoint merges its bitmap into its parent's, so checkpoints others
 * made (never touched: only names with VIRT_CHECKPOINT_PREFIX are) keep
 * tracking every change.
 *
 * BROKEN TRACKING
 *
 * A checkpoint whose metadata libvirt lost (the domain was redefined or
 * moved), that does not cover the disk, or whose bitmap is gone or was
 * not saved cleanly (QEMU killed, a disk replaced) cannot give an
 * incremental.  The first two are seen before the job starts; the last
 * only when libvirt refuses the job (VIR_ERR_CHECKPOINT_INCONSISTENT).
 * Then every previous checkpoint the job named is deleted (metadata only
 * where the bitmap is gone, which a normal delete refuses), the disks are
 * exported in full with the reason, and the job is begun once more.
 * Checkpoints of a dead attempt of the same backup id are deleted the same
 * way and the new one takes a suffix ("-r2"): a disk the hub recorded under
 * the old name then finds it missing and is taken in full next time, never
 * an incremental against a later point than the data it holds.
 *
 * SHUT-OFF DOMAINS
 *
 * A shut-off domain is started paused for the backup (its vCPUs never run,
 * the guest sees nothing) and shut off again at virt_close with SIGTERM
 * (VIR_DOMAIN_DESTROY_GRACEFUL): QEMU then stores its bitmaps cleanly, so
 * the checkpoints stay usable.  Reading the files offline would need the
 * bitmaps libvirt keeps in the images and its checkpoint metadata to agree
 * without libvirt's help; starting paused uses the one code path.
 *
 * THE PRIVATE FOLDER
 *
 * The NBD socket and the scratch files live in a folder of their own
 * (TMPDIR, or /var/tmp), mode 0770 with the group libvirt-qemu when that
 * group exists (QEMU creates the socket there as its own user), and are
 * removed when the job ends.  A job a dead strata left behind on a domain
 * is recognised by that folder's name in its socket path and aborted.
 */
#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>

#include "engine/engine.h"
#include "virt/virt.h"
#include "util/cleanup.h"
#include "util/error.h"

#define PRIVATE_DIR_TAG "strata-virt-"
#define CHANGE_ID_SEP ":"

struct virt_domain {
  virConnectPtr conn;
  virDomainPtr dom;
  char *name;
  struct virt_disk *disks;
  size_t n;
  char *dir;              /* the private folder while a job runs */
  char *checkpoint;       /* the new checkpoint, once the job began */
  bool job;               /* our backup job runs */
  bool started;           /* we started the domain (paused) */
};

/* ------------------------------------------------------------ errors --- */

static void
quiet (void *opaque, virErrorPtr e)
{
  (void) opaque;
  (void) e;
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void
init (void)
{
  virInitialize ();
  /* libvirt prints every error on stderr by default; ours are reported
   * where they are handled. */
  virSetErrorFunc (NULL, quiet);
  xmlInitParser ();
}

/* libvirt's last error code of this thread, or 0. */
static int
lv_code (void)
{
  virErrorPtr e = virGetLastError ();
  return e ? e->code : 0;
}

static const char *
lv_message (void)
{
  virErrorPtr e = virGetLastError ();
  return e && e->message ? e->message : "unknown libvirt error";
}

/* Set the error from libvirt's: what was being done, then libvirt's text. */
static void __attribute__((format (printf, 2, 3)))
lv_error (enum error_category cat, const char *fmt, ...)
{
  char what[512];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (what, sizeof what, fmt, ap);
  va_end (ap);
  error_set (cat, "%s: %s", what, lv_message ());
}

/* --------------------------------------------------------------- XML --- */

static char *
xml_attr (xmlNodePtr n, const char *name)
{
  xmlChar *v = xmlGetProp (n, (const xmlChar *) name);
  char *s = v ? strdup ((const char *) v) : NULL;
  xmlFree (v);
  return s;
}

static xmlNodePtr
xml_child (xmlNodePtr n, const char *name)
{
  for (xmlNodePtr c = n->children; c; c = c->next)
    if (c->type == XML_ELEMENT_NODE && strcmp ((const char *) c->name, name) == 0)
      return c;
  return NULL;
}

/* Target order: vda < vdb < ... < vdz < vdaa, as the kernel names them. */
static int
target_cmp (const void *a, const void *b)
{
  const struct virt_disk *x = a, *y = b;
  size_t lx = strlen (x->target), ly = strlen (y->target);

  if (lx != ly)
    return lx < ly ? -1 : 1;
  return strcmp (x->target, y->target);
}

static void
disk_clear (struct virt_disk *d)
{
  free (d->target);
  free (d->path);
  free (d->format);
  free (d->nbd_uri);
  free (d->bitmap);
  free (d->change_id);
  free (d->full_reason);
  free (d->prev_checkpoint);
  memset (d, 0, sizeof *d);
}

/* Append "what" to the comma-separated list *list. */
static void
list_add (char **list, const char *target, const char *why)
{
  char *s;

  if (asprintf (&s, "%s%s%s: %s", *list ? *list : "", *list ? ", " : "",
                target ? target : "?", why) == -1)
    return;
  free (*list);
  *list = s;
}

/* Read the domain's disks from its live (or, shut off, its persistent)
 * definition. */
static int
read_disks (struct virt_domain *vd, char **skipped)
{
  CLEANUP_FREE char *xml = virDomainGetXMLDesc (vd->dom, 0);
  xmlDocPtr doc;
  xmlXPathContextPtr xp = NULL;
  xmlXPathObjectPtr set = NULL;
  int ret = -1;

  if (xml == NULL) {
    lv_error (ERR_UNAVAILABLE, "reading the definition of domain '%s'", vd->name);
    return -1;
  }
  doc = xmlReadMemory (xml, strlen (xml), "domain.xml", NULL, XML_PARSE_NONET);
  if (doc == NULL ||
      (xp = xmlXPathNewContext (doc)) == NULL ||
      (set = xmlXPathEvalExpression ((const xmlChar *) "/domain/devices/disk", xp)) == NULL) {
    error_set (ERR_INTERNAL, "domain '%s': its XML definition cannot be read", vd->name);
    goto out;
  }
  for (int i = 0; set->nodesetval && i < set->nodesetval->nodeNr; i++) {
    xmlNodePtr n = set->nodesetval->nodeTab[i];
    xmlNodePtr tgt = xml_child (n, "target"), src = xml_child (n, "source");
    xmlNodePtr drv = xml_child (n, "driver");
    CLEANUP_FREE char *device = xml_attr (n, "device"), *type = xml_attr (n, "type");
    CLEANUP_FREE char *target = tgt ? xml_attr (tgt, "dev") : NULL;
    CLEANUP_FREE char *path = NULL, *format = drv ? xml_attr (drv, "type") : NULL;
    struct virt_disk *d, *grown;
    virDomainBlockInfo info;

    if (src && type && strcmp (type, "file") == 0)
      path = xml_attr (src, "file");
    else if (src && type && strcmp (type, "block") == 0)
      path = xml_attr (src, "dev");
    if (target == NULL)
      continue;
    if (device && strcmp (device, "disk") != 0) {
      list_add (skipped, target, device);
      continue;
    }
    if (xml_child (n, "readonly")) {
      list_add (skipped, target, "read-only");
      continue;
    }
    if (xml_child (n, "shareable")) {
      list_add (skipped, target, "shareable");
      continue;
    }
    if (xml_child (n, "transient")) {
      list_add (skipped, target, "transient");
      continue;
    }
    if (path == NULL) {
      list_add (skipped, target, type ? type : "no source");
      continue;
    }
    if (virDomainGetBlockInfo (vd->dom, target, &info, 0) == -1) {
      lv_error (ERR_UNAVAILABLE, "domain '%s' disk %s (%s)", vd->name, target, path);
      goto out;
    }
    grown = realloc (vd->disks, (vd->n + 1) * sizeof *vd->disks);
    if (grown == NULL) {
      error_set_errno (ERR_INTERNAL, ENOMEM, "disks");
      goto out;
    }
    vd->disks = grown;
    d = &vd->disks[vd->n++];
    memset (d, 0, sizeof *d);
    d->target = target;
    d->path = path;
    d->format = format ? format : strdup ("raw");
    target = path = format = NULL;
    d->tracked = d->format && strcmp (d->format, "qcow2") == 0;
    d->size = (int64_t) info.capacity;
  }
  if (vd->n == 0) {
    error_set (ERR_INVALID, "domain '%s' has no disk to back up%s%s", vd->name,
               *skipped ? "; skipped: " : "", *skipped ? *skipped : "");
    goto out;
  }
  qsort (vd->disks, vd->n, sizeof *vd->disks, target_cmp);
  ret = 0;
 out:
  xmlXPathFreeObject (set);
  xmlXPathFreeContext (xp);
  xmlFreeDoc (doc);
  return ret;
}

/* ------------------------------------------------------------ public --- */

bool
virt_source_parse (const char *source, const char **name)
{
  static const char scheme[] = "libvirt://";

  if (source == NULL || strncmp (source, scheme, sizeof scheme - 1) != 0)
    return false;
  *name = source + sizeof scheme - 1;
  return true;
}

struct virt_domain *
virt_open (const char *uri, const char *name, char **skipped)
{
  struct virt_domain *vd;

  *skipped = NULL;
  pthread_once (&init_once, init);
  vd = calloc (1, sizeof *vd);
  if (vd == NULL || (vd->name = strdup (name)) == NULL) {
    free (vd);
    error_set_errno (ERR_INTERNAL, ENOMEM, "domain");
    return NULL;
  }
  vd->conn = virConnectOpen (uri ? uri : VIRT_DEFAULT_URI);
  if (vd->conn == NULL) {
    lv_error (ERR_UNAVAILABLE, "connecting to libvirt at %s", uri ? uri : VIRT_DEFAULT_URI);
    goto fail;
  }
  vd->dom = virDomainLookupByName (vd->conn, name);
  if (vd->dom == NULL) {
    if (lv_code () == VIR_ERR_NO_DOMAIN)
      error_set (ERR_NOT_FOUND, "no domain '%s' at %s", name, uri ? uri : VIRT_DEFAULT_URI);
    else
      lv_error (ERR_UNAVAILABLE, "looking up domain '%s'", name);
    goto fail;
  }
  if (read_disks (vd, skipped) == -1)
    goto fail;
  return vd;

 fail:
  {
    struct error_saved es;
    error_save (&es);
    free (*skipped);
    *skipped = NULL;
    virt_close (vd);
    error_restore (&es);
  }
  return NULL;
}

struct virt_disk *
virt_disks (struct virt_domain *vd, size_t *n)
{
  *n = vd->n;
  return vd->disks;
}

static bool
is_ours (const char *checkpoint)
{
  return checkpoint &&
         strncmp (checkpoint, VIRT_CHECKPOINT_PREFIX, strlen (VIRT_CHECKPOINT_PREFIX)) == 0;
}

/* A disk's change id: "<checkpoint>:<target>", the checkpoint and the
 * disk's target when it was taken, so that a disk index that now names
 * another disk (one removed before it) is never continued from the other
 * disk's chain.  *name (caller frees) is the checkpoint, *target points
 * into change_id, or NULL when it has no target part. */
static int
split_change_id (const char *change_id, char **name, const char **target)
{
  const char *sep = strrchr (change_id, CHANGE_ID_SEP[0]);

  *target = sep ? sep + 1 : NULL;
  *name = sep ? strndup (change_id, sep - change_id) : strdup (change_id);
  if (*name == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "change id");
    return -1;
  }
  return 0;
}

/* Delete one of strata's checkpoints: with its bitmaps, or, where they are
 * gone or broken (libvirt then refuses), its metadata only.  A checkpoint
 * that does not exist is fine.  Returns -1 when it stays. */
static int
delete_checkpoint (struct virt_domain *vd, const char *name)
{
  virDomainCheckpointPtr cp;
  int r;

  if (!is_ours (name))
    return 0;
  cp = virDomainCheckpointLookupByName (vd->dom, name, 0);
  if (cp == NULL)
    return lv_code () == VIR_ERR_NO_DOMAIN_CHECKPOINT ? 0 : -1;
  r = virDomainCheckpointDelete (cp, 0);
  if (r == -1)
    r = virDomainCheckpointDelete (cp, VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY);
  if (r == -1)
    lv_error (ERR_UNAVAILABLE, "deleting checkpoint %s of domain '%s'", name, vd->name);
  virDomainCheckpointFree (cp);
  return r;
}

/* Whether checkpoint name exists and holds a bitmap of disk target; if
 * not, *why says what is wrong. */
static bool
checkpoint_covers (struct virt_domain *vd, const char *name, const char *target,
                   const char **why)
{
  virDomainCheckpointPtr cp = virDomainCheckpointLookupByName (vd->dom, name, 0);
  CLEANUP_FREE char *xml = NULL;
  xmlDocPtr doc;
  bool found = false;

  if (cp == NULL) {
    *why = "no longer exists in libvirt (the domain was redefined or moved, or the "
           "checkpoint deleted)";
    return false;
  }
  xml = virDomainCheckpointGetXMLDesc (cp, VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN);
  virDomainCheckpointFree (cp);
  doc = xml ? xmlReadMemory (xml, strlen (xml), "checkpoint.xml", NULL, XML_PARSE_NONET)
            : NULL;
  if (doc) {
    xmlNodePtr disks = xml_child (xmlDocGetRootElement (doc), "disks");
    for (xmlNodePtr c = disks ? disks->children : NULL; c && !found; c = c->next) {
      CLEANUP_FREE char *dn = NULL, *kind = NULL;
      if (c->type != XML_ELEMENT_NODE)
        continue;
      dn = xml_attr (c, "name");
      kind = xml_attr (c, "checkpoint");
      found = dn && kind && strcmp (dn, target) == 0 && strcmp (kind, "bitmap") == 0;
    }
    xmlFreeDoc (doc);
  }
  if (!found)
    *why = "does not track this disk";
  return found;
}

static void
set_reason (struct virt_disk *d, const char *fmt, ...)
  __attribute__((format (printf, 2, 3)));

static void
set_reason (struct virt_disk *d, const char *fmt, ...)
{
  va_list ap;
  char *s;

  va_start (ap, fmt);
  if (vasprintf (&s, fmt, ap) == -1)
    s = NULL;
  va_end (ap);
  free (d->full_reason);
  d->full_reason = s;
}

/* A backup job a dead strata left on the domain (its socket is in one of
 * our private folders) is aborted; anyone else's is a conflict. */
static int
clear_stale_job (struct virt_domain *vd)
{
  CLEANUP_FREE char *xml = virDomainBackupGetXMLDesc (vd->dom, 0);

  if (xml == NULL)
    return 0;
  if (strstr (xml, "/" PRIVATE_DIR_TAG) == NULL) {
    error_set (ERR_CONFLICT, "domain '%s' has a backup job that strata did not start",
               vd->name);
    return -1;
  }
  if (virDomainAbortJob (vd->dom) == -1 && lv_code () != VIR_ERR_OPERATION_INVALID) {
    lv_error (ERR_UNAVAILABLE, "ending a stale backup job of domain '%s'", vd->name);
    return -1;
  }
  return 0;
}

/* Make the private folder for the socket and the scratch files. */
static int
make_dir (struct virt_domain *vd)
{
  const char *tmp = getenv ("TMPDIR");
  struct group *g;

  if (tmp == NULL || *tmp == '\0' || strlen (tmp) > 60)
    tmp = "/var/tmp";
  if (asprintf (&vd->dir, "%s/" PRIVATE_DIR_TAG "XXXXXX", tmp) == -1) {
    vd->dir = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "folder");
    return -1;
  }
  if (mkdtemp (vd->dir) == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "creating a folder in %s", tmp);
    free (vd->dir);
    vd->dir = NULL;
    return -1;
  }
  if ((g = getgrnam ("libvirt-qemu")) != NULL &&
      chown (vd->dir, (uid_t) -1, g->gr_gid) == 0)
    chmod (vd->dir, 0770);
  return 0;
}

static void
remove_dir (struct virt_domain *vd)
{
  if (vd->dir == NULL)
    return;
  for (size_t i = 0; i < vd->n; i++) {
    CLEANUP_FREE char *p = NULL;
    if (asprintf (&p, "%s/%s.scratch", vd->dir, vd->disks[i].target) != -1)
      unlink (p);
  }
  {
    CLEANUP_FREE char *p = NULL;
    if (asprintf (&p, "%s/nbd.sock", vd->dir) != -1)
      unlink (p);
  }
  rmdir (vd->dir);
  free (vd->dir);
  vd->dir = NULL;
}

/* The XML of the backup job and of its checkpoint (NULL when no disk is
 * tracked).  Caller frees both. */
static int
job_xml (struct virt_domain *vd, char **backup, char **checkpoint)
{
  char *b = NULL, *c = NULL;
  size_t bl = 0, cl = 0;
  FILE *bf = open_memstream (&b, &bl), *cf = open_memstream (&c, &cl);
  bool any_tracked = false;

  if (bf == NULL || cf == NULL) {
    if (bf)
      fclose (bf);
    if (cf)
      fclose (cf);
    free (b);
    free (c);
    error_set_errno (ERR_INTERNAL, errno, "backup XML");
    return -1;
  }
  /* Names and paths come from libvirt and from our own folder name; the
   * targets are [a-z0-9] and the folder has no quote. */
  fprintf (bf, "<domainbackup mode='pull'>\n"
           "  <server transport='unix' socket='%s/nbd.sock'/>\n  <disks>\n", vd->dir);
  fprintf (cf, "<domaincheckpoint>\n  <name>%s</name>\n  <disks>\n", vd->checkpoint);
  for (size_t i = 0; i < vd->n; i++) {
    struct virt_disk *d = &vd->disks[i];
    fprintf (bf, "    <disk name='%s' backup='yes' type='file' exportname='%s'", d->target,
             d->target);
    if (d->bitmap)
      fprintf (bf, " backupmode='incremental' incremental='%s' exportbitmap='%s'",
               d->prev_checkpoint, d->bitmap);
    else
      fprintf (bf, " backupmode='full'");
    fprintf (bf, ">\n      <scratch file='%s/%s.scratch'/>\n    </disk>\n", vd->dir,
             d->target);
    fprintf (cf, "    <disk name='%s' checkpoint='%s'/>\n", d->target,
             d->tracked ? "bitmap" : "no");
    any_tracked |= d->tracked;
  }
  fprintf (bf, "  </disks>\n</domainbackup>\n");
  fprintf (cf, "  </disks>\n</domaincheckpoint>\n");
  fclose (bf);
  fclose (cf);
  *backup = b;
  if (any_tracked)
    *checkpoint = c;
  else {
    free (c);
    *checkpoint = NULL;
  }
  return 0;
}

/* Choose the new checkpoint's name: strata-<backup id>, or with a suffix
 * when a dead attempt of this backup left that name (which is deleted). */
static int
choose_checkpoint (struct virt_domain *vd, const char *backup_id)
{
  for (int k = 1; k < 100; k++) {
    virDomainCheckpointPtr cp;
    char *name;

    if ((k == 1 ? asprintf (&name, VIRT_CHECKPOINT_PREFIX "%s", backup_id)
                : asprintf (&name, VIRT_CHECKPOINT_PREFIX "%s-r%d", backup_id, k)) == -1) {
      error_set_errno (ERR_INTERNAL, ENOMEM, "checkpoint");
      return -1;
    }
    cp = virDomainCheckpointLookupByName (vd->dom, name, 0);
    if (cp == NULL) {
      vd->checkpoint = name;
      return 0;
    }
    virDomainCheckpointFree (cp);
    if (delete_checkpoint (vd, name) == -1) {
      free (name);
      return -1;
    }
    free (name);
  }
  error_set (ERR_CONFLICT, "domain '%s': too many checkpoints of backup %s", vd->name,
             backup_id);
  return -1;
}

/* Begin the job with the disks' current plan.  -1 with libvirt's error
 * still readable through lv_code (). */
static int
begin_job (struct virt_domain *vd)
{
  CLEANUP_FREE char *bxml = NULL, *cxml = NULL;

  if (job_xml (vd, &bxml, &cxml) == -1)
    return -1;
  if (virDomainBackupBegin (vd->dom, bxml, cxml, 0) == -1)
    return -1;
  vd->job = true;
  return 0;
}

int
virt_backup_begin (struct virt_domain *vd, const char *backup_id, bool quiesce,
                   char **quiesce_note)
{
  int active, r;
  bool frozen = false;

  *quiesce_note = NULL;
  active = virDomainIsActive (vd->dom);
  if (active == -1) {
    lv_error (ERR_UNAVAILABLE, "domain '%s'", vd->name);
    return -1;
  }
  if (!active) {
    if (virDomainCreateWithFlags (vd->dom, VIR_DOMAIN_START_PAUSED) == -1) {
      lv_error (ERR_UNAVAILABLE, "starting shut-off domain '%s' paused for its backup",
                vd->name);
      return -1;
    }
    vd->started = true;
  }
  else if (clear_stale_job (vd) == -1)
    return -1;
  if (choose_checkpoint (vd, backup_id) == -1 || make_dir (vd) == -1)
    return -1;

  /* Per disk: incremental where the previous checkpoint is usable. */
  for (size_t i = 0; i < vd->n; i++) {
    struct virt_disk *d = &vd->disks[i];
    const char *why = NULL, *was = NULL;

    free (d->bitmap);
    d->bitmap = NULL;
    free (d->full_reason);
    d->full_reason = NULL;
    free (d->prev_checkpoint);
    d->prev_checkpoint = NULL;
    if (d->previous == NULL || *d->previous == '\0')
      continue;
    if (!d->tracked)
      why = "cannot be tracked: the disk is not qcow2";
    else if (split_change_id (d->previous, &d->prev_checkpoint, &was) == -1)
      return -1;
    else if (!is_ours (d->prev_checkpoint) || was == NULL)
      why = "is not a strata checkpoint";
    else if (strcmp (was, d->target) != 0) {
      set_reason (d, "this disk was %s in the previous backup (checkpoint %s), it is %s "
                  "now; the whole disk was copied", was, d->prev_checkpoint, d->target);
      continue;
    }
    else
      checkpoint_covers (vd, d->prev_checkpoint, d->target, &why);
    if (why)
      set_reason (d, "checkpoint %s %s; the whole disk was copied",
                  d->prev_checkpoint ? d->prev_checkpoint : d->previous, why);
    else if (asprintf (&d->bitmap, "backup-%s", d->target) == -1) {
      d->bitmap = NULL;
      error_set_errno (ERR_INTERNAL, ENOMEM, "bitmap");
      return -1;
    }
  }

  if (quiesce) {
    if (virDomainFSFreeze (vd->dom, NULL, 0, 0) >= 0)
      frozen = true;
    else if (asprintf (quiesce_note, "not quiesced (crash-consistent): %s",
                       lv_message ()) == -1)
      *quiesce_note = NULL;
  }
  r = begin_job (vd);
  if (r == -1 && lv_code () == VIR_ERR_CHECKPOINT_INCONSISTENT) {
    /* A bitmap gone or not saved cleanly: the previous checkpoints of this
     * job cannot be trusted.  Delete them, take those disks in full. */
    char what[1024];
    snprintf (what, sizeof what, "%s", lv_message ());
    for (size_t i = 0; i < vd->n; i++) {
      struct virt_disk *d = &vd->disks[i];
      if (d->bitmap == NULL)
        continue;
      free (d->bitmap);
      d->bitmap = NULL;
      set_reason (d, "checkpoint %s is inconsistent (libvirt: %s); it was deleted and "
                  "the whole disk was copied", d->prev_checkpoint, what);
      if (delete_checkpoint (vd, d->prev_checkpoint) == -1)
        break;
    }
    r = begin_job (vd);
  }
  if (r == -1)
    lv_error (ERR_UNAVAILABLE, "beginning the backup of domain '%s'", vd->name);
  if (frozen && virDomainFSThaw (vd->dom, NULL, 0, 0) == -1 && r == 0) {
    lv_error (ERR_UNAVAILABLE, "thawing the file systems of domain '%s'", vd->name);
    r = -1;
  }
  if (r == -1) {
    struct error_saved es;
    error_save (&es);
    virt_backup_end (vd);
    virt_backup_abort (vd);
    error_restore (&es);
    return -1;
  }

  for (size_t i = 0; i < vd->n; i++) {
    struct virt_disk *d = &vd->disks[i];
    free (d->nbd_uri);
    free (d->change_id);
    d->change_id = NULL;
    if (asprintf (&d->nbd_uri, "nbd+unix:///%s?socket=%s/nbd.sock", d->target,
                  vd->dir) == -1 ||
        (d->tracked &&
         asprintf (&d->change_id, "%s" CHANGE_ID_SEP "%s", vd->checkpoint, d->target) == -1)) {
      d->nbd_uri = NULL;
      error_set_errno (ERR_INTERNAL, ENOMEM, "backup");
      return -1;
    }
  }
  return 0;
}

void
virt_backup_end (struct virt_domain *vd)
{
  struct error_saved es;

  if (vd == NULL)
    return;
  error_save (&es);
  if (vd->job) {
    CLEANUP_FREE char *xml = NULL;
    /* The abort is asynchronous for a pull-mode job: wait until libvirt
     * no longer knows it, so that the scratch files are closed. */
    virDomainAbortJob (vd->dom);
    for (int i = 0; i < 300; i++) {
      free (xml);
      xml = virDomainBackupGetXMLDesc (vd->dom, 0);
      if (xml == NULL)
        break;
      nanosleep (&(struct timespec) { .tv_nsec = 100 * 1000 * 1000 }, NULL);
    }
    vd->job = false;
  }
  remove_dir (vd);
  error_restore (&es);
}

int
virt_backup_commit (struct virt_domain *vd, const char *const *olds, size_t n)
{
  int ret = 0;

  for (size_t i = 0; i < n; i++) {
    CLEANUP_FREE char *name = NULL;
    const char *was;

    if (olds[i] == NULL || split_change_id (olds[i], &name, &was) == -1)
      continue;
    if (vd->checkpoint && strcmp (name, vd->checkpoint) == 0)
      continue;
    /* The same checkpoint named by several disks is deleted once. */
    if (delete_checkpoint (vd, name) == -1)
      ret = -1;
  }
  return ret;
}

void
virt_backup_abort (struct virt_domain *vd)
{
  struct error_saved es;

  if (vd == NULL || vd->checkpoint == NULL)
    return;
  error_save (&es);
  delete_checkpoint (vd, vd->checkpoint);
  error_restore (&es);
}

void
virt_close (struct virt_domain *vd)
{
  if (vd == NULL)
    return;
  virt_backup_end (vd);
  if (vd->started && vd->dom &&
      virDomainDestroyFlags (vd->dom, VIR_DOMAIN_DESTROY_GRACEFUL) == -1)
    virDomainDestroy (vd->dom);
  for (size_t i = 0; i < vd->n; i++)
    disk_clear (&vd->disks[i]);
  free (vd->disks);
  if (vd->dom)
    virDomainFree (vd->dom);
  if (vd->conn)
    virConnectClose (vd->conn);
  free (vd->checkpoint);
  free (vd->name);
  free (vd);
}

/* ----------------------------------------------------------- session --- */

static void
live_end (struct engine_session *s)
{
  virt_backup_end (s->live);
}

/* The change ids the new checkpoint replaces: each recorded disk's
 * previous one, and the one of the chain a full supersedes. */
static int
live_commit (struct engine_session *s)
{
  CLEANUP_FREE const char **olds = calloc (2 * s->n + 1, sizeof *olds);
  size_t n = 0;

  if (olds == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "commit");
    return -1;
  }
  for (size_t i = 0; i < s->n; i++) {
    if (!s->disks[i].completed)
      continue;
    olds[n++] = s->disks[i].d.previous_change_id;
    olds[n++] = s->disks[i].d.superseded_change_id;
  }
  return virt_backup_commit (s->live, olds, n);
}

static void
live_abort (struct engine_session *s)
{
  virt_backup_abort (s->live);
}

static const struct engine_live_ops virt_live_ops = {
  .end = live_end,
  .commit = live_commit,
  .abort = live_abort,
};

int
virt_session_begin (struct virt_domain *vd, struct engine_session *s,
                    const char *backup_id, bool quiesce, char **quiesce_note)
{
  size_t copies = 0;

  *quiesce_note = NULL;
  if (s->n != vd->n) {
    error_set (ERR_CONFLICT, "the backup has %zu disks, domain '%s' %zu", s->n, vd->name,
               vd->n);
    return -1;
  }
  for (size_t i = 0; i < vd->n; i++) {
    vd->disks[i].previous = s->disks[i].d.previous_change_id;
    copies += !s->disks[i].done_before;
  }
  /* A job whose disks were all recorded (finishing again after a restart)
   * owes only the deletion of the checkpoints it replaces: no new job. */
  if (copies == 0) {
    s->live_ops = &virt_live_ops;
    s->live = vd;
    return 0;
  }
  if (virt_backup_begin (vd, backup_id, quiesce, quiesce_note) == -1)
    return -1;
  for (size_t i = 0; i < vd->n; i++) {
    struct engine_backup_disk *d = &s->disks[i].d;
    d->source = vd->disks[i].nbd_uri;
    d->source_bitmap = vd->disks[i].bitmap;
    d->source_change_id = vd->disks[i].change_id;
    d->source_full_reason = vd->disks[i].full_reason;
  }
  s->live_ops = &virt_live_ops;
  s->live = vd;
  return 0;
}
