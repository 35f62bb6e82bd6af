/* tests/unit/test-util.c - ids, VM names, listen addresses, config files,
 * relative backing paths, the error table and how JSON numbers print. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"

#include "hub/hub.h"
#include "storage/repo.h"
#include "util/error.h"
#include "util/id.h"
#include "util/json.h"
#include "util/net.h"
#include "util/proc.h"
#include "util/state.h"

static void
test_ids (void)
{
  char *a = id_new ("backup", "pg test/1 ../x"), *b = id_new ("backup", "pg test/1 ../x");
  char *e1 = id_export_name (), *e2 = id_export_name ();
  char *dot = id_new ("backup", "..");

  ok (a && b && strcmp (a, b) != 0, "two ids made in the same second differ");
  ok (id_valid (a), "an id made from a hostile VM name is well-formed: %s", a);
  ok (strncmp (a, "backup-pg_test_1_.._x-", 22) == 0, "the VM name shows as a slug");
  ok (dot && id_valid (dot) && strstr (dot, "..") == NULL, "'..' never survives into an id: %s",
      dot);
  ok (e1 && e2 && strlen (e1) == 7 + 32 && strcmp (e1, e2) != 0,
      "export names carry 128 random bits");
  ok (!id_valid ("") && !id_valid (".") && !id_valid ("..") && !id_valid ("a/b") &&
      !id_valid ("a b") && !id_valid ("x%00") , "malformed ids are refused");
  char longid[200];
  memset (longid, 'a', sizeof longid - 1);
  longid[sizeof longid - 1] = '\0';
  ok (!id_valid (longid), "an id past %d characters is refused", ID_MAX);
  free (a); free (b); free (e1); free (e2); free (dot);
}

static void
test_vm_names (void)
{
  static const char *good[] = { "pgtest1", "my vm", "été", "web-01.example.com", "a'b\"c",
                                "a\xc2\xa0z" /* U+00A0, not a control */, NULL };
  static const char *bad[] = { "", ".", "..", "a/b", "../etc", "a\\b", "tab\there",
                               "nl\n", " lead", "trail ", "\xff\xfe", "\xc0\xaf",
                               "\xed\xa0\x80", "a\xc2\x85z", "a\xe2\x80\xa8z",
                               "a\xe2\x80\xa9z", NULL };
  char big[300];

  for (const char **p = good; *p; p++)
    ok (id_check_vm_name (*p) == 0, "VM name '%s' is accepted", *p);
  for (const char **p = bad; *p; p++) {
    ok (id_check_vm_name (*p) == -1 && error_category () == ERR_INVALID,
        "bad VM name #%d is refused: %s", (int) (p - bad), error_message ());
  }
  memset (big, 'v', 256);
  big[256] = '\0';
  ok (id_check_vm_name (big) == -1, "a 256-byte VM name is refused");
  big[255] = '\0';
  ok (id_check_vm_name (big) == 0, "a 255-byte VM name is accepted");
}

