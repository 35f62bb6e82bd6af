/* tests/fuzz/fuzz-config.c - libFuzzer target for the config file of
 * `strata serve --config FILE`.
 *
 * The input becomes the file's contents and hub_config_parse reads it as
 * the command line would make it.  The file is a memfd (or, failing that,
 * an unlinked file in /dev/shm or /tmp) reached through /proc/self/fd, so
 * that no run, not even a crashing one, leaves a file behind.  A parse that
 * succeeds must leave every option set, with addresses net_parse_addr
 * takes; one that fails must say why; both are cleared, so that
 * LeakSanitizer sees anything left over.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hub/hub.h"
#include "util/net.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static int fd = -1;
static char path[64];

static int
open_scratch (void)
{
  static const char *const dirs[] = { "/dev/shm", "/tmp" };
  int f = memfd_create ("strata-fuzz-config", MFD_CLOEXEC);

  for (size_t i = 0; f == -1 && i < sizeof dirs / sizeof dirs[0]; i++) {
    char tmpl[64];
    snprintf (tmpl, sizeof tmpl, "%s/strata-fuzz-config-XXXXXX", dirs[i]);
    f = mkostemp (tmpl, O_CLOEXEC);
    if (f != -1)
      unlink (tmpl);
  }
  return f;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char arg0[] = "serve", arg1[] = "--config";
  char *argv[] = { arg0, arg1, path, NULL };
  struct hub_config cfg;
  struct net_addr a;
  size_t done = 0;
  int r;

  if (fd == -1) {
    fd = open_scratch ();
    if (fd == -1) {
      perror ("fuzz-config: scratch file");
      abort ();
    }
    snprintf (path, sizeof path, "/proc/self/fd/%d", fd);
  }
  if (ftruncate (fd, 0) == -1)
    abort ();
  while (done < size) {
    ssize_t n = pwrite (fd, data + done, size - done, done);
    if (n <= 0 && errno != EINTR)
      abort ();
    if (n > 0)
      done += n;
  }

  error_clear ();
  r = hub_config_parse (&cfg, 3, argv);
  CHECK (r == 0 || r == -1);
  if (r == 0) {
    CHECK (cfg.data_dir && *cfg.data_dir);
    CHECK (cfg.db && *cfg.db);
    CHECK (cfg.listen && net_parse_addr (cfg.listen, &a) == 0);
    CHECK (cfg.nbd_listen && net_parse_addr (cfg.nbd_listen, &a) == 0);
    CHECK (cfg.api_token_file == NULL || *cfg.api_token_file);
    CHECK (cfg.nbd_tls_psk_file == NULL || *cfg.nbd_tls_psk_file);
    /* Lines end at '\n', and values are trimmed: neither survives. */
    CHECK (strchr (cfg.data_dir, '\n') == NULL && strchr (cfg.db, '\n') == NULL);
  }
  else
    fuzz_check_invalid ();
  hub_config_clear (&cfg);
  return 0;
}
