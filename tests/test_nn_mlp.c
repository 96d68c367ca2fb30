/* nn MLP: linear layer, each activation, the MLP and its ensembles, checked against central finite
 * differences of an independent double-precision reference.
 *
 * How the check works: the reference recomputes the network's loss L = sum(c * output) in double
 * from the float parameters (a plain triple loop, no BLAS), and central differences with step
 * h = 1e-6 give dL/dtheta to about 1e-9 relative (truncation h^2 ~ 1e-12, rounding
 * 1e-16 * |L| / h ~ 1e-10). The float backward is then compared element by element with
 *   |analytic - fd| <= GRAD_RTOL * max(|fd|, 1e-2 * max_i |fd_i|)
 * GRAD_RTOL = 2e-4: float accumulation over the <= 40-term sums of these small nets leaves
 * ~1e-6 relative error, so 2e-4 is tight enough that a wrong index, a missing term, a wrong sign
 * or a missed factor (errors of order 1) cannot pass. The floor keeps entries that are zero by
 * structure (ReLU-dead units) from dividing by ~0. The forward itself is compared with the
 * reference to 1e-5 relative. */
#include <check.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "rng.h"

#define GRAD_RTOL 2e-4
#define FD_STEP 1e-6

/* Worst |a - r| / max(|r|, 1e-2 * max|r|) over n elements. */
static double grad_error(const float *analytic, const double *reference, size_t n) {
  double scale = 0, worst = 0;
  for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(reference[i]));
  double floor_ = fmax(1e-2 * scale, 1e-12);
  for (size_t i = 0; i < n; i++) {
    double e = fabs(analytic[i] - reference[i]) / fmax(fabs(reference[i]), floor_);
    worst = fmax(worst, e);
  }
  return worst;
}

static double act_d(nn_activation act, double z) {
  switch (act) {
    case NN_ACT_RELU: return z > 0 ? z : 0;
    case NN_ACT_TANH: return tanh(z);
    case NN_ACT_ELU: return z > 0 ? z : expm1(z);
    default: return z;
  }
}

static void fill_uniform(rng_t *r, float *x, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * rng_uniform(r));
}

/* ---- linear ------------------------------------------------------------------------------ */

static double linear_loss_d(const double *x, const double *w, const double *b, const float *c, int batch,
                            int in, int out) {
  double loss = 0;
  for (int r = 0; r < batch; r++)
    for (int j = 0; j < out; j++) {
      double z = b[j];
      for (int k = 0; k < in; k++) z += x[r * in + k] * w[j * in + k];
      loss += c[r * out + j] * z;
    }
  return loss;
}

static void fd_gradient(double *v, size_t n, double *grad, double (*loss)(void *), void *ctx) {
  for (size_t i = 0; i < n; i++) {
    double keep = v[i];
    v[i] = keep + FD_STEP;
    double plus = loss(ctx);
    v[i] = keep - FD_STEP;
    double minus = loss(ctx);
    v[i] = keep;
    grad[i] = (plus - minus) / (2 * FD_STEP);
  }
}

typedef struct {
  double *x, *w, *b;
  const float *c;
  int batch, in, out;
} linear_ctx;
static double linear_ctx_loss(void *p) {
  linear_ctx *k = p;
  return linear_loss_d(k->x, k->w, k->b, k->c, k->batch, k->in, k->out);
}

static void to_double(double *d, const float *f, size_t n) {
  for (size_t i = 0; i < n; i++) d[i] = f[i];
}

static const int linear_shapes[][3] = {{1, 3, 2}, {4, 5, 7}, {9, 1, 3}, {2, 8, 1}};

