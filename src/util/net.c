/* util/net.c - parsing ADDR:PORT listen addresses. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "util/net.h"

int
net_parse_addr (const char *s, struct net_addr *out)
{
  const char *host, *colon;
  size_t hlen;
  char *end;
  long port;

  memset (out, 0, sizeof *out);
  if (s == NULL || *s == '\0') {
    error_set (ERR_INVALID, "empty address: expected ADDR:PORT");
    return -1;
  }
  if (s[0] == '[') {
    const char *close = strchr (s, ']');
    if (close == NULL || close[1] != ':') {
      error_set (ERR_INVALID, "bad address '%s': expected [IPV6]:PORT", s);
      return -1;
    }
    host = s + 1;
    hlen = close - host;
    colon = close + 1;
    out->ipv6 = true;
  }
  else {
    colon = strrchr (s, ':');
    if (colon == NULL) {
      error_set (ERR_INVALID, "bad address '%s': expected ADDR:PORT", s);
      return -1;
    }
    host = s;
    hlen = colon - s;
  }
  if (hlen == 0 || hlen >= sizeof out->host) {
    error_set (ERR_INVALID, "bad address '%s': missing or overlong host", s);
    return -1;
  }
  memcpy (out->host, host, hlen);
  out->host[hlen] = '\0';

  /* Digits only: strtol alone would take " +80" or "0080". */
  errno = 0;
  port = strtol (colon + 1, &end, 10);
  if (colon[1] < '1' || colon[1] > '9' || *end != '\0' || port < 1 || port > 65535) {
    error_set (ERR_INVALID, "bad port in '%s': expected 1..65535", s);
    return -1;
  }
  out->port = port;

  if (out->ipv6) {
    struct sockaddr_in6 *sa = (struct sockaddr_in6 *) &out->ss;
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons (port);
    if (inet_pton (AF_INET6, out->host, &sa->sin6_addr) != 1) {
      error_set (ERR_INVALID, "bad IPv6 address '%s'", out->host);
      return -1;
    }
    out->len = sizeof *sa;
  }
  else {
    struct sockaddr_in *sa = (struct sockaddr_in *) &out->ss;
    sa->sin_family = AF_INET;
    sa->sin_port = htons (port);
    if (inet_pton (AF_INET, out->host, &sa->sin_addr) != 1) {
      error_set (ERR_INVALID, "bad IPv4 address '%s' (use a numeric address; "
                 "IPv6 goes in brackets)", out->host);
      return -1;
    }
    out->len = sizeof *sa;
  }
  return 0;
}

/* The IPv4 address an address stands for: itself, or the one inside an
 * IPv4-mapped IPv6 address (::ffff:A.B.C.D, which a dual-stack socket binds
 * as A.B.C.D).  False for other IPv6 addresses. */
static bool
ipv4_of (const struct net_addr *a, uint32_t *v4)
{
  const struct in6_addr *in6;

  if (!a->ipv6) {
    *v4 = ntohl (((const struct sockaddr_in *) &a->ss)->sin_addr.s_addr);
    return true;
  }
  in6 = &((const struct sockaddr_in6 *) &a->ss)->sin6_addr;
  if (!IN6_IS_ADDR_V4MAPPED (in6))
    return false;
  *v4 = ntohl (in6->s6_addr32[3]);
  return true;
}

/* Both tests look at the parsed socket address, never at the text: the
 * same address has many spellings ([::0], [0:0::0], [::ffff:0.0.0.0]...). */
bool
net_is_wildcard (const struct net_addr *a)
{
  uint32_t v4;

  if (ipv4_of (a, &v4))
    return v4 == INADDR_ANY;
  return IN6_IS_ADDR_UNSPECIFIED (&((const struct sockaddr_in6 *) &a->ss)->sin6_addr);
}

bool
net_is_loopback (const struct net_addr *a)
{
  uint32_t v4;

  if (ipv4_of (a, &v4))
    return (v4 >> 24) == 127;
  return IN6_IS_ADDR_LOOPBACK (&((const struct sockaddr_in6 *) &a->ss)->sin6_addr);
}
