/* vmbpo_tabular: the exact E-step / M-step of VMBPO (Chow et al., sections 4.1, 4.2, 5.2) on small
 * MDPs with known p. Each check is written against the paper's equation it pins down; the
 * "mutation" tests show that a wrong sign, a misplaced eta or a misplaced discount would fail them. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "vmbpo_tabular.h"

#define S_MAX 8
#define A_MAX 4
#define SA_MAX (S_MAX * A_MAX)
#define QD_MAX (SA_MAX * (S_MAX + 1))

static double max_abs_diff(const double *x, const double *y, int n) {
  double d = 0.0;
  for (int i = 0; i < n; i++) d = fmax(d, fabs(x[i] - y[i]));
  return d;
}

/* 5 live states + 1 terminal, 3 actions; rewards U(-1, 1); seed fixed. With gamma = 1 each step ends
 * the episode with probability >= 0.5, so that exp(eta r) times the continuation mass stays below 1
 * for the eta used (otherwise the risk-seeking value log E exp(eta R) is infinite). */
static vmbpo_mdp *random_mdp(uint64_t seed, double gamma, double eta, vmbpo_discount disc) {
  rng_t rng;
  rng_seed(&rng, seed, RNG_STREAM_TEST);
  vmbpo_mdp *m = vmbpo_mdp_new(6, 3, gamma, eta, disc);
  ck_assert_ptr_nonnull(m);
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_mdp_randomize(m, &rng, 1, 1.0, gamma < 1.0 ? 0.05 : 0.5, &err), 0);
  return m;
}

static void random_policy(const vmbpo_mdp *m, uint64_t seed, double *pi) {
  rng_t rng;
  rng_seed(&rng, seed, RNG_STREAM_TEST + 100);
  vmbpo_random_policy(m, &rng, 0.2, pi);
}

/* The hand-made episodic MDP (gamma = 1, acyclic, so every trajectory can be enumerated); T is
 * state 3, terminal:
 *   state 0: a0 r=1   -> 1 (0.5), 2 (0.5)      a1 r=0    -> 2 (1)
 *   state 1: a0 r=2   -> T (1)                 a1 r=-1   -> 2 (0.3), T (0.7)
 *   state 2: a0 r=0.5 -> T (1)                 a1 r=1.5  -> T (1)                                  */
static vmbpo_mdp *handmade_mdp(double eta) {
  vmbpo_mdp *m = vmbpo_mdp_new(4, 2, 1.0, eta, VMBPO_DISCOUNT_PER_STEP);
  ck_assert_ptr_nonnull(m);
#define P(s, a, j) m->p[((s)*2 + (a)) * 4 + (j)]
#define R(s, a) m->r[(s)*2 + (a)]
  m->terminal[3] = 1;
  R(0, 0) = 1.0, P(0, 0, 1) = 0.5, P(0, 0, 2) = 0.5;
  R(0, 1) = 0.0, P(0, 1, 2) = 1.0;
  R(1, 0) = 2.0, P(1, 0, 3) = 1.0;
  R(1, 1) = -1.0, P(1, 1, 2) = 0.3, P(1, 1, 3) = 0.7;
  R(2, 0) = 0.5, P(2, 0, 3) = 1.0;
  R(2, 1) = 1.5, P(2, 1, 3) = 1.0;
  R(3, 0) = R(3, 1) = 0.0, P(3, 0, 3) = P(3, 1, 3) = 1.0;
#undef P
#undef R
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_mdp_validate(m, &err), 0);
  return m;
}

/* log p_pi(O = 1 | x0 = s) = log sum_xi p_pi(xi) exp(eta sum r), by enumerating trajectories (eq. 1).
 * Independent of the library: plain recursion over the tree. */
static double enumerate_likelihood(const vmbpo_mdp *m, const double *pi, int s) {
  if (m->terminal[s]) return 1.0;
  double total = 0.0;
  for (int a = 0; a < m->n_actions; a++) {
    double w = pi[s * m->n_actions + a];
    if (w == 0.0) continue;
    for (int j = 0; j < m->n_states; j++) {
      double pj = m->p[(s * m->n_actions + a) * m->n_states + j];
      if (pj > 0.0) total += w * pj * exp(m->eta * m->r[s * m->n_actions + a]) * enumerate_likelihood(m, pi, j);
    }
  }
  return total;
}

/* ---- Lemma 1, Lemma 2: the operators ----------------------------------------------------------- */

static void check_lemma1(vmbpo_discount disc) {
  vmbpo_mdp *m = random_mdp(11, 0.9, 0.7, disc);
  const int S = m->n_states, A = m->n_actions;
  double pi[SA_MAX], qc[SA_MAX], Q[SA_MAX], qcQ[SA_MAX], V[S_MAX], a1[S_MAX], a2[S_MAX], t[S_MAX];
  rng_t rng;
  rng_seed(&rng, 5, RNG_STREAM_TEST);
  for (int trial = 0; trial < 20; trial++) {
    random_policy(m, 100 + trial, pi);
    random_policy(m, 200 + trial, qc);
    for (int s = 0; s < S; s++) V[s] = 4.0 * rng_normal(&rng);
    /* eq. (6) with its inner max solved by eq. (14) equals eq. (10) */
    vmbpo_apply_tqc_model(m, pi, qc, V, a1);
    vmbpo_apply_tqc(m, pi, qc, V, a2);
    ck_assert_double_le(max_abs_diff(a1, a2, S), 1e-12);
    /* eq. (7) = eq. (11): T is the max of T_qc, attained at q_c^Q of eq. (15) */
    vmbpo_apply_t(m, pi, V, t);
    vmbpo_q_from_v(m, V, Q);
    vmbpo_qc_from_q(m, pi, Q, qcQ);
    vmbpo_apply_tqc(m, pi, qcQ, V, a1);
    ck_assert_double_le(max_abs_diff(a1, t, S), 1e-12);
    for (int s = 0; s < S; s++) ck_assert_double_le(a2[s], t[s] + 1e-12);
    /* eq. (11) written literally on footnote 1's augmented kernel (halt value 0) */
    if (disc == VMBPO_DISCOUNT_FOOTNOTE) {
      for (int s = 0; s < S - 1; s++) {
        double sum = 0.0;
        for (int a = 0; a < A; a++) {
          double er = m->eta * m->r[s * A + a];
          sum += pi[s * A + a] * (1.0 - m->gamma) * exp(er);
          for (int j = 0; j < S; j++)
            sum += pi[s * A + a] * m->gamma * m->p[(s * A + a) * S + j] * exp(er + (m->terminal[j] ? 0.0 : V[j]));
        }
        ck_assert_double_eq_tol(t[s], log(sum), 1e-12);
      }
    }
  }
  vmbpo_mdp_destroy(&m);
  ck_assert_ptr_null(m);
}