START_TEST(linear_matches_finite_differences) {
  for (int seed = 1; seed <= 3; seed++)
    for (size_t s = 0; s < sizeof linear_shapes / sizeof linear_shapes[0]; s++) {
      int batch = linear_shapes[s][0], in = linear_shapes[s][1], out = linear_shapes[s][2];
      rng_t r;
      rng_seed(&r, seed, RNG_STREAM_TEST);
      float x[72], w[56], b[8], c[72], y[72], dx[72] = {0}, dw[56] = {0}, db[8] = {0};
      fill_uniform(&r, x, batch * in, -2, 2);
      fill_uniform(&r, w, out * in, -1, 1);
      fill_uniform(&r, b, out, -1, 1);
      fill_uniform(&r, c, batch * out, -1, 1);
      nn_linear_forward(y, x, w, b, batch, in, out);
      double xd[72], wd[56], bd[8], gx[72], gw[56], gb[8];
      to_double(xd, x, batch * in), to_double(wd, w, out * in), to_double(bd, b, out);
      for (int i = 0; i < batch; i++)
        for (int j = 0; j < out; j++) {
          double z = bd[j];
          for (int k = 0; k < in; k++) z += xd[i * in + k] * wd[j * in + k];
          ck_assert_double_eq_tol(y[i * out + j], z, 1e-5 * (1 + fabs(z)));
        }
      nn_linear_backward(dx, dw, db, c, x, w, batch, in, out);
      linear_ctx k = {xd, wd, bd, c, batch, in, out};
      fd_gradient(xd, batch * in, gx, linear_ctx_loss, &k);
      fd_gradient(wd, out * in, gw, linear_ctx_loss, &k);
      fd_gradient(bd, out, gb, linear_ctx_loss, &k);
      ck_assert_double_le(grad_error(dx, gx, batch * in), GRAD_RTOL);
      ck_assert_double_le(grad_error(dw, gw, out * in), GRAD_RTOL);
      ck_assert_double_le(grad_error(db, gb, out), GRAD_RTOL);
    }
}
END_TEST

/* ---- activations ------------------------------------------------------------------------- */

START_TEST(each_activation_matches_finite_differences) {
  const nn_activation acts[] = {NN_ACT_IDENTITY, NN_ACT_RELU, NN_ACT_TANH, NN_ACT_ELU};
  for (size_t a = 0; a < 4; a++)
    for (int seed = 1; seed <= 3; seed++) {
      rng_t r;
      rng_seed(&r, seed, RNG_STREAM_TEST);
      enum { N = 40 };
      float z[N], y[N], c[N], dz[N] = {0};
      fill_uniform(&r, z, N, -3, 3);
      for (int i = 0; i < N; i++)
        if (fabsf(z[i]) < 1e-2f) z[i] = 0.5f; /* a finite difference across the kink means nothing */
      fill_uniform(&r, c, N, -1, 1);
      nn_activation_forward(acts[a], y, z, N);
      nn_activation_backward(acts[a], dz, c, y, N);
      double fd[N];
      for (int i = 0; i < N; i++) {
        ck_assert_double_eq_tol(y[i], act_d(acts[a], z[i]), 1e-6);
        fd[i] = c[i] * (act_d(acts[a], (double)z[i] + FD_STEP) - act_d(acts[a], (double)z[i] - FD_STEP)) /
                (2 * FD_STEP);
      }
      ck_assert_msg(grad_error(dz, fd, N) <= GRAD_RTOL, "%s: error %g", nn_activation_name(acts[a]),
                    grad_error(dz, fd, N));
      /* accumulates: a second call doubles */
      nn_activation_backward(acts[a], dz, c, y, N);
      for (int i = 0; i < N; i++) fd[i] *= 2;
      ck_assert_double_le(grad_error(dz, fd, N), GRAD_RTOL);
    }
}
END_TEST

/* ---- MLP reference ----------------------------------------------------------------------- */

typedef struct {
  const nn_mlp *net; /* shape only; parameters come from params below */
  double *params;    /* the net's parameters in double, same layout */
  double *input;     /* [B, in] or [B, E*in] */
  const float *c;    /* [B, E*out] loss weights */
  int batch;
  nn_input_mode mode;
} mlp_ctx;

