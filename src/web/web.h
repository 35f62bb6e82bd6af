/* web/web.h - the files the hub serves as they are: the dashboard's
 * HTML, JavaScript and CSS (src/web/static/) and the OpenAPI document
 * (docs/openapi.json).  They are built into the binary by
 * tools/embed-files.sh, so the hub needs no files beside it and no build
 * step runs at run time. */
#ifndef STRATA_WEB_WEB_H
#define STRATA_WEB_WEB_H

#include <stddef.h>

struct web_asset {
  const char *path;             /* the URL path it is served at, "/app.js" */
  const char *content_type;
  const unsigned char *data;    /* len bytes, then a NUL */
  size_t len;
};

/* Generated; ends with an entry whose path is NULL. */
extern const struct web_asset web_assets[];

/* The file served at path ("/" is "/index.html"), or NULL. */
const struct web_asset *web_asset_find (const char *path);

#endif