START_TEST(lemma1_operator_forms_agree) {
  check_lemma1(VMBPO_DISCOUNT_PER_STEP);
  check_lemma1(VMBPO_DISCOUNT_FOOTNOTE);
}
END_TEST

/* Eq. (12) -> (14): the closed-form q_d maximises E_qd[V - log(q_d/p)]; random competitors do worse. */
START_TEST(eq14_qd_maximises_inner_problem) {
  vmbpo_mdp *m = random_mdp(12, 1.0, 1.3, VMBPO_DISCOUNT_PER_STEP);
  const int S = m->n_states, A = m->n_actions;
  double V[S_MAX], qd[QD_MAX], alt[S_MAX + 1];
  rng_t rng;
  rng_seed(&rng, 9, RNG_STREAM_TEST);
  for (int s = 0; s < S; s++) V[s] = 2.0 * rng_normal(&rng);
  vmbpo_qd_from_v(m, V, qd);
  for (int sa = 0; sa < (S - 1) * A; sa++) {
    const double *p = m->p + sa * S, *q = qd + sa * (S + 1);
    double best = 0.0;
    for (int j = 0; j < S; j++)
      if (q[j] > 0) best += q[j] * ((m->terminal[j] ? 0 : V[j]) - log(q[j] / p[j]));
    for (int trial = 0; trial < 50; trial++) {
      double mix = rng_uniform(&rng), obj = 0.0;
      for (int j = 0; j < S; j++) alt[j] = (1 - mix) * q[j] + mix * p[j] * (0.5 + rng_uniform(&rng));
      double z = 0;
      for (int j = 0; j < S; j++) z += alt[j];
      for (int j = 0; j < S; j++)
        if (alt[j] > 0) obj += alt[j] / z * ((m->terminal[j] ? 0 : V[j]) - log(alt[j] / z / p[j]));
      ck_assert_double_le(obj, best + 1e-12);
    }
  }
  vmbpo_mdp_destroy(&m);
}
END_TEST

/* Lemma 2: T and T_qc are monotone and contractive (modulus gamma under PER_STEP; non-expansive in
 * the footnote form, where the halt's fixed value 0 makes the modulus state dependent). */
START_TEST(lemma2_monotone_contractive) {
  for (int d = 0; d < 2; d++) {
    vmbpo_mdp *m = random_mdp(13, 0.8, 1.0, (vmbpo_discount)d);
    const int S = m->n_states;
    double pi[SA_MAX], qc[SA_MAX], V1[S_MAX], V2[S_MAX], t1[S_MAX], t2[S_MAX];
    random_policy(m, 1, pi);
    random_policy(m, 2, qc);
    rng_t rng;
    rng_seed(&rng, 3, RNG_STREAM_TEST);
    for (int trial = 0; trial < 100; trial++) {
      double gap = 0;
      for (int s = 0; s < S; s++) {
        V1[s] = 3 * rng_normal(&rng);
        V2[s] = V1[s] + fabs(rng_normal(&rng));
        if (!m->terminal[s]) gap = fmax(gap, V2[s] - V1[s]);
      }
      double modulus = d == VMBPO_DISCOUNT_PER_STEP ? m->gamma : 1.0;
      vmbpo_apply_t(m, pi, V1, t1);
      vmbpo_apply_t(m, pi, V2, t2);
      for (int s = 0; s < S; s++) ck_assert_double_le(t1[s], t2[s] + 1e-12);
      ck_assert_double_le(max_abs_diff(t1, t2, S), modulus * gap + 1e-12);
      vmbpo_apply_tqc(m, pi, qc, V1, t1);
      vmbpo_apply_tqc(m, pi, qc, V2, t2);
      for (int s = 0; s < S; s++) ck_assert_double_le(t1[s], t2[s] + 1e-12);
      ck_assert_double_le(max_abs_diff(t1, t2, S), modulus * gap + 1e-12);
    }
    vmbpo_mdp_destroy(&m);
  }
}
END_TEST

/* ---- Fixed point of eq. (11), Proposition 1, eqs. (14)-(16), eq. (8) ---------------------------- */

typedef struct {
  double V[S_MAX], Q[SA_MAX], qc[SA_MAX], qd[QD_MAX];
} estep_solution;

/* The largest violation of the section-4.1 identities by a candidate E-step solution:
 * the fixed point of (11), Q from (9), Proposition 1, q_c* and q_d* of (16) and their normalisation.
 * Written from the paper's formulas, not by calling the library's closed forms. */
static double estep_violation(const vmbpo_mdp *m, const double *pi, const estep_solution *x) {
  const int S = m->n_states, A = m->n_actions;
  const double g = m->gamma;
  double worst = 0.0, tv[S_MAX];
  vmbpo_apply_t(m, pi, x->V, tv);
  worst = fmax(worst, max_abs_diff(tv, x->V, S)); /* eq. (11) fixed point */
  for (int s = 0; s < S; s++) {
    if (m->terminal[s]) continue;
    double ev = 0.0, csum = 0.0;
    for (int a = 0; a < A; a++) {
      double q = x->Q[s * A + a], er = m->eta * m->r[s * A + a];
      ev += pi[s * A + a] * exp(q);
      /* eq. (16), q_c*: pi exp(Q - V) */
      worst = fmax(worst, fabs(x->qc[s * A + a] - pi[s * A + a] * exp(q - x->V[s])));
      csum += x->qc[s * A + a];
      /* eq. (9) and eq. (16), q_d*: twist of p by exp(V); in the per-step discounted form the
       * denominator exp(Q - eta r) of (14) becomes exp((Q - eta r)/gamma) and the halt keeps 1-gamma. */
      double e = 0.0, dsum = 0.0;
      const double *p = m->p + (s * A + a) * S, *qd = x->qd + (s * A + a) * (S + 1);
      for (int j = 0; j < S; j++) e += p[j] * exp(m->terminal[j] ? 0.0 : x->V[j]);
      double cont = m->discount == VMBPO_DISCOUNT_PER_STEP ? g * log(e) : log(1 - g + g * e);
      worst = fmax(worst, fabs(q - (er + cont)));
      double denom = m->discount == VMBPO_DISCOUNT_PER_STEP ? exp((q - er) / g) / g : exp(q - er) / g;
      for (int j = 0; j < S; j++) {
        worst = fmax(worst, fabs(qd[j] - p[j] * exp(m->terminal[j] ? 0.0 : x->V[j]) / denom));
        dsum += qd[j];
      }
      double halt = m->discount == VMBPO_DISCOUNT_PER_STEP ? 1 - g : (1 - g) / exp(q - er);
      worst = fmax(worst, fabs(qd[S] - halt));
      worst = fmax(worst, fabs(dsum + qd[S] - 1.0));
    }
    worst = fmax(worst, fabs(x->V[s] - log(ev))); /* Proposition 1 */
    worst = fmax(worst, fabs(csum - 1.0));
  }
  return worst;
}

