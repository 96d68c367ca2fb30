/* docs/protocol.md and docs/replay.md against the code they describe (outside clients are written
 * from these pages): the error-code table names every code as common/err.h does and lists every code
 * the replay server answers with; the refusal table has a row for every refusal reason, with the
 * code the server sends for it; every setting the pages name exists (in a section that exists), and
 * the replay settings table lists every replay.* key. */
#include <check.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "replay_server.h"
#include "replay_server_impl.h"

static char *read_doc(const char *name) {
  const char *root = getenv("EMBER_SOURCE_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/docs/%s", root && *root ? root : "..", name);
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s (EMBER_SOURCE_DIR)", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *text = calloc(1, (size_t)n + 1);
  ck_assert_uint_eq(fread(text, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  return text;
}

/* The text from the heading line `heading` to the next heading of the same or a higher level. */
static char *section(const char *doc, const char *heading) {
  const char *start = strstr(doc, heading);
  ck_assert_msg(start != NULL, "no heading '%s'", heading);
  size_t level = strspn(heading, "#");
  const char *end = start + strlen(heading);
  while ((end = strstr(end, "\n#")) != NULL) {
    size_t l = strspn(end + 1, "#");
    if (l <= level && end[1 + l] == ' ') break;
    end++;
  }
  size_t n = end ? (size_t)(end - start) : strlen(start);
  char *s = calloc(1, n + 1);
  memcpy(s, start, n);
  return s;
}

/* The line of text that starts with prefix, or NULL. Caller frees. */
static char *line_starting(const char *text, const char *prefix) {
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (strncmp(p, prefix, strlen(prefix)) == 0) {
      size_t n = strcspn(p, "\n");
      char *line = calloc(1, n + 1);
      memcpy(line, p, n);
      return line;
    }
  return NULL;
}

START_TEST(error_code_table_matches_err_h_and_the_server) {
  char *doc = read_doc("protocol.md");
  char *table = section(doc, "## Error codes");
  bool listed[64] = {false};
  int rows = 0;
  for (const char *p = table; (p = strstr(p, "\n| ")) != NULL; p++) {
    int code;
    char name[32];
    if (sscanf(p, "\n| %d | %31[A-Z] |", &code, name) != 2) continue;
    ck_assert_msg(code > 0 && code < 64, "code %d", code);
    ck_assert_msg(strcmp(ember_strerror(-code), name) == 0, "docs say code %d is %s, err.h says %s", code, name,
                  ember_strerror(-code));
    listed[code] = true;
    rows++;
  }
  for (int code = 1; strcmp(ember_strerror(-code), "EUNKNOWN") != 0; code++)
    ck_assert_msg(listed[code], "code %d (%s) is missing from the table", code, ember_strerror(-code));
  ck_assert_int_ge(rows, 14);
  for (int r = 0; r < R_COUNT; r++)
    ck_assert_msg(listed[-srv_reason_codes[r]], "the server answers %s with %s, not in the table", srv_reason_names[r],
                  ember_strerror(srv_reason_codes[r]));
  free(table);
  free(doc);
}
END_TEST

START_TEST(refusal_table_has_every_reason_with_its_code) {
  char *doc = read_doc("protocol.md");
  char *table = section(doc, "### What the server refuses");
  for (int r = 0; r < R_COUNT; r++) {
    char prefix[96], code[32];
    snprintf(prefix, sizeof prefix, "| `%s` |", srv_reason_names[r]);
    char *line = line_starting(table, prefix);
    ck_assert_msg(line != NULL, "reason %s has no row in the refusal table", srv_reason_names[r]);
    snprintf(code, sizeof code, "(%s", ember_strerror(srv_reason_codes[r]));
    ck_assert_msg(strstr(line, code) != NULL, "row of %s does not give its code %s: %s", srv_reason_names[r], code + 1,
                  line);
    free(line);
  }
  free(table);
  free(doc);
}
END_TEST

static bool is_replay_key(const char *key) {
  for (size_t i = 0; i < replay_config_section.nfields; i++)
    if (strcmp(replay_config_section.fields[i].name, key) == 0) return true;
  return false;
}

/* Every `section.key` in backquotes names an existing section (and, for replay, an existing key). */
static void check_settings_named_in(const char *name) {
  static const char *const sections[] = {"train", "metrics", "security", "run",       "learner",
                                         "actor", "sac",     "vmbpo",    "vmbpo_mfe", "replay"};
  static const char *const extensions[] = {"h", "c", "md", "proto", "yaml", "yml", "sh", "json", "csv", "snap",
                                           "tmp", "corrupt", "log", "txt", "py", "png", "cmake"};
  char *doc = read_doc(name);
  for (const char *p = doc; (p = strchr(p, '`')) != NULL; p++) {
    char prefix[64], key[64];
    int used = 0;
    if (sscanf(p, "`%63[a-z_].%63[a-z_0-9]`%n", prefix, key, &used) != 2 || used == 0) continue;
    bool file = false;
    for (size_t i = 0; i < sizeof extensions / sizeof *extensions; i++) file |= strcmp(key, extensions[i]) == 0;
    if (file) continue;
    bool known = false;
    for (size_t i = 0; i < sizeof sections / sizeof *sections; i++) known |= strcmp(prefix, sections[i]) == 0;
    ck_assert_msg(known, "%s names the setting `%s.%s`: there is no section '%s'", name, prefix, key, prefix);
    if (strcmp(prefix, "replay") == 0)
      ck_assert_msg(is_replay_key(key), "%s names `replay.%s`, which does not exist", name, key);
    p += used - 1;
  }
  free(doc);
}

START_TEST(settings_named_in_the_docs_exist) {
  check_settings_named_in("protocol.md");
  check_settings_named_in("replay.md");
  char *doc = read_doc("replay.md");
  char *table = section(doc, "## Settings");
  for (size_t i = 0; i < replay_config_section.nfields; i++) {
    char quoted[80];
    snprintf(quoted, sizeof quoted, "`%s`", replay_config_section.fields[i].name);
    ck_assert_msg(strstr(table, quoted) != NULL, "replay.%s is missing from replay.md's settings table",
                  replay_config_section.fields[i].name);
  }
  free(table);
  free(doc);
}
END_TEST

int main(void) {
  Suite *s = suite_create("replay_docs");
  TCase *tc = tcase_create("docs");
  tcase_add_test(tc, error_code_table_matches_err_h_and_the_server);
  tcase_add_test(tc, refusal_table_has_every_reason_with_its_code);
  tcase_add_test(tc, settings_named_in_the_docs_exist);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
