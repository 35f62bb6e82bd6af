/* util/cleanup.h - scope-bound cleanup, built on __attribute__((cleanup)).
 *
 * To hand ownership out of a cleanup scope: ret = p; p = NULL; return ret;
 */
#ifndef STRATA_UTIL_CLEANUP_H
#define STRATA_UTIL_CLEANUP_H

#include <pthread.h>
#include <stdlib.h>

void cleanup_free (void *ptr);
void cleanup_fd (int *fd);
void cleanup_unlock (pthread_mutex_t **m);
void cleanup_json (void *ptr);      /* json_t ** */
void cleanup_strv (void *ptr);      /* char *** (NULL-terminated vector) */

#define CLEANUP_FREE __attribute__((cleanup (cleanup_free)))
#define CLEANUP_FD __attribute__((cleanup (cleanup_fd)))
#define CLEANUP_JSON __attribute__((cleanup (cleanup_json)))
#define CLEANUP_STRV __attribute__((cleanup (cleanup_strv)))

/* Hold a mutex until the end of the enclosing scope. */
#define SCOPED_LOCK_CAT2(a, b) a##b
#define SCOPED_LOCK_CAT(a, b) SCOPED_LOCK_CAT2 (a, b)
#define SCOPED_LOCK(mutex)                                              \
  pthread_mutex_t *SCOPED_LOCK_CAT (scoped_lock_, __LINE__)             \
    __attribute__((cleanup (cleanup_unlock))) = (mutex);                \
  pthread_mutex_lock (SCOPED_LOCK_CAT (scoped_lock_, __LINE__))

#endif