static void
test_addrs (void)
{
  struct net_addr a;

  ok (net_parse_addr ("127.0.0.1:8082", &a) == 0 && a.port == 8082 && !a.ipv6 &&
      net_is_loopback (&a), "IPv4 loopback address");
  ok (net_parse_addr ("[::1]:10809", &a) == 0 && a.ipv6 && strcmp (a.host, "::1") == 0 &&
      net_is_loopback (&a), "IPv6 loopback in brackets");
  ok (net_parse_addr ("0.0.0.0:1", &a) == 0 && net_is_wildcard (&a), "0.0.0.0 is a wildcard");
  ok (net_parse_addr ("[::]:1", &a) == 0 && net_is_wildcard (&a), ":: is a wildcard");
  ok (net_parse_addr ("localhost:80", &a) == -1, "names are refused (numeric only)");
  ok (net_parse_addr ("127.0.0.1:0", &a) == -1, "port 0 is refused");
  ok (net_parse_addr ("127.0.0.1:65536", &a) == -1, "port 65536 is refused");
  ok (net_parse_addr ("127.0.0.1", &a) == -1, "a missing port is refused");
  ok (net_parse_addr ("127.0.0.1:80x", &a) == -1, "a port with junk is refused");
  ok (net_parse_addr ("::1:80", &a) == -1, "IPv6 without brackets is refused");
  ok (net_parse_addr ("127.0.0.1: 80", &a) == -1 && net_parse_addr ("127.0.0.1:+80", &a) == -1 &&
      net_parse_addr ("[::1]:0080", &a) == -1, "a port is digits only, without sign or zeros");

  /* Every spelling of "every interface" is a wildcard, or is not an
   * address at all: none can slip past --nbd-listen's refusal. */
  static const char *const wild[] = {
    "[::0]:1", "[0:0::0]:1", "[0000:0000:0000:0000:0000:0000:0000:0000]:1", "[::0.0.0.0]:1",
    "[::ffff:0.0.0.0]:1", "[::FFFF:0:0]:1", "[0:0:0:0:0:ffff:0.0.0.0]:1",
  };
  for (size_t i = 0; i < sizeof wild / sizeof wild[0]; i++)
    ok (net_parse_addr (wild[i], &a) == 0 && net_is_wildcard (&a) && !net_is_loopback (&a),
        "%s is a wildcard", wild[i]);
  static const char *const not_addr[] = {
    "0:1", "0x0:1", "0.0:1", "0.0.0:1", "00.0.0.0:1", "0.0.0.00:1", "0x0.0.0.0:1",
    "0.0.0.0.:1", " 0.0.0.0:1", "[::%lo]:1", "[::0%1]:1", "[]:1", "[::ffff:0.0.0]:1",
  };
  for (size_t i = 0; i < sizeof not_addr / sizeof not_addr[0]; i++)
    ok (net_parse_addr (not_addr[i], &a) == -1, "'%s' is refused", not_addr[i]);
  ok (net_parse_addr ("[::ffff:127.0.0.1]:1", &a) == 0 && net_is_loopback (&a) &&
      !net_is_wildcard (&a), "::ffff:127.0.0.1 (IPv4 loopback, mapped) is loopback");
  ok (net_parse_addr ("[::ffff:10.0.0.1]:1", &a) == 0 && !net_is_loopback (&a) &&
      !net_is_wildcard (&a), "::ffff:10.0.0.1 is neither");
  ok (net_parse_addr ("[::1:0:0]:1", &a) == 0 && !net_is_wildcard (&a),
      "::1:0:0 (not IPv4-mapped) is no wildcard");
}

static int
parse_with_file (const char *text, struct hub_config *cfg, const char *extra)
{
  char path[] = "/tmp/strata-test-config-XXXXXX";
  int fd = mkstemp (path), r;
  char *argv[] = { (char *) "serve", (char *) "--config", path, (char *) extra, NULL };

  if (fd == -1 || write (fd, text, strlen (text)) != (ssize_t) strlen (text))
    return -2;
  close (fd);
  r = hub_config_parse (cfg, extra ? 4 : 3, argv);
  unlink (path);
  return r;
}

