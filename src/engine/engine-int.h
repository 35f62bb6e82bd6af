/* engine/engine-int.h - private interfaces between the engine's files:
 * the copier (copy.c), the sources (source.c) and restore (restore.c). */
#ifndef STRATA_ENGINE_ENGINE_INT_H
#define STRATA_ENGINE_ENGINE_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <libnbd.h>

#include "engine/engine.h"
#include "integrity/manifest.h"

/* What to copy, from where to where. */
struct copy_spec {
  const char *src_uri;        /* libnbd URI of the source */
  const char *src_psk;        /* TLS PSK file for the source, or NULL */
  /* The dirty bitmap to copy along ("qemu:dirty-bitmap:NAME"), or NULL for
   * a full copy.  When the source does not offer it the copy is full and
   * copy_stats.full_reason says so. */
  const char *dirty_context;
  const char *dst_uri;        /* libnbd URI of the target, or NULL: */
  const char *dst_psk;
  int dst_fd;                 /* a local file target (when dst_uri is NULL);
                               * neither (-1): read and hash only */
  /* The target may hold data where the source reads zeroes (an overlay, or
   * a target an earlier attempt wrote into): write every zero region as
   * NBD write-zeroes.  Otherwise zero regions are skipped. */
  bool zero_holes;
  /* Hash what is read into this map (integrity/manifest.h), or NULL.  The
   * plan is then made of whole 64 KiB blocks (see copy.c, HASHING). */
  struct mf_map *hashes;
  /* Read these ranges (n_ranges pairs offset, length; block aligned, the
   * last may end at the source's size; ascending) as DATA instead of
   * mapping the source; NULL: map it. */
  const uint64_t *ranges;
  size_t n_ranges;
};

struct copy_stats {
  bool incremental;           /* the dirty bitmap was used */
  char *full_reason;          /* set when dirty_context was asked for and
                               * could not be used (caller frees) */
  int64_t size;               /* the source's size */
  int64_t bytes_read, bytes_written, bytes_zero;
};

/* Copy per spec, updating p (may be NULL).  Flushes the target (every
 * connection of it; fsync for a file) before returning 0. */
int copy_run (const struct copy_spec *s, struct engine_progress *p, struct copy_stats *st);

/* Open a libnbd handle on uri (read-only when ro), with the PSK file if
 * given and the meta contexts (NULL-terminated, may be NULL); the
 * handshake must be over within ENGINE_CONNECT_TIMEOUT seconds
 * (copy_connect_within: timeout_s), else ERR_UNAVAILABLE. */
struct nbd_handle *copy_connect (const char *uri, const char *psk, bool ro,
                                 const char *const *contexts);
struct nbd_handle *copy_connect_within (const char *uri, const char *psk, bool ro,
                                        const char *const *contexts, int timeout_s);

/* Tunables, from the environment (STRATA_COPY_CONNECTIONS,
 * STRATA_COPY_REQUESTS, STRATA_COPY_REQUEST_SIZE) or the defaults. */
struct copy_tuning {
  int connections, requests;
  uint32_t request_size;
};
void copy_tuning_get (struct copy_tuning *t);


#endif
