#include "auth.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"

/* ---- key files ---- */

static int write_key_file(const char *path, int mode, const char *header, const char *pub, const char *sec,
                          ember_err *err) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
  if (fd < 0) return ember_fail(err, EMBER_EIO, "cannot create key file '%s': %s", path, strerror(errno));
  FILE *f = fdopen(fd, "w");
  if (!f) {
    close(fd);
    return ember_fail(err, EMBER_EIO, "cannot write key file '%s': %s", path, strerror(errno));
  }
  fprintf(f, "# %s\npublic-key = \"%s\"\n", header, pub);
  if (sec) fprintf(f, "secret-key = \"%s\"\n", sec);
  int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
  bad |= fclose(f) != 0;
  if (bad) return ember_fail(err, EMBER_EIO, "writing key file '%s' failed: %s", path, strerror(errno));
  return 0;
}

int auth_keygen(const char *dir, const char *name, ember_err *err) {
  char pub[AUTH_KEY_LEN + 1], sec[AUTH_KEY_LEN + 1];
  if (zmq_curve_keypair(pub, sec) != 0)
    return ember_fail(err, EMBER_EIO, "libzmq cannot make CURVE keys: %s", zmq_strerror(zmq_errno()));
  char path_key[4096], path_pub[4096];
  snprintf(path_key, sizeof path_key, "%s/%s.key", dir, name);
  snprintf(path_pub, sizeof path_pub, "%s/%s.pub", dir, name);
  int rc = write_key_file(path_key, 0600, "ember CurveZMQ key pair: keep this file secret", pub, sec, err);
  if (rc) return rc;
  return write_key_file(path_pub, 0644, "ember CurveZMQ public key: give this to the servers that must admit you",
                        pub, NULL, err);
}

/* Parses `field = "value"` lines; returns 1 when the named field was found with a 40-char value. */
static int find_field(const char *line, const char *field, char *out) {
  size_t fl = strlen(field);
  while (*line == ' ' || *line == '\t') line++;
  if (strncmp(line, field, fl) != 0) return 0;
  line += fl;
  while (*line == ' ' || *line == '\t' || *line == '=') line++;
  if (*line == '"') line++;
  size_t n = 0;
  while (line[n] && line[n] != '"' && line[n] != '\n' && line[n] != '\r' && line[n] != ' ') n++;
  if (n != AUTH_KEY_LEN) return -1;
  memcpy(out, line, n);
  out[n] = 0;
  return 1;
}

int auth_load_keys(const char *path, char *public_out, char *secret_out, ember_err *err) {
  FILE *f = fopen(path, "r");
  if (!f) return ember_fail(err, EMBER_ENOENT, "cannot open key file '%s': %s", path, strerror(errno));
  char line[512];
  int have_pub = 0, have_sec = 0, bad = 0;
  while (fgets(line, sizeof line, f)) {
    int r = find_field(line, "public-key", public_out);
    if (r == 1) have_pub = 1;
    if (r < 0) bad = 1;
    if (secret_out) {
      r = find_field(line, "secret-key", secret_out);
      if (r == 1) have_sec = 1;
      if (r < 0) bad = 1;
    }
  }
  fclose(f);
  if (bad) return ember_fail(err, EMBER_EINVAL, "key file '%s' has a key that is not 40 Z85 characters", path);
  if (!have_pub) return ember_fail(err, EMBER_EINVAL, "key file '%s' has no public-key line", path);
  if (secret_out && !have_sec)
    return ember_fail(err, EMBER_EINVAL, "key file '%s' has no secret-key line (is it a .pub file?)", path);
  uint8_t bin[32];
  if (!zmq_z85_decode(bin, public_out) || (secret_out && !zmq_z85_decode(bin, secret_out)))
    return ember_fail(err, EMBER_EINVAL, "key file '%s' holds a key that is not valid Z85", path);
  return 0;
}

/* ---- the ZAP handler ---- */

struct auth_zap {
  void *ctx;
  pthread_t thread;
  int stop;
  uint8_t (*allowed)[32];
  int allowed_count;
  metric *refused, *admitted;
  void *handler; /* REP socket at inproc://zeromq.zap.01, used only by the thread after start */
};

static int add_allowed(auth_zap *z, const char *z85) {
  uint8_t (*grown)[32] = realloc(z->allowed, (size_t)(z->allowed_count + 1) * sizeof *grown);
  if (!grown) return EMBER_ENOMEM;
  z->allowed = grown;
  if (!zmq_z85_decode(z->allowed[z->allowed_count], z85)) return EMBER_EINVAL;
  z->allowed_count++;
  return 0;
}

