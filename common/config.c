#include "config.h"

#include <ctype.h>
#include <cyaml/cyaml.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- parsing one value from text (defaults, --set, environment) ---- */

static int parse_value(const config_section *sec, const config_field *f, void *target, const char *text,
                       const char *source, ember_err *err) {
  char *end;
  char *slot = (char *)target + f->offset;
  switch (f->type) {
    case CONFIG_INT: {
      errno = 0;
      long long v = strtoll(text, &end, 10);
      if (errno || end == text || *end) {
        /* accept integral floating forms such as 1e6 */
        double d = strtod(text, &end);
        if (end == text || *end || !isfinite(d) || d != floor(d) || fabs(d) > 9.2e18)
          return ember_fail(err, EMBER_EINVAL, "%s.%s: '%s' is not an integer (from %s)", sec->name, f->name, text,
                            source);
        v = (long long)d;
      }
      if ((double)v < f->min || (double)v > f->max)
        return ember_fail(err, EMBER_EINVAL, "%s.%s = %lld is out of range [%.17g, %.17g] (from %s)", sec->name,
                          f->name, v, f->min, f->max, source);
      int64_t x = v;
      memcpy(slot, &x, sizeof x);
      return 0;
    }
    case CONFIG_FLOAT: {
      double d = strtod(text, &end);
      if (end == text || *end || !isfinite(d))
        return ember_fail(err, EMBER_EINVAL, "%s.%s: '%s' is not a finite number (from %s)", sec->name, f->name, text,
                          source);
      if (d < f->min || d > f->max)
        return ember_fail(err, EMBER_EINVAL, "%s.%s = %g is out of range [%g, %g] (from %s)", sec->name, f->name, d,
                          f->min, f->max, source);
      memcpy(slot, &d, sizeof d);
      return 0;
    }
    case CONFIG_BOOL: {
      static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
      for (int i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) return *(bool *)slot = true, 0;
        if (strcasecmp(text, no[i]) == 0) return *(bool *)slot = false, 0;
      }
      return ember_fail(err, EMBER_EINVAL, "%s.%s: '%s' is not a boolean (true/false) (from %s)", sec->name, f->name,
                        text, source);
    }
    case CONFIG_STRING: {
      size_t n = strlen(text);
      if (n >= CONFIG_STRING_MAX)
        return ember_fail(err, EMBER_EINVAL, "%s.%s: value of %zu characters is longer than %d (from %s)", sec->name,
                          f->name, n, CONFIG_STRING_MAX - 1, source);
      memcpy(slot, text, n + 1);
      return 0;
    }
  }
  return ember_fail(err, EMBER_EINVAL, "%s.%s: unknown field type", sec->name, f->name);
}

static const config_field *find_field(const config_section *sec, const char *name, size_t len) {
  for (size_t j = 0; j < sec->nfields; j++)
    if (strlen(sec->fields[j].name) == len && strncmp(sec->fields[j].name, name, len) == 0) return &sec->fields[j];
  return NULL;
}

int config_defaults(const config_binding *b, size_t n, ember_err *err) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < b[i].section->nfields; j++) {
      const config_field *f = &b[i].section->fields[j];
      int rc = parse_value(b[i].section, f, b[i].target, f->default_value ? f->default_value : "", "the default", err);
      if (rc) return rc;
      if (b[i].set) b[i].set[j] = false;
    }
  return 0;
}

/* A value from a file, a variable or config_set: parsed into the target, its flag raised. */
static int set_value(const config_binding *b, const config_field *f, const char *text, const char *source,
                     ember_err *err) {
  int rc = parse_value(b->section, f, b->target, text, source, err);
  if (rc == 0 && b->set) b->set[f - b->section->fields] = true;
  return rc;
}