static void solve_by_value_iteration(const vmbpo_mdp *m, const double *pi, estep_solution *x) {
  ember_err err = {0};
  int iters = 0;
  memset(x, 0, sizeof *x);
  ck_assert_msg(vmbpo_value_iteration(m, pi, 1e-13, 100000, x->V, &iters, &err) == 0, "%s (discount %d, eta %g)", err.msg, (int)m->discount, m->eta);
  vmbpo_q_from_v(m, x->V, x->Q);
  vmbpo_qc_from_q(m, pi, x->Q, x->qc);
  vmbpo_qd_from_v(m, x->V, x->qd);
}

START_TEST(fixed_point_prop1_and_eq16) {
  for (int d = 0; d < 2; d++) {
    for (int seed = 0; seed < 4; seed++) {
      /* the footnote reading needs a small eta to stay finite (footnote1_reading_can_diverge) */
      double eta = seed == 3 ? 0.5 : d == VMBPO_DISCOUNT_FOOTNOTE ? 0.1 * (seed + 1) : 0.5 + seed;
      vmbpo_mdp *m = random_mdp(20 + seed, seed == 3 ? 1.0 : 0.9, eta, (vmbpo_discount)d);
      double pi[SA_MAX];
      random_policy(m, seed, pi);
      estep_solution x;
      solve_by_value_iteration(m, pi, &x);
      ck_assert_double_le(estep_violation(m, pi, &x), 1e-10);
      vmbpo_mdp_destroy(&m);
    }
  }
}
END_TEST

/* Eq. (8) / (5): the ELBO of q* = (q_c*, q_d*) equals V_pi from every start state, and any other
 * q scores lower: q* is the argmax of (5), and the bound is tight per start state. */
START_TEST(elbo_maximised_by_qstar) {
  for (int d = 0; d < 2; d++) {
    vmbpo_mdp *m = random_mdp(30, 0.85, 0.8, (vmbpo_discount)d);
    const int S = m->n_states, A = m->n_actions;
    double pi[SA_MAX], J[S_MAX], qc[SA_MAX], qd[QD_MAX];
    ember_err err = {0};
    random_policy(m, 7, pi);
    estep_solution x;
    solve_by_value_iteration(m, pi, &x);
    ck_assert_int_eq(vmbpo_elbo(m, pi, x.qc, x.qd, 1e-13, 100000, J, &err), 0);
    ck_assert_double_le(max_abs_diff(J, x.V, S), 1e-10);
    rng_t rng;
    rng_seed(&rng, 31, RNG_STREAM_TEST);
    for (int trial = 0; trial < 30; trial++) {
      /* mix q* with (pi, p_gamma), which keeps absolute continuity */
      double mc = 0.3 * rng_uniform(&rng), md = 0.3 * rng_uniform(&rng);
      for (int i = 0; i < S * A; i++) qc[i] = (1 - mc) * x.qc[i] + mc * pi[i];
      for (int sa = 0; sa < S * A; sa++) {
        for (int j = 0; j < S; j++) qd[sa * (S + 1) + j] = (1 - md) * x.qd[sa * (S + 1) + j] + md * m->gamma * m->p[sa * S + j];
        qd[sa * (S + 1) + S] = (1 - md) * x.qd[sa * (S + 1) + S] + md * (1 - m->gamma);
      }
      ck_assert_int_eq(vmbpo_elbo(m, pi, qc, qd, 1e-13, 100000, J, &err), 0);
      for (int s = 0; s < S; s++) ck_assert_double_le(J[s], x.V[s] + 1e-10);
      if (mc > 0.05)
        for (int s = 0; s < S - 1; s++) ck_assert_double_lt(J[s], x.V[s] - 1e-9);
    }
    vmbpo_mdp_destroy(&m);
  }
}
END_TEST

/* Footnote 1 as a construction: the FOOTNOTE reading on (p, gamma) equals the undiscounted E-step on
 * an explicitly augmented MDP with one more terminal state reached with probability 1 - gamma. */
