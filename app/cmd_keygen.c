/* cmd_keygen.c: `ember keygen DIR NAME`: a CurveZMQ key pair, DIR/NAME.key (0600, both keys) and
 * DIR/NAME.pub (the public key, to put in a server's allow directory), by auth_keygen. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "app.h"
#include "auth.h"

static void usage(FILE *out) {
  fprintf(out, "usage: ember keygen DIR NAME\n"
               "Writes a CurveZMQ key pair: DIR/NAME.key (mode 0600, public and secret key: this program's\n"
               "security.key_file) and DIR/NAME.pub (the public key: copy it into a server's\n"
               "security.allow_dir, or give a server's .pub to its clients as security.server_key_file).\n"
               "Existing files are never overwritten. DIR is created when missing.\n");
}

int app_keygen(int argc, char **argv) {
  for (int i = 2; i < argc; i++)
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    }
  if (argc != 4 || argv[2][0] == '-' || argv[3][0] == '-') {
    fprintf(stderr, "ember keygen: expected DIR NAME\n");
    usage(stderr);
    return 2;
  }
  const char *name = argv[3];
  if (!name[0] || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
    fprintf(stderr, "ember keygen: NAME '%s' must be a plain file name (no '/')\n", name);
    return 2;
  }
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", argv[2]);
  for (char *p = dir + 1;; p++) { /* mkdir -p */
    char c = *p;
    if (c != '/' && c != 0) continue;
    *p = 0;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
      fprintf(stderr, "ember keygen: cannot create directory %s: %s\n", dir, strerror(errno));
      return 1;
    }
    *p = c;
    if (!c) break;
  }
  ember_err err = {0};
  if (auth_keygen(argv[2], name, &err) != 0) {
    fprintf(stderr, "ember keygen: %s\n", err.msg);
    return 1;
  }
  printf("ember keygen: wrote %s/%s.key (secret, mode 0600) and %s/%s.pub\n", argv[2], name, argv[2], name);
  return 0;
}
