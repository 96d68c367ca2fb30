/* replay_test_util.h: building TransitionBatches whose values encode their global index, so a test
 * can check that what comes back out of the table is the row that went in. Header-only, for tests. */
#ifndef EMBER_REPLAY_TEST_UTIL_H
#define EMBER_REPLAY_TEST_UTIL_H

#include <stdint.h>
#include <stdlib.h>

#include "ember.pb-c.h"

typedef struct {
  Ember__TransitionBatch b;
  float *obs, *action, *reward, *next_obs, *logp;
  protobuf_c_boolean *term, *trunc;
} test_batch;

/* Value of column element j of the transition with index `id` (c = a column tag). */
static inline float test_value(uint64_t id, int c, uint32_t j) { return (float)(id % 100000) + 0.001f * (float)(c * 64 + j); }
/* Actions are in [-1, 1] (the replay server refuses others): element j of transition id's, for
 * j < 500. Recoverable from the obs (test_value(id, 0, 0) = id % 100000). */
static inline float test_action(uint64_t id, uint32_t j) { return (float)(id % 1000) / 1000.0f - 0.5f + 0.001f * (float)j; }
/* A transition is ended by the task or by the time limit, never both (the server refuses both). */
static inline int test_terminated(uint64_t id) { return id % 3 == 0; }
static inline int test_truncated(uint64_t id) { return id % 5 == 0 && id % 3 != 0; }

static inline void test_batch_fill(test_batch *tb, const char *task, uint32_t od, uint32_t ad, uint32_t count,
                                   uint64_t first_id, uint64_t actor_id, uint64_t seq) {
  ember__transition_batch__init(&tb->b);
  tb->obs = malloc(sizeof(float) * count * od);
  tb->next_obs = malloc(sizeof(float) * count * od);
  tb->action = malloc(sizeof(float) * count * ad);
  tb->reward = malloc(sizeof(float) * count);
  tb->logp = malloc(sizeof(float) * count);
  tb->term = malloc(sizeof(protobuf_c_boolean) * count);
  tb->trunc = malloc(sizeof(protobuf_c_boolean) * count);
  for (uint32_t i = 0; i < count; i++) {
    uint64_t id = first_id + i;
    for (uint32_t j = 0; j < od; j++) {
      tb->obs[i * od + j] = test_value(id, 0, j);
      tb->next_obs[i * od + j] = test_value(id, 1, j);
    }
    for (uint32_t j = 0; j < ad; j++) tb->action[i * ad + j] = test_action(id, j);
    tb->reward[i] = test_value(id, 3, 0);
    tb->logp[i] = test_value(id, 4, 0);
    tb->term[i] = test_terminated(id);
    tb->trunc[i] = test_truncated(id);
  }
  tb->b.task = (char *)task;
  tb->b.obs_dim = od, tb->b.act_dim = ad, tb->b.count = count;
  tb->b.actor_id = actor_id, tb->b.sequence = seq, tb->b.policy_version = first_id + 7;
  tb->b.n_obs = tb->b.n_next_obs = (size_t)count * od;
  tb->b.n_action = (size_t)count * ad;
  tb->b.n_reward = tb->b.n_behaviour_log_prob = tb->b.n_terminated = tb->b.n_truncated = count;
  tb->b.obs = tb->obs, tb->b.next_obs = tb->next_obs, tb->b.action = tb->action, tb->b.reward = tb->reward;
  tb->b.behaviour_log_prob = tb->logp, tb->b.terminated = tb->term, tb->b.truncated = tb->trunc;
}

static inline void test_batch_free(test_batch *tb) {
  free(tb->obs), free(tb->next_obs), free(tb->action), free(tb->reward), free(tb->logp), free(tb->term),
      free(tb->trunc);
}

#endif