/* output [B, E*out] in double, straight from the layout documented in nn.h */
static void mlp_reference(const mlp_ctx *k, double *output) {
  const nn_mlp *net = k->net;
  const int E = net->ensemble_size, L = net->layer_count, out_dim = net->dims[L];
  double h[64], next[64];
  for (int b = 0; b < k->batch; b++)
    for (int e = 0; e < E; e++) {
      int in = net->dims[0];
      const double *row = k->mode == NN_INPUT_SHARED || E == 1 ? k->input + (size_t)b * in
                                                                : k->input + (size_t)b * E * in + (size_t)e * in;
      memcpy(h, row, in * sizeof *h);
      for (int l = 0; l < L; l++) {
        int n_in = net->dims[l], n_out = net->dims[l + 1];
        const double *w = k->params + net->weight_offset[l] + (size_t)e * n_out * n_in;
        const double *bias = k->params + net->bias_offset[l] + (size_t)e * n_out;
        nn_activation act = l + 1 < L ? net->spec.hidden_activation : net->spec.output_activation;
        for (int j = 0; j < n_out; j++) {
          double z = bias[j];
          for (int i = 0; i < n_in; i++) z += w[j * n_in + i] * h[i];
          next[j] = act_d(act, z);
        }
        memcpy(h, next, n_out * sizeof *h);
      }
      memcpy(output + (size_t)b * E * out_dim + (size_t)e * out_dim, h, out_dim * sizeof *h);
    }
}

static double mlp_ctx_loss(void *p) {
  mlp_ctx *k = p;
  const nn_mlp *net = k->net;
  size_t n = (size_t)k->batch * net->ensemble_size * net->dims[net->layer_count];
  double *output = malloc(n * sizeof *output), loss = 0;
  mlp_reference(k, output);
  for (size_t i = 0; i < n; i++) loss += k->c[i] * output[i];
  free(output);
  return loss;
}

typedef struct {
  int in, hidden_count, hidden[3], out, ensemble;
  nn_activation hidden_act, out_act;
  int batch;
} mlp_case;

static const mlp_case mlp_cases[] = {
    {4, 2, {5, 6}, 3, 1, NN_ACT_RELU, NN_ACT_IDENTITY, 1},
    {4, 2, {5, 6}, 3, 1, NN_ACT_RELU, NN_ACT_IDENTITY, 7},
    {3, 1, {8}, 2, 1, NN_ACT_TANH, NN_ACT_TANH, 5},
    {6, 3, {4, 5, 3}, 1, 1, NN_ACT_ELU, NN_ACT_IDENTITY, 4},
    {2, 0, {0}, 4, 1, NN_ACT_RELU, NN_ACT_ELU, 3},
    {5, 2, {6, 4}, 2, 3, NN_ACT_RELU, NN_ACT_IDENTITY, 1},
    {5, 2, {6, 4}, 2, 3, NN_ACT_TANH, NN_ACT_IDENTITY, 6},
    {3, 1, {7}, 3, 2, NN_ACT_ELU, NN_ACT_TANH, 4},
};

static nn_mlp *make_net(const mlp_case *mc, rng_t *r) {
  nn_mlp_spec spec = {.input_dim = mc->in, .output_dim = mc->out, .hidden_count = mc->hidden_count,
                      .hidden_activation = mc->hidden_act, .output_activation = mc->out_act,
                      .ensemble_size = mc->ensemble};
  for (int i = 0; i < mc->hidden_count; i++) spec.hidden_dims[i] = mc->hidden[i];
  ember_err err = {0};
  nn_mlp *net = nn_mlp_new(&spec, &err);
  ck_assert_msg(net != NULL, "%s", err.msg);
  nn_mlp_init(net, r, NN_INIT_FAN_IN_UNIFORM);
  /* fan-in init makes small biases; widen them so units sit on both sides of the ReLU kink */
  for (size_t i = 0; i < net->param_count; i++) net->params[i] *= 1.5f;
  return net;
}

