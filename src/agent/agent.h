/* agent/agent.h - the client commands: `strata backup`, `strata restore`,
 * `strata prune`, `strata verify` and the listings (`strata vms`,
 * `contexts`, `backups`, `show`, `jobs`).
 * Each returns the process exit status (see EXIT_* below and --help). */
#ifndef STRATA_AGENT_AGENT_H
#define STRATA_AGENT_AGENT_H

#include <stdbool.h>

enum {
  AGENT_EXIT_OK = 0,
  AGENT_EXIT_FAILED = 1,      /* the backup or restore failed */
  AGENT_EXIT_USAGE = 2,       /* bad options, arguments or disks */
  AGENT_EXIT_HUB = 3,         /* hub unreachable, or it refused the request */
  AGENT_EXIT_CONFLICT = 4,    /* a backup of the VM is already running */
};

int agent_backup_main (int argc, char **argv);
int agent_restore_main (int argc, char **argv);
int agent_prune_main (int argc, char **argv);
int agent_verify_main (int argc, char **argv);
/* The listings (agent/list.c): whether command is one of vms, contexts,
 * backups, show and jobs; run it (argv[0] is the command). */
bool agent_is_listing (const char *command);
int agent_list_main (int argc, char **argv);

#endif
