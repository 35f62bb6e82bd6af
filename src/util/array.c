/* util/array.c - growing arrays of plain structs. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/array.h"
#include "util/error.h"

void *
array_push (void **arr, size_t n, size_t *cap, size_t elem)
{
  if (n == *cap) {
    size_t newcap = *cap ? *cap * 2 : 8;
    void *p = reallocarray (*arr, newcap, elem);
    if (p == NULL) {
      error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
      return NULL;
    }
    *arr = p;
    *cap = newcap;
  }
  return memset ((char *) *arr + n * elem, 0, elem);
}
