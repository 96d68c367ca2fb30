/* vmbpo_internal.h: how the four files of VMBPO / VMBPO-MFE talk; not for other modules (the tests
 * and the benchmark use algo_vmbpo.h, the learner the registry).
 *
 * The files follow the paper's structure (../shared/papers/003_*, sections 4-5; every loss is in
 * docs/algorithms.md, "VMBPO as implemented"):
 *
 *   algo_vmbpo.c    the shared lifecycle: settings and their config sections, the CSV columns,
 *                   create (every network, optimiser and scratch buffer, sized once), destroy, the
 *                   state regions that save/load write and that e_step snapshots, the batch checks,
 *                   act, export_params, save, load, and the two algo_ops tables.
 *   vmbpo_model.c   q_d, the variational dynamics (E-step step 1, eqs. 17-19): step 1's weights
 *                   (both normalisers), its weighted likelihood and optimiser steps, and drawing
 *                   model next states from q_d with the task's termination of them. The only code
 *                   that calls algo_task_fns.terminated_fn is vmbpo_model_terminated here.
 *   vmbpo_estep.c   the rest of the E-step: nu (step 2, eq. 21), the critic Q and V (step 3,
 *                   eqs. 22-24), q_c (step 4, eq. 25), VMBPO-MFE's exponential-TD critic (eqs. 9-10,
 *                   Appendix D), the rounds of steps 1-4, and e_step with its rollback and Polyak
 *                   update of V', Q'.
 *   vmbpo_mstep.c   the M-step: pi by maximum likelihood of q_c's actions with the KL trust region
 *                   (eq. 27), or the paper's copy pi <- q_c; m_step.
 *
 * Scratch buffers in struct vmbpo are shared: a step may overwrite any of them, and nothing
 * carries over between steps except what the comments on the fields say (vmbpo_critic_sample's
 * samples for the two step-3 losses; V' at the batch's x' in y_v during step 1).
 *
 * Thread-safety: one thread per instance (algo.h).
 */
#ifndef EMBER_VMBPO_INTERNAL_H
#define EMBER_VMBPO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "algo_vmbpo.h"
#include "nn_dist.h"
#include "nn_optim.h"
#include "rng.h"

/* CSV columns. VMBPO: e_step fills up to ST_MODEL_REWARD, m_step the last two. */
enum {
  ST_QD_LOSS, ST_WEIGHT_ESS, ST_WEIGHT_MAX, ST_NU_LOSS, ST_MODEL_KL, ST_NU_CLAMP, ST_Q_LOSS, ST_Q_MEAN,
  ST_TARGET_MEAN, ST_V_LOSS, ST_V_MEAN, ST_QC_LOSS, ST_QC_ENTROPY, ST_LOG_RATIO, ST_MODEL_REWARD, ST_PI_LOSS,
  ST_PI_KL, ST_COUNT
};
/* VMBPO-MFE: its own columns (no nu, no model samples). */
enum {
  MS_Q_LOSS, MS_EXP_TD, MS_TD_CLAMP, MS_Q_MEAN, MS_V_LOSS, MS_V_MEAN, MS_QC_LOSS, MS_QC_ENTROPY, MS_LOG_RATIO,
  MS_QD_LOSS, MS_WEIGHT_ESS, MS_PI_LOSS, MS_PI_KL, MS_COUNT
};

/* One piece of learner state: what save/load write and what e_step snapshots. */
typedef struct {
  const char *name;
  void *data;
  size_t bytes;
  bool in_estep; /* changed by e_step (so snapshotted for the non-finite rollback) */
} state_region;

#define MAX_REGIONS 48

struct vmbpo {
  vmbpo_settings cfg;
  bool mfe;
  const char *algo_name;
  char task[CONFIG_STRING_MAX];
  algo_task_fns fns;
  int O, A, B, K, N, E, Dm; /* obs, act, max batch, samples per real, B*K, members, model dim */
  int C;                    /* critics: members of Q and Q' */
  bool learn_reward;
  bool act_with_qc;
  bool qd_norm_model; /* step 1's normaliser per (x, a) from model samples (else over the batch) */
  int real_rows;      /* B real rows in step 3's critic rows (real_ratio > 0) or 0; set per batch */
  float eta, gamma, lo, hi, nu_max;

