/* vmbpo_tabular.c: closed-form VMBPO E-step / M-step on a known discrete MDP (see the header). */
#include "vmbpo_tabular.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define IDX_SA(m, s, a) ((size_t)(s) * (size_t)(m)->n_actions + (size_t)(a))
#define P_ROW(m, s, a) ((m)->p + IDX_SA(m, s, a) * (size_t)(m)->n_states)
#define QD_ROW(m, qd, s, a) ((qd) + IDX_SA(m, s, a) * (size_t)((m)->n_states + 1))

vmbpo_mdp *vmbpo_mdp_new(int n_states, int n_actions, double gamma, double eta, vmbpo_discount discount) {
  if (n_states <= 0 || n_actions <= 0 || n_states > 4096 || n_actions > 4096) return NULL;
  vmbpo_mdp *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  size_t sa = (size_t)n_states * (size_t)n_actions;
  m->p = calloc(sa * (size_t)n_states, sizeof *m->p);
  m->r = calloc(sa, sizeof *m->r);
  m->terminal = calloc((size_t)n_states, 1);
  if (!m->p || !m->r || !m->terminal) {
    vmbpo_mdp_destroy(&m);
    return NULL;
  }
  m->n_states = n_states;
  m->n_actions = n_actions;
  m->gamma = gamma;
  m->eta = eta;
  m->discount = discount;
  return m;
}

void vmbpo_mdp_destroy(vmbpo_mdp **mdp_p) {
  if (!mdp_p || !*mdp_p) return;
  vmbpo_mdp *m = *mdp_p;
  free(m->p);
  free(m->r);
  free(m->terminal);
  free(m);
  *mdp_p = NULL;
}

int vmbpo_mdp_validate(const vmbpo_mdp *m, ember_err *err) {
  if (!m || !m->p || !m->r || !m->terminal || m->n_states <= 0 || m->n_actions <= 0)
    return ember_fail(err, EMBER_EINVAL, "vmbpo_mdp: missing arrays or non-positive sizes");
  if (!(m->gamma > 0.0 && m->gamma <= 1.0))
    return ember_fail(err, EMBER_EINVAL, "vmbpo_mdp: gamma %g is not in (0, 1]", m->gamma);
  if (!(m->eta > 0.0) || !isfinite(m->eta))
    return ember_fail(err, EMBER_EINVAL, "vmbpo_mdp: eta %g must be positive and finite", m->eta);
  if (m->discount != VMBPO_DISCOUNT_PER_STEP && m->discount != VMBPO_DISCOUNT_FOOTNOTE)
    return ember_fail(err, EMBER_EINVAL, "vmbpo_mdp: unknown discount mode %d", (int)m->discount);
  for (int s = 0; s < m->n_states; s++) {
    for (int a = 0; a < m->n_actions; a++) {
      if (!isfinite(m->r[IDX_SA(m, s, a)]))
        return ember_fail(err, EMBER_ENONFINITE, "vmbpo_mdp: r(%d,%d) is not finite", s, a);
      const double *row = P_ROW(m, s, a);
      double sum = 0.0;
      for (int j = 0; j < m->n_states; j++) {
        if (!(row[j] >= 0.0) || !isfinite(row[j]))
          return ember_fail(err, EMBER_EINVAL, "vmbpo_mdp: p(%d|%d,%d) = %g is not a probability", j, s, a, row[j]);
        sum += row[j];
      }
      if (fabs(sum - 1.0) > 1e-9)
        return ember_fail(err, EMBER_EINVAL, "vmbpo_mdp: p(.|%d,%d) sums to %.12g, not 1", s, a, sum);
    }
  }
  return EMBER_OK;
}

