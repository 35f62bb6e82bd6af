/* hub/config.c - the options of `strata serve`, from the command line and
 * from an optional config file with the same keys ("key = value" lines,
 * '#' comments).  An unknown key or a malformed value stops start-up. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/net.h"

enum { OPT_DATA_DIR = 1, OPT_LISTEN, OPT_NBD_LISTEN, OPT_DB, OPT_TOKEN, OPT_NBD_PSK,
       OPT_WORKERS, OPT_DB_PASSWORD_FILE, OPT_SOURCE_DIRS, OPT_LIBVIRT_URI, OPT_CONFIG,
       OPT_HELP, OPT_CHECK_CONFIG, OPT_TLS_CERT, OPT_TLS_KEY, OPT_INSECURE_NO_AUTH,
       OPT_NBD_INSECURE };

static const struct option long_options[] = {
  { "data-dir", required_argument, NULL, OPT_DATA_DIR },
  { "listen", required_argument, NULL, OPT_LISTEN },
  { "nbd-listen", required_argument, NULL, OPT_NBD_LISTEN },
  { "db", required_argument, NULL, OPT_DB },
  { "api-token-file", required_argument, NULL, OPT_TOKEN },
  { "nbd-tls-psk-file", required_argument, NULL, OPT_NBD_PSK },
  { "workers", required_argument, NULL, OPT_WORKERS },
  { "db-password-file", required_argument, NULL, OPT_DB_PASSWORD_FILE },
  { "source-dirs", required_argument, NULL, OPT_SOURCE_DIRS },
  { "libvirt-uri", required_argument, NULL, OPT_LIBVIRT_URI },
  { "config", required_argument, NULL, OPT_CONFIG },
  { "help", no_argument, NULL, OPT_HELP },
  { "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
  { "tls-cert-file", required_argument, NULL, OPT_TLS_CERT },
  { "tls-key-file", required_argument, NULL, OPT_TLS_KEY },
  { "insecure-no-auth", no_argument, NULL, OPT_INSECURE_NO_AUTH },
  { "nbd-insecure", no_argument, NULL, OPT_NBD_INSECURE },
  { NULL, 0, NULL, 0 },
};

void
hub_config_usage (void)
{
  printf (
"Usage: strata serve [OPTION]...\n"
"Run the backup hub: REST API, catalog, repositories and NBD targets.\n"
"\n"
"  --data-dir DIR         catalog, repository and run files (default ./var)\n"
"  --listen ADDR:PORT     REST API address (default 127.0.0.1:8082)\n"
"  --nbd-listen ADDR:PORT NBD targets of the storage daemon\n"
"                         (default 127.0.0.1:10809; 0.0.0.0 and :: are refused)\n"
"  --db URL               catalog (default sqlite://DATA-DIR/catalog.db), or\n"
"                         mariadb://USER@HOST[:PORT]/DB[?socket=PATH]\n"
"  --db-password-file FILE\n"
"                         the MariaDB password: FILE's first line (else\n"
"                         $STRATA_DB_PASSWORD, else the URL's)\n"
"  --api-token-file FILE  require 'Authorization: Bearer <token>' on /api/v1;\n"
"                         needed when --listen is not a loopback address\n"
"  --insecure-no-auth     off loopback, run without --api-token-file anyway\n"
"                         (anyone who reaches the API may delete backups)\n"
"  --tls-cert-file FILE   serve the API over HTTPS with this certificate (PEM;\n"
"                         may hold its chain) ...\n"
"  --tls-key-file FILE    ... and its unencrypted private key (PEM).  Without\n"
"                         them the API speaks plain HTTP on loopback and, off\n"
"                         loopback, HTTPS with a self-signed pair made at the\n"
"                         first start in DATA-DIR/tls/; the log gives its\n"
"                         fingerprint and the clients' --pin-sha256\n"
"  --nbd-tls-psk-file FILE\n"
"                         the NBD targets' keys: FILE holds IDENTITY:HEXKEY\n"
"                         lines (keys of 128 bits or more, e.g. from 'psktool');\n"
"                         its first key is the master key.  Without it the hub\n"
"                         makes its master key in DATA-DIR/nbd.psk at the first\n"
"                         start.  Either way NBD speaks TLS-PSK, and each backup\n"
"                         and restore gets its own key, derived from the master\n"
"                         key, in the API's answer (nbd_tls)\n"
"  --nbd-insecure         NBD without TLS (anyone who reaches --nbd-listen can\n"
"                         list the exports and write into running backups)\n"
"  --workers N            hub-driven backups copied at once (default 2; each\n"
"                         copies up to 2 of its disks in parallel)\n"
"  --source-dirs DIR[:DIR...]\n"
"                         folders that hub-driven image sources must lie in\n"
"                         (default: any absolute path the hub can read)\n"
"  --libvirt-uri URI      libvirt connection of libvirt://DOMAIN sources\n"
"                         (default qemu:///system)\n"
"  --config FILE          read these options from FILE, one 'key = value' a line\n"
"                         (keys: data-dir listen nbd-listen db api-token-file\n"
"                         insecure-no-auth (true or false) tls-cert-file\n"
"                         tls-key-file db-password-file nbd-tls-psk-file\n"
"                         nbd-insecure (true or false) workers source-dirs\n"
"                         libvirt-uri); options on the\n"
"                         command line win\n"
"  --check-config         read the options and the config file, print the\n"
"                         settings in effect in the config file's form, and\n"
"                         exit: 0 when they are valid, 2 when not (files they\n"
"                         name are not opened, nothing is started)\n"
"  --help                 show this help\n"
"\n"
"On its first start with no repository the hub creates the repository\n"
"'default' at DATA-DIR/repository.  IPv6 addresses go in brackets:\n"
"[::1]:8082.  Exit status: 0 after a clean shutdown (SIGINT or SIGTERM),\n"
"1 when start-up fails, 2 on a usage error.\n");
}

/* Set one option by its key; a later set replaces an earlier one. */
static int
config_set (struct hub_config *cfg, int key, const char *value, const char *where)
{
  char **slot;
  struct net_addr a;

  switch (key) {
  case OPT_DATA_DIR: slot = &cfg->data_dir; break;
  case OPT_LISTEN: slot = &cfg->listen; break;
  case OPT_NBD_LISTEN: slot = &cfg->nbd_listen; break;
  case OPT_DB: slot = &cfg->db; break;
  case OPT_TOKEN: slot = &cfg->api_token_file; break;
  case OPT_DB_PASSWORD_FILE: slot = &cfg->db_password_file; break;
  case OPT_NBD_PSK: slot = &cfg->nbd_tls_psk_file; break;
  case OPT_LIBVIRT_URI: slot = &cfg->libvirt_uri; break;
  case OPT_TLS_CERT: slot = &cfg->tls_cert_file; break;
  case OPT_TLS_KEY: slot = &cfg->tls_key_file; break;
  case OPT_INSECURE_NO_AUTH:
  case OPT_NBD_INSECURE: {
    /* A flag on the command line (no value), true or false in a file. */
    bool *flag = key == OPT_NBD_INSECURE ? &cfg->nbd_insecure : &cfg->insecure_no_auth;
    if (value == NULL || strcmp (value, "true") == 0)
      *flag = true;
    else if (strcmp (value, "false") == 0)
      *flag = false;
    else {
      error_set (ERR_INVALID, "%s: expected true or false, not '%s'", where, value);
      return -1;
    }
    return 0;
  }
  case OPT_SOURCE_DIRS:
    slot = &cfg->source_dirs;
    /* Absolute folders, none empty; hub_open resolves them. */
    for (const char *p = value; ; ) {
      const char *end = strchrnul (p, ':');
      if (*p != '/') {
        error_set (ERR_INVALID, "%s: '%.*s' is not an absolute folder", where,
                   (int) (end - p), p);
        return -1;
      }
      if (*end == '\0')
        break;
      p = end + 1;
    }
    break;
  case OPT_WORKERS: {
    char *end;
    long v;
    errno = 0;
    v = strtol (value, &end, 10);
    if (errno || end == value || *end != '\0' || v < 1 || v > 64) {
      error_set (ERR_INVALID, "%s: expected a number of workers from 1 to 64, not '%s'",
                 where, value);
      return -1;
    }
    cfg->workers = (int) v;
    return 0;
  }
  default:
    error_set (ERR_INVALID, "%s: unknown option", where);
    return -1;
  }
  if (*value == '\0') {
    error_set (ERR_INVALID, "%s: empty value", where);
    return -1;
  }
  if ((key == OPT_LISTEN || key == OPT_NBD_LISTEN) && net_parse_addr (value, &a) == -1) {
    error_prefix ("%s", where);
    return -1;
  }
  free (*slot);
  *slot = strdup (value);
  if (*slot == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  return 0;
}

/* Read a config file.  Each line is blank, a '#' comment, or "key = value". */
static int
config_load_file (struct hub_config *cfg, const char *file)
{
  FILE *fp = fopen (file, "r");
  CLEANUP_FREE char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int lineno = 0, ret = 0;

  if (fp == NULL) {
    error_set_errno (ERR_INVALID, errno, "config file %s", file);
    return -1;
  }
  while (ret == 0 && (len = getline (&line, &cap, fp)) != -1) {
    char where[512], *key, *eq, *value, *end;
    const struct option *o;

    lineno++;
    snprintf (where, sizeof where, "%s:%d", file, lineno);
    if (strlen (line) != (size_t) len) {
      error_set (ERR_INVALID, "%s: NUL byte in line", where);
      ret = -1;
      break;
    }
    key = line + strspn (line, " \t");
    end = key + strlen (key);
    while (end > key && strchr (" \t\r\n", end[-1]))
      *--end = '\0';
    if (*key == '\0' || *key == '#')
      continue;
    eq = strchr (key, '=');
    if (eq == NULL) {
      error_set (ERR_INVALID, "%s: expected 'key = value'", where);
      ret = -1;
      break;
    }
    value = eq + 1 + strspn (eq + 1, " \t");
    while (eq > key && strchr (" \t", eq[-1]))
      eq--;
    *eq = '\0';
    for (o = long_options; o->name; o++)
      if (strcmp (o->name, key) == 0)
        break;
    if (o->name == NULL || o->val == OPT_CONFIG || o->val == OPT_HELP ||
        o->val == OPT_CHECK_CONFIG) {
      error_set (ERR_INVALID, "%s: unknown key '%s' (known: data-dir, listen, "
                 "nbd-listen, db, db-password-file, api-token-file, insecure-no-auth, "
                 "tls-cert-file, tls-key-file, nbd-tls-psk-file, nbd-insecure, workers, "
                 "source-dirs, libvirt-uri)",
                 where, key);
      ret = -1;
      break;
    }
    ret = config_set (cfg, o->val, value, where);
  }
  fclose (fp);
  return ret;
}

int
hub_config_parse (struct hub_config *cfg, int argc, char **argv)
{
  const char *config_file = NULL;
  int c;

  memset (cfg, 0, sizeof *cfg);
  /* First pass: only --config and --help, so the file is read first. */
  optind = 1;
  opterr = 0;
  while ((c = getopt_long (argc, argv, "", long_options, NULL)) != -1) {
    if (c == OPT_HELP) {
      hub_config_usage ();
      return 1;
    }
    if (c == OPT_CONFIG)
      config_file = optarg;
    if (c == '?' || c == ':') {
      error_set (ERR_INVALID, "unknown or incomplete option '%s' (see strata serve --help)",
                 argv[optind - 1]);
      return -1;
    }
  }
  if (optind < argc) {
    error_set (ERR_INVALID, "unexpected argument '%s' (see strata serve --help)",
               argv[optind]);
    return -1;
  }
  if (config_file && config_load_file (cfg, config_file) == -1)
    return -1;

  optind = 1;
  while ((c = getopt_long (argc, argv, "", long_options, NULL)) != -1) {
    char where[64];
    if (c == OPT_CONFIG)
      continue;
    if (c == OPT_CHECK_CONFIG) {
      cfg->check_only = true;
      continue;
    }
    snprintf (where, sizeof where, "--%s", long_options[c - 1].name);
    if (config_set (cfg, c, optarg, where) == -1)
      return -1;
  }

  if (!cfg->tls_cert_file != !cfg->tls_key_file) {
    error_set (ERR_INVALID, "--tls-cert-file and --tls-key-file go together: give both");
    return -1;
  }
  if (cfg->nbd_insecure && cfg->nbd_tls_psk_file) {
    error_set (ERR_INVALID, "--nbd-insecure and --nbd-tls-psk-file contradict each "
               "other: give one");
    return -1;
  }
  if (cfg->workers == 0)
    cfg->workers = 2;
  if (!cfg->data_dir && !(cfg->data_dir = strdup ("./var")))
    goto oom;
  if (!cfg->listen && !(cfg->listen = strdup ("127.0.0.1:8082")))
    goto oom;
  if (!cfg->nbd_listen && !(cfg->nbd_listen = strdup ("127.0.0.1:10809")))
    goto oom;
  if (!cfg->db && asprintf (&cfg->db, "sqlite://%s/catalog.db", cfg->data_dir) == -1) {
    cfg->db = NULL;
    goto oom;
  }
  /* A careless operator must opt in to an open API on the network; checked
   * here so that --check-config says it too, and nothing has listened. */
  {
    struct net_addr a;
    if (!cfg->api_token_file && !cfg->insecure_no_auth &&
        net_parse_addr (cfg->listen, &a) == 0 && !net_is_loopback (&a)) {
      error_set (ERR_INVALID, "the API would listen on %s, off loopback, without "
                 "--api-token-file: give a token file, or --insecure-no-auth to let "
                 "anyone who reaches it delete backups", cfg->listen);
      return -1;
    }
  }
  return 0;

 oom:
  error_set_errno (ERR_INTERNAL, errno, "out of memory");
  return -1;
}

/* The settings in effect, one "key = value" line each, so that the output
 * is itself a valid config file; an option left unset is a comment saying
 * what the hub does without it. */
void
hub_config_print (const struct hub_config *cfg, FILE *fp)
{
  const struct { const char *key, *value, *unset; } opts[] = {
    { "data-dir", cfg->data_dir, NULL },
    { "listen", cfg->listen, NULL },
    { "nbd-listen", cfg->nbd_listen, NULL },
    { "db", cfg->db, NULL },
    { "db-password-file", cfg->db_password_file, "$STRATA_DB_PASSWORD, else the URL's" },
    { "api-token-file", cfg->api_token_file, "no authentication; off loopback only "
      "with insecure-no-auth" },
    { "insecure-no-auth", cfg->insecure_no_auth ? "true" : NULL, "false" },
    { "tls-cert-file", cfg->tls_cert_file, "off loopback, a self-signed certificate "
      "in DATA-DIR/tls; on loopback, plain HTTP" },
    { "tls-key-file", cfg->tls_key_file, "with tls-cert-file" },
    { "nbd-tls-psk-file", cfg->nbd_tls_psk_file, cfg->nbd_insecure ? "NBD without TLS"
      : "TLS-PSK with the master key in DATA-DIR/nbd.psk" },
    { "nbd-insecure", cfg->nbd_insecure ? "true" : NULL, "false" },
    { "source-dirs", cfg->source_dirs, "any absolute path" },
    { "libvirt-uri", cfg->libvirt_uri, "qemu:///system" },
  };

  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
    if (opts[i].value)
      fprintf (fp, "%s = %s\n", opts[i].key, opts[i].value);
    else
      fprintf (fp, "# %s: not set (%s)\n", opts[i].key, opts[i].unset);
  }
  fprintf (fp, "workers = %d\n", cfg->workers);
}

void
hub_config_clear (struct hub_config *cfg)
{
  free (cfg->data_dir);
  free (cfg->listen);
  free (cfg->nbd_listen);
  free (cfg->db);
  free (cfg->db_password_file);
  free (cfg->source_dirs);
  free (cfg->libvirt_uri);
  free (cfg->api_token_file);
  free (cfg->nbd_tls_psk_file);
  free (cfg->tls_cert_file);
  free (cfg->tls_key_file);
  memset (cfg, 0, sizeof *cfg);
}
