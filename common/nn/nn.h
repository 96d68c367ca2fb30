/* nn.h: multilayer perceptrons (and ensembles of them) on OpenBLAS sgemm.
 *
 * Three things are kept apart, the way MuJoCo keeps mjModel apart from mjData:
 *   nn_mlp_spec  the shape: input, hidden and output sizes, activations, ensemble size E.
 *   nn_mlp       the parameters and their gradients: ONE contiguous float buffer each
 *                (net->params, net->grads, net->param_count floats), so Adam, Polyak averaging
 *                and serialisation are single loops over a flat array.
 *   nn_mlp_ws    a workspace: the activations of one forward pass, sized for a maximum batch at
 *                creation. A network may have any number of workspaces (e.g. Q(s, a_data) in one,
 *                Q(s, a_pi) in another); each remembers its own last forward pass.
 * Nothing here allocates after *_new: forward and backward only use memory sized at creation.
 *
 * Layouts (row-major throughout, batch-major: row b of a [B, n] matrix is sample b)
 *   - Layer l maps dims[l] -> dims[l+1]; dims[0] = input_dim, dims[L] = output_dim.
 *   - Weights W_l are [out, in] (PyTorch's nn.Linear layout): y = x W^T + b.
 *   - An ensemble of E members keeps, per layer, every member's W_l side by side:
 *     params = [W_0: E x out x in][b_0: E x out][W_1 ...][b_1 ...] ... (layer-major, then member).
 *     E = 1 is an ordinary MLP. nn_mlp_weight()/nn_mlp_bias() locate one member's block.
 *   - Per-member tensors (activations, outputs, per-member inputs, their gradients) are
 *     [B, E * n]: row b holds member 0's n values, then member 1's, and so on.
 *     With NN_INPUT_SHARED every member reads the same [B, in] input (the first layer of all
 *     members is then one GEMM, and the input gradient is the sum over members).
 *
 * Gradients ACCUMULATE, everywhere in ember's nn: every backward function adds (+=) into every
 * gradient buffer it is given (parameter gradients and input gradients alike), like PyTorch's
 * .grad. Zero them yourself (nn_mlp_zero_grad, memset) before the first backward of an update.
 * That is what lets two forward passes on two workspaces be backpropagated into one set of
 * gradients, and lets a loss made of several terms add its pieces into one d_output.
 *
 * Workspace rules
 *   - nn_mlp_forward copies the input into the workspace, so the caller may reuse its buffer.
 *   - nn_mlp_backward uses the workspace's last forward pass; it does not change that pass,
 *     so backward may be called several times after one forward (with different d_output).
 *   - The pointer forward returns points into the workspace: valid until the next forward on
 *     that workspace or its destruction.
 *   - A workspace may serve any network with the same spec (a critic and its target network).
 *
 * Errors: constructors return NULL and fill err (bad spec, out of memory). Misuse in forward/backward
 * (batch outside [1, max_batch], a workspace of another spec, backward without a forward of that
 * network on that workspace) is a programmer error: it prints what was wrong and aborts, in every
 * build type, rather than write past a buffer.
 *
 * Ownership: nn_mlp_new / nn_mlp_ws_new return objects the caller owns; *_destroy(&p) frees them
 * and sets p to NULL. A workspace does not own its network; destroy workspaces whenever you like.
 *
 * Thread-safety: forward only reads the network, so forwards on distinct workspaces may run
 * concurrently. Backward writes net->grads: never run two backwards (or backward and an
 * optimiser step) on one network at the same time. One thread per workspace.
 */
#ifndef EMBER_NN_H
#define EMBER_NN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "rng.h"

#define NN_MAX_HIDDEN 6
#define NN_MAX_LAYERS (NN_MAX_HIDDEN + 1)

typedef enum {
  NN_ACT_IDENTITY = 0,
  NN_ACT_RELU = 1,
  NN_ACT_TANH = 2,
  NN_ACT_ELU = 3, /* alpha = 1: z > 0 ? z : exp(z) - 1 */
} nn_activation;