START_TEST(footnote1_equals_augmented_episodic_mdp) {
  vmbpo_mdp *m = random_mdp(40, 0.9, 0.6, VMBPO_DISCOUNT_FOOTNOTE);
  const int S = m->n_states, A = m->n_actions;
  vmbpo_mdp *aug = vmbpo_mdp_new(S + 1, A, 1.0, m->eta, VMBPO_DISCOUNT_PER_STEP);
  ck_assert_ptr_nonnull(aug);
  for (int s = 0; s <= S; s++) {
    aug->terminal[s] = s == S || m->terminal[s];
    for (int a = 0; a < A; a++) {
      double *row = aug->p + (s * A + a) * (S + 1);
      if (s == S) {
        row[S] = 1.0;
        continue;
      }
      aug->r[s * A + a] = m->r[s * A + a];
      for (int j = 0; j < S; j++) row[j] = m->gamma * m->p[(s * A + a) * S + j];
      row[S] = 1 - m->gamma;
    }
  }
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_mdp_validate(aug, &err), 0);
  double pi[SA_MAX], pia[SA_MAX] = {0}, V[S_MAX], Va[S_MAX], Vps[S_MAX];
  random_policy(m, 41, pi);
  memcpy(pia, pi, sizeof(double) * S * A);
  for (int a = 0; a < A; a++) pia[S * A + a] = 1.0 / A;
  memset(V, 0, sizeof V);
  memset(Va, 0, sizeof Va);
  ck_assert_int_eq(vmbpo_value_iteration(m, pi, 1e-13, 100000, V, NULL, &err), 0);
  ck_assert_int_eq(vmbpo_value_iteration(aug, pia, 1e-13, 100000, Va, NULL, &err), 0);
  ck_assert_double_le(max_abs_diff(V, Va, S), 1e-10);
  /* ... and the per-step reading is a different number: the two are not interchangeable. */
  m->discount = VMBPO_DISCOUNT_PER_STEP;
  memset(Vps, 0, sizeof Vps);
  ck_assert_int_eq(vmbpo_value_iteration(m, pi, 1e-13, 100000, Vps, NULL, &err), 0);
  ck_assert_double_gt(max_abs_diff(V, Vps, S), 1e-3);
  vmbpo_mdp_destroy(&aug);
  vmbpo_mdp_destroy(&m);
}
END_TEST

/* Why ember's learner takes the per-step reading: under footnote 1 taken literally, q_d may cancel
 * the halt at a price of only log(1/gamma) nats per step, so a loop paying eta r > log(1/gamma)
 * per step has an infinite E-step value although gamma < 1. The per-step reading stays a
 * gamma-contraction: here V = eta r / (1 - gamma) = 10. */
START_TEST(footnote1_reading_can_diverge) {
  vmbpo_mdp *m = vmbpo_mdp_new(2, 1, 0.9, 1.0, VMBPO_DISCOUNT_FOOTNOTE);
  ck_assert_ptr_nonnull(m);
  m->terminal[1] = 1;
  m->r[0] = 1.0;
  m->p[0] = 1.0; /* state 0 loops on itself forever; only the discount halt ends it */
  m->p[3] = 1.0;
  double pi[2] = {1.0, 1.0}, V[2] = {0, 0};
  ember_err err = {0};
  int rc = vmbpo_value_iteration(m, pi, 1e-12, 20000, V, NULL, &err);
  ck_assert(rc == EMBER_ESTATE || rc == EMBER_ENONFINITE);
  ck_assert(!isfinite(V[0]) || V[0] > 1000.0);
  m->discount = VMBPO_DISCOUNT_PER_STEP;
  V[0] = 0;
  ck_assert_int_eq(vmbpo_value_iteration(m, pi, 1e-12, 20000, V, NULL, &err), 0);
  ck_assert_double_eq_tol(V[0], 10.0, 1e-9);
  vmbpo_mdp_destroy(&m);
}
END_TEST

/* ---- Section 4.2: model-based and model-free PI (Lemma 4) ---------------------------------------- */

START_TEST(policy_iteration_converges_lemma4) {
  for (int d = 0; d < 2; d++) {
    vmbpo_mdp *m = random_mdp(50, 0.9, 1.5, (vmbpo_discount)d);
    const int S = m->n_states, A = m->n_actions;
    double pi[SA_MAX];
    random_policy(m, 51, pi);
    estep_solution vi, mb, mf;
    solve_by_value_iteration(m, pi, &vi);
    vmbpo_pi_stats st_mb, st_mf;
    ember_err err = {0};
    ck_assert_int_eq(vmbpo_policy_iteration(m, pi, 1, 1e-12, 100, mb.V, mb.Q, mb.qc, mb.qd, &st_mb, &err), 0);
    ck_assert_int_eq(vmbpo_policy_iteration(m, pi, 0, 1e-12, 100, mf.V, mf.Q, mf.qc, mf.qd, &st_mf, &err), 0);
    ck_assert_int_le(st_mb.outer_iterations, 30);
    ck_assert_int_eq(st_mb.outer_iterations, st_mf.outer_iterations);
    ck_assert_double_le(estep_violation(m, pi, &mb), 1e-10);
    ck_assert_double_le(estep_violation(m, pi, &mf), 1e-10);
    ck_assert_double_le(max_abs_diff(mb.V, vi.V, S), 1e-10);
    ck_assert_double_le(max_abs_diff(mb.qc, vi.qc, S * A), 1e-10);
    ck_assert_double_le(max_abs_diff(mf.qd, vi.qd, S * A * (S + 1)), 1e-10);
    /* policy improvement: the evaluated value rises monotonically along the PI iterates */
    double qc[SA_MAX], V[S_MAX], Vprev[S_MAX], Q[SA_MAX];
    memcpy(qc, pi, sizeof(double) * S * A);
    memset(V, 0, sizeof V);
    for (int k = 0; k < 8; k++) {
      ck_assert_int_eq(vmbpo_evaluate(m, pi, qc, 1, 1e-13, 100000, V, NULL, &err), 0);
      if (k > 0)
        for (int s = 0; s < S; s++) ck_assert_double_ge(V[s], Vprev[s] - 1e-11);
      memcpy(Vprev, V, sizeof V);
      vmbpo_q_from_v(m, V, Q);
      vmbpo_qc_from_q(m, pi, Q, qc);
    }
    vmbpo_mdp_destroy(&m);
  }
}
END_TEST

/* ---- The hand-made MDP: closed forms by hand and by trajectory enumeration ----------------------- */

