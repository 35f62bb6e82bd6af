/* util/array.h - growing arrays of plain structs. */
#ifndef STRATA_UTIL_ARRAY_H
#define STRATA_UTIL_ARRAY_H

#include <stddef.h>

/* Make room for one more element of elem bytes in *arr, which holds n of
 * them in *cap allocated (doubling, from 8), and return the new element,
 * zeroed.  NULL with ERR_INTERNAL set when memory runs out; *arr is then
 * unchanged and still owned by the caller. */
void *array_push (void **arr, size_t n, size_t *cap, size_t elem);

#endif
