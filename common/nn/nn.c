/* nn.c: MLP spec, parameters, workspaces, and the forward/backward passes (see nn.h). */
#include "nn.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Programmer errors that would otherwise write past a workspace: checked in every build type
 * (assert() vanishes under NDEBUG, and a batch size that comes from a config file deserves a clear
 * stop rather than silent memory corruption). One compare per call. */
#define NN_REQUIRE(cond, ...)                                        \
  do {                                                               \
    if (!(cond)) nn_programmer_error(__func__, #cond, __VA_ARGS__);  \
  } while (0)

__attribute__((noreturn, format(printf, 3, 4))) static void nn_programmer_error(const char *where,
                                                                                const char *what,
                                                                                const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "ember nn: %s: %s failed: ", where, what);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

/* 64-byte alignment: a cache line, and what AVX-512 loads like. */
#define NN_ALIGN 64

static void *aligned_zalloc(size_t count) {
  size_t bytes = count * sizeof(float);
  bytes = (bytes + NN_ALIGN - 1) / NN_ALIGN * NN_ALIGN;
  if (bytes == 0) bytes = NN_ALIGN;
  void *p = aligned_alloc(NN_ALIGN, bytes);
  if (p) memset(p, 0, bytes);
  return p;
}

static size_t round_up_floats(size_t count) { return (count + 15) / 16 * 16; }

/* ---- activations ------------------------------------------------------------------------- */

/* Written as "0 > z ? 0 : z" so that it is one maxps/maxss (x86 returns the second operand when
 * the comparison fails), branch-free, and a NaN pre-activation stays NaN instead of becoming 0:
 * a NaN must reach the optimiser's finite check, not be hidden by the activation. */
static inline float relu(float z) { return 0.0f > z ? 0.0f : z; }

const char *nn_activation_name(nn_activation act) {
  switch (act) {
    case NN_ACT_IDENTITY: return "identity";
    case NN_ACT_RELU: return "relu";
    case NN_ACT_TANH: return "tanh";
    case NN_ACT_ELU: return "elu";
  }
  return "unknown";
}

int nn_activation_parse(const char *name, nn_activation *out, ember_err *err) {
  static const nn_activation all[] = {NN_ACT_IDENTITY, NN_ACT_RELU, NN_ACT_TANH, NN_ACT_ELU};
  for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++) {
    if (strcmp(name, nn_activation_name(all[i])) == 0) {
      *out = all[i];
      return EMBER_OK;
    }
  }
  return ember_fail(err, EMBER_EINVAL, "unknown activation '%s' (expected relu, tanh, elu or identity)",
                    name ? name : "(null)");
}

static int activation_valid(nn_activation act) {
  return act == NN_ACT_IDENTITY || act == NN_ACT_RELU || act == NN_ACT_TANH || act == NN_ACT_ELU;
}

void nn_activation_forward(nn_activation act, float *y, const float *z, size_t n) {
  switch (act) {
    case NN_ACT_IDENTITY:
      if (y != z) memmove(y, z, n * sizeof *y);
      break;
    case NN_ACT_RELU:
      for (size_t i = 0; i < n; i++) y[i] = relu(z[i]);
      break;
    case NN_ACT_TANH:
      for (size_t i = 0; i < n; i++) y[i] = tanhf(z[i]);
      break;
    case NN_ACT_ELU:
      for (size_t i = 0; i < n; i++) y[i] = z[i] > 0.0f ? z[i] : expm1f(z[i]);
      break;
  }
}

void nn_activation_backward(nn_activation act, float *dz, const float *dy, const float *y, size_t n) {
  switch (act) {
    case NN_ACT_IDENTITY:
      for (size_t i = 0; i < n; i++) dz[i] += dy[i];
      break;
    case NN_ACT_RELU:
      for (size_t i = 0; i < n; i++) dz[i] += y[i] > 0.0f ? dy[i] : 0.0f;
      break;
    case NN_ACT_TANH:
      for (size_t i = 0; i < n; i++) dz[i] += dy[i] * (1.0f - y[i] * y[i]);
      break;
    case NN_ACT_ELU:
      for (size_t i = 0; i < n; i++) dz[i] += dy[i] * (y[i] > 0.0f ? 1.0f : y[i] + 1.0f);
      break;
  }
}

