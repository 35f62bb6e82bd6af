/* hub/hub-int.h - helpers shared by the files of src/hub/. */
#ifndef STRATA_HUB_HUB_INT_H
#define STRATA_HUB_HUB_INT_H

#include "hub/hub.h"

/* Drop the exports of these disk rows and delete their files (rows that are
 * already gone from the catalog).  Errors are logged, not returned: the
 * rows are gone, and a file left behind is removed at the next start. */
void hub_drop_disks (struct hub *hub, const char *repo_path,
                     const struct cat_disk *disks, size_t n);

#endif
