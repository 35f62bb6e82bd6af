/* main.c - the strata command: dispatches subcommands, nothing more. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "agent/agent.h"
#include "api/api.h"
#include "cli/cli.h"
#include "hub/hub.h"
#include "util/error.h"
#include "util/log.h"

static void
usage (FILE *fp)
{
  fprintf (fp,
"Usage: strata COMMAND [OPTION]...\n"
"strata is a backup hub for virtual machines.\n"
"\n"
"Commands:\n"
"  serve      run the hub: REST API, catalog, repositories, NBD targets\n"
"             (strata serve --help for its options)\n"
"  migrate-legacy\n"
"             upgrade a legacy flat backup_jobs catalog to contexts\n"
"             (strata migrate-legacy --help)\n"
"  rebuild-catalog\n"
"             rebuild a lost catalog from the manifests in the repositories\n"
"             (strata rebuild-catalog --help)\n"
"  backup     back up a VM's disks into a hub (strata backup --help)\n"
"  restore    bring a backed-up disk back, as a file or an NBD export\n"
"             (strata restore --help)\n"
"  prune      remove the backups retention rules do not keep, merging them\n"
"             into the points that stay (strata prune --help)\n"
"  verify     read back a backup's chain and check it against its hashes\n"
"             (strata verify --help)\n"
"  vms        list the VMs of the inventory\n"
"  contexts   list the backup contexts: points, last backup, bytes used,\n"
"             verify state, overdue\n"
"  backups    list backups (--vm, --repository, --status, --limit)\n"
"  show       show one backup: its disks, files, change ids and chains\n"
"  jobs       list the running backups with each disk's progress\n"
"             (each: strata COMMAND --help; --json for scripts)\n"
"  help       show this help\n"
"  version    print the version\n"
"\n"
"Exit status: 0 on success, 1 on failure, 2 on a usage error; the commands\n"
"that talk to a hub also use 3 (hub unreachable or refused) and backup,\n"
"restore, prune and verify 4 (conflict).\n");
}

/* The API takes up to 1024 connections, each a descriptor: lift the soft
 * limit on open files to the hard one. */
static void
raise_file_limit (void)
{
  struct rlimit rl;

  if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit (RLIMIT_NOFILE, &rl);
  }
}

/* Run the hub until SIGINT or SIGTERM; SIGHUP reads its token and key
 * files again. */
static int
cmd_serve (int argc, char **argv)
{
  struct hub_config cfg;
  struct hub *hub;
  struct api *api;
  sigset_t set;
  int r, sig;

  r = hub_config_parse (&cfg, argc, argv);
  if (r == 1)
    return 0;
  if (r == -1) {
    fprintf (stderr, "strata serve: %s\n", error_message ());
    hub_config_clear (&cfg);
    return 2;
  }
  if (cfg.check_only) {
    hub_config_print (&cfg, stdout);
    hub_config_clear (&cfg);
    return 0;
  }
  if (getenv ("STRATA_DEBUG"))
    log_set_level (LOG_DEBUG);

  /* Block the signals before any thread starts, so only sigwait sees them. */
  sigemptyset (&set);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGHUP);
  pthread_sigmask (SIG_BLOCK, &set, NULL);
  signal (SIGPIPE, SIG_IGN);
  raise_file_limit ();

  hub = hub_open (&cfg);
  if (hub == NULL) {
    log_error ("%s", error_message ());
    return 1;
  }
  api = api_start (hub);
  if (api == NULL) {
    log_error ("%s", error_message ());
    hub_close (hub);
    return 1;
  }
  log_info ("strata %s ready (catalog %s, NBD on %s)", STRATA_VERSION,
            catalog_backend_name (hub_catalog (hub)), hub_nbd_listen (hub));
  while (sigwait (&set, &sig) == 0 && sig == SIGHUP)
    hub_reload (hub);
  log_info ("signal %d: shutting down", sig);
  api_stop (api);
  hub_close (hub);
  return 0;
}

int
main (int argc, char **argv)
{
  if (argc < 2) {
    usage (stderr);
    return 2;
  }
  if (strcmp (argv[1], "serve") == 0)
    return cmd_serve (argc - 1, argv + 1);
  if (strcmp (argv[1], "migrate-legacy") == 0)
    return cli_migrate_legacy (argc - 1, argv + 1);
  if (strcmp (argv[1], "rebuild-catalog") == 0)
    return cli_rebuild_catalog (argc - 1, argv + 1);
  if (strcmp (argv[1], "backup") == 0)
    return agent_backup_main (argc - 1, argv + 1);
  if (strcmp (argv[1], "restore") == 0)
    return agent_restore_main (argc - 1, argv + 1);
  if (strcmp (argv[1], "prune") == 0)
    return agent_prune_main (argc - 1, argv + 1);
  if (strcmp (argv[1], "verify") == 0)
    return agent_verify_main (argc - 1, argv + 1);
  if (agent_is_listing (argv[1]))
    return agent_list_main (argc - 1, argv + 1);
  if (strcmp (argv[1], "help") == 0 || strcmp (argv[1], "--help") == 0 ||
      strcmp (argv[1], "-h") == 0) {
    usage (stdout);
    return 0;
  }
  if (strcmp (argv[1], "version") == 0 || strcmp (argv[1], "--version") == 0) {
    printf ("strata %s\n", STRATA_VERSION);
    return 0;
  }
  fprintf (stderr, "strata: unknown command '%s'\n", argv[1]);
  usage (stderr);
  return 2;
}
