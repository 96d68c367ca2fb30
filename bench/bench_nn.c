/* bench_nn: how close the MLP's forward + backward comes to raw OpenBLAS sgemm.
 *
 * The network is the SAC critic at HalfCheetah sizes: [obs 17 | act 6] -> 256 -> 256 -> 1, ReLU,
 * batch 256. One iteration is a forward pass and a full backward pass (parameter gradients AND the
 * input gradient), i.e. 9 GEMMs: per layer one forward, one dW and one dX.
 *
 *   sgemm_gflops           those 9 GEMMs called straight on OpenBLAS, same shapes, transposes and
 *                          leading dimensions, nothing else: the ceiling at these sizes
 *   nn_mlp_fwd_bwd_gflops  the same GEMM flops divided by the time of nn_mlp_forward + nn_mlp_backward
 *                          (which add the bias/activation and gradient passes and the input copy)
 *   nn_mlp_roofline_ratio  the second over the first (goal >= 0.7)
 * plus, for context, sgemm at 256 x 256 x 256 and the actor's figures. Rounds of the two are
 * interleaved and each figure is the median round, so load from other processes hits both alike.
 * Uses 2 OpenBLAS threads. Prints `BENCH <name> <value> <unit>` lines; asserts nothing about time.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn.h"
#include "rng.h"

enum { BATCH = 256, ROUNDS = 7 };

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef struct {
  nn_mlp *net;
  nn_mlp_ws *ws;
  float *input, *d_output, *d_input;
  /* raw GEMM buffers, one per layer, the same shapes the MLP uses */
  float *act[NN_MAX_LAYERS + 1], *grad[NN_MAX_LAYERS + 1];
} bench_case;

static void case_make(bench_case *c, int in, int hidden, int out, rng_t *r) {
  nn_mlp_spec spec = {.input_dim = in, .output_dim = out, .hidden_count = 2, .hidden_dims = {hidden, hidden},
                      .hidden_activation = NN_ACT_RELU, .output_activation = NN_ACT_IDENTITY};
  ember_err err = {0};
  c->net = nn_mlp_new(&spec, &err);
  c->ws = c->net ? nn_mlp_ws_new(c->net, BATCH, &err) : NULL;
  if (!c->ws) {
    fprintf(stderr, "bench_nn: %s\n", err.msg);
    exit(1);
  }
  nn_mlp_init(c->net, r, NN_INIT_FAN_IN_UNIFORM);
  c->input = malloc(sizeof(float) * BATCH * in);
  c->d_output = malloc(sizeof(float) * BATCH * out);
  c->d_input = malloc(sizeof(float) * BATCH * in);
  rng_normal_fill(r, c->input, BATCH * in);
  rng_normal_fill(r, c->d_output, BATCH * out);
  for (int l = 0; l <= c->net->layer_count; l++) {
    c->act[l] = calloc((size_t)BATCH * c->net->dims[l], sizeof(float));
    c->grad[l] = calloc((size_t)BATCH * c->net->dims[l], sizeof(float));
    rng_normal_fill(r, c->act[l], BATCH * c->net->dims[l]);
    rng_normal_fill(r, c->grad[l], BATCH * c->net->dims[l]);
  }
}

static void case_free(bench_case *c) {
  for (int l = 0; l <= c->net->layer_count; l++) free(c->act[l]), free(c->grad[l]);
  free(c->input), free(c->d_output), free(c->d_input);
  nn_mlp_ws_destroy(&c->ws);
  nn_mlp_destroy(&c->net);
}

/* The MLP's nine GEMMs and nothing else. */
static void raw_gemms(bench_case *c) {
  nn_mlp *net = c->net;
  for (int l = 0; l < net->layer_count; l++) { /* Y = X W^T */
    int in = net->dims[l], out = net->dims[l + 1];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, BATCH, out, in, 1.0f, c->act[l], in,
                net->params + net->weight_offset[l], in, 0.0f, c->act[l + 1], out);
  }
  for (int l = net->layer_count - 1; l >= 0; l--) {
    int in = net->dims[l], out = net->dims[l + 1];
    /* dW += dZ^T X */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, BATCH, 1.0f, c->grad[l + 1], out, c->act[l], in,
                1.0f, net->grads + net->weight_offset[l], in);
    /* dX = dZ W */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, BATCH, in, out, 1.0f, c->grad[l + 1], out,
                net->params + net->weight_offset[l], in, 0.0f, c->grad[l], in);
  }
}

