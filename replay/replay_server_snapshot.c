/* replay_server_snapshot.c: snapshot orchestration (replay_server_impl.h): restore at start,
 * periodic snapshots by a forked child, the owner's snapshot, pruning. The format is replay_snapshot.c. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "log.h"
#include "replay_server_impl.h"
#include "replay_snapshot.h"

/* A snapshot file is complete: advance the sequence, record what it holds, prune older files. */
static void snapshot_done(replay_server *s, const char *path, uint64_t inserts, uint64_t samples, uint64_t updates,
                          uint64_t size, double seconds, const char *how) {
  s->snapshot_seq++;
  s->last_snapshot_s = srv_now_s();
  s->snap_inserts = inserts;
  s->snap_samples = samples;
  s->snap_updates = updates;
  metric_inc(s->m.snapshots_written);
  metric_set(s->m.snap_inserted, (double)s->snap_inserts);
  metric_set(s->m.snap_sampled, (double)s->snap_samples);
  ember_err perr = {0};
  if (replay_snapshot_prune(s->cfg.snapshot_dir, (int)s->cfg.snapshot_keep, &perr) != 0)
    log_event(LOG_WARN, "replay", "snapshot_prune_failed", LF_STR("error", perr.msg));
  log_event(LOG_INFO, "replay", "snapshot_written", LF_STR("path", path), LF_U64("transitions", size),
            LF_U64("inserts", inserts), LF_U64("samples", samples), LF_F64("seconds", seconds),
            LF_STR("writer", how));
}

/* Writes a snapshot; the caller holds s->lock (the table must not change while it is written). */
static int snapshot_locked(replay_server *s, ember_err *err) {
  replay_snapshot_meta meta = {.sequence = s->snapshot_seq, .created_unix_ms = srv_unix_ms(), .samples = s->samples,
                               .sample_batches = s->sample_batches, .insert_batches = s->insert_batches};
  char path[4096];
  double t0 = srv_now_s();
  int rc = replay_snapshot_write(s->cfg.snapshot_dir, s->table, &meta, (int)s->cfg.snapshot_zstd_level, path,
                                 sizeof path, err);
  if (rc != 0) {
    metric_inc(s->m.snapshot_failures);
    log_event(LOG_ERROR, "replay", "snapshot_failed", LF_STR("dir", s->cfg.snapshot_dir),
              LF_STR("error", err ? err->msg : ember_strerror(rc)));
    return rc;
  }
  snapshot_done(s, path, replay_table_inserts(s->table), s->samples, s->priority_updates,
                replay_table_size(s->table), srv_now_s() - t0, "server");
  return 0;
}

/* Periodic snapshots are written by a forked child: fork() gives it a copy-on-write image of the
 * table as of one instant (taken under the lock, a few milliseconds for the page tables), and both
 * server threads go on serving while it compresses and writes. The price is memory: pages the server
 * changes meanwhile are copied, at most one more table's worth. The child only writes the file (no
 * logging, no ZeroMQ: other threads' locks may have been held at the fork) and reports failure as
 * text on a pipe; it dies with the server (PR_SET_PDEATHSIG), so a killed server leaves no writer
 * behind that could rename an old image over a newer file. The insert thread reaps it. */
void srv_reap_snapshot_child(replay_server *s, bool wait) {
  if (s->snap_child <= 0) return;
  int status = 0;
  pid_t r;
  do r = waitpid(s->snap_child, &status, wait ? 0 : WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) return; /* still writing */
  char msg[sizeof(((ember_err *)0)->msg)] = "";
  ssize_t n = read(s->snap_child_err, msg, sizeof msg - 1);
  msg[n > 0 ? n : 0] = 0;
  close(s->snap_child_err);
  s->snap_child = 0;
  double seconds = srv_now_s() - s->snap_child_started_s;
  pthread_mutex_lock(&s->lock);
  if (r > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    char path[4096];
    snprintf(path, sizeof path, "%s/replay-%020" PRIu64 ".snap", s->cfg.snapshot_dir, s->snapshot_seq);
    snapshot_done(s, path, s->child_inserts, s->child_samples, s->child_updates, s->child_size, seconds, "child");
  } else {
    char why[96];
    if (r < 0) snprintf(why, sizeof why, "waitpid: %s", strerror(errno));
    else if (WIFSIGNALED(status)) snprintf(why, sizeof why, "killed by signal %d", WTERMSIG(status));
    else snprintf(why, sizeof why, "exit status %d", WEXITSTATUS(status));
    metric_inc(s->m.snapshot_failures);
    s->snap_retry_s = srv_now_s() + (s->cfg.snapshot_interval_s < 10 ? s->cfg.snapshot_interval_s : 10);
    log_event(LOG_ERROR, "replay", "snapshot_failed", LF_STR("dir", s->cfg.snapshot_dir),
              LF_STR("error", msg[0] ? msg : why), LF_STR("writer", "child"));
  }
  pthread_mutex_unlock(&s->lock);
}