START_TEST(handmade_matches_enumeration_and_hand_values) {
  const double eta = 0.8;
  vmbpo_mdp *m = handmade_mdp(eta);
  double pi[8] = {0.5, 0.5, 0.25, 0.75, 0.6, 0.4, 0.5, 0.5};
  estep_solution x;
  solve_by_value_iteration(m, pi, &x);
  ck_assert_double_le(estep_violation(m, pi, &x), 1e-12);
  /* By hand: V(2) = log(0.6 e^{0.4} + 0.4 e^{1.2}); V(1) = log(0.25 e^{1.6} + 0.75 e^{-0.8}(0.3 e^{V2} + 0.7)). */
  double v2 = log(0.6 * exp(0.5 * eta) + 0.4 * exp(1.5 * eta));
  double v1 = log(0.25 * exp(2 * eta) + 0.75 * exp(-eta) * (0.3 * exp(v2) + 0.7));
  double v0 = log(0.5 * exp(eta) * (0.5 * exp(v1) + 0.5 * exp(v2)) + 0.5 * exp(v2));
  ck_assert_double_eq_tol(x.V[2], v2, 1e-12);
  ck_assert_double_eq_tol(x.V[1], v1, 1e-12);
  ck_assert_double_eq_tol(x.V[0], v0, 1e-12);
  ck_assert_double_eq(x.V[3], 0.0);
  for (int s = 0; s < 3; s++) ck_assert_double_eq_tol(x.V[s], log(enumerate_likelihood(m, pi, s)), 1e-12);
  /* q* is the exact trajectory posterior p_pi(xi) exp(eta R(xi)) / p_pi(O=1): check on all four
   * trajectories through state 0 -> a0 -> 1 -> a1 -> 2 -> a1 -> T and a few more. */
  struct {
    int s[4], a[3], len;
  } paths[] = {{{0, 1, 3}, {0, 0}, 2}, {{0, 1, 2, 3}, {0, 1, 1}, 3}, {{0, 2, 3}, {1, 0}, 2}, {{0, 2, 3}, {0, 1}, 2}};
  const double Z = exp(x.V[0]);
  for (unsigned k = 0; k < sizeof paths / sizeof paths[0]; k++) {
    double prior = 1, ret = 0, q = 1;
    for (int t = 0; t < paths[k].len; t++) {
      int s = paths[k].s[t], a = paths[k].a[t], j = paths[k].s[t + 1];
      prior *= pi[s * 2 + a] * m->p[(s * 2 + a) * 4 + j];
      ret += m->r[s * 2 + a];
      q *= x.qc[s * 2 + a] * x.qd[(s * 2 + a) * 5 + j];
    }
    ck_assert_double_eq_tol(q, prior * exp(eta * ret) / Z, 1e-12);
  }
  vmbpo_mdp_destroy(&m);
}
END_TEST

/* EM on the hand-made MDP: the log-likelihood log p_pi(O=1 | x0 = 0) rises every round and reaches
 * the best deterministic policy's value (found by enumerating all 8 of them). */
START_TEST(handmade_em_reaches_best_deterministic_policy) {
  vmbpo_mdp *m = handmade_mdp(1.0);
  double best = -INFINITY;
  for (int mask = 0; mask < 8; mask++) {
    double det[8] = {0, 0, 0, 0, 0, 0, 0.5, 0.5};
    for (int s = 0; s < 3; s++) det[s * 2 + ((mask >> s) & 1)] = 1.0;
    best = fmax(best, log(enumerate_likelihood(m, det, 0)));
  }
  double Vopt[4];
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_optimal_value(m, 1e-13, 1000, Vopt, &err), 0);
  ck_assert_double_eq_tol(Vopt[0], best, 1e-12);
  enum { ROUNDS = 150 };
  double pi[8] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5}, p0[4] = {1, 0, 0, 0}, obj[ROUNDS + 1];
  ck_assert_double_eq_tol(log(enumerate_likelihood(m, pi, 0)), best - 0.1, 10.0); /* finite, sane */
  ck_assert_int_eq(vmbpo_em(m, pi, 0.0, ROUNDS, p0, obj, &err), 0);
  for (int k = 1; k <= ROUNDS; k++) ck_assert_double_ge(obj[k], obj[k - 1] - 1e-12);
  ck_assert_double_gt(obj[1], obj[0] + 1e-3);
  ck_assert_double_eq_tol(obj[ROUNDS], best, 1e-6);
  /* the objective EM reports is the log-likelihood (eq. 1) of the policy it ends with */
  ck_assert_double_eq_tol(obj[ROUNDS], log(enumerate_likelihood(m, pi, 0)), 1e-12);
  vmbpo_mdp_destroy(&m);
}
END_TEST

/* ---- EM on random MDPs: monotone ascent (with and without the trust region of eq. 27) ------------ */

START_TEST(em_monotone_on_random_mdps) {
  const double lambdas[] = {0.0, 0.5, 4.0};
  for (int d = 0; d < 2; d++) {
    /* Under the footnote reading the optimum is finite only when eta r < log(1/gamma) (see
     * footnote1_reading_can_diverge), so that reading gets a small eta here. */
    vmbpo_mdp *m = random_mdp(60 + d, 0.8, d == VMBPO_DISCOUNT_FOOTNOTE ? 0.15 : 1.0, (vmbpo_discount)d);
    double Vopt[S_MAX];
    ember_err err = {0};
    ck_assert_int_eq(vmbpo_optimal_value(m, 1e-13, 100000, Vopt, &err), 0);
    double opt = 0;
    for (int s = 0; s < m->n_states - 1; s++) opt += Vopt[s] / (m->n_states - 1);
    for (int l = 0; l < 3; l++) {
      double pi[SA_MAX], obj[201];
      random_policy(m, 61, pi);
      ck_assert_int_eq(vmbpo_em(m, pi, lambdas[l], 200, NULL, obj, &err), 0);
      for (int k = 1; k <= 200; k++) ck_assert_double_ge(obj[k], obj[k - 1] - 1e-10);
      ck_assert_double_gt(obj[1], obj[0]);
      ck_assert_double_le(obj[200], opt + 1e-9);
      if (lambdas[l] == 0.0) ck_assert_double_eq_tol(obj[200], opt, 1e-4);
    }
    vmbpo_mdp_destroy(&m);
  }
}
END_TEST

/* Eq. (27) in closed form: (q_c + lambda pi_old)/(1 + lambda) beats random competitors on
 * sum_a q_c log pi - lambda KL(pi_old || pi), per state. */