/* Checks forward values and every parameter and input gradient of one case, one input mode. */
static void check_mlp_case(const mlp_case *mc, int seed, nn_input_mode mode) {
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST);
  nn_mlp *net = make_net(mc, &r);
  ember_err err = {0};
  nn_mlp_ws *ws = nn_mlp_ws_new(net, mc->batch + 2, &err);
  ck_assert_msg(ws != NULL, "%s", err.msg);
  const int E = net->ensemble_size;
  const int in_cols = mode == NN_INPUT_PER_MEMBER ? E * mc->in : mc->in;
  const size_t n_in = (size_t)mc->batch * in_cols, n_out = (size_t)mc->batch * E * mc->out;
  float *x = malloc(n_in * sizeof *x), *c = malloc(n_out * sizeof *c), *dx = calloc(n_in, sizeof *dx);
  fill_uniform(&r, x, n_in, -2, 2);
  fill_uniform(&r, c, n_out, -1, 1);

  nn_mlp_zero_grad(net);
  const float *y = nn_mlp_forward(net, ws, x, mc->batch, mode);
  nn_mlp_backward(net, ws, c, NN_PARAM_GRADS_ACCUMULATE, dx);

  double *pd = malloc(net->param_count * sizeof *pd), *xd = malloc(n_in * sizeof *xd);
  double *yd = malloc(n_out * sizeof *yd), *gp = malloc(net->param_count * sizeof *gp);
  double *gx = malloc(n_in * sizeof *gx);
  to_double(pd, net->params, net->param_count);
  to_double(xd, x, n_in);
  mlp_ctx k = {net, pd, xd, c, mc->batch, mode};
  mlp_reference(&k, yd);
  for (size_t i = 0; i < n_out; i++) ck_assert_double_eq_tol(y[i], yd[i], 1e-5 * (1 + fabs(yd[i])));
  fd_gradient(pd, net->param_count, gp, mlp_ctx_loss, &k);
  fd_gradient(xd, n_in, gx, mlp_ctx_loss, &k);
  double ep = grad_error(net->grads, gp, net->param_count), ex = grad_error(dx, gx, n_in);
  if (getenv("NN_TEST_VERBOSE"))
    printf("mlp in=%d E=%d batch=%d seed=%d mode=%d: param %.2e input %.2e\n", mc->in, E, mc->batch,
           seed, (int)mode, ep, ex);
  ck_assert_msg(ep <= GRAD_RTOL && ex <= GRAD_RTOL,
                "case in=%d E=%d batch=%d seed=%d mode=%d: param grad error %g, input grad error %g",
                mc->in, E, mc->batch, seed, (int)mode, ep, ex);
  free(x), free(c), free(dx), free(pd), free(xd), free(yd), free(gp), free(gx);
  nn_mlp_ws_destroy(&ws);
  nn_mlp_destroy(&net);
}

START_TEST(mlp_matches_finite_differences) {
  const mlp_case *mc = &mlp_cases[_i];
  for (int seed = 11; seed <= 13; seed++) {
    check_mlp_case(mc, seed, NN_INPUT_SHARED);
    if (mc->ensemble > 1) check_mlp_case(mc, seed, NN_INPUT_PER_MEMBER);
  }
}
END_TEST

/* ---- ensembles, workspaces, accumulation -------------------------------------------------- */

static nn_mlp *single_member_copy(const nn_mlp *ens, int member) {
  nn_mlp_spec spec = ens->spec;
  spec.ensemble_size = 1;
  nn_mlp *one = nn_mlp_new(&spec, NULL);
  ck_assert_ptr_nonnull(one);
  for (int l = 0; l < ens->layer_count; l++) {
    memcpy(nn_mlp_weight(one, l, 0), nn_mlp_weight(ens, l, member),
           sizeof(float) * ens->dims[l] * ens->dims[l + 1]);
    memcpy(nn_mlp_bias(one, l, 0), nn_mlp_bias(ens, l, member), sizeof(float) * ens->dims[l + 1]);
  }
  return one;
}

