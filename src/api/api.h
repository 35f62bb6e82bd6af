/* api/api.h - the REST API: HTTP on libmicrohttpd, JSON with jansson.
 *
 * The handlers only validate input and call the hub core (hub/hub.h) for
 * every change; they read through the catalog (catalog/catalog.h), and never
 * touch files, the storage daemon, or a catalog write themselves.
 */
#ifndef STRATA_API_API_H
#define STRATA_API_API_H

struct hub;
struct api;

/* Start serving on hub->listen.  NULL with the error set when the address
 * cannot be bound. */
struct api *api_start (struct hub *hub);
void api_stop (struct api *api);   /* NULL is a no-op */

#endif
