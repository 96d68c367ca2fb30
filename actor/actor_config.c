/* actor_config.c: the "actor" config section (keys, ranges, defaults; see actor.h). */
#include <stddef.h>

#include "actor.h"

#define F(name, type, member, lo, hi, def, help) \
  {name, type, offsetof(actor_config, member), lo, hi, def, help}
static const config_field actor_fields[] = {
    F("id", CONFIG_INT, id, 0, 1e9, "0",
      "actor id, unique among the actors of a run; 0 = ember-actor derives one from host name and pid"),
    F("task", CONFIG_STRING, task, 0, 0, "", "task to act in; empty = run.task"),
    F("num_envs", CONFIG_INT, num_envs, 1, 4096, "8",
      "environments stepped together; the policy runs one batched forward over them"),
    F("seed", CONFIG_INT, seed, 0, 9.2e18, "0", "run seed (env and action noise streams derive from it)"),
    F("model_dir", CONFIG_STRING, model_dir, 0, 0, "", "directory of MJCF models; empty = default search"),
    F("max_episode_steps", CONFIG_INT, max_episode_steps, 0, 1e9, "0", "time limit; 0 = the task's own"),
    F("ctrl_noise_std", CONFIG_FLOAT, ctrl_noise_std, 0, 10, "0",
      "stochastic dynamics: sd of Gaussian noise on the applied controls, in units of each actuator's half "
      "range, drawn per env step and clipped to the ctrlrange (docs/tasks.md); every env the task runs in "
      "(training, evaluation, ember eval) takes it; 0 = the deterministic Gym task"),
    F("params_endpoint", CONFIG_STRING, params_endpoint, 0, 0, "tcp://127.0.0.1:5562",
      "learner PUB socket broadcasting Params (the actor connects a SUB)"),
    F("control_endpoint", CONFIG_STRING, control_endpoint, 0, 0, "tcp://127.0.0.1:5563",
      "learner ROUTER for Hello, ParamsRequest, Heartbeat, EpisodeReport, EvaluationReport (the actor connects a "
      "DEALER)"),
    F("replay_endpoint", CONFIG_STRING, replay_endpoint, 0, 0, "tcp://127.0.0.1:5560",
      "replay server insert endpoint (the actor's insert client connects)"),
    F("transitions_per_batch", CONFIG_INT, transitions_per_batch, 1, 1e6, "64", "transitions per TransitionBatch"),
    F("max_in_flight", CONFIG_INT, max_in_flight, 1, 1e6, "8", "batches sent without an InsertAck (credits)"),
    F("queue_batches", CONFIG_INT, queue_batches, 1, 1e6, "64",
      "batches waiting for credit; when full, the oldest is dropped and counted"),
    F("ack_timeout_ms", CONFIG_INT, ack_timeout_ms, 1, 3.6e6, "5000",
      "a batch unacknowledged this long is written off as unconfirmed"),
    F("replay_wait_ms", CONFIG_INT, replay_wait_ms, 0, 3.6e6, "0",
      "when the queue is full, hold the envs up to this long per step for room in it (an ack, or the link "
      "taking a batch: pace to replay), still reading Params; 0 = never wait, drop"),
    F("role", CONFIG_STRING, role, 0, 0, "train",
      "train: step K envs with the stochastic policy and send transitions to replay; eval: only evaluate "
      "(eval_episodes complete deterministic episodes every eval_every_steps env steps), no replay"),
    F("eval_every_steps", CONFIG_INT, eval_every_steps, 0, 1e12, "5000",
      "role eval: evaluate the first version published at or after every multiple of this many env steps; "
      "0 = every version received while idle"),
    F("eval_every_versions", CONFIG_INT, eval_every_versions_unused, 0, 1e12, "0",
      "no longer used (evaluations come every eval_every_steps, from the eval role); accepted so that the "
      "config.yaml of a run of an older ember still loads (ember eval, resume)"),
    F("eval_episodes", CONFIG_INT, eval_episodes, 1, 1000, "10",
      "role eval: complete episodes per evaluation, played side by side, reported together"),
    F("heartbeat_ms", CONFIG_INT, heartbeat_ms, 10, 3.6e6, "1000", "period of Heartbeat messages to the learner"),
    F("params_request_ms", CONFIG_INT, params_request_ms, 10, 3.6e6, "5000",
      "send another ParamsRequest after this long without Params"),
    F("log_interval_s", CONFIG_INT, log_interval_s, 0, 86400, "10", "seconds between progress lines; 0 = none"),
    F("max_env_steps", CONFIG_INT, max_env_steps, 0, 9.2e18, "0",
      "train role: stop after this many env steps (transitions); 0 = run until stopped (an evaluator runs until stopped)"),
    F("drain_ms", CONFIG_INT, drain_ms, 0, 3.6e6, "1000", "on stop, wait up to this long for outstanding acks"),
    F("max_message_bytes", CONFIG_INT, max_message_bytes, 0, 2147483647, "0",
      "largest message on the actor's sockets; 0 = the defaults (64 MiB replay, 256 MiB learner)"),
    F("nice", CONFIG_INT, nice, 0, 19, "0",
      "scheduling niceness of the actor's env thread (Linux); raise it where actors share cores with replay "
      "and the learner; 0 = as inherited"),
};
#undef F

const config_section actor_config_section = {"actor", actor_fields, sizeof actor_fields / sizeof *actor_fields};