START_TEST(ensemble_equals_its_members_run_alone) {
  rng_t r;
  rng_seed(&r, 5, RNG_STREAM_TEST);
  const mlp_case mc = {5, 2, {9, 7}, 3, 4, NN_ACT_RELU, NN_ACT_IDENTITY, 6};
  nn_mlp *ens = make_net(&mc, &r);
  const int E = 4, B = 6, in = 5, out = 3;
  nn_mlp_ws *ws = nn_mlp_ws_new(ens, B, NULL);
  float shared[6 * 5], per[6 * 4 * 5], c[6 * 4 * 3], d_shared[6 * 5] = {0}, d_per[6 * 4 * 5] = {0};
  fill_uniform(&r, shared, B * in, -1, 1);
  fill_uniform(&r, per, B * E * in, -1, 1);
  fill_uniform(&r, c, B * E * out, -1, 1);
  float y_shared[6 * 4 * 3], y_per[6 * 4 * 3];
  memcpy(y_shared, nn_mlp_forward(ens, ws, shared, B, NN_INPUT_SHARED), sizeof y_shared);
  nn_mlp_backward(ens, ws, c, NN_PARAM_GRADS_SKIP, d_shared);
  memcpy(y_per, nn_mlp_forward(ens, ws, per, B, NN_INPUT_PER_MEMBER), sizeof y_per);
  nn_mlp_backward(ens, ws, c, NN_PARAM_GRADS_ACCUMULATE, d_per);

  float d_shared_sum[6 * 5] = {0};
  for (int e = 0; e < E; e++) {
    nn_mlp *one = single_member_copy(ens, e);
    nn_mlp_ws *ws1 = nn_mlp_ws_new(one, B, NULL);
    float x_e[6 * 5], c_e[6 * 3], dx_e[6 * 5] = {0};
    for (int b = 0; b < B; b++) {
      memcpy(x_e + b * in, per + b * E * in + e * in, sizeof(float) * in);
      memcpy(c_e + b * out, c + b * E * out + e * out, sizeof(float) * out);
    }
    const float *y = nn_mlp_forward(one, ws1, x_e, B, NN_INPUT_SHARED);
    nn_mlp_backward(one, ws1, c_e, NN_PARAM_GRADS_ACCUMULATE, dx_e);
    for (int b = 0; b < B; b++)
      for (int j = 0; j < out; j++) ck_assert_float_eq_tol(y_per[b * E * out + e * out + j], y[b * out + j], 1e-5);
    for (int b = 0; b < B; b++)
      for (int i = 0; i < in; i++) ck_assert_float_eq_tol(d_per[b * E * in + e * in + i], dx_e[b * in + i], 1e-5);
    for (int l = 0; l < ens->layer_count; l++) {
      for (int i = 0; i < ens->dims[l] * ens->dims[l + 1]; i++)
        ck_assert_float_eq_tol(nn_mlp_weight_grad(ens, l, e)[i], nn_mlp_weight_grad(one, l, 0)[i], 1e-5);
      for (int i = 0; i < ens->dims[l + 1]; i++)
        ck_assert_float_eq_tol(nn_mlp_bias_grad(ens, l, e)[i], nn_mlp_bias_grad(one, l, 0)[i], 1e-5);
    }
    /* shared input: same member, fed the shared rows */
    y = nn_mlp_forward(one, ws1, shared, B, NN_INPUT_SHARED);
    for (int b = 0; b < B; b++)
      for (int j = 0; j < out; j++) ck_assert_float_eq_tol(y_shared[b * E * out + e * out + j], y[b * out + j], 1e-5);
    nn_mlp_backward(one, ws1, c_e, NN_PARAM_GRADS_SKIP, d_shared_sum);
    nn_mlp_ws_destroy(&ws1);
    nn_mlp_destroy(&one);
  }
  /* shared input: the input gradient is the sum over members */
  for (int i = 0; i < B * in; i++) ck_assert_float_eq_tol(d_shared[i], d_shared_sum[i], 1e-5);
  nn_mlp_ws_destroy(&ws);
  nn_mlp_destroy(&ens);
}
END_TEST