int vmbpo_mdp_randomize(vmbpo_mdp *m, rng_t *rng, int n_terminal, double reward_scale, double min_terminal_prob,
                        ember_err *err) {
  const int S = m->n_states, A = m->n_actions;
  if (n_terminal < 0 || n_terminal >= S)
    return ember_fail(err, EMBER_EINVAL, "vmbpo_mdp_randomize: %d terminal states of %d", n_terminal, S);
  if (!(min_terminal_prob >= 0.0 && min_terminal_prob < 1.0))
    return ember_fail(err, EMBER_EINVAL, "vmbpo_mdp_randomize: min_terminal_prob %g", min_terminal_prob);
  const int first_terminal = S - n_terminal;
  for (int s = 0; s < S; s++) m->terminal[s] = s >= first_terminal;
  for (int s = 0; s < S; s++) {
    for (int a = 0; a < A; a++) {
      double *row = P_ROW(m, s, a);
      m->r[IDX_SA(m, s, a)] = m->terminal[s] ? 0.0 : reward_scale * (2.0 * rng_uniform(rng) - 1.0);
      memset(row, 0, (size_t)S * sizeof *row);
      if (m->terminal[s]) {
        row[s] = 1.0; /* absorbing; never used because V = 0 there */
        continue;
      }
      /* Sparse rows: each state reachable with probability 0.6, at least one always. */
      double live = 0.0, dead = 0.0;
      for (int j = 0; j < S; j++) {
        if (rng_uniform(rng) < 0.6) row[j] = 0.1 + rng_uniform(rng);
      }
      row[(int)rng_below(rng, (uint64_t)first_terminal)] += 0.1 + rng_uniform(rng);
      if (n_terminal > 0) row[first_terminal + (int)rng_below(rng, (uint64_t)n_terminal)] += 0.05;
      for (int j = 0; j < S; j++) {
        if (m->terminal[j])
          dead += row[j];
        else
          live += row[j];
      }
      double t = n_terminal > 0 ? min_terminal_prob + 0.2 * rng_uniform(rng) * (1.0 - min_terminal_prob) : 0.0;
      for (int j = 0; j < S; j++) row[j] *= m->terminal[j] ? t / dead : (1.0 - t) / live;
    }
  }
  return vmbpo_mdp_validate(m, err);
}

void vmbpo_random_policy(const vmbpo_mdp *m, rng_t *rng, double floor, double *pi) {
  const int A = m->n_actions;
  for (int s = 0; s < m->n_states; s++) {
    double *row = pi + IDX_SA(m, s, 0), sum = 0.0;
    for (int a = 0; a < A; a++) sum += row[a] = rng_uniform(rng) + 1e-3;
    for (int a = 0; a < A; a++) row[a] = floor / A + (1.0 - floor) * row[a] / sum;
  }
}

/* ---- helpers --------------------------------------------------------------------------------- */

static inline double v_next(const vmbpo_mdp *m, const double *V, int j) { return m->terminal[j] ? 0.0 : V[j]; }

/* log sum_j p_j exp(tau V(j)), stabilised by its largest exponent. */
static double log_mean_exp_next(const vmbpo_mdp *m, int s, int a, const double *V, double tau) {
  const double *row = P_ROW(m, s, a);
  double mx = -INFINITY;
  for (int j = 0; j < m->n_states; j++)
    if (row[j] > 0.0 && tau * v_next(m, V, j) > mx) mx = tau * v_next(m, V, j);
  double sum = 0.0;
  for (int j = 0; j < m->n_states; j++)
    if (row[j] > 0.0) sum += row[j] * exp(tau * v_next(m, V, j) - mx);
  return mx + log(sum);
}

static double log_add_exp(double x, double y) {
  double mx = x > y ? x : y;
  if (mx == -INFINITY) return -INFINITY;
  return mx + log(exp(x - mx) + exp(y - mx));
}

/* The log of the twisted-dynamics normaliser, i.e. the continuation part of eq. (9):
 * log E_{p_gamma}[exp V] under FOOTNOTE, gamma log E_p[exp V] under PER_STEP. */
static double continuation(const vmbpo_mdp *m, int s, int a, const double *V) {
  double L = log_mean_exp_next(m, s, a, V, 1.0);
  if (m->gamma >= 1.0) return L;
  if (m->discount == VMBPO_DISCOUNT_PER_STEP) return m->gamma * L;
  return log_add_exp(log1p(-m->gamma), log(m->gamma) + L);
}

