/* hub/tls.c - the API's TLS certificate and key: read from --tls-cert-file
 * and --tls-key-file, or, for a hub whose API listens off loopback with
 * neither given, a self-signed pair made at its first start in
 * DATA-DIR/tls/ and read from there afterwards.  Either way the
 * certificate's SHA-256 fingerprint and its public key's pin (what
 * `strata COMMAND --pin-sha256` takes) are logged.
 *
 * Read once by hub_tls_open at start and read-only afterwards: no lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "hub/hub-int.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/log.h"

#define TLS_FILE_MAX (1024 * 1024)
#define TLS_SELF_SIGNED_DAYS 3650

/* A file's whole content, NUL-terminated (caller frees), or NULL. */
static char *
read_pem (const char *what, const char *file, bool secret)
{
  CLEANUP_FD int fd = open (file, O_RDONLY | O_CLOEXEC);
  struct stat st;
  char *buf;
  ssize_t n;

  if (fd == -1 || fstat (fd, &st) == -1) {
    error_set_errno (ERR_INVALID, errno, "%s %s", what, file);
    return NULL;
  }
  if (!S_ISREG (st.st_mode) || st.st_size <= 0 || st.st_size > TLS_FILE_MAX) {
    error_set (ERR_INVALID, "%s %s: not a PEM file of at most 1 MiB", what, file);
    return NULL;
  }
  if (secret && (st.st_mode & 077))
    log_warn ("%s %s can be read by other users; chmod 600 it", what, file);
  buf = malloc (st.st_size + 1);
  if (buf == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return NULL;
  }
  n = read (fd, buf, st.st_size);
  if (n != st.st_size) {
    error_set_errno (ERR_INVALID, n == -1 ? errno : EIO, "reading %s %s", what, file);
    free (buf);
    return NULL;
  }
  buf[n] = '\0';
  if (strlen (buf) != (size_t) n) {
    error_set (ERR_INVALID, "%s %s: NUL byte in a PEM file", what, file);
    free (buf);
    return NULL;
  }
  return buf;
}

/* Write data to path through a temporary file, so that a crash leaves the
 * old file or the new one, never half of one. */
static int
write_atomic (const char *path, const void *data, size_t len, mode_t mode)
{
  CLEANUP_FREE char *tmp = NULL;
  int fd, err = 0;

  if (asprintf (&tmp, "%s.tmp", path) == -1) {
    tmp = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return -1;
  }
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd == -1 || write (fd, data, len) != (ssize_t) len || fsync (fd) == -1)
    err = errno ? errno : EIO;
  if (fd != -1 && close (fd) == -1 && err == 0)
    err = errno;
  if (err == 0 && rename (tmp, path) == -1)
    err = errno;
  if (err) {
    unlink (tmp);
    error_set_errno (ERR_INTERNAL, err, "writing %s", path);
    return -1;
  }
  return 0;
}

/* The certificate's SHA-256 fingerprint ("AB:CD:...", as certtool and
 * openssl print it) and its public key's pin: the base64 of the SHA-256
 * of its DER SubjectPublicKeyInfo, which is what curl's
 * CURLOPT_PINNEDPUBLICKEY "sha256//" compares. */
