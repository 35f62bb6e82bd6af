/* util/net.h - parsing ADDR:PORT listen addresses. */
#ifndef STRATA_UTIL_NET_H
#define STRATA_UTIL_NET_H

#include <stdbool.h>
#include <sys/socket.h>

struct net_addr {
  char host[64];                 /* numeric, without brackets */
  int port;
  struct sockaddr_storage ss;
  socklen_t len;
  bool ipv6;
};

/* Parse "A.B.C.D:PORT" or "[IPV6]:PORT" (numeric addresses only, port
 * 1..65535).  Returns 0, or -1 with ERR_INVALID and a message naming what
 * is wrong. */
int net_parse_addr (const char *s, struct net_addr *out);

/* True for 0.0.0.0, :: and ::ffff:0.0.0.0, which listen on every
 * interface, however they were spelt. */
bool net_is_wildcard (const struct net_addr *a);
/* True for 127.0.0.0/8 (also IPv4-mapped, ::ffff:127.x.y.z) and ::1. */
bool net_is_loopback (const struct net_addr *a);

#endif
