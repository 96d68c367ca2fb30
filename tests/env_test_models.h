/* env_test_models.h: task models altered for tests, shared by the env and actor suites.
 *
 * write_cheetah_with_one_contact(path): writes common/env/models/half_cheetah.xml with its contact
 * buffer cut from 30 to 1 (nconmax) to path. Under random actions the cheetah touches the floor
 * with more than one contact, MuJoCo drops the extra ones and warns, and the env flags those steps
 * as physics faults. Needs EMBER_SOURCE_DIR (set by tests/CMakeLists.txt). Fails the test on error.
 */
#ifndef EMBER_TESTS_ENV_TEST_MODELS_H
#define EMBER_TESTS_ENV_TEST_MODELS_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void write_cheetah_with_one_contact(const char *path) {
  char src[4200];
  snprintf(src, sizeof src, "%s/common/env/models/half_cheetah.xml", getenv("EMBER_SOURCE_DIR"));
  FILE *in = fopen(src, "rb");
  ck_assert_msg(in != NULL, "cannot read %s", src);
  static char text[16384];
  size_t n = fread(text, 1, sizeof text - 1, in);
  fclose(in);
  text[n] = 0;
  char *cap = strstr(text, "nconmax=\"30\"");
  ck_assert_msg(cap != NULL, "%s no longer says nconmax=\"30\"", src);
  memcpy(cap, "nconmax=\"1\" ", 12); /* same length as nconmax="30" */
  FILE *out = fopen(path, "wb");
  ck_assert_msg(out != NULL, "cannot write %s", path);
  fputs(text, out);
  fclose(out);
}

#endif
