/* nn params: networks to a Params message and back through the wire encoding, and every way an
 * import can be refused (each leaves the networks untouched). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn_params.h"

typedef struct {
  nn_mlp *pi, *model;
  nn_gauss_head *head;
  float log_alpha;
  nn_param_set *set;
} learner_nets;

static void nets_make(learner_nets *n, uint64_t seed) {
  ember_err err = {0};
  nn_mlp_spec pi = {.input_dim = 5, .output_dim = 4, .hidden_count = 2, .hidden_dims = {8, 7},
                    .hidden_activation = NN_ACT_RELU};
  nn_mlp_spec model = {.input_dim = 6, .output_dim = 10, .hidden_count = 1, .hidden_dims = {9},
                       .hidden_activation = NN_ACT_ELU, .ensemble_size = 3};
  n->pi = nn_mlp_new(&pi, &err);
  n->model = nn_mlp_new(&model, &err);
  n->head = nn_gauss_head_new(5, 3, &err);
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST);
  nn_mlp_init(n->pi, &r, NN_INIT_FAN_IN_UNIFORM);
  nn_mlp_init(n->model, &r, NN_INIT_XAVIER_UNIFORM);
  for (int i = 0; i < 10; i++) n->head->params[i] += (float)rng_uniform(&r);
  n->log_alpha = (float)rng_uniform(&r);
  n->set = nn_param_set_new(&err);
  ck_assert_int_eq(nn_param_set_add_mlp(n->set, "pi", n->pi, &err), 0);
  ck_assert_int_eq(nn_param_set_add_mlp(n->set, "model", n->model, &err), 0);
  ck_assert_int_eq(nn_param_set_add_gauss_head(n->set, "model/head", n->head, &err), 0);
  ck_assert_int_eq(nn_param_set_add(n->set, "log_alpha", &n->log_alpha, 1, (uint32_t[]){1}, &err), 0);
}

static void nets_free(learner_nets *n) {
  nn_param_set_destroy(&n->set);
  nn_mlp_destroy(&n->pi);
  nn_mlp_destroy(&n->model);
  nn_gauss_head_destroy(&n->head);
}

static int nets_equal(const learner_nets *a, const learner_nets *b) {
  return memcmp(a->pi->params, b->pi->params, a->pi->param_count * sizeof(float)) == 0 &&
         memcmp(a->model->params, b->model->params, a->model->param_count * sizeof(float)) == 0 &&
         memcmp(a->head->params, b->head->params, a->head->param_count * sizeof(float)) == 0 &&
         a->log_alpha == b->log_alpha;
}

static const Ember__Tensor *tensor_named(const Ember__Params *msg, const char *name) {
  for (size_t i = 0; i < msg->n_tensors; i++)
    if (strcmp(msg->tensors[i]->name, name) == 0) return msg->tensors[i];
  return NULL;
}

START_TEST(round_trip_through_the_wire) {
  learner_nets src, dst;
  nets_make(&src, 1);
  nets_make(&dst, 2);
  ck_assert(!nets_equal(&src, &dst));
  ember_err err = {0};
  Ember__Params msg = EMBER__PARAMS__INIT;
  ck_assert_int_eq(nn_params_export(src.set, &msg, &err), 0);
  /* pi: 3 layers x (w, b); model: 2 x (w, b); head: 2; log_alpha: 1 */
  ck_assert_uint_eq(msg.n_tensors, 6 + 4 + 2 + 1);
  const Ember__Tensor *w = tensor_named(&msg, "pi/l0/w");
  ck_assert_ptr_nonnull(w);
  ck_assert_uint_eq(w->n_shape, 2);
  ck_assert_uint_eq(w->shape[0], 8); /* [out, in] */
  ck_assert_uint_eq(w->shape[1], 5);
  ck_assert_float_eq(w->data[1 * 5 + 2], nn_mlp_weight(src.pi, 0, 0)[1 * 5 + 2]);
  const Ember__Tensor *b = tensor_named(&msg, "pi/l2/b");
  ck_assert_uint_eq(b->n_shape, 1);
  ck_assert_uint_eq(b->shape[0], 4);
  const Ember__Tensor *ew = tensor_named(&msg, "model/l1/w");
  ck_assert_uint_eq(ew->n_shape, 3); /* [E, out, in] */
  ck_assert_uint_eq(ew->shape[0], 3);
  ck_assert_uint_eq(ew->shape[1], 10);
  ck_assert_uint_eq(ew->shape[2], 9);
  ck_assert_float_eq(ew->data[2 * 90 + 4 * 9 + 3], nn_mlp_weight(src.model, 1, 2)[4 * 9 + 3]);
  ck_assert_uint_eq(tensor_named(&msg, "model/head/min_logvar")->shape[0], 5);

  size_t size = ember__params__get_packed_size(&msg);
  uint8_t *bytes = malloc(size);
  ember__params__pack(&msg, bytes);
  nn_params_free_tensors(&msg);
  ck_assert_uint_eq(msg.n_tensors, 0);
  Ember__Params *received = ember__params__unpack(NULL, size, bytes);
  ck_assert_ptr_nonnull(received);
  ck_assert_int_eq(nn_params_import(dst.set, received, NN_IMPORT_EXACT, &err), 0);
  ck_assert(nets_equal(&src, &dst));
  ember__params__free_unpacked(received, NULL);
  free(bytes);
  nets_free(&src);
  nets_free(&dst);
}
END_TEST