bool config_is_set(const config_binding *b, size_t n, const char *key) {
  const char *dot = strchr(key, '.');
  if (!dot) return false;
  size_t slen = (size_t)(dot - key);
  for (size_t i = 0; i < n; i++) {
    const config_section *sec = b[i].section;
    if (strlen(sec->name) != slen || strncmp(sec->name, key, slen) != 0) continue;
    const config_field *f = find_field(sec, dot + 1, strlen(dot + 1));
    return f && b[i].set && b[i].set[f - sec->fields];
  }
  return false;
}

int config_set(const config_binding *b, size_t n, const char *key, const char *value, const char *source,
               ember_err *err) {
  const char *dot = strchr(key, '.');
  if (!dot)
    return ember_fail(err, EMBER_ENOENT, "'%s' is not a key of the form section.name (from %s)", key, source);
  size_t slen = (size_t)(dot - key);
  for (size_t i = 0; i < n; i++) {
    const config_section *sec = b[i].section;
    if (strlen(sec->name) != slen || strncmp(sec->name, key, slen) != 0) continue;
    const config_field *f = find_field(sec, dot + 1, strlen(dot + 1));
    if (!f) return ember_fail(err, EMBER_ENOENT, "unknown key '%s' in section '%s' (from %s)", key, sec->name, source);
    return set_value(&b[i], f, value, source, err);
  }
  return ember_fail(err, EMBER_ENOENT, "unknown section in key '%s' (from %s)", key, source);
}

/* ---- YAML through libcyaml ----
 * The schema is built at run time from the sections: every field is an optional pointer slot, so
 * after loading we know exactly which keys the file set, and apply (and range-check) only those. */

typedef struct {
  char text[sizeof(((ember_err *)0)->msg)];
  size_t len;
} cyaml_log_capture;

static void capture_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args) {
  if (level < CYAML_LOG_ERROR) return;
  cyaml_log_capture *c = ctx;
  char line[256];
  vsnprintf(line, sizeof line, fmt, args);
  size_t l = strlen(line);
  while (l && (line[l - 1] == '\n' || isspace((unsigned char)line[l - 1]))) line[--l] = 0;
  const char *p = line;
  if (strncmp(p, "Load: ", 6) == 0) p += 6;
  if (!*p || strcmp(p, "Backtrace:") == 0) return;
  while (*p == ' ') p++;
  int w = snprintf(c->text + c->len, sizeof c->text - c->len, "%s%s", c->len ? "; " : "", p);
  if (w > 0) c->len += (size_t)w;
  if (c->len >= sizeof c->text) c->len = sizeof c->text - 1;
}

static int apply_yaml_slot(const config_binding *b, const config_field *f, void *value, const char *path,
                           ember_err *err) {
  char source[CONFIG_STRING_MAX + 32];
  snprintf(source, sizeof source, "config file '%s'", path);
  char text[64];
  switch (f->type) {
    case CONFIG_INT: snprintf(text, sizeof text, "%lld", (long long)*(int64_t *)value); break;
    case CONFIG_FLOAT: snprintf(text, sizeof text, "%.17g", *(double *)value); break;
    case CONFIG_BOOL: snprintf(text, sizeof text, "%s", *(bool *)value ? "true" : "false"); break;
    case CONFIG_STRING: return set_value(b, f, (const char *)value, source, err);
  }
  return set_value(b, f, text, source, err);
}