static int
cert_describe (gnutls_x509_crt_t crt, char *fp, size_t fp_len, char *pin, size_t pin_len)
{
  unsigned char digest[32];
  size_t n = sizeof digest;
  gnutls_pubkey_t pub = NULL;
  gnutls_datum_t spki = { NULL, 0 }, b64 = { NULL, 0 };
  gnutls_datum_t d = { digest, sizeof digest };
  int r;

  if (gnutls_x509_crt_get_fingerprint (crt, GNUTLS_DIG_SHA256, digest, &n) < 0 ||
      n != sizeof digest || fp_len < 3 * sizeof digest) {
    error_set (ERR_INTERNAL, "computing the certificate's fingerprint");
    return -1;
  }
  for (size_t i = 0; i < n; i++)
    snprintf (fp + 3 * i, fp_len - 3 * i, i + 1 < n ? "%02X:" : "%02X", digest[i]);

  r = gnutls_pubkey_init (&pub);
  if (r >= 0)
    r = gnutls_pubkey_import_x509 (pub, crt, 0);
  if (r >= 0)
    r = gnutls_pubkey_export2 (pub, GNUTLS_X509_FMT_DER, &spki);
  if (r >= 0)
    r = gnutls_hash_fast (GNUTLS_DIG_SHA256, spki.data, spki.size, digest);
  if (r >= 0)
    r = gnutls_base64_encode2 (&d, &b64);
  if (r >= 0 && b64.size + 1 > pin_len)
    r = GNUTLS_E_SHORT_MEMORY_BUFFER;
  if (r >= 0) {
    memcpy (pin, b64.data, b64.size);
    pin[b64.size] = '\0';
  }
  else
    error_set (ERR_INTERNAL, "computing the public key's pin: %s", gnutls_strerror (r));
  gnutls_free (spki.data);
  gnutls_free (b64.data);
  gnutls_pubkey_deinit (pub);
  return r < 0 ? -1 : 0;
}

/* Check that cert_pem holds a certificate and key_pem its private key,
 * and log what clients need to trust it. */
