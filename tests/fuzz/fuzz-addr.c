/* tests/fuzz/fuzz-addr.c - libFuzzer target for ADDR:PORT listen addresses.
 *
 * net_parse_addr reads --listen and --nbd-listen from the command line and
 * the config file.  An accepted address must be what util/net.h promises:
 * a port in 1..65535, a numeric host that inet_pton takes for the family
 * chosen, and a socket address that says the same thing.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/net.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *s = fuzz_cstr (data, size);
  struct net_addr a;

  error_clear ();
  if (net_parse_addr (s, &a) == 0) {
    size_t hlen = strnlen (a.host, sizeof a.host);

    CHECK (a.port >= 1 && a.port <= 65535);
    CHECK (hlen >= 1 && hlen < sizeof a.host);
    if (a.ipv6) {
      const struct sockaddr_in6 *sa = (const struct sockaddr_in6 *) &a.ss;
      struct in6_addr again;
      CHECK (s[0] == '[');
      CHECK (a.len == sizeof *sa && sa->sin6_family == AF_INET6);
      CHECK (ntohs (sa->sin6_port) == a.port);
      CHECK (inet_pton (AF_INET6, a.host, &again) == 1);
      CHECK (memcmp (&again, &sa->sin6_addr, sizeof again) == 0);
    }
    else {
      const struct sockaddr_in *sa = (const struct sockaddr_in *) &a.ss;
      struct in_addr again;
      CHECK (a.len == sizeof *sa && sa->sin_family == AF_INET);
      CHECK (ntohs (sa->sin_port) == a.port);
      CHECK (inet_pton (AF_INET, a.host, &again) == 1);
      CHECK (again.s_addr == sa->sin_addr.s_addr);
    }
    /* The host is a prefix of the input (after '[' for IPv6). */
    CHECK (strncmp (s + a.ipv6, a.host, hlen) == 0);
    (void) net_is_wildcard (&a);
    (void) net_is_loopback (&a);
  }
  else
    fuzz_check_invalid ();

  free (s);
  return 0;
}
