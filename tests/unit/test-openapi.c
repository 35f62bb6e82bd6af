/* tests/unit/test-openapi.c - docs/openapi.json, as the hub serves it,
 * describes the router: every route of api_route_table is a path and
 * method of the document and the other way round (with the few routes
 * api/http.c serves outside the table), streamed routes take a raw body and
 * the others JSON, and every route docs/API.md names in a heading or a
 * list item is in the document. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#include "api/api-int.h"
#include "util/cleanup.h"
#include "web/web.h"

/* Served by api/http.c before (or beside) the table: no token, or no
 * /api/v1 prefix.  /metrics and the dashboard's "/" with its files. */
static const char *const outside_table[] = {
  "GET /healthz", "GET /metrics", "GET /", "GET " API_OPENAPI_PATH, NULL
};

static const char *const methods[] = {
  "get", "put", "post", "delete", "patch", "head", "options", "trace", NULL
};

/* "METHOD /api/v1/backups/{id}/complete" -> "METHOD /api/v1/backups/[*]/complete"
 * (a template segment of any name becomes "*").  Caller frees. */
static char *
route_key (const char *method, const char *path, size_t path_len)
{
  char *out = malloc (strlen (method) + path_len + 2), *o = out;

  if (out == NULL)
    abort ();
  for (const char *m = method; *m; m++)
    *o++ = (char) toupper ((unsigned char) *m);
  *o++ = ' ';
  for (size_t i = 0; i < path_len; i++) {
    if (path[i] == '{') {
      while (i < path_len && path[i] != '}')
        i++;
      *o++ = '*';
      continue;
    }
    *o++ = path[i];
  }
  *o = '\0';
  return out;
}

/* The operation of the document for key, or NULL. */
static json_t *
doc_operation (json_t *doc, const char *key)
{
  json_t *paths = json_object_get (doc, "paths"), *item;
  const char *path;

  json_object_foreach (paths, path, item) {
    for (size_t m = 0; methods[m]; m++) {
      json_t *op = json_object_get (item, methods[m]);
      CLEANUP_FREE char *k = NULL;
      if (op == NULL)
        continue;
      k = route_key (methods[m], path, strlen (path));
      if (strcmp (k, key) == 0)
        return op;
    }
  }
  return NULL;
}

static bool
in_table (const char *key, const struct api_route *t, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    char k[256];
    snprintf (k, sizeof k, "%s /api/v1/%s", t[i].method, t[i].pattern);
    if (strcmp (k, key) == 0)
      return true;
  }
  for (size_t i = 0; outside_table[i]; i++)
    if (strcmp (outside_table[i], key) == 0)
      return true;
  return false;
}

/* Table -> document: each route is there, with the body its kind takes. */
static void
test_table_in_document (json_t *doc, const struct api_route *t, size_t n)
{
  int streamed = 0;

  for (size_t i = 0; i < n; i++) {
    char key[256];
    json_t *op, *content;

    snprintf (key, sizeof key, "%s /api/v1/%s", t[i].method, t[i].pattern);
    op = doc_operation (doc, key);
    ok (op != NULL, "the document has the router's %s", key);
    ok ((t[i].handler == NULL) == t[i].streamed,
        "%s: a handler exactly when it is not streamed", key);
    content = json_object_get (json_object_get (op, "requestBody"), "content");
    if (t[i].streamed) {
      streamed++;
      ok (json_object_get (content, "application/octet-stream") != NULL &&
          json_object_size (content) == 1,
          "%s is streamed: the document gives it a raw body", key);
    }
    else if (content)
      ok (json_object_get (content, "application/json") != NULL &&
          json_object_size (content) == 1, "%s takes a JSON body", key);
  }
  is_int (streamed, 2, "the table holds the two streamed upload routes");
  for (size_t i = 0; outside_table[i]; i++)
    ok (doc_operation (doc, outside_table[i]) != NULL, "the document has %s",
        outside_table[i]);
}