static int
check_pair (const char *cert_pem, const char *key_pem, const char *cert_file,
            const char *key_file)
{
  gnutls_datum_t cd = { (unsigned char *) cert_pem, strlen (cert_pem) };
  gnutls_datum_t kd = { (unsigned char *) key_pem, strlen (key_pem) };
  gnutls_x509_crt_t crt = NULL;
  gnutls_x509_privkey_t key = NULL;
  unsigned char cid[64], kid[64];
  size_t clen = sizeof cid, klen = sizeof kid;
  char fp[100], pin[64];
  int r, ret = -1;

  if (gnutls_x509_crt_init (&crt) < 0 || gnutls_x509_privkey_init (&key) < 0) {
    error_set (ERR_INTERNAL, "out of memory");
    goto out;
  }
  if ((r = gnutls_x509_crt_import (crt, &cd, GNUTLS_X509_FMT_PEM)) < 0) {
    error_set (ERR_INVALID, "TLS certificate %s: %s", cert_file, gnutls_strerror (r));
    goto out;
  }
  if ((r = gnutls_x509_privkey_import2 (key, &kd, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
    error_set (ERR_INVALID, "TLS key %s: %s (an unencrypted PEM key is needed)", key_file,
               gnutls_strerror (r));
    goto out;
  }
  if (gnutls_x509_crt_get_key_id (crt, GNUTLS_KEYID_USE_SHA256, cid, &clen) < 0 ||
      gnutls_x509_privkey_get_key_id (key, GNUTLS_KEYID_USE_SHA256, kid, &klen) < 0 ||
      clen != klen || memcmp (cid, kid, clen) != 0) {
    error_set (ERR_INVALID, "TLS key %s is not the key of the certificate %s", key_file,
               cert_file);
    goto out;
  }
  if (gnutls_x509_crt_get_expiration_time (crt) < time (NULL))
    log_warn ("TLS certificate %s has expired: clients will refuse it", cert_file);
  if (cert_describe (crt, fp, sizeof fp, pin, sizeof pin) == -1)
    goto out;
  log_info ("API TLS certificate %s: SHA-256 fingerprint %s; clients trust it with "
            "--ca-file %s or --pin-sha256 %s", cert_file, fp, cert_file, pin);
  ret = 0;
 out:
  gnutls_x509_crt_deinit (crt);
  gnutls_x509_privkey_deinit (key);
  return ret;
}

/* Make a self-signed certificate and its key (ECDSA P-256, ten years),
 * named for this host and the API's address, into *cert_pem and *key_pem
 * (caller frees both). */
static int
make_self_signed (struct hub *hub, char **cert_pem, char **key_pem)
{
  gnutls_x509_privkey_t key = NULL;
  gnutls_x509_crt_t crt = NULL;
  gnutls_datum_t kd = { NULL, 0 }, cd = { NULL, 0 };
  unsigned char serial[16], keyid[64];
  size_t keyid_len = sizeof keyid;
  char host[256] = "", cn[300];
  time_t now = time (NULL);
  int r;

  *cert_pem = *key_pem = NULL;
  if (gethostname (host, sizeof host - 1) == -1 || *host == '\0')
    strcpy (host, "localhost");
  snprintf (cn, sizeof cn, "strata hub %s", host);
  r = gnutls_x509_privkey_init (&key);
  if (r >= 0)
    r = gnutls_x509_privkey_generate (key, GNUTLS_PK_ECDSA,
                                      GNUTLS_CURVE_TO_BITS (GNUTLS_ECC_CURVE_SECP256R1), 0);
  if (r >= 0)
    r = gnutls_x509_crt_init (&crt);
  if (r >= 0)
    r = gnutls_rnd (GNUTLS_RND_NONCE, serial, sizeof serial);
  serial[0] = (serial[0] & 0x3f) | 0x40;     /* positive, and all 16 bytes */
  if (r >= 0)
    r = gnutls_x509_crt_set_version (crt, 3);
  if (r >= 0)
    r = gnutls_x509_crt_set_serial (crt, serial, sizeof serial);
  if (r >= 0)
    r = gnutls_x509_crt_set_activation_time (crt, now - 3600);
  if (r >= 0)
    r = gnutls_x509_crt_set_expiration_time (crt, now + (time_t) TLS_SELF_SIGNED_DAYS * 86400);
  if (r >= 0)
    r = gnutls_x509_crt_set_dn_by_oid (crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn, strlen (cn));
  if (r >= 0)
    r = gnutls_x509_crt_set_key (crt, key);
  if (r >= 0)
    r = gnutls_x509_crt_set_basic_constraints (crt, 0, -1);
  if (r >= 0)
    r = gnutls_x509_crt_set_key_usage (crt, GNUTLS_KEY_DIGITAL_SIGNATURE);
  if (r >= 0)
    r = gnutls_x509_crt_set_key_purpose_oid (crt, GNUTLS_KP_TLS_WWW_SERVER, 0);
  if (r >= 0)
    r = gnutls_x509_crt_set_subject_alt_name (crt, GNUTLS_SAN_DNSNAME, host, strlen (host),
                                              GNUTLS_FSAN_APPEND);
  if (r >= 0 && !net_is_wildcard (&hub->listen)) {
    /* The address clients reach the API at, so that --ca-file works with
     * an https://ADDRESS:PORT hub URL. */
    if (hub->listen.ipv6) {
      const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *) &hub->listen.ss;
      r = gnutls_x509_crt_set_subject_alt_name (crt, GNUTLS_SAN_IPADDRESS, &s6->sin6_addr,
                                                16, GNUTLS_FSAN_APPEND);
    }
    else {
      const struct sockaddr_in *s4 = (const struct sockaddr_in *) &hub->listen.ss;
      r = gnutls_x509_crt_set_subject_alt_name (crt, GNUTLS_SAN_IPADDRESS, &s4->sin_addr,
                                                4, GNUTLS_FSAN_APPEND);
    }
  }
  if (r >= 0)
    r = gnutls_x509_crt_get_key_id (crt, 0, keyid, &keyid_len);
  if (r >= 0)
    r = gnutls_x509_crt_set_subject_key_id (crt, keyid, keyid_len);
  if (r >= 0)
    r = gnutls_x509_crt_sign2 (crt, crt, key, GNUTLS_DIG_SHA256, 0);
  if (r >= 0)
    r = gnutls_x509_crt_export2 (crt, GNUTLS_X509_FMT_PEM, &cd);
  if (r >= 0)
    r = gnutls_x509_privkey_export2_pkcs8 (key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN,
                                           &kd);
  if (r >= 0 && ((*cert_pem = strndup ((char *) cd.data, cd.size)) == NULL ||
                 (*key_pem = strndup ((char *) kd.data, kd.size)) == NULL))
    r = GNUTLS_E_MEMORY_ERROR;
  if (r < 0) {
    error_set (ERR_INTERNAL, "making a self-signed TLS certificate: %s", gnutls_strerror (r));
    free (*cert_pem);
    free (*key_pem);
    *cert_pem = *key_pem = NULL;
  }
  if (kd.data) {
    gnutls_memset (kd.data, 0, kd.size);
    gnutls_free (kd.data);
  }
  gnutls_free (cd.data);
  gnutls_x509_crt_deinit (crt);
  gnutls_x509_privkey_deinit (key);
  return r < 0 ? -1 : 0;
}

/* DATA-DIR/tls/api-cert.pem and api-key.pem: made when either is missing
 * (a crash between the two renames leaves a key without a certificate,
 * which is of no use to anyone), read otherwise. */
static int
self_signed_open (struct hub *hub, char **cert_file, char **key_file)
{
  CLEANUP_FREE char *dir = NULL;
  CLEANUP_FREE char *cert = NULL;
  CLEANUP_FREE char *key = NULL;
  bool have_cert, have_key;

  if (asprintf (&dir, "%s/tls", hub->cfg.data_dir) == -1 ||
      asprintf (cert_file, "%s/api-cert.pem", dir) == -1 ||
      asprintf (key_file, "%s/api-key.pem", dir) == -1) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return -1;
  }
  have_cert = access (*cert_file, F_OK) == 0;
  have_key = access (*key_file, F_OK) == 0;
  if (have_cert && have_key)
    return 0;
  if (have_cert || have_key)
    log_warn ("%s holds only half of the API's TLS pair: making a new one", dir);
  if (mkdir (dir, 0700) == -1 && errno != EEXIST) {
    error_set_errno (ERR_INVALID, errno, "creating %s", dir);
    return -1;
  }
  if (make_self_signed (hub, &cert, &key) == -1 ||
      write_atomic (*key_file, key, strlen (key), 0600) == -1 ||
      write_atomic (*cert_file, cert, strlen (cert), 0644) == -1)
    return -1;
  explicit_bzero (key, strlen (key));
  log_info ("the API listens on %s with no --tls-cert-file: made a self-signed TLS "
            "certificate, %s", hub->cfg.listen, *cert_file);
  return 0;
}

