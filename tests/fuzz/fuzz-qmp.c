/* tests/fuzz/fuzz-qmp.c - libFuzzer target for the QMP client
 * (storage/qmp.c): what the storage daemon may send it.
 *
 * The input is the whole byte stream from the peer.  It goes into one end
 * of a socketpair, whose writing side is then shut, and the real connection
 * on the other end runs the handshake and a few commands over it, reading
 * lines, skipping events and stale replies, until the stream ends.  Each
 * outcome is held to a reading of the same bytes by the rules of
 * storage/qmp.h and the framing comment of storage/qmp.c (one JSON object
 * per line, blank lines skipped, replies matched by id, anything else
 * breaks the connection for good), written here from those comments.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "storage/qmp.h"
#include "util/error.h"
#include "util/log.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define COMMANDS 4             /* run after the handshake */
#define TIMEOUT_MS 5000        /* never reached: the stream always ends */

/* The reference reader: the same bytes, line by line. */
struct ref {
  const uint8_t *data;
  size_t size, pos;
  bool broken;
  unsigned events;
};

/* The next message, a new reference, or NULL when the stream is untrustworthy
 * (ended, or a line that is not a JSON object). */
static json_t *
ref_next (struct ref *r)
{
  for (;;) {
    const uint8_t *nl = r->pos < r->size
                        ? memchr (r->data + r->pos, '\n', r->size - r->pos) : NULL;
    const uint8_t *line = r->data + r->pos;
    bool blank = true;
    json_t *msg;

    if (nl == NULL)
      return NULL;              /* the stream ends inside a line or between */
    r->pos = nl - r->data + 1;
    for (const uint8_t *p = line; p < nl; p++)
      blank = blank && (*p == ' ' || *p == '\t' || *p == '\r');
    if (blank)
      continue;
    msg = json_loadb ((const char *) line, nl - line + 1, 0, NULL);
    if (msg != NULL && json_is_object (msg))
      return msg;
    json_decref (msg);
    return NULL;
  }
}

/* One command with the given id: 0 and *ret, -1 (an error reply, *msg its
 * message), or -2 (the stream broke). */
static int
ref_execute (struct ref *r, uint64_t id, json_t **ret, const char **msg)
{
  static char text[64];

  *ret = NULL;
  if (r->broken)
    return -2;
  for (;;) {
    json_t *m = ref_next (r), *v;

    if (m == NULL) {
      r->broken = true;
      return -2;
    }
    if (json_object_get (m, "event") != NULL) {
      r->events++;
      json_decref (m);
      continue;
    }
    v = json_object_get (m, "id");
    if (!json_is_integer (v) || (uint64_t) json_integer_value (v) != id) {
      json_decref (m);
      continue;
    }
    if ((v = json_object_get (m, "return")) != NULL) {
      *ret = json_incref (v);
      json_decref (m);
      return 0;
    }
    if ((v = json_object_get (m, "error")) != NULL) {
      const char *desc = json_string_value (json_object_get (v, "desc"));
      const char *cls = json_string_value (json_object_get (v, "class"));
      /* storage/qmp.h: desc, else class, else "QMP error"; an empty
       * string is no message.  Compared by its start: error_set may
       * shorten it. */
      snprintf (text, sizeof text, "%s", desc && *desc ? desc : cls && *cls ? cls : "QMP error");
      *msg = text;
      json_decref (m);
      return -1;
    }
    json_decref (m);
    r->broken = true;
    return -2;
  }
}

static int
ref_handshake (struct ref *r, json_t **ret, const char **msg)
{
  json_t *greeting = ref_next (r);
  bool qmp = greeting && json_object_get (greeting, "QMP") != NULL;

  json_decref (greeting);
  *ret = NULL;
  if (!qmp) {
    r->broken = true;
    return -2;
  }
  return ref_execute (r, 1, ret, msg);
}

static void
on_event (const char *name, json_t *data, void *opaque)
{
  unsigned *events = opaque;

  (void) data;
  CHECK (name != NULL);
  (*events)++;
}

/* The real outcome r (and ret) against the reference's. */
static void
compare (int r, json_t *ret, int want, json_t *want_ret, const char *want_msg)
{
  if (want == -2)
    CHECK (r == -2 || r == -1);   /* handshake: -1 for any failure */
  else
    CHECK (r == want);
  if (r == 0) {
    CHECK (ret != NULL && want_ret != NULL && json_equal (ret, want_ret));
  }
  else {
    CHECK (ret == NULL);
    CHECK (strcmp (error_message (), "unknown error") != 0);
    if (want == -1)
      CHECK (strncmp (error_message (), want_msg, strlen (want_msg)) == 0);
    if (want == -2)
      CHECK (error_category () == ERR_UNAVAILABLE);
    else if (r == -1)
      CHECK (error_category () == ERR_INTERNAL);
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static bool quiet;
  struct ref ref = { .data = data, .size = size };
  unsigned events = 0;
  struct qmp *m;
  int sv[2];
  size_t done = 0;

  if (!quiet) {
    log_set_level (LOG_ERROR);
    quiet = true;
  }
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
    abort ();
  /* Less than the socket's buffer at -max_len=65536, so this never blocks. */
  while (done < size) {
    ssize_t n = write (sv[1], data + done, size - done);
    if (n <= 0)
      abort ();
    done += n;
  }
  shutdown (sv[1], SHUT_WR);

  m = qmp_new (sv[0], "fuzz peer");
  CHECK (m != NULL);
  qmp_set_event_handler (m, on_event, &events);

  {
    json_t *want_ret;
    const char *want_msg = NULL;
    int want = ref_handshake (&ref, &want_ret, &want_msg);
    int r;

    error_clear ();
    r = qmp_handshake (m, TIMEOUT_MS);
    CHECK (r == 0 || r == -1);
    CHECK ((r == 0) == (want == 0));
    if (r == -1)
      CHECK (strcmp (error_message (), "unknown error") != 0);
    CHECK (events == ref.events);
    json_decref (want_ret);
  }
  for (int i = 0; i < COMMANDS; i++) {
    json_t *want_ret, *ret = NULL;
    const char *want_msg = NULL;
    int want = ref_execute (&ref, 2 + i, &want_ret, &want_msg);
    int r;

    error_clear ();
    r = qmp_execute (m, "query-fuzz", json_pack ("{s:i}", "n", i), TIMEOUT_MS, &ret);
    compare (r, ret, want, want_ret, want_msg);
    CHECK (events == ref.events);
    json_decref (ret);
    json_decref (want_ret);
  }
  qmp_free (m);
  close (sv[1]);
  return 0;
}