START_TEST(mstep_closed_form_is_the_argmax) {
  vmbpo_mdp *m = random_mdp(70, 0.9, 1.0, VMBPO_DISCOUNT_PER_STEP);
  const int S = m->n_states, A = m->n_actions;
  double qc[SA_MAX], old[SA_MAX], nw[SA_MAX], alt[A_MAX];
  random_policy(m, 71, qc);
  random_policy(m, 72, old);
  rng_t rng;
  rng_seed(&rng, 73, RNG_STREAM_TEST);
  const double lambda = 1.7;
  vmbpo_mstep(m, qc, old, lambda, nw);
  for (int s = 0; s < S; s++) {
    double f_best = 0;
    for (int a = 0; a < A; a++)
      f_best += qc[s * A + a] * log(nw[s * A + a]) - lambda * old[s * A + a] * log(old[s * A + a] / nw[s * A + a]);
    for (int trial = 0; trial < 100; trial++) {
      double z = 0, f = 0;
      for (int a = 0; a < A; a++) z += alt[a] = nw[s * A + a] * exp(0.3 * rng_normal(&rng));
      for (int a = 0; a < A; a++)
        f += qc[s * A + a] * log(alt[a] / z) - lambda * old[s * A + a] * log(old[s * A + a] / (alt[a] / z));
      ck_assert_double_le(f, f_best + 1e-12);
    }
  }
  vmbpo_mstep(m, qc, old, 0.0, nw); /* lambda = 0: the paper's pi = q_c */
  ck_assert_double_le(max_abs_diff(nw, qc, S * A), 0.0);
  vmbpo_mdp_destroy(&m);
}
END_TEST

/* ---- What the sample-based steps of section 5.1 estimate, checked in expectation ---------------- */

START_TEST(step1_weights_normalise_only_with_gamma_placed_right) {
  vmbpo_mdp *m = random_mdp(80, 0.9, 1.0, VMBPO_DISCOUNT_PER_STEP);
  const int S = m->n_states, A = m->n_actions;
  double pi[SA_MAX];
  random_policy(m, 81, pi);
  estep_solution x;
  solve_by_value_iteration(m, pi, &x);
  double worst_literal = 0;
  for (int s = 0; s < S - 1; s++) {
    for (int a = 0; a < A; a++) {
      double ew = 0, ew_literal = 0;
      for (int j = 0; j < S; j++) {
        double p = m->p[(s * A + a) * S + j], w = vmbpo_step1_weight(m, x.V, x.Q, s, a, j);
        ew += p * w;
        ck_assert_double_eq_tol(x.qd[(s * A + a) * (S + 1) + j], m->gamma * p * w, 1e-12); /* q_d = gamma p w */
        ew_literal += p * exp(m->eta * m->r[s * A + a] + (m->terminal[j] ? 0 : x.V[j]) - x.Q[s * A + a]);
      }
      ck_assert_double_eq_tol(ew, 1.0, 1e-12); /* E_p[w] = 1 at a consistent (V, Q) */
      worst_literal = fmax(worst_literal, fabs(ew_literal - 1.0));
    }
  }
  ck_assert_double_gt(worst_literal, 1e-3); /* eq. (19) as printed mis-normalises when gamma < 1 */
  vmbpo_mdp_destroy(&m);
}
END_TEST

/* Eq. (20): gradient ascent on the dual from nu = 0 reaches log(q_d/p), and the maximum is KL - 1. */
START_TEST(step2_dual_recovers_log_ratio) {
  vmbpo_mdp *m = random_mdp(90, 0.9, 1.0, VMBPO_DISCOUNT_PER_STEP);
  const int S = m->n_states, A = m->n_actions;
  double pi[SA_MAX];
  random_policy(m, 91, pi);
  estep_solution x;
  solve_by_value_iteration(m, pi, &x);
  for (int sa = 0; sa < (S - 1) * A; sa++) {
    const double *p = m->p + sa * S;
    double q[S_MAX], nu[S_MAX] = {0}, kl = 0;
    for (int j = 0; j < S; j++) q[j] = x.qd[sa * (S + 1) + j] / m->gamma; /* real-next-state part */
    for (int j = 0; j < S; j++)
      if (q[j] > 0) kl += q[j] * log(q[j] / p[j]);
    for (int it = 0; it < 20000; it++)
      for (int j = 0; j < S; j++)
        if (p[j] > 0) nu[j] += 2.0 * (q[j] - p[j] * exp(nu[j])); /* d/dnu of eq. (20) */
    for (int j = 0; j < S; j++)
      if (p[j] > 0) ck_assert_double_eq_tol(nu[j], log(q[j] / p[j]), 1e-9);
    ck_assert_double_eq_tol(vmbpo_nu_dual_objective(S, q, p, nu), kl - 1.0, 1e-12);
    /* and nu = log(p/q) (the sign flipped) scores strictly lower unless q == p */
    double flipped[S_MAX];
    for (int j = 0; j < S; j++) flipped[j] = p[j] > 0 ? -nu[j] : 0;
    if (kl > 1e-6) ck_assert_double_lt(vmbpo_nu_dual_objective(S, q, p, flipped), kl - 1.0);
  }
  vmbpo_mdp_destroy(&m);
}
END_TEST

/* Eq. (23) in expectation: Q = eta r + gamma E_{q~d}[(1-done) V(x') - nu(x')] with nu = log(q~d/p)
 * taken over real next states; nu is NOT masked at terminal x' (the KL of the last transition counts).
 * Eq. (24): V_qc = E_qc[Q - log q_c + log pi]. Eq. (25): E_qc[log q_c - Q - log pi] is minimal at
 * q_c = q_c^Q with value -V. */
