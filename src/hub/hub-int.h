/* hub/hub-int.h - helpers shared by the files of src/hub/. */
#ifndef STRATA_HUB_HUB_INT_H
#define STRATA_HUB_HUB_INT_H

#include "hub/hub.h"

/* Drop the exports of these disk rows and delete their files (rows that are
 * already gone from the catalog).  Errors are logged, not returned: the
 * rows are gone, and a file left behind is removed at the next start. */
void hub_drop_disks (struct hub *hub, const char *repo_path,
                     const struct cat_disk *disks, size_t n);

/* Fault injection for the crash tests: when the environment variable
 * STRATA_CRASH_AT names this point, the hub kills itself here with SIGKILL,
 * as a power cut would, so a test can check that the next start recovers.
 * Points: start:images start:exports start:recorded complete:synced
 * complete:recorded end:recorded delete:recorded context-delete:recorded. */
void hub_crash_point (const char *where);

#endif
