#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ember_fail(ember_err *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return code;
}

int ember_err_prefix(ember_err *err, const char *fmt, ...) {
  if (!err) return EMBER_EINVAL;
  char prefix[256], old[sizeof err->msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof old);
  size_t plen = strlen(prefix);
  if (plen >= sizeof err->msg) plen = sizeof err->msg - 1;
  memcpy(err->msg, prefix, plen);
  size_t rest = sizeof err->msg - 1 - plen;
  size_t olen = strnlen(old, sizeof old);
  if (olen > rest) olen = rest;
  memcpy(err->msg + plen, old, olen);
  err->msg[plen + olen] = 0;
  return err->code;
}

const char *ember_strerror(int code) {
  switch (code) {
    case EMBER_OK: return "OK";
    case EMBER_EINVAL: return "EINVAL";
    case EMBER_ENOENT: return "ENOENT";
    case EMBER_EIO: return "EIO";
    case EMBER_ENOMEM: return "ENOMEM";
    case EMBER_EDECODE: return "EDECODE";
    case EMBER_ESCHEMA: return "ESCHEMA";
    case EMBER_ETOOBIG: return "ETOOBIG";
    case EMBER_EAGAIN: return "EAGAIN";
    case EMBER_ESHAPE: return "ESHAPE";
    case EMBER_ENONFINITE: return "ENONFINITE";
    case EMBER_ECORRUPT: return "ECORRUPT";
    case EMBER_ESTATE: return "ESTATE";
    case EMBER_ETIMEOUT: return "ETIMEOUT";
    case EMBER_EAUTH: return "EAUTH";
    default: return "EUNKNOWN";
  }
}
