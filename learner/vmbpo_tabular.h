/* vmbpo_tabular.h: the exact, tabular form of VMBPO's E-step and M-step (Chow et al., section 4),
 * on a small discrete MDP whose transition kernel p is known.
 *
 * This module exists to pin down the signs, the place of eta and the discount before the
 * function-approximation learner is trusted: every operator of sections 4.1-4.2 and 5.2 is here in
 * closed form, so a test can check the paper's identities (Lemma 1, Proposition 1, eqs. 14-16,
 * Lemma 4, the EM ascent) to machine precision. It is reference code, not hot-path code: doubles,
 * plain loops, O(S^2 A) per sweep.
 *
 * Array layouts (all row-major, all owned by the caller unless a function says otherwise):
 *   V[s]                       state values,                           n_states
 *   Q[s*A + a], policies       action values, pi(a|s), q_c(a|s),      n_states * n_actions
 *   p[(s*A + a)*S + s']        the MDP's kernel (owned by vmbpo_mdp)
 *   qd[(s*A + a)*(S+1) + j]    variational dynamics over S+1 outcomes: j < S is next state j,
 *                              j == S is the "discount halt" of footnote 1 (the chain stops with
 *                              probability 1-gamma per step; its value is 0). With gamma = 1 that
 *                              column is always 0.
 * Terminal states (terminal[s] != 0) have V = 0 by definition; their rows of Q, pi and q_c are
 * ignored on input and written as 0 (Q) or copied from pi (q_c) on output.
 *
 * Discount. The paper is episodic; footnote 1 gets gamma by adding a halt with probability 1-gamma
 * and multiplying every real transition by gamma. Two readings follow, and both are here:
 *   VMBPO_DISCOUNT_FOOTNOTE  footnote 1 literally: q_d may also change the halt probability, so
 *                            Q(x,a) = eta r + log((1-gamma) + gamma E_p[exp V(x')]).
 *   VMBPO_DISCOUNT_PER_STEP  q_d keeps the halt probability at 1-gamma and only twists the real
 *                            next state, so Q(x,a) = eta r + gamma log E_p[exp V(x')]; this is the
 *                            gamma^t-discounted ELBO with a per-step KL, and the reading the
 *                            function-approximation learner implements (docs/algorithms.md).
 * With gamma = 1 the two coincide with the paper's equations.
 *
 * Errors: functions that can fail return 0 or a negative EMBER_E* code and fill err when non-NULL.
 * Thread-safety: none needed; nothing here has hidden state.
 */
#ifndef EMBER_VMBPO_TABULAR_H
#define EMBER_VMBPO_TABULAR_H

#include "err.h"
#include "rng.h"

typedef enum { VMBPO_DISCOUNT_PER_STEP = 0, VMBPO_DISCOUNT_FOOTNOTE = 1 } vmbpo_discount;

typedef struct {
  int n_states, n_actions;
  double *p;               /* [S*A*S], owned */
  double *r;               /* [S*A], owned */
  unsigned char *terminal; /* [S], owned; V = 0 there */
  double gamma;            /* in (0, 1] */
  double eta;              /* > 0, p(O=1|x,a) = exp(eta r(x,a)) */
  vmbpo_discount discount;
} vmbpo_mdp;

/* Allocates an MDP with p, r and terminal zeroed (fill them, then vmbpo_mdp_validate). Returns NULL
 * on bad sizes or out of memory. The caller owns the result and frees it with vmbpo_mdp_destroy,
 * which also sets *mdp_p to NULL. */
vmbpo_mdp *vmbpo_mdp_new(int n_states, int n_actions, double gamma, double eta, vmbpo_discount discount);
void vmbpo_mdp_destroy(vmbpo_mdp **mdp_p);

/* Checks sizes, gamma in (0,1], eta > 0, finite rewards, and that every row of p is a distribution. */
int vmbpo_mdp_validate(const vmbpo_mdp *m, ember_err *err);

/* Fills p with random sparse-ish rows (each row reaches at least one state; every non-terminal row
 * puts at least min_terminal_prob on the terminal states when any exist) and r with U(-scale, scale).
 * The last n_terminal states are made terminal. */
int vmbpo_mdp_randomize(vmbpo_mdp *m, rng_t *rng, int n_terminal, double reward_scale, double min_terminal_prob,
                        ember_err *err);

/* A random policy with full support (each pi(a|s) >= floor / A). */
void vmbpo_random_policy(const vmbpo_mdp *m, rng_t *rng, double floor, double *pi);

/* ---- Section 4.1 operators --------------------------------------------------------------------- */

/* Eq. (9): Q(x,a) = eta r(x,a) + [continuation], the continuation being gamma log E_p exp V
 * (PER_STEP) or log((1-gamma) + gamma E_p exp V) (FOOTNOTE). */
void vmbpo_q_from_v(const vmbpo_mdp *m, const double *V, double *Q);

/* Eq. (9) with the exponential-TD temperature tau of VMBPO-MFE (section 6, Borkar 2002): the fixed
 * point of the update Q += alpha (exp(tau delta) - 1) / tau, i.e. eta r + gamma/tau log E_p exp(tau V)
 * (PER_STEP only). tau = 1 is eq. (9); tau -> 0 is the ordinary expected TD target. */
void vmbpo_q_from_v_tempered(const vmbpo_mdp *m, const double *V, double tau, double *Q);

/* Proposition 1 / the optimal operator's inner step: V(x) = log E_{a~pi} exp Q(x,a). */
void vmbpo_v_from_q(const vmbpo_mdp *m, const double *pi, const double *Q, double *V);

/* Eq. (14): the variational dynamics q_d^V that twists p by exp(V), over S+1 columns. */
void vmbpo_qd_from_v(const vmbpo_mdp *m, const double *V, double *qd);

