/* util/json.h - how strata writes JSON: the one place that decides how its
 * numbers look, for the hub's replies and the command line's --json.
 *
 * Jansson's default writes a real with 17 significant digits, so that 0.045
 * comes out as 0.044999999999999998; 15 digits are all a double holds
 * exactly, and print it as people wrote it. */
#ifndef STRATA_UTIL_JSON_H
#define STRATA_UTIL_JSON_H

#include <jansson.h>

#define STRATA_JSON_REAL JSON_REAL_PRECISION (15)
/* json_dumps flags: one line (the hub's replies), or indented for people. */
#define STRATA_JSON_COMPACT (JSON_COMPACT | STRATA_JSON_REAL)
#define STRATA_JSON_PRETTY (JSON_INDENT (2) | STRATA_JSON_REAL)

#endif