static void
test_config (void)
{
  struct hub_config cfg;

  ok (parse_with_file ("# comment\n\ndata-dir = /srv/strata\nlisten=127.0.0.1:9000\n",
                       &cfg, NULL) == 0 &&
      strcmp (cfg.data_dir, "/srv/strata") == 0 && strcmp (cfg.listen, "127.0.0.1:9000") == 0 &&
      strcmp (cfg.db, "sqlite:///srv/strata/catalog.db") == 0 &&
      strcmp (cfg.nbd_listen, "127.0.0.1:10809") == 0,
      "config file keys are read, defaults fill the rest");
  hub_config_clear (&cfg);
  ok (parse_with_file ("listen = 127.0.0.1:9000\n", &cfg, "--listen=127.0.0.1:9100") == 0 &&
      strcmp (cfg.listen, "127.0.0.1:9100") == 0, "the command line wins over the file");
  hub_config_clear (&cfg);
  ok (parse_with_file ("colour = blue\n", &cfg, NULL) == -1 &&
      strstr (error_message (), ":1: unknown key 'colour'") != NULL,
      "an unknown key stops start-up and names the line: %s", error_message ());
  hub_config_clear (&cfg);
  ok (parse_with_file ("listen = 127.0.0.1\n", &cfg, NULL) == -1 &&
      strstr (error_message (), ":1") != NULL,
      "a malformed value stops start-up: %s", error_message ());
  hub_config_clear (&cfg);
  ok (parse_with_file ("data-dir\n", &cfg, NULL) == -1, "a line without '=' is refused");
  hub_config_clear (&cfg);
  ok (parse_with_file ("data-dir =\n", &cfg, NULL) == -1, "an empty value is refused");
  hub_config_clear (&cfg);
  ok (parse_with_file ("insecure-no-auth = true\n", &cfg, NULL) == 0 && cfg.insecure_no_auth,
      "insecure-no-auth = true is read");
  hub_config_clear (&cfg);
  ok (parse_with_file ("insecure-no-auth = true\n", &cfg, "--insecure-no-auth") == 0 &&
      cfg.insecure_no_auth, "--insecure-no-auth is a flag on the command line");
  hub_config_clear (&cfg);
  ok (parse_with_file ("listen = 192.0.2.1:8082\n", &cfg, NULL) == -1 &&
      strstr (error_message (), "--insecure-no-auth") != NULL,
      "off loopback without a token or insecure-no-auth: refused: %s", error_message ());
  hub_config_clear (&cfg);
  ok (parse_with_file ("listen = [::1]:8082\n", &cfg, NULL) == 0, "on loopback no token is needed");
  hub_config_clear (&cfg);
  ok (parse_with_file ("listen = 192.0.2.1:8082\n", &cfg, "--insecure-no-auth") == 0,
      "off loopback with --insecure-no-auth: accepted");
  hub_config_clear (&cfg);
  ok (parse_with_file ("insecure-no-auth = yes\n", &cfg, NULL) == -1 &&
      strstr (error_message (), "true or false") != NULL,
      "insecure-no-auth takes true or false only: %s", error_message ());
  hub_config_clear (&cfg);
  ok (parse_with_file ("tls-cert-file = /etc/c.pem\n", &cfg, NULL) == -1 &&
      strstr (error_message (), "go together") != NULL,
      "tls-cert-file without tls-key-file is refused: %s", error_message ());
  hub_config_clear (&cfg);
  ok (parse_with_file ("tls-cert-file = /etc/c.pem\n", &cfg, "--tls-key-file=/etc/k.pem") == 0 &&
      strcmp (cfg.tls_cert_file, "/etc/c.pem") == 0 && strcmp (cfg.tls_key_file, "/etc/k.pem") == 0,
      "tls-cert-file and tls-key-file together are read");
  hub_config_clear (&cfg);
  char *argv[] = { (char *) "serve", (char *) "--bogus", NULL };
  ok (hub_config_parse (&cfg, 2, argv) == -1, "an unknown option is refused");
  hub_config_clear (&cfg);

  /* --check-config: a command-line mode, never a key; what it prints is a
   * config file that reads back to the same settings. */
  ok (parse_with_file ("check-config = yes\n", &cfg, NULL) == -1 &&
      strstr (error_message (), "unknown key 'check-config'") != NULL,
      "check-config is not a config file key");
  hub_config_clear (&cfg);
  ok (parse_with_file ("workers = 5\nsource-dirs = /srv/a:/srv/b\ninsecure-no-auth = true\n"
                       "tls-cert-file = /c.pem\ntls-key-file = /k.pem\n", &cfg, "--check-config") == 0 &&
      cfg.check_only && cfg.workers == 5, "--check-config parses the file and marks the check");
  char *printed = NULL, *again = NULL;
  size_t len;
  FILE *fp = open_memstream (&printed, &len);
  hub_config_print (&cfg, fp);
  fclose (fp);
  hub_config_clear (&cfg);
  ok (parse_with_file (printed, &cfg, NULL) == 0 && !cfg.check_only,
      "the printed settings parse as a config file");
  fp = open_memstream (&again, &len);
  hub_config_print (&cfg, fp);
  fclose (fp);
  hub_config_clear (&cfg);
  ok (strcmp (printed, again) == 0 && strstr (printed, "workers = 5\n") &&
      strstr (printed, "source-dirs = /srv/a:/srv/b\n") &&
      strstr (printed, "# api-token-file: not set") && strstr (printed, "insecure-no-auth = true\n") &&
      strstr (printed, "tls-key-file = /k.pem\n"),
      "and mean the same settings");
  free (printed);
  free (again);
}