int
hub_tls_open (struct hub *hub)
{
  CLEANUP_FREE char *made_cert = NULL;
  CLEANUP_FREE char *made_key = NULL;
  const char *cert_file = hub->cfg.tls_cert_file, *key_file = hub->cfg.tls_key_file;

  if (cert_file == NULL && key_file == NULL) {
    if (net_is_loopback (&hub->listen))
      return 0;                 /* plain HTTP on loopback */
    if (self_signed_open (hub, &made_cert, &made_key) == -1)
      return -1;
    cert_file = made_cert;
    key_file = made_key;
  }
  if ((hub->tls_cert = read_pem ("TLS certificate", cert_file, false)) == NULL ||
      (hub->tls_key = read_pem ("TLS key", key_file, true)) == NULL ||
      check_pair (hub->tls_cert, hub->tls_key, cert_file, key_file) == -1) {
    hub_tls_clear (hub);
    return -1;
  }
  return 0;
}

void
hub_tls_clear (struct hub *hub)
{
  if (hub->tls_key)
    explicit_bzero (hub->tls_key, strlen (hub->tls_key));
  free (hub->tls_key);
  free (hub->tls_cert);
  hub->tls_key = hub->tls_cert = NULL;
}

bool
hub_api_tls (struct hub *hub, const char **cert_pem, const char **key_pem)
{
  *cert_pem = hub->tls_cert;
  *key_pem = hub->tls_key;
  return hub->tls_cert != NULL;
}