START_TEST(backward_accumulates_and_skip_leaves_params_alone) {
  rng_t r;
  rng_seed(&r, 8, RNG_STREAM_TEST);
  const mlp_case mc = {4, 2, {8, 8}, 2, 1, NN_ACT_TANH, NN_ACT_IDENTITY, 5};
  nn_mlp *net = make_net(&mc, &r);
  nn_mlp_ws *ws = nn_mlp_ws_new(net, 5, NULL);
  float x[20], c[10], dx1[20] = {0}, dx2[20] = {0};
  fill_uniform(&r, x, 20, -1, 1);
  fill_uniform(&r, c, 10, -1, 1);
  nn_mlp_zero_grad(net);
  nn_mlp_forward(net, ws, x, 5, NN_INPUT_SHARED);
  nn_mlp_backward(net, ws, c, NN_PARAM_GRADS_ACCUMULATE, dx1);
  float *once = malloc(net->param_count * sizeof *once);
  memcpy(once, net->grads, net->param_count * sizeof *once);
  /* backward again from the same forward: everything doubles, the forward is untouched */
  nn_mlp_backward(net, ws, c, NN_PARAM_GRADS_ACCUMULATE, dx1);
  for (size_t i = 0; i < net->param_count; i++) ck_assert_float_eq_tol(net->grads[i], 2 * once[i], 1e-6);
  /* skip: no parameter gradient moves, the input gradient still comes */
  nn_mlp_zero_grad(net);
  nn_mlp_backward(net, ws, c, NN_PARAM_GRADS_SKIP, dx2);
  for (size_t i = 0; i < net->param_count; i++) ck_assert_float_eq(net->grads[i], 0.0f);
  for (int i = 0; i < 20; i++) ck_assert_float_eq_tol(dx1[i], 2 * dx2[i], 1e-6);
  /* a column slice of the input gradient equals those columns of the full one */
  float slice[5 * 2] = {0};
  nn_mlp_backward_input_cols(net, ws, c, NN_PARAM_GRADS_SKIP, slice, 1, 2);
  for (int b = 0; b < 5; b++)
    for (int j = 0; j < 2; j++) ck_assert_float_eq_tol(slice[b * 2 + j], dx2[b * 4 + 1 + j], 1e-6);
  free(once);
  nn_mlp_ws_destroy(&ws);
  nn_mlp_destroy(&net);
}
END_TEST

/* Q(s, a1) and Q(s, a2) forwarded on two workspaces, then both backpropagated: the gradients are
 * the sum of doing each alone, and the input reused between the calls is not needed any more. */