static double q_value(const vmbpo_mdp *m, int s, int a, const double *V) {
  return m->eta * m->r[IDX_SA(m, s, a)] + continuation(m, s, a, V);
}

/* Writes q_d^V(.|s,a) (eq. 14) into out[0..S], column S being the discount halt. */
static void qd_row(const vmbpo_mdp *m, int s, int a, const double *V, double *out) {
  const int S = m->n_states;
  const double *row = P_ROW(m, s, a);
  const double g = m->gamma;
  double L = log_mean_exp_next(m, s, a, V, 1.0);
  if (m->discount == VMBPO_DISCOUNT_PER_STEP || g >= 1.0) {
    /* The halt keeps its mass 1-gamma; the real next state is p twisted by exp(V). */
    for (int j = 0; j < S; j++) out[j] = row[j] > 0.0 ? g * row[j] * exp(v_next(m, V, j) - L) : 0.0;
    out[S] = 1.0 - g;
  } else {
    /* Footnote 1: twist the augmented kernel (gamma p, 1-gamma) by exp(V_aug), V(halt) = 0. */
    double logZ = continuation(m, s, a, V);
    for (int j = 0; j < S; j++) out[j] = row[j] > 0.0 ? g * row[j] * exp(v_next(m, V, j) - logZ) : 0.0;
    out[S] = (1.0 - g) * exp(-logZ);
  }
}

/* p_gamma(j|s,a): the augmented kernel of footnote 1 over S+1 columns. */
static inline double p_aug(const vmbpo_mdp *m, const double *row, int j) {
  return j < m->n_states ? m->gamma * row[j] : 1.0 - m->gamma;
}

/* ---- section 4.1 ----------------------------------------------------------------------------- */

void vmbpo_q_from_v(const vmbpo_mdp *m, const double *V, double *Q) {
  for (int s = 0; s < m->n_states; s++)
    for (int a = 0; a < m->n_actions; a++) Q[IDX_SA(m, s, a)] = m->terminal[s] ? 0.0 : q_value(m, s, a, V);
}

void vmbpo_q_from_v_tempered(const vmbpo_mdp *m, const double *V, double tau, double *Q) {
  for (int s = 0; s < m->n_states; s++)
    for (int a = 0; a < m->n_actions; a++)
      Q[IDX_SA(m, s, a)] = m->terminal[s] ? 0.0
                                          : m->eta * m->r[IDX_SA(m, s, a)] +
                                                m->gamma / tau * log_mean_exp_next(m, s, a, V, tau);
}

static double log_mean_exp_actions(const vmbpo_mdp *m, int s, const double *pi, const double *Q) {
  const double *w = pi + IDX_SA(m, s, 0), *q = Q + IDX_SA(m, s, 0);
  double mx = -INFINITY, sum = 0.0;
  for (int a = 0; a < m->n_actions; a++)
    if (w[a] > 0.0 && q[a] > mx) mx = q[a];
  for (int a = 0; a < m->n_actions; a++)
    if (w[a] > 0.0) sum += w[a] * exp(q[a] - mx);
  return mx + log(sum);
}

void vmbpo_v_from_q(const vmbpo_mdp *m, const double *pi, const double *Q, double *V) {
  for (int s = 0; s < m->n_states; s++) V[s] = m->terminal[s] ? 0.0 : log_mean_exp_actions(m, s, pi, Q);
}

void vmbpo_qd_from_v(const vmbpo_mdp *m, const double *V, double *qd) {
  for (int s = 0; s < m->n_states; s++)
    for (int a = 0; a < m->n_actions; a++) qd_row(m, s, a, V, QD_ROW(m, qd, s, a));
}

void vmbpo_qc_from_q(const vmbpo_mdp *m, const double *pi, const double *Q, double *qc) {
  const int A = m->n_actions;
  for (int s = 0; s < m->n_states; s++) {
    const double *w = pi + IDX_SA(m, s, 0);
    double *out = qc + IDX_SA(m, s, 0);
    if (m->terminal[s]) {
      memcpy(out, w, (size_t)A * sizeof *out);
      continue;
    }
    double lse = log_mean_exp_actions(m, s, pi, Q);
    for (int a = 0; a < A; a++) out[a] = w[a] > 0.0 ? w[a] * exp(Q[IDX_SA(m, s, a)] - lse) : 0.0;
  }
}