int config_load(const config_binding *b, size_t n, const char *path, char *const *envp, const char *const *sets,
                size_t nsets, ember_err *err) {
  int rc = config_defaults(b, n, err);
  if (rc) return rc;

  if (path) {
    FILE *probe = fopen(path, "r");
    if (!probe) return ember_fail(err, EMBER_ENOENT, "config file '%s' cannot be opened: %s", path, strerror(errno));
    fclose(probe);

    cyaml_schema_field_t *section_fields = calloc(n + 1, sizeof *section_fields);
    cyaml_schema_field_t **key_fields = calloc(n ? n : 1, sizeof *key_fields);
    if (!section_fields || !key_fields) {
      free(section_fields), free(key_fields);
      return ember_fail(err, EMBER_ENOMEM, "out of memory building the config schema");
    }
    rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
      const config_section *sec = b[i].section;
      key_fields[i] = calloc(sec->nfields + 1, sizeof **key_fields);
      if (!key_fields[i]) {
        rc = ember_fail(err, EMBER_ENOMEM, "out of memory building the config schema");
        break;
      }
      for (size_t j = 0; j < sec->nfields; j++) {
        const config_field *f = &sec->fields[j];
        cyaml_schema_field_t *k = &key_fields[i][j];
        k->key = f->name;
        k->data_offset = (uint32_t)(j * sizeof(void *));
        k->value.flags = CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER;
        switch (f->type) {
          case CONFIG_INT: k->value.type = CYAML_INT, k->value.data_size = sizeof(int64_t); break;
          case CONFIG_FLOAT: k->value.type = CYAML_FLOAT, k->value.data_size = sizeof(double); break;
          case CONFIG_BOOL: k->value.type = CYAML_BOOL, k->value.data_size = sizeof(bool); break;
          case CONFIG_STRING:
            k->value.type = CYAML_STRING, k->value.data_size = sizeof(char);
            k->value.string.min = 0, k->value.string.max = CONFIG_STRING_MAX - 1;
            break;
        }
      }
      cyaml_schema_field_t *s = &section_fields[i];
      s->key = sec->name;
      s->data_offset = (uint32_t)(i * sizeof(void *));
      s->value.type = CYAML_MAPPING;
      s->value.flags = CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER;
      s->value.data_size = (uint32_t)((sec->nfields ? sec->nfields : 1) * sizeof(void *));
      s->value.mapping.fields = key_fields[i];
    }
    cyaml_schema_value_t top = {.type = CYAML_MAPPING,
                                .flags = CYAML_FLAG_POINTER,
                                .data_size = (uint32_t)((n ? n : 1) * sizeof(void *)),
                                .mapping.fields = section_fields};
    cyaml_log_capture capture = {.len = 0};
    capture.text[0] = 0;
    cyaml_config_t cfg = {.log_fn = capture_log, .log_ctx = &capture, .mem_fn = cyaml_mem,
                          .log_level = CYAML_LOG_ERROR, .flags = CYAML_CFG_DEFAULT};
    void **data = NULL;
    if (!rc) {
      cyaml_err_t cerr = cyaml_load_file(path, &cfg, &top, (cyaml_data_t **)&data, NULL);
      if (cerr != CYAML_OK)
        rc = ember_fail(err, EMBER_EINVAL, "config file '%s': %s%s%s", path, cyaml_strerror(cerr),
                        capture.len ? ": " : "", capture.text);
    }
    for (size_t i = 0; i < n && !rc && data; i++) {
      void **slots = data[i];
      if (!slots) continue;
      for (size_t j = 0; j < b[i].section->nfields && !rc; j++)
        if (slots[j]) rc = apply_yaml_slot(&b[i], &b[i].section->fields[j], slots[j], path, err);
    }
    if (data) cyaml_free(&cfg, &top, data, 0);
    for (size_t i = 0; i < n; i++) free(key_fields[i]);
    free(key_fields), free(section_fields);
    if (rc) return rc;
  }

  for (char *const *e = envp; e && *e; e++) {
    if (strncmp(*e, "EMBER_", 6) != 0) continue;
    const char *eq = strchr(*e, '=');
    if (!eq) continue;
    size_t nlen = (size_t)(eq - *e);
    static const char *not_settings[] = {"EMBER_CONFIG", "EMBER_SOURCE_DIR", "EMBER_BINARY_DIR", "EMBER_MODEL_DIR",
                                         "EMBER_LOG_LEVEL", "EMBER_LOG_FORMAT"};
    int skip = 0;
    for (size_t k = 0; k < sizeof not_settings / sizeof *not_settings; k++)
      if (strlen(not_settings[k]) == nlen && strncmp(*e, not_settings[k], nlen) == 0) skip = 1;
    if (skip) continue;
    /* EMBER_<SECTION>_<KEY>: match against every section.key spelled that way */
    char var[256];
    if (nlen >= sizeof var) return ember_fail(err, EMBER_EINVAL, "environment variable name too long: %.40s...", *e);
    memcpy(var, *e, nlen);
    var[nlen] = 0;
    int matched = 0;
    for (size_t i = 0; i < n && !matched; i++)
      for (size_t j = 0; j < b[i].section->nfields && !matched; j++) {
        char want[256];
        int w = snprintf(want, sizeof want, "EMBER_%s_%s", b[i].section->name, b[i].section->fields[j].name);
        if (w < 0 || (size_t)w >= sizeof want) continue;
        for (char *c = want; *c; c++) *c = (char)toupper((unsigned char)*c);
        if (strcmp(want, var) != 0) continue;
        matched = 1;
        char source[300];
        snprintf(source, sizeof source, "environment variable %s", var);
        rc = set_value(&b[i], &b[i].section->fields[j], eq + 1, source, err);
        if (rc) return rc;
      }
    if (!matched) return ember_fail(err, EMBER_ENOENT, "environment variable %s is not an ember setting", var);
  }

  for (size_t s = 0; s < nsets; s++) {
    const char *eq = strchr(sets[s], '=');
    if (!eq) return ember_fail(err, EMBER_EINVAL, "--set '%s' is not of the form key=value", sets[s]);
    char key[256];
    size_t klen = (size_t)(eq - sets[s]);
    if (klen >= sizeof key) return ember_fail(err, EMBER_EINVAL, "--set key too long: %.40s...", sets[s]);
    memcpy(key, sets[s], klen);
    key[klen] = 0;
    char source[300];
    snprintf(source, sizeof source, "--set %s", key);
    rc = config_set(b, n, key, eq + 1, source, err);
    if (rc) return rc;
  }
  return 0;
}

