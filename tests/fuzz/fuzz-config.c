/* tests/fuzz/fuzz-config.c - libFuzzer target for the config file of
 * `strata serve --config FILE`.
 *
 * The input becomes the file's contents and hub_config_parse reads it as
 * the command line would make it (the file: fuzz_scratch_file).  A parse that
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

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char arg0[] = "serve", arg1[] = "--config";
  char path[64];
  char *argv[] = { arg0, arg1, path, NULL };
  struct hub_config cfg;
  struct net_addr a;
  int r;

  snprintf (path, sizeof path, "%s", fuzz_scratch_file (data, size));

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