/* How an ensemble's input is laid out (see "Layouts" above). Irrelevant when E = 1. */
typedef enum {
  NN_INPUT_SHARED = 0,     /* [B, in]: every member sees the same rows */
  NN_INPUT_PER_MEMBER = 1, /* [B, E * in]: member e reads columns e*in .. (e+1)*in */
} nn_input_mode;

/* Whether a backward pass accumulates parameter gradients. Skipping them saves a third of the
 * backward work when only the input gradient is wanted (the actor's dQ/da through a critic). */
typedef enum {
  NN_PARAM_GRADS_ACCUMULATE = 0,
  NN_PARAM_GRADS_SKIP = 1,
} nn_param_grads;

typedef struct {
  int input_dim;
  int output_dim;
  int hidden_count; /* 0 .. NN_MAX_HIDDEN; 0 makes a single linear layer */
  int hidden_dims[NN_MAX_HIDDEN];
  nn_activation hidden_activation;
  nn_activation output_activation;
  int ensemble_size; /* E >= 1 (0 is read as 1) */
} nn_mlp_spec;

typedef struct {
  nn_mlp_spec spec;
  int ensemble_size;                   /* E */
  int layer_count;                     /* L = hidden_count + 1 */
  int dims[NN_MAX_LAYERS + 1];         /* dims[0] = input_dim .. dims[L] = output_dim */
  size_t weight_offset[NN_MAX_LAYERS]; /* where W_l (all members) starts in params */
  size_t bias_offset[NN_MAX_LAYERS];   /* where b_l (all members) starts in params */
  size_t param_count;
  float *params; /* param_count floats, owned */
  float *grads;  /* param_count floats, owned; accumulated by backward */
} nn_mlp;

typedef struct {
  int max_batch;
  int batch;                         /* rows of the last forward pass; 0 before the first */
  nn_input_mode input_mode;          /* of the last forward pass */
  const nn_mlp *net;                 /* the network of the last forward pass (not owned) */
  int ensemble_size;                 /* the spec this workspace was sized for */
  int layer_count;
  int dims[NN_MAX_LAYERS + 1];
  float *input;                      /* copy of the last input: [B, in] or [B, E * in] */
  float *activations[NN_MAX_LAYERS]; /* Y_l = act(X W_l^T + b_l): [B, E * dims[l+1]] */
  float *scratch[2];                 /* backward ping-pong buffers: [B, E * max(dims)] */
  float *arena;                      /* the one allocation behind all of the above */
} nn_mlp_ws;

/* ---- networks ---------------------------------------------------------------------------- */

/* A network with every parameter and gradient zero. Fails with EMBER_EINVAL naming the field
 * for a malformed spec, EMBER_ENOMEM when the buffers cannot be allocated. */
nn_mlp *nn_mlp_new(const nn_mlp_spec *spec, ember_err *err);
void nn_mlp_destroy(nn_mlp **net_p);

/* Checks a spec without allocating; 0 or EMBER_EINVAL naming the field. */
int nn_mlp_spec_check(const nn_mlp_spec *spec, ember_err *err);

typedef enum {
  NN_INIT_FAN_IN_UNIFORM = 0, /* W, b ~ U(-1/sqrt(in), 1/sqrt(in)): PyTorch's nn.Linear default */
  NN_INIT_XAVIER_UNIFORM = 1, /* W ~ U(-sqrt(6/(in+out)), +sqrt(6/(in+out))), b = 0 */
} nn_init_scheme;

/* Draws every member's parameters from rng (each member independently). */
void nn_mlp_init(nn_mlp *net, rng_t *rng, nn_init_scheme scheme);

/* Sets every gradient to zero. */
void nn_mlp_zero_grad(nn_mlp *net);

/* Layer l's weights [out, in] and bias [out] of member e, inside params (or grads). */
float *nn_mlp_weight(const nn_mlp *net, int layer, int member);
float *nn_mlp_bias(const nn_mlp *net, int layer, int member);
float *nn_mlp_weight_grad(const nn_mlp *net, int layer, int member);
float *nn_mlp_bias_grad(const nn_mlp *net, int layer, int member);