START_TEST(steps3_4_targets_in_expectation) {
  vmbpo_mdp *m = random_mdp(100, 0.9, 1.2, VMBPO_DISCOUNT_PER_STEP);
  const int S = m->n_states, A = m->n_actions;
  double pi[SA_MAX];
  random_policy(m, 101, pi);
  estep_solution x;
  solve_by_value_iteration(m, pi, &x);
  double masked_gap = 0;
  for (int s = 0; s < S - 1; s++) {
    double vtarget = 0, loss4 = 0;
    for (int a = 0; a < A; a++) {
      double y = 0, y_masked = 0;
      for (int j = 0; j < S; j++) {
        double qt = x.qd[(s * A + a) * (S + 1) + j] / m->gamma, p = m->p[(s * A + a) * S + j];
        if (qt <= 0) continue;
        double nu = log(qt / p), v = m->terminal[j] ? 0 : x.V[j];
        y += qt * (v - nu);
        y_masked += qt * (m->terminal[j] ? 0 : v - nu);
      }
      double er = m->eta * m->r[s * A + a];
      ck_assert_double_eq_tol(x.Q[s * A + a], er + m->gamma * y, 1e-12);
      masked_gap = fmax(masked_gap, fabs(x.Q[s * A + a] - (er + m->gamma * y_masked)));
      double c = x.qc[s * A + a];
      vtarget += c * (x.Q[s * A + a] - log(c) + log(pi[s * A + a]));
      loss4 += c * (log(c) - x.Q[s * A + a] - log(pi[s * A + a]));
    }
    ck_assert_double_eq_tol(x.V[s], vtarget, 1e-12);
    ck_assert_double_eq_tol(loss4, -x.V[s], 1e-12);
    rng_t rng;
    rng_seed(&rng, 102 + s, RNG_STREAM_TEST);
    for (int trial = 0; trial < 50; trial++) {
      double alt[A_MAX], z = 0, l = 0;
      for (int a = 0; a < A; a++) z += alt[a] = x.qc[s * A + a] * exp(0.5 * rng_normal(&rng));
      for (int a = 0; a < A; a++) l += alt[a] / z * (log(alt[a] / z) - x.Q[s * A + a] - log(pi[s * A + a]));
      ck_assert_double_ge(l, loss4 - 1e-12);
    }
  }
  ck_assert_double_gt(masked_gap, 1e-4);
  vmbpo_mdp_destroy(&m);
}
END_TEST

/* ---- Mutations: the checks above would catch a wrong sign or a misplaced eta/gamma -------------- */

START_TEST(mutations_are_caught) {
  vmbpo_mdp *m = random_mdp(110, 0.9, 0.9, VMBPO_DISCOUNT_PER_STEP);
  const int S = m->n_states, A = m->n_actions;
  double pi[SA_MAX];
  random_policy(m, 111, pi);
  estep_solution good, bad;
  solve_by_value_iteration(m, pi, &good);
  ck_assert_double_le(estep_violation(m, pi, &good), 1e-10);

  /* (a) q_c twisted by exp(-Q) instead of exp(Q) */
  bad = good;
  double negQ[SA_MAX];
  for (int i = 0; i < S * A; i++) negQ[i] = -good.Q[i];
  vmbpo_qc_from_q(m, pi, negQ, bad.qc);
  ck_assert_double_gt(estep_violation(m, pi, &bad), 1e-3);

  /* (b) q_d twisted by exp(-V) */
  bad = good;
  double negV[S_MAX];
  for (int s = 0; s < S; s++) negV[s] = -good.V[s];
  vmbpo_qd_from_v(m, negV, bad.qd);
  ck_assert_double_gt(estep_violation(m, pi, &bad), 1e-3);

  /* (c) eta applied to the whole backup, Q = eta (r + gamma log E exp V), iterated to its own fixed point */
  bad = good;
  for (int it = 0; it < 5000; it++) {
    vmbpo_q_from_v(m, bad.V, bad.Q);
    for (int s = 0; s < S; s++)
      for (int a = 0; a < A; a++)
        if (!m->terminal[s]) {
          double er = m->eta * m->r[s * A + a], cont = bad.Q[s * A + a] - er;
          bad.Q[s * A + a] = m->eta * (m->r[s * A + a] + cont);
        }
    vmbpo_v_from_q(m, pi, bad.Q, bad.V);
  }
  vmbpo_qc_from_q(m, pi, bad.Q, bad.qc);
  vmbpo_qd_from_v(m, bad.V, bad.qd);
  ck_assert_double_gt(estep_violation(m, pi, &bad), 1e-3);

  /* (d) the KL of q_c counted with the wrong sign in the evaluation: E_qc[Q + log(q_c/pi)] */
  bad = good;
  double qc_rand[SA_MAX], Vr[S_MAX] = {0}, Vwrong[S_MAX] = {0}, Qw[SA_MAX];
  random_policy(m, 112, qc_rand);
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_evaluate(m, pi, qc_rand, 0, 1e-13, 100000, Vr, NULL, &err), 0);
  for (int it = 0; it < 2000; it++) {
    vmbpo_q_from_v(m, Vwrong, Qw);
    for (int s = 0; s < S; s++) {
      double v = 0;
      for (int a = 0; a < A && !m->terminal[s]; a++)
        v += qc_rand[s * A + a] * (Qw[s * A + a] + log(qc_rand[s * A + a] / pi[s * A + a]));
      Vwrong[s] = v;
    }
  }
  double Jr[S_MAX], qd_r[QD_MAX];
  vmbpo_qd_from_v(m, Vr, qd_r);
  ck_assert_int_eq(vmbpo_elbo(m, pi, qc_rand, qd_r, 1e-13, 100000, Jr, &err), 0);
  ck_assert_double_le(max_abs_diff(Jr, Vr, S), 1e-10);     /* the right evaluation is the ELBO */
  ck_assert_double_gt(max_abs_diff(Jr, Vwrong, S), 1e-3); /* the wrong sign is not */

  /* (e) the discount put on the outside of the log in the footnote reading (or vice versa) */
  m->discount = VMBPO_DISCOUNT_FOOTNOTE;
  ck_assert_double_gt(estep_violation(m, pi, &good), 1e-3);
  vmbpo_mdp_destroy(&m);
}
END_TEST

/* ---- VMBPO-MFE: the exponential TD update and its temperature ----------------------------------- */

/* Stochastic exponential TD on one (x, a) with V fixed: Q += alpha (exp(tau delta) - 1)/tau with
 * delta = eta r + V(x') - Q, x' ~ p. tau = 1 converges to eq. (9); tau != 1 to the tempered target. */