/* A YAML double-quoted scalar that loads back as exactly s. Line breaks must be escaped: YAML folds
 * a raw one (and a raw NEL, LS or PS, U+0085, U+2028, U+2029) into a space, so a value holding one
 * came back changed from a run's config.yaml (found by tests/fuzz/fuzz_config). Other control
 * characters are escaped too, as YAML wants them printable; other UTF-8 is written as it is. */
static void write_yaml_string(FILE *out, const char *s) {
  fputc('"', out);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') fprintf(out, "\\%c", *c);
    else if (*c == '\n') fputs("\\n", out);
    else if (*c == '\t') fputs("\\t", out);
    else if (*c < 0x20 || *c == 0x7f) fprintf(out, "\\x%02x", *c);
    else if (c[0] == 0xc2 && c[1] == 0x85) fputs("\\N", out), c += 1;
    else if (c[0] == 0xe2 && c[1] == 0x80 && c[2] == 0xa8) fputs("\\L", out), c += 2;
    else if (c[0] == 0xe2 && c[1] == 0x80 && c[2] == 0xa9) fputs("\\P", out), c += 2;
    else fputc(*c, out);
  }
  fputc('"', out);
}

int config_write_yaml(const config_binding *b, size_t n, FILE *out) {
  for (size_t i = 0; i < n; i++) {
    fprintf(out, "%s:\n", b[i].section->name);
    for (size_t j = 0; j < b[i].section->nfields; j++) {
      const config_field *f = &b[i].section->fields[j];
      const char *slot = (const char *)b[i].target + f->offset;
      fprintf(out, "  %s: ", f->name);
      switch (f->type) {
        case CONFIG_INT: fprintf(out, "%lld", (long long)*(const int64_t *)slot); break;
        case CONFIG_FLOAT: fprintf(out, "%.17g", *(const double *)slot); break;
        case CONFIG_BOOL: fprintf(out, "%s", *(const bool *)slot ? "true" : "false"); break;
        case CONFIG_STRING: write_yaml_string(out, slot); break;
      }
      fputc('\n', out);
    }
  }
  return ferror(out) ? EMBER_EIO : 0;
}