/* True when a and b have the same spec (so params and workspaces are interchangeable). */
int nn_mlp_same_shape(const nn_mlp *a, const nn_mlp *b);

/* ---- workspaces -------------------------------------------------------------------------- */

/* A workspace for batches of up to max_batch rows of net's spec. */
nn_mlp_ws *nn_mlp_ws_new(const nn_mlp *net, int max_batch, ember_err *err);
void nn_mlp_ws_destroy(nn_mlp_ws **ws_p);

/* ---- forward / backward ------------------------------------------------------------------ */

/* Forward over a batch.
 *   input  [B, in] (NN_INPUT_SHARED) or [B, E * in] (NN_INPUT_PER_MEMBER)
 *   return [B, E * out], inside ws (see "Workspace rules")
 * 1 <= batch <= ws->max_batch. Per layer: sgemm (one for all members when the input is shared
 * and it is the first layer; one per member otherwise), then one fused pass adding the bias and
 * applying the activation. */
const float *nn_mlp_forward(const nn_mlp *net, nn_mlp_ws *ws, const float *input, int batch,
                            nn_input_mode input_mode);

/* Backward through the last forward pass of ws.
 *   d_output [B, E * out]   dL/d(output), read only
 *   d_input  [B, in] or [B, E * in], per the forward's input mode; may be NULL (not wanted)
 * Accumulates: net->grads += dL/dparams (unless NN_PARAM_GRADS_SKIP), d_input += dL/d(input).
 * With NN_INPUT_SHARED the input gradient is summed over members. */
void nn_mlp_backward(nn_mlp *net, nn_mlp_ws *ws, const float *d_output, nn_param_grads param_grads,
                     float *d_input);

/* As nn_mlp_backward, but computes only input columns [col_begin, col_begin + col_count): the
 * learner's dQ/da when the critic's input is [obs | action]. d_input is then [B, col_count]
 * (shared input) or [B, E * col_count] (per-member input), accumulated. */
void nn_mlp_backward_input_cols(nn_mlp *net, nn_mlp_ws *ws, const float *d_output,
                                nn_param_grads param_grads, float *d_input, int col_begin,
                                int col_count);

/* ---- the pieces, as separate forward/backward pairs ---------------------------------------- */
/* The MLP fuses these; they are public for losses built by hand and so each is tested alone. */

/* Linear layer.
 *   forward:  x [B, in], w [out, in], b [out]  ->  y [B, out] = x w^T + b   (y overwritten)
 *   backward: dy [B, out]  ->  dx [B, in] += dy w;  dw [out, in] += dy^T x;  db [out] += sum_b dy
 *             (dx, dw, db may each be NULL) */
void nn_linear_forward(float *y, const float *x, const float *w, const float *b, int batch,
                       int in_dim, int out_dim);
void nn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int batch, int in_dim, int out_dim);

/* Elementwise activation.
 *   forward:  z [n] -> y [n] = act(z)   (y may equal z)
 *   backward: dz [n] += dy * act'(z), with act' written in terms of y = act(z) (so the forward's
 *             input need not be kept): relu 1[y>0], tanh 1-y^2, elu (y>0 ? 1 : y+1). */
void nn_activation_forward(nn_activation act, float *y, const float *z, size_t n);
void nn_activation_backward(nn_activation act, float *dz, const float *dy, const float *y, size_t n);

/* "relu", "tanh", "elu", "identity" <-> nn_activation. parse: 0 or EMBER_EINVAL. */
const char *nn_activation_name(nn_activation act);
int nn_activation_parse(const char *name, nn_activation *out, ember_err *err);

/* Multiply-adds of one forward pass at this batch (2 * sum of GEMM m*n*k), for benchmarks. */
double nn_mlp_forward_flops(const nn_mlp *net, int batch);

#endif