START_TEST(two_workspaces_backprop_into_one_gradient) {
  rng_t r;
  rng_seed(&r, 9, RNG_STREAM_TEST);
  const mlp_case mc = {6, 2, {10, 10}, 1, 2, NN_ACT_RELU, NN_ACT_IDENTITY, 4};
  nn_mlp *net = make_net(&mc, &r);
  nn_mlp_ws *ws_a = nn_mlp_ws_new(net, 8, NULL), *ws_b = nn_mlp_ws_new(net, 8, NULL);
  float xa[4 * 6], xb[3 * 6], ca[4 * 2], cb[3 * 2], buffer[4 * 6];
  fill_uniform(&r, xa, 24, -1, 1);
  fill_uniform(&r, xb, 18, -1, 1);
  fill_uniform(&r, ca, 8, -1, 1);
  fill_uniform(&r, cb, 6, -1, 1);
  float *alone = calloc(net->param_count, sizeof *alone);
  nn_mlp_zero_grad(net);
  nn_mlp_forward(net, ws_a, xa, 4, NN_INPUT_SHARED);
  nn_mlp_backward(net, ws_a, ca, NN_PARAM_GRADS_ACCUMULATE, NULL);
  nn_mlp_forward(net, ws_a, xb, 3, NN_INPUT_SHARED);
  nn_mlp_backward(net, ws_a, cb, NN_PARAM_GRADS_ACCUMULATE, NULL);
  memcpy(alone, net->grads, net->param_count * sizeof *alone);

  nn_mlp_zero_grad(net);
  memcpy(buffer, xa, sizeof xa);
  nn_mlp_forward(net, ws_a, buffer, 4, NN_INPUT_SHARED);
  memcpy(buffer, xb, sizeof xb); /* the caller reuses its input buffer */
  nn_mlp_forward(net, ws_b, buffer, 3, NN_INPUT_SHARED);
  memset(buffer, 0, sizeof buffer);
  nn_mlp_backward(net, ws_b, cb, NN_PARAM_GRADS_ACCUMULATE, NULL);
  nn_mlp_backward(net, ws_a, ca, NN_PARAM_GRADS_ACCUMULATE, NULL);
  for (size_t i = 0; i < net->param_count; i++) ck_assert_float_eq_tol(net->grads[i], alone[i], 1e-5);
  free(alone);
  nn_mlp_ws_destroy(&ws_a);
  nn_mlp_ws_destroy(&ws_b);
  nn_mlp_destroy(&net);
}
END_TEST

/* A NaN must reach the optimiser's finite check, not be hidden by an activation that maps it to 0. */
START_TEST(nan_propagates_through_every_activation) {
  const nn_activation acts[] = {NN_ACT_IDENTITY, NN_ACT_RELU, NN_ACT_TANH, NN_ACT_ELU};
  for (size_t a = 0; a < 4; a++) {
    nn_mlp_spec spec = {.input_dim = 2, .output_dim = 1, .hidden_count = 1, .hidden_dims = {16},
                        .hidden_activation = acts[a]};
    nn_mlp *net = nn_mlp_new(&spec, NULL);
    rng_t r;
    rng_seed(&r, 3, RNG_STREAM_TEST);
    nn_mlp_init(net, &r, NN_INIT_FAN_IN_UNIFORM);
    nn_mlp_ws *ws = nn_mlp_ws_new(net, 2, NULL);
    const float x[4] = {0.5f, NAN, 0.25f, -0.5f};
    const float *y = nn_mlp_forward(net, ws, x, 2, NN_INPUT_SHARED);
    ck_assert_msg(isnan(y[0]), "%s turned a NaN into %g", nn_activation_name(acts[a]), y[0]);
    ck_assert(isfinite(y[1]));
    float z[2] = {NAN, -1.0f}, out[2];
    nn_activation_forward(acts[a], out, z, 2);
    ck_assert(isnan(out[0]));
    nn_mlp_ws_destroy(&ws);
    nn_mlp_destroy(&net);
  }
}
END_TEST

/* Misuse that would write past a workspace stops the program in every build type (SIGABRT). */
static nn_mlp *misuse_net(void) {
  nn_mlp_spec spec = {.input_dim = 2, .output_dim = 1, .hidden_count = 1, .hidden_dims = {4}};
  return nn_mlp_new(&spec, NULL);
}
START_TEST(batch_over_workspace_size_aborts) {
  nn_mlp *net = misuse_net();
  nn_mlp_ws *ws = nn_mlp_ws_new(net, 2, NULL);
  float x[6] = {0};
  nn_mlp_forward(net, ws, x, 3, NN_INPUT_SHARED);
}
END_TEST
START_TEST(backward_without_forward_aborts) {
  nn_mlp *net = misuse_net(), *other = misuse_net();
  nn_mlp_ws *ws = nn_mlp_ws_new(net, 2, NULL);
  float x[4] = {0}, d[2] = {0};
  nn_mlp_forward(other, ws, x, 2, NN_INPUT_SHARED);
  nn_mlp_backward(net, ws, d, NN_PARAM_GRADS_ACCUMULATE, NULL); /* ws last ran `other` */
}
END_TEST