START_TEST(export_appends_and_refuses_duplicates) {
  learner_nets n;
  nets_make(&n, 3);
  ember_err err = {0};
  Ember__Params msg = EMBER__PARAMS__INIT;
  nn_param_set *only_pi = nn_param_set_new(&err);
  ck_assert_int_eq(nn_param_set_add_mlp(only_pi, "pi", n.pi, &err), 0);
  ck_assert_int_eq(nn_params_export(only_pi, &msg, &err), 0);
  ck_assert_uint_eq(msg.n_tensors, 6);
  ck_assert_int_eq(nn_params_export(n.set, &msg, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "pi/l0/w"));
  ck_assert_uint_eq(msg.n_tensors, 6);
  nn_param_set *other = nn_param_set_new(&err);
  ck_assert_int_eq(nn_param_set_add_gauss_head(other, "head", n.head, &err), 0);
  ck_assert_int_eq(nn_params_export(other, &msg, &err), 0);
  ck_assert_uint_eq(msg.n_tensors, 8);
  /* an actor takes pi from a message that holds more */
  learner_nets actor;
  nets_make(&actor, 4);
  ck_assert_int_eq(nn_params_import(only_pi, &msg, NN_IMPORT_EXACT, &err), EMBER_ENOENT);
  ck_assert_ptr_nonnull(strstr(err.msg, "head/max_logvar"));
  nn_param_set *actor_pi = nn_param_set_new(&err);
  nn_param_set_add_mlp(actor_pi, "pi", actor.pi, &err);
  ck_assert_int_eq(nn_params_import(actor_pi, &msg, NN_IMPORT_SUBSET, &err), 0);
  ck_assert_mem_eq(actor.pi->params, n.pi->params, n.pi->param_count * sizeof(float));
  nn_params_free_tensors(&msg);
  nn_param_set_destroy(&only_pi);
  nn_param_set_destroy(&other);
  nn_param_set_destroy(&actor_pi);
  nets_free(&actor);
  nets_free(&n);
}
END_TEST