  nn_mlp *net[VMBPO_NET_COUNT];
  nn_mlp_ws *ws[VMBPO_NET_COUNT];
  nn_gauss_head *head;
  nn_adam *opt_pi, *opt_qc, *opt_qd, *opt_head, *opt_nu, *opt_q, *opt_v;

  rng_t rng;
  uint64_t updates, mstep_calls, msteps;

  state_region regions[MAX_REGIONS];
  int region_count;
  unsigned char *snapshot; /* in_estep regions, back to back */
  size_t snapshot_bytes;

  /* scratch; [rows, cols] with N = B*K model rows, B real rows */
  float *xa;          /* [N + B, O + A]: [x_i | a_ik], the input of q_d and Q (+ the real rows, step 3) */
  float *nu_in;       /* [N + B, 2O + A]: [x | a | dx] */
  float *obs_rep;     /* [N, O]: x_i tiled K times */
  float *next_rep;    /* [N + B, O]: model next states x^ (+ the real x', step 3) */
  float *target_d;    /* [B, Dm]: step 1's regression targets [x' - x | r] */
  float *d_raw;       /* [N, E * 2 Dm] */
  float *head_grad;   /* [2 Dm]: one row's bound gradients */
  float *model_draw;  /* [N, E * Dm]: every member's sample */
  float *eps_model;   /* [N, E * Dm] */
  int *member;        /* [N] */
  float *eps_a;       /* [N, A] */
  float *delta, *w;   /* [B] */
  float *r_model, *d_model, *nu_s, *vt_s, *y_q, *y_v, *d_out1; /* [N] (nu_s, vt_s, y_q, d_out1: [N + B]) */
  float *log_qc, *log_pi; /* [N] */
  float *q_min;           /* [max(N, B)]: the minimum over the critics */
  float *d_q;             /* [N + B, C]: dL/dQ per member */
  int *q_arg;             /* [max(N, B)]: which critic is the minimum */
  float *a_c;         /* [N, A] */
  float *u_c;         /* [N, A]: a_c before tanh; every density of a sampled action is taken at it */
  float *mean_c, *lstd_c, *mean_p, *lstd_p, *mean_o, *lstd_o; /* [B, A] */
  float *mean_rep, *lstd_rep, *mean_rep2, *lstd_rep2;         /* [N, A] */
  float *d_mean_n, *d_lstd_n;  /* [N, A] */
  float *d_mean, *d_lstd, *d_action, *g_u; /* [B, A] */
  float *d_logp, *kl;          /* [B] */
  float *d_head_out;           /* [B, 2A] */
  float *d_v;                  /* [B] */
  float *scratch;
  int *iscratch;
};

/* ---- algo_vmbpo.c: lifecycle pieces the steps use ------------------------------------------------ */

/* A batch the networks can take: shape within the instance's sizes, every column present and
 * finite. EMBER_ESHAPE / EMBER_EINVAL / EMBER_ENONFINITE otherwise. */
int vmbpo_check_batch(const vmbpo_t *v, const algo_batch *b, ember_err *err);
/* Copies every in_estep region into the snapshot / back from it (e_step's rollback). */
void vmbpo_snapshot_take(vmbpo_t *v);
void vmbpo_snapshot_restore(vmbpo_t *v);

/* ---- vmbpo_model.c: q_d (step 1) ----------------------------------------------------------------- */

/* Draws model next states for rows [x | a] already in v->xa (rows of them): q_d forward, every
 * member sampled with eps (rows x E*Dm), member[r] picked. Writes next_rep [rows, O] = x + dx and,
 * when the reward is learned, r_model [rows] = the picked member's reward mean. */