/* E_{q_d}[V(x') - log(q_d/p_gamma)] with q_d from eq. (14), written out term by term: the inner max of
 * eq. (6). No buffer: the row is recomputed column by column. */
static double inner_max_explicit(const vmbpo_mdp *m, int s, int a, const double *V) {
  const int S = m->n_states;
  const double *row = P_ROW(m, s, a);
  const double g = m->gamma;
  double L = log_mean_exp_next(m, s, a, V, 1.0);
  double logZ = continuation(m, s, a, V);
  int per_step = m->discount == VMBPO_DISCOUNT_PER_STEP || g >= 1.0;
  double total = 0.0;
  for (int j = 0; j <= S; j++) {
    double pa = p_aug(m, row, j);
    if (pa <= 0.0) continue;
    double vj = j < S ? v_next(m, V, j) : 0.0, q;
    if (j == S)
      q = per_step ? 1.0 - g : (1.0 - g) * exp(-logZ);
    else
      q = g * row[j] * exp(vj - (per_step ? L : logZ));
    if (q > 0.0) total += q * (vj - log(q / pa));
  }
  return total;
}

void vmbpo_apply_tqc_model(const vmbpo_mdp *m, const double *pi, const double *qc, const double *V, double *out) {
  for (int s = 0; s < m->n_states; s++) {
    double v = 0.0;
    if (!m->terminal[s]) {
      for (int a = 0; a < m->n_actions; a++) {
        double c = qc[IDX_SA(m, s, a)];
        if (c <= 0.0) continue;
        v += c * (m->eta * m->r[IDX_SA(m, s, a)] - log(c / pi[IDX_SA(m, s, a)]) + inner_max_explicit(m, s, a, V));
      }
    }
    out[s] = v;
  }
}

void vmbpo_apply_tqc(const vmbpo_mdp *m, const double *pi, const double *qc, const double *V, double *out) {
  for (int s = 0; s < m->n_states; s++) {
    double v = 0.0;
    if (!m->terminal[s]) {
      for (int a = 0; a < m->n_actions; a++) {
        double c = qc[IDX_SA(m, s, a)];
        if (c > 0.0) v += c * (q_value(m, s, a, V) - log(c / pi[IDX_SA(m, s, a)]));
      }
    }
    out[s] = v;
  }
}

void vmbpo_apply_t(const vmbpo_mdp *m, const double *pi, const double *V, double *out) {
  const int A = m->n_actions;
  for (int s = 0; s < m->n_states; s++) {
    if (m->terminal[s]) {
      out[s] = 0.0;
      continue;
    }
    double mx = -INFINITY, sum = 0.0;
    for (int a = 0; a < A; a++)
      if (pi[IDX_SA(m, s, a)] > 0.0 && q_value(m, s, a, V) > mx) mx = q_value(m, s, a, V);
    for (int a = 0; a < A; a++)
      if (pi[IDX_SA(m, s, a)] > 0.0) sum += pi[IDX_SA(m, s, a)] * exp(q_value(m, s, a, V) - mx);
    out[s] = mx + log(sum);
  }
}

/* ---- section 4.2 ----------------------------------------------------------------------------- */

typedef void (*operator_fn)(const vmbpo_mdp *m, const double *pi, const double *qc, const double *V, double *out);

static void apply_t_adapter(const vmbpo_mdp *m, const double *pi, const double *qc, const double *V, double *out) {
  (void)qc;
  vmbpo_apply_t(m, pi, V, out);
}