/* Every refusal: the right code, a message naming what was wrong, and no network changed. */
START_TEST(import_refusals_name_the_problem_and_change_nothing) {
  learner_nets src, dst, before;
  nets_make(&src, 5);
  nets_make(&dst, 6);
  nets_make(&before, 6);
  ember_err err = {0};
  Ember__Params msg = EMBER__PARAMS__INIT;
  ck_assert_int_eq(nn_params_export(src.set, &msg, &err), 0);
  Ember__Tensor *w = (Ember__Tensor *)tensor_named(&msg, "pi/l1/w");

  /* transposed, so the element count still matches: [8, 7] where [out, in] = [7, 8] is expected */
  uint32_t keep0 = w->shape[0], keep1 = w->shape[1];
  w->shape[0] = keep1, w->shape[1] = keep0;
  ck_assert_int_eq(nn_params_import(dst.set, &msg, NN_IMPORT_EXACT, &err), EMBER_ESHAPE);
  ck_assert_msg(strstr(err.msg, "'pi/l1/w'") && strstr(err.msg, "[8, 7]") && strstr(err.msg, "[7, 8]"),
                "%s", err.msg);
  ck_assert(nets_equal(&dst, &before));
  w->shape[0] = keep0, w->shape[1] = keep1;

  /* data length does not match the shape */
  w->n_data--;
  ck_assert_int_eq(nn_params_import(dst.set, &msg, NN_IMPORT_EXACT, &err), EMBER_EDECODE);
  ck_assert_msg(strstr(err.msg, "'pi/l1/w'") && strstr(err.msg, "55"), "%s", err.msg);
  w->n_data++;

  /* a non-finite value, in the last tensor so that earlier ones were already checked */
  Ember__Tensor *alpha = (Ember__Tensor *)tensor_named(&msg, "log_alpha");
  float keep = alpha->data[0];
  alpha->data[0] = NAN;
  ck_assert_int_eq(nn_params_import(dst.set, &msg, NN_IMPORT_EXACT, &err), EMBER_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(err.msg, "log_alpha"));
  ck_assert(nets_equal(&dst, &before));
  alpha->data[0] = keep;

  /* a missing tensor: rename it away; strict import also names the stranger */
  char *name = w->name;
  w->name = "pi/l1/weights";
  ck_assert_int_eq(nn_params_import(dst.set, &msg, NN_IMPORT_SUBSET, &err), EMBER_ENOENT);
  ck_assert_msg(strstr(err.msg, "'pi/l1/w'") && strstr(err.msg, "[7, 8]"), "%s", err.msg);
  ck_assert(nets_equal(&dst, &before));

  /* an unknown tensor (exact mode) */
  float x[2] = {1, 2};
  w->name = name;
  nn_param_set *tmp = nn_param_set_new(&err);
  nn_param_set_add(tmp, "critic/l0/w", x, 2, (uint32_t[]){1, 2}, &err);
  ck_assert_int_eq(nn_params_export(tmp, &msg, &err), 0);
  ck_assert_int_eq(nn_params_import(dst.set, &msg, NN_IMPORT_EXACT, &err), EMBER_ENOENT);
  ck_assert_msg(strstr(err.msg, "'critic/l0/w'") && strstr(err.msg, "[1, 2]"), "%s", err.msg);
  ck_assert(nets_equal(&dst, &before));
  ck_assert_int_eq(nn_params_import(dst.set, &msg, NN_IMPORT_SUBSET, &err), 0);
  ck_assert(nets_equal(&dst, &src));

  /* a name given twice */
  ck_assert_int_eq(nn_params_export(tmp, &msg, &err), EMBER_EINVAL); /* export refuses it... */
  Ember__Tensor *last = msg.tensors[msg.n_tensors - 1];
  char *last_name = last->name;
  last->name = "pi/l0/b"; /* ...so forge one */
  ck_assert_int_eq(nn_params_import(dst.set, &msg, NN_IMPORT_SUBSET, &err), EMBER_EDECODE);
  ck_assert_msg(strstr(err.msg, "'pi/l0/b'") && strstr(err.msg, "twice"), "%s", err.msg);
  last->name = "";
  ck_assert_int_eq(nn_params_import(dst.set, &msg, NN_IMPORT_SUBSET, &err), EMBER_EDECODE);
  ck_assert_ptr_nonnull(strstr(err.msg, "no name"));
  last->name = last_name;

  nn_params_free_tensors(&msg);
  nn_param_set_destroy(&tmp);
  nets_free(&src);
  nets_free(&dst);
  nets_free(&before);
}
END_TEST

START_TEST(set_refuses_bad_entries) {
  ember_err err = {0};
  nn_param_set *set = nn_param_set_new(&err);
  float x[4] = {0};
  ck_assert_int_eq(nn_param_set_add(set, "a", x, 1, (uint32_t[]){4}, &err), 0);
  ck_assert_int_eq(nn_param_set_add(set, "a", x, 1, (uint32_t[]){4}, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "twice"));
  ck_assert_int_eq(nn_param_set_add(set, "", x, 1, (uint32_t[]){4}, &err), EMBER_EINVAL);
  ck_assert_int_eq(nn_param_set_add(set, "b", x, 0, (uint32_t[]){4}, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "rank"));
  ck_assert_int_eq(nn_param_set_add(set, "b", x, 2, (uint32_t[]){4, 0}, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "zero"));
  char long_name[NN_TENSOR_NAME_MAX + 4];
  memset(long_name, 'x', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = 0;
  ck_assert_int_eq(nn_param_set_add(set, long_name, x, 1, (uint32_t[]){4}, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "longer"));
  /* growth past the first allocation keeps earlier entries */
  for (int i = 0; i < 40; i++) {
    char name[16];
    snprintf(name, sizeof name, "t%d", i);
    ck_assert_int_eq(nn_param_set_add(set, name, x, 1, (uint32_t[]){(uint32_t)(i % 4 + 1)}, &err), 0);
  }
  ck_assert_int_eq(set->count, 41);
  ck_assert_str_eq(set->tensors[0].name, "a");
  ck_assert_uint_eq(nn_param_set_float_count(set), 4 + 10 * (1 + 2 + 3 + 4));
  nn_param_set_destroy(&set);
  ck_assert_ptr_null(set);
}
END_TEST

int main(void) {
  Suite *s = suite_create("nn_params");
  TCase *t = tcase_create("params");
  tcase_add_test(t, round_trip_through_the_wire);
  tcase_add_test(t, export_appends_and_refuses_duplicates);
  tcase_add_test(t, import_refusals_name_the_problem_and_change_nothing);
  tcase_add_test(t, set_refuses_bad_entries);
  suite_add_tcase(s, t);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
