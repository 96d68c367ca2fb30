/* ref_mlp.h: an independent double-precision forward of one member of an nn_mlp, with the
 * parameters given as doubles in nn's flat layout (theta[i] <-> net->params[i]); tanh hidden layers,
 * linear output. The algorithm tests differentiate losses built on it by central differences. */
#ifndef EMBER_TEST_REF_MLP_H
#define EMBER_TEST_REF_MLP_H

#include <math.h>
#include <string.h>

#include "nn.h"

#define REF_MLP_MAX_WIDTH 64 /* the tests' tiny networks stay below this */

static void ref_mlp_forward(const nn_mlp *net, const double *theta, int member, const double *x, double *y) {
  double a[REF_MLP_MAX_WIDTH], h[REF_MLP_MAX_WIDTH];
  memcpy(a, x, (size_t)net->dims[0] * sizeof(double));
  for (int l = 0; l < net->layer_count; l++) {
    int in = net->dims[l], out = net->dims[l + 1];
    const double *w = theta + (nn_mlp_weight(net, l, member) - net->params);
    const double *bias = theta + (nn_mlp_bias(net, l, member) - net->params);
    for (int o = 0; o < out; o++) {
      double z = bias[o];
      for (int i = 0; i < in; i++) z += w[(size_t)o * in + i] * a[i];
      h[o] = l + 1 < net->layer_count ? tanh(z) : z;
    }
    memcpy(a, h, (size_t)out * sizeof(double));
  }
  memcpy(y, a, (size_t)net->dims[net->layer_count] * sizeof(double));
}

#endif