static int load_allow_list(auth_zap *z, const char *path, ember_err *err) {
  struct stat st;
  if (stat(path, &st) != 0) return ember_fail(err, EMBER_ENOENT, "allow list '%s': %s", path, strerror(errno));
  char key[AUTH_KEY_LEN + 1];
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(path);
    if (!d) return ember_fail(err, EMBER_EIO, "allow list '%s': %s", path, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
      size_t n = strlen(e->d_name);
      if (n < 5 || strcmp(e->d_name + n - 4, ".pub") != 0) continue;
      char file[4096];
      snprintf(file, sizeof file, "%s/%s", path, e->d_name);
      rc = auth_load_keys(file, key, NULL, err);
      if (!rc && add_allowed(z, key)) rc = ember_fail(err, EMBER_EINVAL, "bad key in '%s'", file);
    }
    closedir(d);
    return rc;
  }
  FILE *f = fopen(path, "r");
  if (!f) return ember_fail(err, EMBER_EIO, "allow list '%s': %s", path, strerror(errno));
  char line[512];
  int lineno = 0, rc = 0;
  while (!rc && fgets(line, sizeof line, f)) {
    lineno++;
    int r = find_field(line, "public-key", key);
    if (r < 0) rc = ember_fail(err, EMBER_EINVAL, "allow list '%s' line %d: key is not 40 Z85 characters", path, lineno);
    else if (r == 1 && add_allowed(z, key))
      rc = ember_fail(err, EMBER_EINVAL, "allow list '%s' line %d: key is not valid Z85", path, lineno);
  }
  fclose(f);
  return rc;
}

static int recv_frame(void *sock, char *buf, size_t cap, size_t *len) {
  int n = zmq_recv(sock, buf, cap, 0);
  if (n < 0) return -1;
  *len = (size_t)n < cap ? (size_t)n : cap;
  return 0;
}