START_TEST(mfe_exponential_td_fixed_point) {
  vmbpo_mdp *m = vmbpo_mdp_new(4, 1, 1.0, 1.0, VMBPO_DISCOUNT_PER_STEP);
  ck_assert_ptr_nonnull(m);
  m->terminal[3] = 1;
  m->r[0] = 0.3;
  m->p[0] = 0.2, m->p[1] = 0.5, m->p[2] = 0.3; /* from state 0 */
  for (int s = 1; s < 4; s++) m->p[s * 4 + 3] = 1.0;
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_mdp_validate(m, &err), 0);
  double V[4] = {0, -1.5, 1.5, 0}, Qexact[4], Qtemp[4]; /* V spread so that the temperature matters */
  const double taus[] = {1.0, 0.3};
  rng_t rng;
  rng_seed(&rng, 120, RNG_STREAM_TEST);
  vmbpo_q_from_v(m, V, Qexact);
  for (int t = 0; t < 2; t++) {
    double tau = taus[t];
    vmbpo_q_from_v_tempered(m, V, tau, Qtemp);
    double q = 0.0, avg = 0.0;
    const int n = 400000;
    for (int i = 0; i < n; i++) {
      double u = rng_uniform(&rng);
      int j = u < 0.2 ? 0 : u < 0.7 ? 1 : 2;
      double delta = m->eta * m->r[0] + V[j] - q;
      double alpha = 1.0 / pow(i + 20.0, 0.7);
      q += alpha * (exp(tau * delta) - 1.0) / tau;
      if (i >= n / 2) avg += q / (n / 2);
    }
    ck_assert_double_eq_tol(avg, Qtemp[0], 0.01);
    if (tau == 1.0) ck_assert_double_eq_tol(avg, Qexact[0], 0.01);
    else ck_assert_double_gt(fabs(avg - Qexact[0]), 0.1); /* tau != 1 changes the fixed point */
  }
  vmbpo_mdp_destroy(&m);
}
END_TEST

/* ---- Error paths -------------------------------------------------------------------------------- */

START_TEST(error_paths) {
  ck_assert_ptr_null(vmbpo_mdp_new(0, 2, 0.9, 1.0, VMBPO_DISCOUNT_PER_STEP));
  ck_assert_ptr_null(vmbpo_mdp_new(3, -1, 0.9, 1.0, VMBPO_DISCOUNT_PER_STEP));
  vmbpo_mdp_destroy(NULL);
  ember_err err = {0};
  vmbpo_mdp *m = handmade_mdp(1.0);
  m->p[0] += 0.1; /* row (0, a0) no longer sums to 1 */
  ck_assert_int_eq(vmbpo_mdp_validate(m, &err), EMBER_EINVAL);
  ck_assert_int_eq(err.code, EMBER_EINVAL);
  m->p[0] -= 0.1;
  ck_assert_int_eq(vmbpo_mdp_validate(m, NULL), 0);
  m->gamma = 1.5;
  ck_assert_int_eq(vmbpo_mdp_validate(m, &err), EMBER_EINVAL);
  m->gamma = 1.0, m->eta = 0.0;
  ck_assert_int_eq(vmbpo_mdp_validate(m, &err), EMBER_EINVAL);
  m->eta = 1.0;
  m->r[2] = NAN;
  ck_assert_int_eq(vmbpo_mdp_validate(m, &err), EMBER_ENONFINITE);
  m->r[2] = 0.0;

  double pi[8] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5}, V[4] = {0}, J[4];
  /* too few sweeps for a 3-step chain */
  ck_assert_int_eq(vmbpo_value_iteration(m, pi, 1e-13, 1, V, NULL, &err), EMBER_ESTATE);
  /* q_d with mass where p has none: infinite KL */
  estep_solution x;
  solve_by_value_iteration(m, pi, &x);
  x.qd[(0 * 2 + 1) * 5 + 0] = 0.5, x.qd[(0 * 2 + 1) * 5 + 2] = 0.5; /* state 0, a1: p puts all on state 2 */
  ck_assert_int_eq(vmbpo_elbo(m, pi, x.qc, x.qd, 1e-13, 1000, J, &err), EMBER_EINVAL);
  /* q_c with mass where pi has none */
  solve_by_value_iteration(m, pi, &x);
  double pi0[8] = {1, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
  ck_assert_int_eq(vmbpo_elbo(m, pi0, x.qc, x.qd, 1e-13, 1000, J, &err), EMBER_EINVAL);
  /* a q_d row that is not a distribution */
  x.qd[0] += 0.25;
  ck_assert_int_eq(vmbpo_elbo(m, pi, x.qc, x.qd, 1e-13, 1000, J, &err), EMBER_EINVAL);
  /* negative trust-region weight */
  ck_assert_int_eq(vmbpo_em(m, pi, -1.0, 1, NULL, NULL, &err), EMBER_EINVAL);
  rng_t rng;
  rng_seed(&rng, 1, RNG_STREAM_TEST);
  ck_assert_int_eq(vmbpo_mdp_randomize(m, &rng, 4, 1.0, 0.1, &err), EMBER_EINVAL);
  vmbpo_mdp_destroy(&m);
}
END_TEST

static Suite *vmbpo_tabular_suite(void) {
  Suite *s = suite_create("vmbpo_tabular");
  TCase *ops = tcase_create("operators");
  tcase_add_test(ops, lemma1_operator_forms_agree);
  tcase_add_test(ops, eq14_qd_maximises_inner_problem);
  tcase_add_test(ops, lemma2_monotone_contractive);
  suite_add_tcase(s, ops);
  TCase *estep = tcase_create("estep");
  tcase_add_test(estep, fixed_point_prop1_and_eq16);
  tcase_add_test(estep, elbo_maximised_by_qstar);
  tcase_add_test(estep, footnote1_equals_augmented_episodic_mdp);
  tcase_add_test(estep, footnote1_reading_can_diverge);
  tcase_add_test(estep, policy_iteration_converges_lemma4);
  tcase_add_test(estep, handmade_matches_enumeration_and_hand_values);
  suite_add_tcase(s, estep);
  TCase *em = tcase_create("em");
  tcase_set_timeout(em, 60);
  tcase_add_test(em, handmade_em_reaches_best_deterministic_policy);
  tcase_add_test(em, em_monotone_on_random_mdps);
  tcase_add_test(em, mstep_closed_form_is_the_argmax);
  suite_add_tcase(s, em);
  TCase *steps = tcase_create("sample_steps");
  tcase_set_timeout(steps, 60);
  tcase_add_test(steps, step1_weights_normalise_only_with_gamma_placed_right);
  tcase_add_test(steps, step2_dual_recovers_log_ratio);
  tcase_add_test(steps, steps3_4_targets_in_expectation);
  tcase_add_test(steps, mutations_are_caught);
  tcase_add_test(steps, mfe_exponential_td_fixed_point);
  tcase_add_test(steps, error_paths);
  suite_add_tcase(s, steps);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(vmbpo_tabular_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