/* Document -> table: no path or method the router does not serve. */
static void
test_document_in_table (json_t *doc, const struct api_route *t, size_t n)
{
  json_t *paths = json_object_get (doc, "paths"), *item;
  const char *path;
  int count = 0;

  json_object_foreach (paths, path, item) {
    for (size_t m = 0; methods[m]; m++) {
      CLEANUP_FREE char *k = NULL;
      if (json_object_get (item, methods[m]) == NULL)
        continue;
      k = route_key (methods[m], path, strlen (path));
      ok (in_table (k, t, n), "the router serves the document's %s", k);
      count++;
    }
  }
  is_int (count, (int64_t) n + 4, "the document has the table's routes and the 4 outside it");
}

static char *
read_api_md (void)
{
  const char *build = getenv ("STRATA_BUILD");
  char path[4096];
  FILE *f = fopen ("docs/API.md", "r");
  char *text = NULL;
  size_t len = 0;

  if (f == NULL && build) {
    snprintf (path, sizeof path, "%s/../docs/API.md", build);
    f = fopen (path, "r");
  }
  if (f == NULL)
    return NULL;
  FILE *m = open_memstream (&text, &len);
  char buf[8192];
  size_t got;
  while ((got = fread (buf, 1, sizeof buf, f)) > 0)
    fwrite (buf, 1, got, m);
  fclose (f);
  fclose (m);
  return text;
}

/* Every `METHOD /path...` that docs/API.md gives as a heading (### ...) or
 * that opens a list item (- `...`) is a route of the document: the path
 * ends at a query ("?"), an optional part ("["), a blank or the backquote. */
static void
test_api_md (json_t *doc)
{
  static const char *const verbs[] = { "GET", "PUT", "POST", "DELETE", "PATCH", NULL };
  CLEANUP_FREE char *text = read_api_md ();
  int headings = 0;
  char *save = NULL;

  if (!ok (text != NULL, "docs/API.md is readable"))
    return;
  for (char *line = strtok_r (text, "\n", &save); line; line = strtok_r (NULL, "\n", &save)) {
    bool heading = strncmp (line, "### ", 4) == 0;
    if (!heading && strncmp (line, "- `", 3) != 0)
      continue;
    for (char *s = strchr (line, '`'); s; s = strchr (s, '`')) {
      char *span = ++s;
      for (size_t v = 0; verbs[v]; v++) {
        size_t vl = strlen (verbs[v]);
        if (strncmp (span, verbs[v], vl) != 0 || span[vl] != ' ' || span[vl + 1] != '/')
          continue;
        const char *p = span + vl + 1;
        size_t plen = strcspn (p, "?[ `");
        CLEANUP_FREE char *key = route_key (verbs[v], p, plen);
        ok (doc_operation (doc, key) != NULL, "docs/API.md's %s (%s) is in the document",
            key, heading ? "heading" : "list");
        headings += heading;
      }
      s = strchr (s, '`');       /* past the span's closing quote */
      if (s)
        s++;
      if (!heading)              /* a list item's route is its first span */
        break;
    }
  }
  ok (headings >= 15, "docs/API.md has route headings (%d)", headings);
}

int
main (void)
{
  const struct web_asset *a = web_asset_find (API_OPENAPI_PATH);
  const struct api_route *t;
  json_error_t jerr;
  json_t *doc;
  size_t n;

  if (!ok (a != NULL, "the hub serves %s", API_OPENAPI_PATH))
    return done_testing ();
  doc = json_loadb ((const char *) a->data, a->len, JSON_REJECT_DUPLICATES, &jerr);
  if (!ok (doc != NULL, "the document is JSON (%s at line %d)", doc ? "" : jerr.text,
           jerr.line))
    return done_testing ();
  is_str (json_string_value (json_object_get (doc, "openapi")), "3.1.0", "OpenAPI 3.1");
  t = api_route_table (&n);
  ok (n > 30, "the router's table has its routes (%zu)", n);
  test_table_in_document (doc, t, n);
  test_document_in_table (doc, t, n);
  test_api_md (doc);
  json_decref (doc);
  return done_testing ();
}