static int iterate_to_fixed_point(const vmbpo_mdp *m, operator_fn op, const double *pi, const double *qc, double tol,
                                  int max_iter, double *V, int *iters, const char *what, ember_err *err) {
  const int S = m->n_states;
  double *next = malloc((size_t)S * sizeof *next);
  if (!next) return ember_fail(err, EMBER_ENOMEM, "%s: out of memory", what);
  int it = 0, rc = EMBER_ESTATE;
  for (int s = 0; s < S; s++)
    if (m->terminal[s]) V[s] = 0.0;
  while (it < max_iter) {
    op(m, pi, qc, V, next);
    it++;
    double diff = 0.0;
    for (int s = 0; s < S; s++) {
      double d = fabs(next[s] - V[s]);
      if (!(d <= diff)) diff = d; /* also catches NaN */
    }
    memcpy(V, next, (size_t)S * sizeof *V);
    if (!isfinite(diff)) {
      free(next);
      return ember_fail(err, EMBER_ENONFINITE, "%s: values diverged after %d sweeps", what, it);
    }
    if (diff < tol) {
      rc = EMBER_OK;
      break;
    }
  }
  free(next);
  if (iters) *iters = it;
  if (rc != EMBER_OK) return ember_fail(err, rc, "%s: no fixed point within %d sweeps (tol %g)", what, max_iter, tol);
  return EMBER_OK;
}

int vmbpo_evaluate(const vmbpo_mdp *m, const double *pi, const double *qc, int model_based, double tol, int max_iter,
                   double *V, int *iters, ember_err *err) {
  return iterate_to_fixed_point(m, model_based ? vmbpo_apply_tqc_model : vmbpo_apply_tqc, pi, qc, tol, max_iter, V,
                                iters, model_based ? "policy evaluation (eq. 6)" : "policy evaluation (eq. 10)", err);
}

int vmbpo_value_iteration(const vmbpo_mdp *m, const double *pi, double tol, int max_iter, double *V, int *iters,
                          ember_err *err) {
  return iterate_to_fixed_point(m, apply_t_adapter, pi, NULL, tol, max_iter, V, iters, "value iteration (eq. 11)",
                                err);
}

int vmbpo_policy_iteration(const vmbpo_mdp *m, const double *pi, int model_based, double tol, int max_outer,
                           double *V, double *Q, double *qc, double *qd, vmbpo_pi_stats *stats, ember_err *err) {
  const int S = m->n_states;
  const size_t SA = (size_t)S * (size_t)m->n_actions;
  double *cur = malloc(SA * sizeof *cur), *Qk = malloc(SA * sizeof *Qk), *nxt = malloc(SA * sizeof *nxt);
  int rc = EMBER_OK, outer = 0, sweeps_total = 0;
  if (!cur || !Qk || !nxt) {
    rc = ember_fail(err, EMBER_ENOMEM, "policy iteration: out of memory");
    goto out;
  }
  memcpy(cur, pi, SA * sizeof *cur);
  for (int s = 0; s < S; s++) V[s] = 0.0;
  const double inner_tol = tol < 1e-12 ? tol : 1e-12;
  const int inner_max = 1000000;
  for (;;) {
    int sweeps = 0;
    rc = vmbpo_evaluate(m, pi, cur, model_based, inner_tol, inner_max, V, &sweeps, err);
    sweeps_total += sweeps;
    if (rc) goto out;
    vmbpo_q_from_v(m, V, Qk);
    if (outer == max_outer) {
      rc = ember_fail(err, EMBER_ESTATE, "policy iteration: q_c still moving after %d improvements", max_outer);
      goto out;
    }
    vmbpo_qc_from_q(m, pi, Qk, nxt); /* policy improvement, eq. (15) */
    outer++;
    double moved = 0.0;
    for (size_t i = 0; i < SA; i++) moved = fmax(moved, fabs(nxt[i] - cur[i]));
    memcpy(cur, nxt, SA * sizeof *cur);
    if (moved < tol) break;
  }
  /* One more evaluation so that V and Q belong to the q_c that is returned. */
  {
    int sweeps = 0;
    rc = vmbpo_evaluate(m, pi, cur, model_based, inner_tol, inner_max, V, &sweeps, err);
    sweeps_total += sweeps;
    if (rc) goto out;
    vmbpo_q_from_v(m, V, Qk);
  }
  if (Q) memcpy(Q, Qk, SA * sizeof *Q);
  if (qc) memcpy(qc, cur, SA * sizeof *qc);
  if (qd) vmbpo_qd_from_v(m, V, qd); /* computed only now for model-free PI; same formula for both */
out:
  if (stats) {
    stats->outer_iterations = outer;
    stats->inner_sweeps = sweeps_total;
  }
  free(cur);
  free(Qk);
  free(nxt);
  return rc;
}