static void *zap_thread(void *arg) {
  auth_zap *z = arg;
  zmq_pollitem_t item = {.socket = z->handler, .events = ZMQ_POLLIN};
  while (!__atomic_load_n(&z->stop, __ATOMIC_ACQUIRE)) {
    if (zmq_poll(&item, 1, 100) <= 0) continue;
    char frames[7][256];
    size_t lens[7] = {0};
    int nframes = 0, more = 1;
    while (more && nframes < 7) {
      if (recv_frame(z->handler, frames[nframes], sizeof frames[nframes], &lens[nframes]) != 0) break;
      nframes++;
      size_t sz = sizeof more;
      zmq_getsockopt(z->handler, ZMQ_RCVMORE, &more, &sz);
    }
    while (more) { /* drain anything beyond the 7 frames RFC 27 defines */
      char sink[256];
      size_t l, sz = sizeof more;
      if (recv_frame(z->handler, sink, sizeof sink, &l) != 0) break;
      zmq_getsockopt(z->handler, ZMQ_RCVMORE, &more, &sz);
    }
    int ok = 0;
    const char *why = "not a CURVE handshake";
    /* frames: version, request id, domain, address, routing id, mechanism, client key */
    if (nframes >= 6 && lens[5] == 5 && memcmp(frames[5], "CURVE", 5) == 0) {
      why = "client key is not on the allow list";
      if (nframes == 7 && lens[6] == 32)
        for (int i = 0; i < z->allowed_count && !ok; i++) ok = memcmp(z->allowed[i], frames[6], 32) == 0;
    }
    char address[64] = "?";
    if (nframes >= 4) {
      size_t l = lens[3] < sizeof address - 1 ? lens[3] : sizeof address - 1;
      memcpy(address, frames[3], l);
      address[l] = 0;
    }
    if (ok) {
      metric_inc(z->admitted);
    } else {
      metric_inc(z->refused);
      char client[AUTH_KEY_LEN + 1] = "?";
      if (nframes == 7 && lens[6] == 32) zmq_z85_encode(client, (const uint8_t *)frames[6], 32);
      log_event(LOG_WARN, "auth", "refused connection", LF_STR("address", address), LF_STR("client_key", client),
                LF_STR("reason", why));
    }
    /* reply: version, request id, status code, status text, user id, metadata */
    zmq_send(z->handler, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(z->handler, nframes >= 2 ? frames[1] : "", nframes >= 2 ? lens[1] : 0, ZMQ_SNDMORE);
    zmq_send(z->handler, ok ? "200" : "400", 3, ZMQ_SNDMORE);
    zmq_send(z->handler, ok ? "OK" : why, ok ? 2 : strlen(why), ZMQ_SNDMORE);
    zmq_send(z->handler, "", 0, ZMQ_SNDMORE);
    zmq_send(z->handler, "", 0, 0);
  }
  return NULL;
}

auth_zap *auth_zap_start(void *zmq_context, const char *allow_path, metrics_registry *metrics, ember_err *err) {
  auth_zap *z = calloc(1, sizeof *z);
  if (!z) {
    ember_fail(err, EMBER_ENOMEM, "out of memory");
    return NULL;
  }
  z->ctx = zmq_context;
  if (load_allow_list(z, allow_path, err) != 0) goto fail;
  if (z->allowed_count == 0) {
    ember_fail(err, EMBER_EINVAL, "allow list '%s' lists no public keys: every client would be refused", allow_path);
    goto fail;
  }
  z->refused = metrics_counter(metrics, "auth_refused_total", NULL, "CURVE handshakes refused (key not allowed)");
  z->admitted = metrics_counter(metrics, "auth_admitted_total", NULL, "CURVE handshakes admitted");
  z->handler = zmq_socket(zmq_context, ZMQ_REP);
  int linger = 0;
  if (!z->handler || zmq_setsockopt(z->handler, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
      zmq_bind(z->handler, "inproc://zeromq.zap.01") != 0) {
    ember_fail(err, EMBER_EIO, "cannot start the ZAP handler: %s", zmq_strerror(zmq_errno()));
    goto fail;
  }
  if (pthread_create(&z->thread, NULL, zap_thread, z) != 0) {
    ember_fail(err, EMBER_EIO, "cannot start the ZAP handler thread");
    goto fail;
  }
  return z;
fail:
  if (z->handler) zmq_close(z->handler);
  free(z->allowed);
  free(z);
  return NULL;
}

int auth_zap_allowed_count(const auth_zap *z) { return z ? z->allowed_count : 0; }

void auth_zap_stop(auth_zap **p) {
  if (!p || !*p) return;
  auth_zap *z = *p;
  __atomic_store_n(&z->stop, 1, __ATOMIC_RELEASE);
  pthread_join(z->thread, NULL);
  zmq_close(z->handler);
  free(z->allowed);
  free(z);
  *p = NULL;
}

/* ---- watching a client for refusals ---- */

struct auth_watch {
  void *monitor; /* PAIR connected to the socket's monitor endpoint */
  int refusals;
};

auth_watch *auth_watch_new(void *zmq_context, void *sock, ember_err *err) {
  static int counter;
  char endpoint[64];
  snprintf(endpoint, sizeof endpoint, "inproc://ember-auth-watch-%d", __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
  if (zmq_socket_monitor(sock, endpoint, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) != 0) {
    ember_fail(err, EMBER_EIO, "zmq_socket_monitor: %s", zmq_strerror(zmq_errno()));
    return NULL;
  }
  auth_watch *w = calloc(1, sizeof *w);
  if (!w) {
    ember_fail(err, EMBER_ENOMEM, "out of memory");
    return NULL;
  }
  w->monitor = zmq_socket(zmq_context, ZMQ_PAIR);
  int linger = 0;
  zmq_setsockopt(w->monitor, ZMQ_LINGER, &linger, sizeof linger);
  if (zmq_connect(w->monitor, endpoint) != 0) {
    ember_fail(err, EMBER_EIO, "cannot watch socket: %s", zmq_strerror(zmq_errno()));
    zmq_close(w->monitor);
    free(w);
    return NULL;
  }
  return w;
}

int auth_watch_refusals(auth_watch *w) {
  for (;;) {
    uint8_t event[6];
    int n = zmq_recv(w->monitor, event, sizeof event, ZMQ_DONTWAIT);
    if (n < 0) break;
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(w->monitor, ZMQ_RCVMORE, &more, &sz);
    while (more) {
      char sink[256];
      zmq_recv(w->monitor, sink, sizeof sink, 0);
      zmq_getsockopt(w->monitor, ZMQ_RCVMORE, &more, &sz);
    }
    uint16_t id;
    memcpy(&id, event, sizeof id);
    if (n >= 2 && (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)) w->refusals++;
  }
  return w->refusals;
}

void auth_watch_destroy(auth_watch **p) {
  if (!p || !*p) return;
  zmq_close((*p)->monitor);
  free(*p);
  *p = NULL;
}