/* ---- linear ------------------------------------------------------------------------------ */

void nn_linear_forward(float *y, const float *x, const float *w, const float *b, int batch,
                       int in_dim, int out_dim) {
  /* y [B, out] = x [B, in] w^T [in, out] */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, out_dim, in_dim, 1.0f, x, in_dim, w,
              in_dim, 0.0f, y, out_dim);
  for (int r = 0; r < batch; r++) {
    float *row = y + (size_t)r * out_dim;
    for (int j = 0; j < out_dim; j++) row[j] += b[j];
  }
}

void nn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int batch, int in_dim, int out_dim) {
  if (dx) /* dx [B, in] += dy [B, out] w [out, in] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, in_dim, out_dim, 1.0f, dy, out_dim,
                w, in_dim, 1.0f, dx, in_dim);
  if (dw) /* dw [out, in] += dy^T [out, B] x [B, in] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out_dim, in_dim, batch, 1.0f, dy, out_dim, x,
                in_dim, 1.0f, dw, in_dim);
  if (db)
    for (int r = 0; r < batch; r++) {
      const float *row = dy + (size_t)r * out_dim;
      for (int j = 0; j < out_dim; j++) db[j] += row[j];
    }
}

/* ---- spec and network -------------------------------------------------------------------- */

int nn_mlp_spec_check(const nn_mlp_spec *spec, ember_err *err) {
  if (!spec) return ember_fail(err, EMBER_EINVAL, "nn spec is NULL");
  if (spec->input_dim <= 0)
    return ember_fail(err, EMBER_EINVAL, "nn spec: input_dim must be > 0, got %d", spec->input_dim);
  if (spec->output_dim <= 0)
    return ember_fail(err, EMBER_EINVAL, "nn spec: output_dim must be > 0, got %d", spec->output_dim);
  if (spec->hidden_count < 0 || spec->hidden_count > NN_MAX_HIDDEN)
    return ember_fail(err, EMBER_EINVAL, "nn spec: hidden_count must be in [0, %d], got %d",
                      NN_MAX_HIDDEN, spec->hidden_count);
  for (int i = 0; i < spec->hidden_count; i++)
    if (spec->hidden_dims[i] <= 0)
      return ember_fail(err, EMBER_EINVAL, "nn spec: hidden_dims[%d] must be > 0, got %d", i,
                        spec->hidden_dims[i]);
  if (!activation_valid(spec->hidden_activation))
    return ember_fail(err, EMBER_EINVAL, "nn spec: unknown hidden_activation %d",
                      (int)spec->hidden_activation);
  if (!activation_valid(spec->output_activation))
    return ember_fail(err, EMBER_EINVAL, "nn spec: unknown output_activation %d",
                      (int)spec->output_activation);
  if (spec->ensemble_size < 0)
    return ember_fail(err, EMBER_EINVAL, "nn spec: ensemble_size must be >= 1, got %d",
                      spec->ensemble_size);
  /* Keep every matrix index within int range for BLAS (and far below any real network). */
  const int64_t limit = (int64_t)1 << 30;
  int64_t total = 0, prev = spec->input_dim;
  int64_t members = spec->ensemble_size > 0 ? spec->ensemble_size : 1;
  for (int l = 0; l <= spec->hidden_count; l++) {
    int64_t next = l < spec->hidden_count ? spec->hidden_dims[l] : spec->output_dim;
    if (prev * members > limit || next * members > limit)
      return ember_fail(err, EMBER_EINVAL, "nn spec: layer %d is too wide (%lld x %lld members)", l,
                        (long long)next, (long long)members);
    total += members * (next * prev + next);
    if (total > limit)
      return ember_fail(err, EMBER_EINVAL, "nn spec: more than %lld parameters", (long long)limit);
    prev = next;
  }
  return EMBER_OK;
}

nn_mlp *nn_mlp_new(const nn_mlp_spec *spec, ember_err *err) {
  if (nn_mlp_spec_check(spec, err) != EMBER_OK) return NULL;
  nn_mlp *net = calloc(1, sizeof *net);
  if (!net) {
    ember_fail(err, EMBER_ENOMEM, "nn: out of memory for a network");
    return NULL;
  }
  net->spec = *spec;
  net->ensemble_size = spec->ensemble_size > 0 ? spec->ensemble_size : 1;
  net->spec.ensemble_size = net->ensemble_size;
  net->layer_count = spec->hidden_count + 1;
  net->dims[0] = spec->input_dim;
  for (int i = 0; i < spec->hidden_count; i++) net->dims[i + 1] = spec->hidden_dims[i];
  net->dims[net->layer_count] = spec->output_dim;
  /* zero the unused hidden dims so that nn_mlp_same_shape can compare specs field by field */
  for (int i = spec->hidden_count; i < NN_MAX_HIDDEN; i++) net->spec.hidden_dims[i] = 0;
  size_t offset = 0, members = (size_t)net->ensemble_size;
  for (int l = 0; l < net->layer_count; l++) {
    net->weight_offset[l] = offset;
    offset += members * (size_t)net->dims[l + 1] * (size_t)net->dims[l];
    net->bias_offset[l] = offset;
    offset += members * (size_t)net->dims[l + 1];
  }
  net->param_count = offset;
  net->params = aligned_zalloc(offset);
  net->grads = aligned_zalloc(offset);
  if (!net->params || !net->grads) {
    nn_mlp_destroy(&net);
    ember_fail(err, EMBER_ENOMEM, "nn: out of memory for %zu parameters", offset);
    return NULL;
  }
  return net;
}

void nn_mlp_destroy(nn_mlp **net_p) {
  if (!net_p || !*net_p) return;
  free((*net_p)->params);
  free((*net_p)->grads);
  free(*net_p);
  *net_p = NULL;
}

void nn_mlp_init(nn_mlp *net, rng_t *rng, nn_init_scheme scheme) {
  for (int l = 0; l < net->layer_count; l++) {
    int in = net->dims[l], out = net->dims[l + 1];
    double w_limit, b_limit;
    if (scheme == NN_INIT_XAVIER_UNIFORM) {
      w_limit = sqrt(6.0 / (in + out));
      b_limit = 0.0;
    } else {
      w_limit = b_limit = 1.0 / sqrt((double)in);
    }
    for (int e = 0; e < net->ensemble_size; e++) {
      float *w = nn_mlp_weight(net, l, e), *b = nn_mlp_bias(net, l, e);
      for (size_t i = 0; i < (size_t)out * in; i++) w[i] = (float)((2.0 * rng_uniform(rng) - 1.0) * w_limit);
      for (int i = 0; i < out; i++) b[i] = (float)((2.0 * rng_uniform(rng) - 1.0) * b_limit);
    }
  }
}

void nn_mlp_zero_grad(nn_mlp *net) { memset(net->grads, 0, net->param_count * sizeof(float)); }

static size_t weight_at(const nn_mlp *net, int layer, int member) {
  assert(layer >= 0 && layer < net->layer_count && member >= 0 && member < net->ensemble_size);
  return net->weight_offset[layer] + (size_t)member * net->dims[layer + 1] * net->dims[layer];
}
static size_t bias_at(const nn_mlp *net, int layer, int member) {
  assert(layer >= 0 && layer < net->layer_count && member >= 0 && member < net->ensemble_size);
  return net->bias_offset[layer] + (size_t)member * net->dims[layer + 1];
}
float *nn_mlp_weight(const nn_mlp *net, int layer, int member) { return net->params + weight_at(net, layer, member); }
float *nn_mlp_bias(const nn_mlp *net, int layer, int member) { return net->params + bias_at(net, layer, member); }
float *nn_mlp_weight_grad(const nn_mlp *net, int layer, int member) { return net->grads + weight_at(net, layer, member); }
float *nn_mlp_bias_grad(const nn_mlp *net, int layer, int member) { return net->grads + bias_at(net, layer, member); }

int nn_mlp_same_shape(const nn_mlp *a, const nn_mlp *b) {
  if (a->layer_count != b->layer_count || a->ensemble_size != b->ensemble_size) return 0;
  for (int l = 0; l <= a->layer_count; l++)
    if (a->dims[l] != b->dims[l]) return 0;
  return a->spec.hidden_activation == b->spec.hidden_activation &&
         a->spec.output_activation == b->spec.output_activation;
}

double nn_mlp_forward_flops(const nn_mlp *net, int batch) {
  double flops = 0;
  for (int l = 0; l < net->layer_count; l++)
    flops += 2.0 * batch * net->ensemble_size * (double)net->dims[l] * net->dims[l + 1];
  return flops;
}

/* ---- workspace --------------------------------------------------------------------------- */

nn_mlp_ws *nn_mlp_ws_new(const nn_mlp *net, int max_batch, ember_err *err) {
  if (max_batch <= 0 || max_batch > (1 << 24)) {
    ember_fail(err, EMBER_EINVAL, "nn workspace: max_batch must be in [1, 2^24], got %d", max_batch);
    return NULL;
  }
  nn_mlp_ws *ws = calloc(1, sizeof *ws);
  if (!ws) {
    ember_fail(err, EMBER_ENOMEM, "nn: out of memory for a workspace");
    return NULL;
  }
  ws->max_batch = max_batch;
  ws->ensemble_size = net->ensemble_size;
  ws->layer_count = net->layer_count;
  memcpy(ws->dims, net->dims, sizeof ws->dims);
  size_t rows = (size_t)max_batch, members = (size_t)net->ensemble_size;
  int widest = 0;
  for (int l = 0; l <= net->layer_count; l++) widest = net->dims[l] > widest ? net->dims[l] : widest;
  /* carve one arena into cache-line aligned pieces */
  size_t sizes[NN_MAX_LAYERS + 3], total = 0;
  int pieces = 0;
  sizes[pieces++] = round_up_floats(rows * members * net->dims[0]);
  for (int l = 0; l < net->layer_count; l++) sizes[pieces++] = round_up_floats(rows * members * net->dims[l + 1]);
  sizes[pieces++] = round_up_floats(rows * members * widest);
  sizes[pieces++] = round_up_floats(rows * members * widest);
  for (int i = 0; i < pieces; i++) total += sizes[i];
  ws->arena = aligned_zalloc(total);
  if (!ws->arena) {
    free(ws);
    ember_fail(err, EMBER_ENOMEM, "nn: out of memory for a workspace of %zu floats", total);
    return NULL;
  }
  float *p = ws->arena;
  int piece = 0;
  ws->input = p, p += sizes[piece++];
  for (int l = 0; l < net->layer_count; l++) ws->activations[l] = p, p += sizes[piece++];
  ws->scratch[0] = p, p += sizes[piece++];
  ws->scratch[1] = p;
  return ws;
}

void nn_mlp_ws_destroy(nn_mlp_ws **ws_p) {
  if (!ws_p || !*ws_p) return;
  free((*ws_p)->arena);
  free(*ws_p);
  *ws_p = NULL;
}

static int ws_fits(const nn_mlp_ws *ws, const nn_mlp *net) {
  if (ws->ensemble_size != net->ensemble_size || ws->layer_count != net->layer_count) return 0;
  for (int l = 0; l <= net->layer_count; l++)
    if (ws->dims[l] != net->dims[l]) return 0;
  return 1;
}

/* ---- forward ----------------------------------------------------------------------------- */

/* y [rows, cols] = act(y + bias) in one pass; bias [cols] repeats on every row. */
static void bias_activation(float *restrict y, const float *restrict bias, int rows, int cols,
                            nn_activation act) {
  for (int r = 0; r < rows; r++) {
    float *restrict row = y + (size_t)r * cols;
    switch (act) {
      case NN_ACT_IDENTITY:
        for (int j = 0; j < cols; j++) row[j] += bias[j];
        break;
      case NN_ACT_RELU:
        for (int j = 0; j < cols; j++) row[j] = relu(row[j] + bias[j]);
        break;
      case NN_ACT_TANH:
        for (int j = 0; j < cols; j++) row[j] = tanhf(row[j] + bias[j]);
        break;
      case NN_ACT_ELU:
        for (int j = 0; j < cols; j++) {
          float z = row[j] + bias[j];
          row[j] = z > 0.0f ? z : expm1f(z);
        }
        break;
    }
  }
}

/* Layer l's input matrix and its leading dimension, for the workspace's last forward pass. */
static const float *layer_input(const nn_mlp_ws *ws, int l, int *ld) {
  int members = ws->ensemble_size;
  if (l == 0) {
    *ld = ws->input_mode == NN_INPUT_SHARED ? ws->dims[0] : members * ws->dims[0];
    return ws->input;
  }
  *ld = members * ws->dims[l];
  return ws->activations[l - 1];
}

/* Whether layer l's input is one matrix that every member reads (then one GEMM serves all). */
static int layer_input_shared(const nn_mlp_ws *ws, int l) {
  return ws->ensemble_size == 1 || (l == 0 && ws->input_mode == NN_INPUT_SHARED);
}

const float *nn_mlp_forward(const nn_mlp *net, nn_mlp_ws *ws, const float *input, int batch,
                            nn_input_mode input_mode) {
  NN_REQUIRE(batch >= 1 && batch <= ws->max_batch, "batch %d, workspace sized for %d", batch, ws->max_batch);
  NN_REQUIRE(ws_fits(ws, net), "workspace made for another spec");
  NN_REQUIRE(input_mode == NN_INPUT_SHARED || input_mode == NN_INPUT_PER_MEMBER, "input mode %d", (int)input_mode);
  const int members = net->ensemble_size;
  if (members == 1) input_mode = NN_INPUT_SHARED; /* the same layout */
  ws->batch = batch;
  ws->input_mode = input_mode;
  ws->net = net;
  size_t in_cols = (size_t)net->dims[0] * (input_mode == NN_INPUT_SHARED ? 1 : members);
  memcpy(ws->input, input, (size_t)batch * in_cols * sizeof(float));

  for (int l = 0; l < net->layer_count; l++) {
    const int in = net->dims[l], out = net->dims[l + 1];
    const int ld_y = members * out;
    int ld_x;
    const float *x = layer_input(ws, l, &ld_x);
    float *y = ws->activations[l];
    const float *w = net->params + net->weight_offset[l];
    if (layer_input_shared(ws, l)) {
      /* Y [B, E*out] = X [B, in] W_all^T, W_all = every member's W stacked: [E*out, in] */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, ld_y, in, 1.0f, x, ld_x, w, in,
                  0.0f, y, ld_y);
    } else {
      for (int e = 0; e < members; e++) /* Y_e [B, out] = X_e [B, in] W_e^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, out, in, 1.0f, x + (size_t)e * in,
                    ld_x, w + (size_t)e * out * in, in, 0.0f, y + (size_t)e * out, ld_y);
    }
    nn_activation act = l + 1 < net->layer_count ? net->spec.hidden_activation : net->spec.output_activation;
    bias_activation(y, net->params + net->bias_offset[l], batch, ld_y, act);
  }
  return ws->activations[net->layer_count - 1];
}

/* ---- backward ---------------------------------------------------------------------------- */

/* dz [rows, cols] = dy * act'(y) (dz may equal dy), and db [cols] += column sums of dz when db is
 * non-NULL. The multiply runs in place on dz through one restrict pointer: with dz and dy both in
 * play (and equal, as they are for hidden layers) GCC's runtime overlap check picks its scalar
 * loop. act' is branch-free (a 0/1 mask for ReLU) so the loop vectorises; a data-dependent branch
 * here cost more than half the GEMM time in bench_nn. */
static void activation_grad_bias(float *dz, const float *dy, const float *restrict y, float *restrict db,
                                 int rows, int cols, nn_activation act) {
  if (dz != dy) memcpy(dz, dy, (size_t)rows * cols * sizeof *dz);
  for (int r = 0; r < rows; r++) {
    const size_t o = (size_t)r * cols;
    const float *restrict yr = y + o;
    float *restrict dzr = dz + o;
    switch (act) {
      case NN_ACT_IDENTITY:
        break;
      case NN_ACT_RELU:
        for (int j = 0; j < cols; j++) dzr[j] *= yr[j] > 0.0f ? 1.0f : 0.0f;
        break;
      case NN_ACT_TANH:
        for (int j = 0; j < cols; j++) dzr[j] *= 1.0f - yr[j] * yr[j];
        break;
      case NN_ACT_ELU:
        for (int j = 0; j < cols; j++) dzr[j] *= yr[j] > 0.0f ? 1.0f : yr[j] + 1.0f;
        break;
    }
    if (db)
      for (int j = 0; j < cols; j++) db[j] += dzr[j];
  }
}

void nn_mlp_backward(nn_mlp *net, nn_mlp_ws *ws, const float *d_output, nn_param_grads param_grads,
                     float *d_input) {
  nn_mlp_backward_input_cols(net, ws, d_output, param_grads, d_input, 0, net->dims[0]);
}

void nn_mlp_backward_input_cols(nn_mlp *net, nn_mlp_ws *ws, const float *d_output,
                                nn_param_grads param_grads, float *d_input, int col_begin,
                                int col_count) {
  NN_REQUIRE(ws->net == net && ws->batch > 0, "backward needs a forward of this network on this workspace");
  NN_REQUIRE(col_begin >= 0 && col_count >= 0 && col_begin + col_count <= net->dims[0],
             "input columns [%d, %d) of %d", col_begin, col_begin + col_count, net->dims[0]);
  const int members = net->ensemble_size, batch = ws->batch;
  const int want_params = param_grads == NN_PARAM_GRADS_ACCUMULATE;
  const float *dy = d_output; /* dL/dY_l, [B, E*out] */
  int buffer = 0;
  for (int l = net->layer_count - 1; l >= 0; l--) {
    const int in = net->dims[l], out = net->dims[l + 1];
    const int ld_z = members * out;
    nn_activation act = l + 1 < net->layer_count ? net->spec.hidden_activation : net->spec.output_activation;
    /* dZ_l = dY_l * act'(Y_l); in place once dY_l is in a scratch buffer */
    float *dz = ws->scratch[buffer];
    activation_grad_bias(dz, dy, ws->activations[l], want_params ? net->grads + net->bias_offset[l] : NULL,
                         batch, ld_z, act);
    int ld_x;
    const float *x = layer_input(ws, l, &ld_x);
    const float *w = net->params + net->weight_offset[l];
    if (want_params) {
      float *dw = net->grads + net->weight_offset[l];
      if (layer_input_shared(ws, l)) {
        /* dW_all [E*out, in] += dZ^T [E*out, B] X [B, in] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ld_z, in, batch, 1.0f, dz, ld_z, x, ld_x,
                    1.0f, dw, in);
      } else {
        for (int e = 0; e < members; e++) /* dW_e [out, in] += dZ_e^T X_e */
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, batch, 1.0f, dz + (size_t)e * out,
                      ld_z, x + (size_t)e * in, ld_x, 1.0f, dw + (size_t)e * out * in, in);
      }
    }
    if (l > 0) {
      /* dY_{l-1} [B, E*in] = dZ_e W_e per member, into the other scratch buffer */
      float *dy_prev = ws->scratch[1 - buffer];
      for (int e = 0; e < members; e++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, in, out, 1.0f, dz + (size_t)e * out,
                    ld_z, w + (size_t)e * out * in, in, 0.0f, dy_prev + (size_t)e * in, members * in);
      dy = dy_prev;
      buffer = 1 - buffer;
    } else if (d_input && col_count > 0) {
      if (layer_input_shared(ws, 0)) {
        /* d_input [B, cols] += dZ [B, E*out] W_all[:, cols] ([E*out, in]): sums over members */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, col_count, ld_z, 1.0f, dz, ld_z,
                    w + col_begin, in, 1.0f, d_input, col_count);
      } else {
        for (int e = 0; e < members; e++) /* d_input_e [B, cols] += dZ_e W_e[:, cols] */
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, col_count, out, 1.0f,
                      dz + (size_t)e * out, ld_z, w + (size_t)e * out * in + col_begin, in, 1.0f,
                      d_input + (size_t)e * col_count, members * col_count);
      }
    }
  }
}