static void
test_relative (void)
{
  struct { const char *from, *to, *want; } cases[] = {
    { "ctx/disk0/b.qcow2", "ctx/disk0/a.qcow2", "a.qcow2" },
    { "ctx/disk0/b.qcow2", "ctx/disk1/a.qcow2", "../disk1/a.qcow2" },
    { "c1/disk0/b.qcow2", "c2/disk0/a.qcow2", "../../c2/disk0/a.qcow2" },
    { "ctx/disk1/b.qcow2", "ctx/disk10/a.qcow2", "../disk10/a.qcow2" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *r = repo_relative (cases[i].from, cases[i].to);
    is_str (r, cases[i].want, "backing path of %s -> %s is relative", cases[i].from,
            cases[i].to);
    free (r);
  }
}

static void
test_errors (void)
{
  is_int (error_http_status (ERR_INVALID), 400, "invalid -> 400");
  is_int (error_http_status (ERR_CONFLICT), 409, "conflict -> 409");
  is_int (error_http_status (ERR_NOT_FOUND), 404, "not found -> 404");
  error_set_errno (ERR_INTERNAL, 28 /* ENOSPC */, "writing");
  is_int (error_category (), ERR_NO_SPACE, "ENOSPC is reported as insufficient storage");
  error_set (ERR_CONFLICT, "inner");
  error_prefix ("outer");
  is_str (error_message (), "outer: inner", "error_prefix adds context");
}

/* proc_run gives both streams; proc_run_stdout standard output alone, with
 * standard error's last line in the error message. */
static void
test_proc (void)
{
  const char *argv[] = { "sh", "-c", "echo out; echo warn >&2; echo last >&2; exit 3", NULL };
  const char *quiet[] = { "sh", "-c", "echo '{\"a\":1}'; echo noise >&2", NULL };
  char *out = NULL;

  is_int (proc_run (argv, &out), -1, "proc_run: exit 3 is a failure");
  ok (out && strstr (out, "out") && strstr (out, "warn"), "with both streams in its output");
  free (out);
  is_int (proc_run_stdout (argv, &out), -1, "proc_run_stdout: exit 3 is a failure");
  is_str (out, "out\n", "its output is standard output alone");
  ok (strstr (error_message (), "exit 3") && strstr (error_message (), "last"),
      "the error names the exit status and standard error's last line: %s", error_message ());
  free (out);
  is_int (proc_run_stdout (quiet, &out), 0, "a success");
  is_str (out, "{\"a\":1}\n", "prints what stays parseable, whatever goes to standard error");
  free (out);
}

/* Every word of each vocabulary parses back to its value; the words are
 * the ones the catalog's CHECK constraints and docs/API.md list; anything
 * else is refused. */
static void
test_states (void)
{
  static const char *const jobs[] = { "running", "finishing", "completed", "failed",
                                      "cancelled", "removing" };
  static const char *const tasks[] = { "running", "completed", "failed" };
  enum task_status ts;
  static const char *const disks[] = { "pending", "running", "completed", "failed" };
  enum job_status js;
  enum disk_status ds;
  enum backup_type bt;
  enum job_driver dr;
  bool all = true;

  for (int i = 0; i < 6; i++)
    all &= job_status_parse (jobs[i], &js) == 0 && strcmp (job_status_name (js), jobs[i]) == 0;
  ok (all, "job statuses round-trip through their text");
  all = true;
  for (int i = 0; i < 4; i++)
    all &= disk_status_parse (disks[i], &ds) == 0 &&
      strcmp (disk_status_name (ds), disks[i]) == 0;
  ok (all, "disk statuses round-trip through their text");
  all = true;
  for (int i = 0; i < 3; i++)
    all &= task_status_parse (tasks[i], &ts) == 0 &&
      strcmp (task_status_name (ts), tasks[i]) == 0;
  ok (all && task_status_parse ("cancelled", &ts) == -1,
      "task statuses round-trip through their text; a job's word is not a task's");
  ok (backup_type_parse ("incremental", &bt) == 0 && bt == BACKUP_INCREMENTAL &&
      strcmp (backup_type_name (BACKUP_FULL), "full") == 0, "backup types");
  ok (job_driver_parse ("hub", &dr) == 0 && dr == DRIVER_HUB &&
      strcmp (job_driver_name (DRIVER_AGENT), "agent") == 0, "drivers");
  ok (job_status_parse ("Running", &js) == -1 && job_status_parse ("", &js) == -1 &&
      job_status_parse (NULL, &js) == -1 && backup_type_parse ("auto", &bt) == -1 &&
      disk_status_parse ("cancelled", &ds) == -1,
      "other words (case, empty, NULL, another vocabulary's) are refused");
  is_str (job_status_name ((enum job_status) 42), "?", "a value outside the enum names itself '?'");
  ok (job_status_active (JOB_RUNNING) && job_status_active (JOB_FINISHING) &&
      !job_status_active (JOB_COMPLETED) && !job_status_active (JOB_REMOVING),
      "running and finishing jobs hold their context; removing ones do not");
  {
    char buf[128], small[8];
    backup_type_words (buf, sizeof buf);
    is_str (buf, "\"full\" or \"incremental\"", "the words of a vocabulary, for a message");
    job_status_words (buf, sizeof buf);
    is_str (buf, "\"running\", \"finishing\", \"completed\", \"failed\", \"cancelled\" "
            "or \"removing\"", "six words: commas, then \"or\"");
    job_status_words (small, sizeof small);
    is_str (small, "\"runnin", "a short buffer is cut, and terminated");
  }
}

/* The hub's replies and the CLI's --json print reals as people wrote them. */
static void
test_json_numbers (void)
{
  json_t *j = json_pack ("[f,f,f,f,I]", 0.045, 0.1 + 0.2, 1.0 / 3, 1.5e20,
                         (json_int_t) 9007199254740993);
  char *compact = json_dumps (j, STRATA_JSON_COMPACT);
  char *pretty = json_dumps (j, STRATA_JSON_PRETTY);

  is_str (compact, "[0.045,0.3,0.333333333333333,1.5e20,9007199254740993]",
          "reals with 15 digits (0.045, not 0.044999999999999998); integers whole");
  ok (pretty && strstr (pretty, "\n  0.045,\n") != NULL, "indented too: %s", pretty);
  free (compact);
  free (pretty);
  json_decref (j);
}

int
main (void)
{
  test_ids ();
  test_vm_names ();
  test_addrs ();
  test_config ();
  test_relative ();
  test_errors ();
  test_proc ();
  test_states ();
  test_json_numbers ();
  return done_testing ();
}