/* Starts a child writing snapshot s->snapshot_seq; the caller holds s->lock. 0 = started. */
static int start_snapshot_child(replay_server *s) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  /* close-on-exec, so a program another thread starts meanwhile holds no end of it, and a reader
   * that never blocks: the child has written (or not) by the time it is reaped */
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  replay_snapshot_meta meta = {.sequence = s->snapshot_seq, .created_unix_ms = srv_unix_ms(), .samples = s->samples,
                               .sample_batches = s->sample_batches, .insert_batches = s->insert_batches};
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  if (pid == 0) {
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    if (getppid() != parent) _exit(3); /* the server died before the line above */
    close(fds[0]);
    ember_err err = {0};
    int rc = replay_snapshot_write(s->cfg.snapshot_dir, s->table, &meta, (int)s->cfg.snapshot_zstd_level, NULL, 0,
                                   &err);
    if (rc != 0) {
      ssize_t w = write(fds[1], err.msg, strlen(err.msg)); /* nothing to do if even this fails */
      (void)w;
    }
    _exit(rc == 0 ? 0 : 1);
  }
  close(fds[1]);
  s->snap_child = pid;
  s->snap_child_err = fds[0];
  s->snap_child_started_s = srv_now_s();
  s->child_inserts = replay_table_inserts(s->table);
  s->child_samples = s->samples;
  s->child_updates = s->priority_updates;
  s->child_size = replay_table_size(s->table);
  return 0;
}

int replay_server_snapshot(replay_server *s, ember_err *err) {
  if (!s->cfg.snapshot_dir[0]) return 0;
  srv_reap_snapshot_child(s, true); /* a periodic one in flight finishes first: sequences stay in order */
  pthread_mutex_lock(&s->lock);
  int rc = snapshot_locked(s, err);
  pthread_mutex_unlock(&s->lock);
  return rc;
}

void srv_maybe_snapshot(replay_server *s, double t) {
  if (!s->cfg.snapshot_dir[0] || s->cfg.snapshot_interval_s <= 0) return;
  srv_reap_snapshot_child(s, false);
  if (s->snap_child > 0 || t < s->snap_retry_s) return; /* one writer at a time; a failure backs off */
  pthread_mutex_lock(&s->lock);
  double since = t - (s->last_snapshot_s > 0 ? s->last_snapshot_s : s->started_s);
  if (since >= s->cfg.snapshot_interval_s) {
    if (replay_table_inserts(s->table) == s->snap_inserts && s->samples == s->snap_samples &&
        s->priority_updates == s->snap_updates) {
      s->last_snapshot_s = t; /* nothing changed: the newest file is still current */
    } else if (start_snapshot_child(s) != 0) {
      /* no fork (out of memory or processes): write in place, holding both threads meanwhile */
      log_event(LOG_WARN, "replay", "snapshot_fork_failed", LF_STR("error", strerror(errno)));
      ember_err err = {0};
      if (snapshot_locked(s, &err) != 0)
        s->snap_retry_s = t + (s->cfg.snapshot_interval_s < 10 ? s->cfg.snapshot_interval_s : 10);
    }
  }
  pthread_mutex_unlock(&s->lock);
}


int srv_snapshots_at_start(replay_server *s, ember_err *err) {
  const replay_config *cfg = &s->cfg;
  if (!cfg->snapshot_dir[0]) return 0;
  /* no writer can be running yet: a temporary here was left by a killed one (up to a table's size) */
  int rc = replay_snapshot_remove_stale_tmp(cfg->snapshot_dir, NULL, err);
  /* numbered after every file present, restored or not: a new file numbered below old ones would
   * be the first one pruning deletes */
  if (rc == 0) rc = replay_snapshot_next_sequence(cfg->snapshot_dir, &s->snapshot_seq, err);
  if (rc != 0 || !cfg->restore) return rc;
  replay_snapshot_info info;
  int restored = 0;
  double t0 = srv_now_s();
  rc = replay_snapshot_restore_newest(cfg->snapshot_dir, s->table, &info, &restored, &s->snapshot_seq, err);
  if (rc != 0) return rc;
  if (restored) {
    if (!atomic_load(&s->spec_ready)) {
      s->spec = *replay_table_spec(s->table);
      atomic_store(&s->spec_ready, replay_table_has_spec(s->table));
    }
    s->samples = info.meta.samples;
    s->sample_batches = info.meta.sample_batches;
    s->insert_batches = info.meta.insert_batches;
    s->restored = replay_table_size(s->table);
    s->rl.inserts = replay_table_inserts(s->table);
    s->rl.deletes = replay_table_evicted(s->table);
    s->rl.samples = s->samples;
    s->snap_inserts = replay_table_inserts(s->table);
    s->snap_samples = s->samples;
    s->last_snapshot_s = srv_now_s();
    metric_set(s->m.snap_inserted, (double)s->snap_inserts);
    metric_set(s->m.snap_sampled, (double)s->snap_samples);
  }
  metric_set(s->m.restored, (double)s->restored);
  log_event(LOG_INFO, "replay", "restored", LF_STR("dir", cfg->snapshot_dir), LF_BOOL("from_snapshot", restored),
            LF_U64("snapshot", restored ? info.meta.sequence : 0), LF_U64("transitions", s->restored),
            LF_U64("inserts", replay_table_inserts(s->table)), LF_U64("samples", s->samples),
            LF_F64("seconds", srv_now_s() - t0));
  return 0;
}
