/* tests/fuzz/fuzz-cron.c - libFuzzer target for policy schedules.
 *
 * A schedule is text from a client (PUT /api/v1/policies/{name}).
 * cron_parse must refuse junk with an error, never crash or read past the
 * text; and for what it accepts, cron_next must keep its promise: the
 * next time is a whole minute strictly after the time asked about, and no
 * time in between matches (asking again from just before it gives it
 * again).
 */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "lifecycle/cron.h"
#include "util/error.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *s = fuzz_cstr (data, size);
  struct cron *c;

  setenv ("TZ", "UTC", 1);
  tzset ();
  c = cron_parse (s);
  if (c == NULL)
    CHECK (error_category () == ERR_INVALID);
  else {
    /* 2026-12-02T12:17:31Z */
    time_t after = 1796213851, next = cron_next (c, after);
    if (next != (time_t) -1) {
      CHECK (next > after);
      CHECK (next % 60 == 0);
      CHECK (cron_next (c, next - 1) == next);
      CHECK (cron_next (c, next) > next || cron_next (c, next) == (time_t) -1);
    }
    cron_free (c);
  }
  free (s);
  return 0;
}