static void mlp_pass(bench_case *c) {
  nn_mlp_forward(c->net, c->ws, c->input, BATCH, NN_INPUT_SHARED);
  memset(c->d_input, 0, sizeof(float) * BATCH * c->net->dims[0]);
  nn_mlp_backward(c->net, c->ws, c->d_output, NN_PARAM_GRADS_ACCUMULATE, c->d_input);
}

/* Seconds per call of fn, as the median over interleaved rounds, for fn_a and fn_b. */
static void time_pair(bench_case *c, void (*fn_a)(bench_case *), void (*fn_b)(bench_case *), int iters,
                      double *sec_a, double *sec_b) {
  double a[ROUNDS], b[ROUNDS];
  for (int i = 0; i < iters / 4; i++) fn_a(c), fn_b(c); /* warm-up: threads, caches, pages */
  for (int round = 0; round < ROUNDS; round++) {
    double t0 = now_seconds();
    for (int i = 0; i < iters; i++) fn_a(c);
    double t1 = now_seconds();
    for (int i = 0; i < iters; i++) fn_b(c);
    double t2 = now_seconds();
    a[round] = (t1 - t0) / iters, b[round] = (t2 - t1) / iters;
  }
  qsort(a, ROUNDS, sizeof *a, compare_doubles);
  qsort(b, ROUNDS, sizeof *b, compare_doubles);
  *sec_a = a[ROUNDS / 2], *sec_b = b[ROUNDS / 2];
}

static double cube_seconds(int n, int iters) {
  float *a = calloc((size_t)n * n, sizeof(float)), *b = calloc((size_t)n * n, sizeof(float)),
        *c = calloc((size_t)n * n, sizeof(float));
  double rounds[ROUNDS];
  for (int i = 0; i < iters / 4; i++)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
  for (int round = 0; round < ROUNDS; round++) {
    double t0 = now_seconds();
    for (int i = 0; i < iters; i++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    rounds[round] = (now_seconds() - t0) / iters;
  }
  free(a), free(b), free(c);
  qsort(rounds, ROUNDS, sizeof *rounds, compare_doubles);
  return rounds[ROUNDS / 2];
}

int main(void) {
  openblas_set_num_threads(2);
  rng_t r;
  rng_seed(&r, 1, RNG_STREAM_TEST);
  printf("# bench_nn: OpenBLAS %d threads, batch %d, 2x256 ReLU MLPs, forward + backward incl. input grad\n",
         openblas_get_num_threads(), BATCH);

  double cube = cube_seconds(256, 200);
  printf("BENCH sgemm_256cube_gflops %.2f GFLOPS\n", 2.0 * 256 * 256 * 256 / cube * 1e-9);

  bench_case critic;
  case_make(&critic, 17 + 6, 256, 1, &r);
  const double flops = 3.0 * nn_mlp_forward_flops(critic.net, BATCH); /* forward, dW, dX */
  double raw_s, mlp_s;
  time_pair(&critic, raw_gemms, mlp_pass, 60, &raw_s, &mlp_s);
  printf("BENCH sgemm_gflops %.2f GFLOPS\n", flops / raw_s * 1e-9);
  printf("BENCH nn_mlp_fwd_bwd_gflops %.2f GFLOPS\n", flops / mlp_s * 1e-9);
  printf("BENCH nn_mlp_roofline_ratio %.3f ratio\n", raw_s / mlp_s);
  printf("BENCH nn_mlp_fwd_bwd_ms %.3f ms\n", mlp_s * 1e3);
  case_free(&critic);

  bench_case actor;
  case_make(&actor, 17, 256, 12, &r);
  const double actor_flops = 3.0 * nn_mlp_forward_flops(actor.net, BATCH);
  time_pair(&actor, raw_gemms, mlp_pass, 60, &raw_s, &mlp_s);
  printf("BENCH nn_actor_sgemm_gflops %.2f GFLOPS\n", actor_flops / raw_s * 1e-9);
  printf("BENCH nn_actor_fwd_bwd_gflops %.2f GFLOPS\n", actor_flops / mlp_s * 1e-9);
  printf("BENCH nn_actor_roofline_ratio %.3f ratio\n", raw_s / mlp_s);
  case_free(&actor);
  return 0;
}