int vmbpo_elbo(const vmbpo_mdp *m, const double *pi, const double *qc, const double *qd, double tol, int max_iter,
               double *V_out, ember_err *err) {
  const int S = m->n_states, A = m->n_actions;
  double *c = malloc((size_t)S * sizeof *c), *next = malloc((size_t)S * sizeof *next);
  int rc = EMBER_OK;
  if (!c || !next) {
    rc = ember_fail(err, EMBER_ENOMEM, "elbo: out of memory");
    goto out;
  }
  /* Per-step reward of the ELBO under q, with the absolute-continuity checks that keep it finite. */
  for (int s = 0; s < S; s++) {
    c[s] = 0.0;
    if (m->terminal[s]) continue;
    double csum = 0.0;
    for (int a = 0; a < A; a++) {
      double qa = qc[IDX_SA(m, s, a)], pa = pi[IDX_SA(m, s, a)];
      csum += qa;
      if (qa < 0.0) {
        rc = ember_fail(err, EMBER_EINVAL, "elbo: q_c(%d|%d) = %g is negative", a, s, qa);
        goto out;
      }
      if (qa == 0.0) continue;
      if (pa <= 0.0) {
        rc = ember_fail(err, EMBER_EINVAL, "elbo: q_c(%d|%d) > 0 where pi = 0 (infinite KL)", a, s);
        goto out;
      }
      const double *row = P_ROW(m, s, a), *qrow = QD_ROW(m, qd, s, a);
      double kl_d = 0.0, dsum = 0.0;
      for (int j = 0; j <= S; j++) {
        double q = qrow[j], pj = p_aug(m, row, j);
        dsum += q;
        if (q < 0.0) {
          rc = ember_fail(err, EMBER_EINVAL, "elbo: q_d(%d|%d,%d) = %g is negative", j, s, a, q);
          goto out;
        }
        if (q == 0.0) continue;
        if (pj <= 0.0) {
          rc = ember_fail(err, EMBER_EINVAL, "elbo: q_d(%d|%d,%d) > 0 where p = 0 (infinite KL)", j, s, a);
          goto out;
        }
        kl_d += q * log(q / pj);
      }
      if (fabs(dsum - 1.0) > 1e-9) {
        rc = ember_fail(err, EMBER_EINVAL, "elbo: q_d(.|%d,%d) sums to %.12g", s, a, dsum);
        goto out;
      }
      c[s] += qa * (m->eta * m->r[IDX_SA(m, s, a)] - log(qa / pa) - kl_d);
    }
    if (fabs(csum - 1.0) > 1e-9) {
      rc = ember_fail(err, EMBER_EINVAL, "elbo: q_c(.|%d) sums to %.12g", s, csum);
      goto out;
    }
  }
  for (int s = 0; s < S; s++) V_out[s] = 0.0;
  rc = EMBER_ESTATE;
  for (int it = 0; it < max_iter; it++) {
    double diff = 0.0;
    for (int s = 0; s < S; s++) {
      double v = c[s];
      if (!m->terminal[s]) {
        for (int a = 0; a < A; a++) {
          double qa = qc[IDX_SA(m, s, a)];
          if (qa == 0.0) continue;
          const double *qrow = QD_ROW(m, qd, s, a);
          for (int j = 0; j < S; j++)
            if (!m->terminal[j]) v += qa * qrow[j] * V_out[j];
        }
      }
      next[s] = v;
      diff = fmax(diff, fabs(v - V_out[s]));
    }
    memcpy(V_out, next, (size_t)S * sizeof *V_out);
    if (diff < tol) {
      rc = EMBER_OK;
      break;
    }
  }
  if (rc) ember_fail(err, rc, "elbo: the chain under q does not stop within %d sweeps", max_iter);
out:
  free(c);
  free(next);
  return rc;
}

