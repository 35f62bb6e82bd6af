/* util/cleanup.c - the functions behind util/cleanup.h. */
#include <errno.h>
#include <unistd.h>

#include <jansson.h>

#include "util/cleanup.h"

void
cleanup_free (void *ptr)
{
  free (*(void **) ptr);
}

void
cleanup_fd (int *fd)
{
  if (*fd >= 0) {
    int saved = errno;
    close (*fd);
    errno = saved;
  }
}

void
cleanup_unlock (pthread_mutex_t **m)
{
  pthread_mutex_unlock (*m);
}

void
cleanup_json (void *ptr)
{
  json_decref (*(json_t **) ptr);
}

void
cleanup_strv (void *ptr)
{
  char **v = *(char ***) ptr;
  if (v) {
    for (char **p = v; *p; p++)
      free (*p);
    free (v);
  }
}