START_TEST(bad_specs_are_rejected_by_field) {
  ember_err err = {0};
  nn_mlp_spec ok = {.input_dim = 3, .output_dim = 2, .hidden_count = 1, .hidden_dims = {4}};
  nn_mlp_spec s = ok;
  s.input_dim = 0;
  ck_assert_ptr_null(nn_mlp_new(&s, &err));
  ck_assert_int_eq(err.code, EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "input_dim"));
  s = ok, s.output_dim = -1;
  ck_assert_int_eq(nn_mlp_spec_check(&s, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "output_dim"));
  s = ok, s.hidden_count = NN_MAX_HIDDEN + 1;
  ck_assert_int_eq(nn_mlp_spec_check(&s, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "hidden_count"));
  s = ok, s.hidden_dims[0] = 0;
  ck_assert_int_eq(nn_mlp_spec_check(&s, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "hidden_dims[0]"));
  s = ok, s.hidden_activation = (nn_activation)17;
  ck_assert_int_eq(nn_mlp_spec_check(&s, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "hidden_activation"));
  s = ok, s.ensemble_size = -2;
  ck_assert_int_eq(nn_mlp_spec_check(&s, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "ensemble_size"));
  s = ok, s.hidden_dims[0] = 1 << 20, s.input_dim = 1 << 12;
  ck_assert_int_eq(nn_mlp_spec_check(&s, &err), EMBER_EINVAL);
  nn_mlp *net = nn_mlp_new(&ok, &err);
  ck_assert_ptr_nonnull(net);
  ck_assert_int_eq(net->ensemble_size, 1);
  ck_assert_uint_eq(net->param_count, 4 * 3 + 4 + 2 * 4 + 2);
  ck_assert_ptr_null(nn_mlp_ws_new(net, 0, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "max_batch"));
  nn_mlp_destroy(&net);
  ck_assert_ptr_null(net);
  nn_mlp_destroy(&net); /* destroying NULL is harmless */
  nn_activation act;
  ck_assert_int_eq(nn_activation_parse("elu", &act, &err), 0);
  ck_assert_int_eq(act, NN_ACT_ELU);
  ck_assert_int_eq(nn_activation_parse("gelu", &act, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "gelu"));
}
END_TEST

int main(void) {
  Suite *s = suite_create("nn_mlp");
  TCase *t = tcase_create("gradients");
  tcase_set_timeout(t, 60);
  tcase_add_test(t, linear_matches_finite_differences);
  tcase_add_test(t, each_activation_matches_finite_differences);
  tcase_add_loop_test(t, mlp_matches_finite_differences, 0, (int)(sizeof mlp_cases / sizeof mlp_cases[0]));
  suite_add_tcase(s, t);
  TCase *u = tcase_create("semantics");
  tcase_add_test(u, ensemble_equals_its_members_run_alone);
  tcase_add_test(u, backward_accumulates_and_skip_leaves_params_alone);
  tcase_add_test(u, two_workspaces_backprop_into_one_gradient);
  tcase_add_test(u, nan_propagates_through_every_activation);
  tcase_add_test(u, bad_specs_are_rejected_by_field);
  suite_add_tcase(s, u);
  TCase *m = tcase_create("misuse");
  tcase_add_test_raise_signal(m, batch_over_workspace_size_aborts, SIGABRT);
  tcase_add_test_raise_signal(m, backward_without_forward_aborts, SIGABRT);
  suite_add_tcase(s, m);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