/* Eq. (15): q_c^Q(a|x) = pi(a|x) exp Q(x,a) / E_pi exp Q. */
void vmbpo_qc_from_q(const vmbpo_mdp *m, const double *pi, const double *Q, double *qc);

/* Eq. (6), literally: for each x, E_{q_c}[eta r - log(q_c/pi) + E_{q_d}[V(x') - log(q_d/p)]] with the
 * inner maximiser q_d computed by eq. (14) and the KL written out. */
void vmbpo_apply_tqc_model(const vmbpo_mdp *m, const double *pi, const double *qc, const double *V, double *out);

/* Eq. (10): the same operator as E_{q_c}[Q(x,a) - log(q_c/pi)] with Q from eq. (9) (no q_d). */
void vmbpo_apply_tqc(const vmbpo_mdp *m, const double *pi, const double *qc, const double *V, double *out);

/* Eq. (11) (eq. 7 maximised in closed form): log E_{pi} exp Q(x,a), Q from eq. (9). Under FOOTNOTE
 * this is exactly log E_{a~pi, x'~p_gamma}[exp(eta r + V(x'))] of the paper. */
void vmbpo_apply_t(const vmbpo_mdp *m, const double *pi, const double *V, double *out);

/* ---- Section 4.2: policy evaluation, value iteration, policy iteration ------------------------- */

/* Fixed point of T_{q_c} from V's initial contents (iterate until the sup-norm change < tol).
 * model_based != 0 uses eq. (6) with q_d from eq. (14) each sweep; 0 uses eq. (10).
 * Returns EMBER_ESTATE if max_iter sweeps do not converge; *iters (optional) gets the sweeps used. */
int vmbpo_evaluate(const vmbpo_mdp *m, const double *pi, const double *qc, int model_based, double tol, int max_iter,
                   double *V, int *iters, ember_err *err);

/* Fixed point V_pi of the optimal operator T (eq. 11), from V's initial contents. */
int vmbpo_value_iteration(const vmbpo_mdp *m, const double *pi, double tol, int max_iter, double *V, int *iters,
                          ember_err *err);

/* The E-step by policy iteration (section 4.2): q_c <- pi; repeat {evaluate V_{q_c}; Q from (9);
 * q_c <- (15)} until q_c moves less than tol; then q_d from (14). model_based selects the
 * evaluation operator as in vmbpo_evaluate (the model-free PI is VMBPO-MFE's E-step).
 * Outputs (caller-owned, any may be NULL except V): V [S], Q [S*A], qc [S*A], qd [S*A*(S+1)]. */
typedef struct {
  int outer_iterations; /* policy-improvement steps */
  int inner_sweeps;     /* evaluation sweeps in total */
} vmbpo_pi_stats;
int vmbpo_policy_iteration(const vmbpo_mdp *m, const double *pi, int model_based, double tol, int max_outer,
                           double *V, double *Q, double *qc, double *qd, vmbpo_pi_stats *stats, ember_err *err);

/* Eq. (8) for arbitrary q = (q_c, q_d): the expected sum of eta r - log(q_c/pi) - log(q_d/p_gamma)
 * from each start state under q (V_out [S]), i.e. the ELBO J(q; pi) per start state. Returns
 * EMBER_EINVAL when q is not absolutely continuous w.r.t. (pi, p) (the KL is infinite) and
 * EMBER_ESTATE when the chain under q does not stop within max_iter sweeps. */
int vmbpo_elbo(const vmbpo_mdp *m, const double *pi, const double *qc, const double *qd, double tol, int max_iter,
               double *V_out, ember_err *err);

/* ---- Section 5: the pieces the learner estimates from samples ---------------------------------- */

/* Step 1's weight (eq. 19) for (s, a, s'): exp(V(s') - (Q(s,a) - eta r)/gamma) with V = 0 at
 * terminal s' (PER_STEP; under FOOTNOTE or gamma = 1, exp(eta r + V(s') - Q(s,a)) as printed).
 * E_{s'~p}[w] = 1 whenever Q = eq. (9) of V; q_d^V = p w. */
double vmbpo_step1_weight(const vmbpo_mdp *m, const double *V, const double *Q, int s, int a, int s_next);

/* Step 2's dual objective (eq. 20) for one (x,a): sum_j q[j] nu[j] - sum_j p[j] exp(nu[j]) over n
 * outcomes. Its maximiser is nu = log(q/p) and its maximum KL(q||p) - 1. */
double vmbpo_nu_dual_objective(int n, const double *q, const double *p, const double *nu);

/* M-step (eq. 27) in closed form: per state, argmax_pi sum_a q_c log pi - lambda KL(pi_old || pi)
 * = (q_c + lambda pi_old) / (1 + lambda). lambda = 0 is the paper's pi = q_c. pi_new may alias
 * pi_old. */
void vmbpo_mstep(const vmbpo_mdp *m, const double *qc, const double *pi_old, double lambda, double *pi_new);

/* The EM loop: n_iter rounds of {E-step by model-based PI; M-step with lambda}, pi updated in place.
 * objective[k] (optional, n_iter + 1 entries) gets sum_x p0(x) V_pi(x) before round k and after
 * the last; that is max_q J(q; pi), the quantity EM ascends. */
int vmbpo_em(const vmbpo_mdp *m, double *pi, double lambda, int n_iter, const double *p0, double *objective,
             ember_err *err);

/* The value of the best deterministic policy for the same objective, V*(x) = max_a Q(x,a) with Q
 * from eq. (9): the risk-seeking optimum that EM with lambda = 0 approaches. */
int vmbpo_optimal_value(const vmbpo_mdp *m, double tol, int max_iter, double *V, ember_err *err);

#endif