/* ---- section 5 pieces ------------------------------------------------------------------------ */

double vmbpo_step1_weight(const vmbpo_mdp *m, const double *V, const double *Q, int s, int a, int s_next) {
  double eta_r = m->eta * m->r[IDX_SA(m, s, a)], q = Q[IDX_SA(m, s, a)], v = v_next(m, V, s_next);
  if (m->discount == VMBPO_DISCOUNT_PER_STEP && m->gamma < 1.0) return exp(v - (q - eta_r) / m->gamma);
  return exp(eta_r + v - q);
}

double vmbpo_nu_dual_objective(int n, const double *q, const double *p, const double *nu) {
  double obj = 0.0;
  for (int j = 0; j < n; j++) {
    if (q[j] > 0.0) obj += q[j] * nu[j];
    if (p[j] > 0.0) obj -= p[j] * exp(nu[j]);
  }
  return obj;
}

void vmbpo_mstep(const vmbpo_mdp *m, const double *qc, const double *pi_old, double lambda, double *pi_new) {
  const size_t SA = (size_t)m->n_states * (size_t)m->n_actions;
  for (size_t i = 0; i < SA; i++) pi_new[i] = (qc[i] + lambda * pi_old[i]) / (1.0 + lambda);
}

int vmbpo_em(const vmbpo_mdp *m, double *pi, double lambda, int n_iter, const double *p0, double *objective,
             ember_err *err) {
  const int S = m->n_states;
  const size_t SA = (size_t)S * (size_t)m->n_actions;
  double *V = malloc((size_t)S * sizeof *V), *qc = malloc(SA * sizeof *qc);
  int rc = EMBER_OK, n_live = 0;
  if (!V || !qc) {
    rc = ember_fail(err, EMBER_ENOMEM, "em: out of memory");
    goto out;
  }
  if (lambda < 0.0) {
    rc = ember_fail(err, EMBER_EINVAL, "em: lambda %g must be >= 0", lambda);
    goto out;
  }
  for (int s = 0; s < S; s++) n_live += !m->terminal[s];
  for (int k = 0; k <= n_iter; k++) {
    rc = vmbpo_policy_iteration(m, pi, 1, 1e-12, 10000, V, NULL, qc, NULL, NULL, err);
    if (rc) goto out;
    if (objective) {
      double J = 0.0;
      for (int s = 0; s < S; s++) J += (p0 ? p0[s] : (m->terminal[s] ? 0.0 : 1.0 / n_live)) * V[s];
      objective[k] = J;
    }
    if (k < n_iter) vmbpo_mstep(m, qc, pi, lambda, pi);
  }
out:
  free(V);
  free(qc);
  return rc;
}

int vmbpo_optimal_value(const vmbpo_mdp *m, double tol, int max_iter, double *V, ember_err *err) {
  const int S = m->n_states;
  double *next = malloc((size_t)S * sizeof *next);
  if (!next) return ember_fail(err, EMBER_ENOMEM, "optimal value: out of memory");
  for (int s = 0; s < S; s++) V[s] = 0.0;
  int rc = EMBER_ESTATE;
  for (int it = 0; it < max_iter && rc; it++) {
    double diff = 0.0;
    for (int s = 0; s < S; s++) {
      double best = 0.0;
      if (!m->terminal[s]) {
        best = -INFINITY;
        for (int a = 0; a < m->n_actions; a++) best = fmax(best, q_value(m, s, a, V));
      }
      next[s] = best;
      diff = fmax(diff, fabs(best - V[s]));
    }
    memcpy(V, next, (size_t)S * sizeof *V);
    if (diff < tol) rc = EMBER_OK;
  }
  free(next);
  if (rc) return ember_fail(err, rc, "optimal value: no fixed point within %d sweeps", max_iter);
  return EMBER_OK;
}
