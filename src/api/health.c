/* api/health.c - GET /healthz. */
#include "api/api-int.h"

int
api_health (struct api_req *r)
{
  return api_reply (r, 200, json_pack ("{s:s,s:s,s:s,s:s,s:s,s:s}",
                                       "status", "ok",
                                       "version", STRATA_VERSION,
                                       "started_at", hub_started_at (r->hub),
                                       "hub_id", hub_id (r->hub),
                                       "catalog", catalog_backend_name (hub_catalog (r->hub)),
                                       "storage_daemon",
                                       hub_storage_up (r->hub) ? "up" : "down"));
}