void vmbpo_model_sample(vmbpo_t *v, const float *obs_rows, int rows, const float *eps, const int *member);
/* d_model [rows] = the task's termination of the model next states next_rep [rows, O]
 * (algo_task_fns.terminated_fn), or 0 (never) when the task gave no function. */
void vmbpo_model_terminated(vmbpo_t *v, int rows);
/* eps_model [rows, E * Dm] standard normals and member [rows] uniform over the E members. */
void vmbpo_draw_model_noise(vmbpo_t *v, int rows);
/* Step 1 with its optimiser steps (q_d's network and its bounds). */
int vmbpo_model_fit(vmbpo_t *v, const algo_batch *b, double *loss, double *ess, double *wmax, ember_err *err);

/* ---- vmbpo_estep.c / vmbpo_mstep.c: the algo_ops entries ----------------------------------------- */

int vmbpo_e_step(void *self, const algo_batch *b, algo_stats *st, ember_err *err);
int vmbpo_m_step(void *self, const algo_batch *b, algo_stats *st, ember_err *err);

/* ---- small helpers every file uses --------------------------------------------------------------- */

/* out [rows, O + A] = [x | a] */
static inline void vmbpo_concat2(float *out, const float *x, int dx, const float *a, int da, int rows) {
  for (int r = 0; r < rows; r++) {
    memcpy(out + (size_t)r * (dx + da), x + (size_t)r * dx, (size_t)dx * sizeof(float));
    memcpy(out + (size_t)r * (dx + da) + dx, a + (size_t)r * da, (size_t)da * sizeof(float));
  }
}

/* nu's input row: [x | a | x' - x] */
static inline void vmbpo_nu_row(float *out, const float *x, const float *a, const float *x_next, int O, int A) {
  memcpy(out, x, (size_t)O * sizeof(float));
  memcpy(out + O, a, (size_t)A * sizeof(float));
  for (int j = 0; j < O; j++) out[O + A + j] = x_next[j] - x[j];
}

/* dst [K * rows, cols] = src [rows, cols] repeated K times (k-major) */
static inline void vmbpo_tile(float *dst, const float *src, int rows, int cols, int K) {
  const size_t block = (size_t)rows * cols;
  for (int k = 0; k < K; k++) memcpy(dst + (size_t)k * block, src, block * sizeof(float));
}

/* out [rows] = min over the C critics of q [rows, C]; arg [rows] = the member that gives it. */
static inline const float *vmbpo_critic_min(const float *q, int rows, int C, float *out, int *arg) {
  if (C == 1) {
    for (int r = 0; r < rows; r++) arg[r] = 0;
    return q;
  }
  for (int r = 0; r < rows; r++) {
    const float *row = q + (size_t)r * C;
    int m = 0;
    for (int j = 1; j < C; j++)
      if (row[j] < row[m]) m = j;
    out[r] = row[m];
    arg[r] = m;
  }
  return out;
}

/* A policy network's (mean, log_std) at obs [rows, O]; returns the raw output (inside ws). */
static inline const float *vmbpo_policy_dist(vmbpo_t *v, vmbpo_net_id id, const float *obs, int rows, float *mean,
                                             float *log_std) {
  const float *out = nn_mlp_forward(v->net[id], v->ws[id], obs, rows, NN_INPUT_SHARED);
  nn_policy_head_forward(mean, log_std, out, rows, v->A, v->lo, v->hi);
  return out;
}

/* One Adam step; an error names the algorithm and what was stepped. */
static inline int vmbpo_adam(vmbpo_t *v, nn_adam *opt, float *params, const float *grads, const char *what,
                             ember_err *err) {
  int rc = nn_adam_step(opt, params, grads, NULL, err);
  if (rc) ember_err_prefix(err, "%s %s: ", v->algo_name, what);
  return rc;
}

/* Writes stat i (when s is given) and raises its count to at least count. */
static inline void vmbpo_stat(algo_stats *s, int i, double x, int count) {
  if (!s) return;
  if (s->count < count) s->count = count;
  s->values[i] = x;
}

static inline double vmbpo_mean_of(const float *x, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += x[i];
  return s / n;
}

#endif
