/*
 * Session lifecycle: mount, the request table, the control thread, message
 * delivery to JavaScript, unmount and teardown.
 *
 * Setup order in mount(): fuse_session_new, fuse_session_mount, the
 * thread-safe function, the control thread, the reply thread, the loop
 * thread. Teardown runs on the main thread when the loop thread reports that
 * fuse_session_loop_mt returned. It undoes the steps in reverse order: join
 * the loop thread, let the reply thread send what it has queued and join
 * it, stop and join the control thread, reply EIO to what is still pending,
 * release the thread-safe function, fuse_session_unmount,
 * fuse_session_destroy.
 *
 * unmount() from JavaScript only starts this: it marks the session as
 * exiting and asks the control thread to detach the mount point. The kernel
 * then closes the connection (at once when no file is open, otherwise when
 * the last one closes), the loop returns and teardown follows. Waiting on
 * the main thread would deadlock, because requests that arrive meanwhile
 * need JavaScript to answer them.
 */

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bucketmount.h"

extern char **environ;

/* Marks session objects made by mount(), so that methods called on any other object throw. */
static const napi_type_tag BM_SESSION_TAG = {0x6275636b65746d6fULL, 0x756e742d66757365ULL};

#define BM_INITIAL_SLOTS 64u
#define BM_EXIT_JOIN_TIMEOUT_SECONDS 2

/* Per-environment state of the addon (Node-API instance data). */
typedef struct {
  napi_ref session_constructor;
} bm_addon;

/* ---------------------------------------------------------------- helpers */

uint64_t bm_now_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * UINT64_C(1000000000) + (uint64_t)now.tv_nsec;
}

void bm_throw_status(napi_env env, napi_status status, const char *call) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;

  const napi_extended_error_info *info = NULL;
  const char *detail = "unknown error";
  if (napi_get_last_error_info(env, &info) == napi_ok && info != NULL && info->error_message != NULL) {
    detail = info->error_message;
  }

  char text[512];
  snprintf(text, sizeof(text), "bucketmount_fuse: %s failed with status %d (%s)", call, (int)status, detail);
  napi_throw_error(env, "ERR_BUCKETMOUNT_NAPI", text);
}

static napi_value throw_error(napi_env env, const char *code, const char *format, ...) {
  char text[1024];
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(text, sizeof(text), format, arguments);
  va_end(arguments);
  napi_throw_error(env, code, text);
  return NULL;
}

bm_message *bm_message_new(bm_message_kind kind) {
  bm_message *message = calloc(1, sizeof(bm_message));
  if (message != NULL) message->kind = kind;
  return message;
}

void bm_message_free(bm_message *message) {
  if (message == NULL) return;
  free(message->name);
  free(message->new_name);
  free(message->data);
  free(message->forgets);
  free(message->text);
  free(message);
}

/* Starts a thread with all signals blocked, so that signals keep going to Node's own threads. */
int bm_start_thread(pthread_t *thread, void *(*main)(void *), void *argument) {
  sigset_t all;
  sigset_t previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  int result = pthread_create(thread, NULL, main, argument);
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  return result;
}

/* ---------------------------------------------------------- request table */

static double slot_id(const bm_session *session, int32_t index) {
  return (double)session->slots[index].generation * BM_SLOT_LIMIT + (double)index;
}

/* Lock held. Returns a free slot index, growing the table when needed, or -1. */
static int32_t slot_allocate(bm_session *session) {
  if (session->free_head < 0) {
    uint32_t old_capacity = session->slot_capacity;
    if (old_capacity >= (uint32_t)BM_SLOT_LIMIT) return -1;

    uint32_t new_capacity = old_capacity * 2;
    bm_slot *grown = realloc(session->slots, new_capacity * sizeof(bm_slot));
    if (grown == NULL) return -1;

    memset(grown + old_capacity, 0, (new_capacity - old_capacity) * sizeof(bm_slot));
    for (uint32_t i = old_capacity; i < new_capacity; i++) {
      grown[i].generation = 1;
      grown[i].previous = -1;
      grown[i].next = (i + 1 < new_capacity) ? (int32_t)(i + 1) : -1;
    }
    session->slots = grown;
    session->slot_capacity = new_capacity;
    session->free_head = (int32_t)old_capacity;
  }

  int32_t index = session->free_head;
  session->free_head = session->slots[index].next;
  session->slots[index].next = -1;
  session->slots[index].previous = -1;
  return index;
}

/* Lock held. Returns the slot to the free list; its next id gets a new generation. */
static void slot_release(bm_session *session, int32_t index) {
  bm_slot *slot = &session->slots[index];
  slot->state = BM_SLOT_FREE;
  slot->request = NULL;
  slot->deadline_ns = 0;
  slot->generation = slot->generation + 1 < BM_GENERATION_LIMIT ? slot->generation + 1 : 1;
  slot->previous = -1;
  slot->next = session->free_head;
  session->free_head = index;
}

/* Lock held. Appends to the deadline list; every request gets the same timeout, so the list stays sorted. */
static void pending_append(bm_session *session, int32_t index) {
  bm_slot *slot = &session->slots[index];
  slot->previous = session->pending_tail;
  slot->next = -1;
  if (session->pending_tail >= 0) {
    session->slots[session->pending_tail].next = index;
  } else {
    session->pending_head = index;
    pthread_cond_signal(&session->control_wakeup);
  }
  session->pending_tail = index;
}

/* Lock held. Removes a slot with a deadline from the deadline list. */
static void pending_remove(bm_session *session, int32_t index) {
  bm_slot *slot = &session->slots[index];
  if (slot->deadline_ns == 0) return;

  if (slot->previous >= 0) {
    session->slots[slot->previous].next = slot->next;
  } else {
    session->pending_head = slot->next;
  }
  if (slot->next >= 0) {
    session->slots[slot->next].previous = slot->previous;
  } else {
    session->pending_tail = slot->previous;
  }
  slot->previous = -1;
  slot->next = -1;
  slot->deadline_ns = 0;
}

/* Lock held. Finds the slot of `id`, or returns -1 when the id is malformed or stale. */
static int32_t slot_find(const bm_session *session, double id) {
  if (!(id >= 0) || id >= BM_SLOT_LIMIT * (double)BM_GENERATION_LIMIT) return -1;

  double generation = (double)(uint64_t)(id / BM_SLOT_LIMIT);
  double index = id - generation * BM_SLOT_LIMIT;
  if (index != (double)(uint32_t)index || (uint32_t)index >= session->slot_capacity) return -1;

  const bm_slot *slot = &session->slots[(uint32_t)index];
  if ((double)slot->generation != generation || slot->state == BM_SLOT_FREE) return -1;
  return (int32_t)index;
}

static bool is_forget(bm_operation operation) {
  return operation == BM_OP_FORGET || operation == BM_OP_FORGET_MULTI;
}

/* Replies with an error to a request that will not reach JavaScript. */
static void reply_failure(fuse_req_t request, bm_operation operation, int error) {
  if (is_forget(operation)) {
    fuse_reply_none(request);
  } else {
    (void)fuse_reply_err(request, error);
  }
}

bool bm_post_locked(bm_session *session, bm_message *message) {
  if (!session->accepting) return false;
  return napi_call_threadsafe_function(session->dispatcher, message, napi_tsfn_nonblocking) == napi_ok;
}

/* Lock held. Posts a log line for JavaScript; `text` is copied. */
static void post_log_locked(bm_session *session, const char *level, const char *text, int error) {
  bm_message *message = bm_message_new(BM_MESSAGE_LOG);
  if (message == NULL) return;
  message->level = level;
  message->text = strdup(text);
  message->error = error;
  if (!bm_post_locked(session, message)) bm_message_free(message);
}

void bm_forward_request(bm_session *session, fuse_req_t request, bm_message *message) {
  bm_operation operation = message->operation;

  pthread_mutex_lock(&session->lock);

  if (!session->accepting) {
    pthread_mutex_unlock(&session->lock);
    bm_message_free(message);
    reply_failure(request, operation, ENOTCONN);
    return;
  }

  int32_t index = slot_allocate(session);
  if (index < 0) {
    pthread_mutex_unlock(&session->lock);
    bm_message_free(message);
    reply_failure(request, operation, ENOMEM);
    return;
  }

  bm_slot *slot = &session->slots[index];
  slot->request = request;
  slot->state = BM_SLOT_PENDING;
  slot->operation = (uint8_t)operation;
  slot->started_ns = bm_now_ns();
  bool sized = operation == BM_OP_READ || operation == BM_OP_READDIR || operation == BM_OP_READDIRPLUS;
  slot->reply_limit = sized ? message->size : UINT64_MAX;
  slot->deadline_ns = 0;
  message->request_id = slot_id(session, index);

  /* Forget has no reply the kernel waits for, so it has no deadline. */
  if (!is_forget(operation)) {
    slot->deadline_ns = slot->started_ns + session->request_timeout_ns;
    pending_append(session, index);
  }

  if (!bm_post_locked(session, message)) {
    pending_remove(session, index);
    slot_release(session, index);
    pthread_mutex_unlock(&session->lock);
    bm_message_free(message);
    reply_failure(request, operation, EIO);
    return;
  }

  pthread_mutex_unlock(&session->lock);
}

bm_claim_result bm_claim_request(bm_session *session, double id, uint32_t allowed, uint64_t reply_length,
                                 fuse_req_t *request, bm_operation *operation, uint64_t *reply_limit) {
  pthread_mutex_lock(&session->lock);

  int32_t index = slot_find(session, id);
  if (index < 0) {
    pthread_mutex_unlock(&session->lock);
    return BM_CLAIM_UNKNOWN;
  }

  bm_slot *slot = &session->slots[index];
  *operation = (bm_operation)slot->operation;

  if (slot->state == BM_SLOT_TIMED_OUT || slot->state == BM_SLOT_CANCELLED) {
    slot_release(session, index);
    pthread_mutex_unlock(&session->lock);
    return BM_CLAIM_LATE;
  }

  if ((allowed & BM_OP_BIT(slot->operation)) == 0) {
    pthread_mutex_unlock(&session->lock);
    return BM_CLAIM_WRONG_OPERATION;
  }

  *reply_limit = slot->reply_limit;
  if (reply_length > slot->reply_limit) {
    pthread_mutex_unlock(&session->lock);
    return BM_CLAIM_TOO_LONG;
  }

  *request = slot->request;
  pending_remove(session, index);
  slot_release(session, index);
  pthread_mutex_unlock(&session->lock);
  return BM_CLAIM_OK;
}

/*
 * Main thread. Restarts the deadline of a pending request from now, for an
 * operation that is slow but still making progress (a close that waits for
 * the parts and the completion of a large upload). Every deadline is then
 * still the start of some request plus the same timeout, so moving the slot
 * to the tail keeps the list sorted. Returns false when the request is no
 * longer pending or has no deadline.
 */
bool bm_renew_deadline(bm_session *session, double id) {
  pthread_mutex_lock(&session->lock);
  int32_t index = slot_find(session, id);
  if (index < 0 || session->slots[index].state != BM_SLOT_PENDING || session->slots[index].deadline_ns == 0) {
    pthread_mutex_unlock(&session->lock);
    return false;
  }

  pending_remove(session, index);
  session->slots[index].deadline_ns = bm_now_ns() + session->request_timeout_ns;
  pending_append(session, index);
  pthread_mutex_unlock(&session->lock);
  return true;
}

/* Main thread. Replies EIO to a request whose message could not be turned into a JavaScript call. */
static void fail_request(bm_session *session, double id, int error) {
  fuse_req_t request = NULL;
  bm_operation operation;
  uint64_t reply_limit;
  if (bm_claim_request(session, id, UINT32_MAX, 0, &request, &operation, &reply_limit) == BM_CLAIM_OK) {
    reply_failure(request, operation, error);
  }
}

/* ----------------------------------------------------------- detaching */

/*
 * Detaches the mount point lazily (MNT_DETACH): it disappears from the
 * namespace at once and the kernel ends the connection when the last open
 * file closes. As root this is umount2; otherwise fusermount3 does it.
 * Returns 0 or an errno. EINVAL (no longer mounted) counts as success.
 */
static int detach_mount_point(const char *mountpoint, bool wait_for_helper) {
  if (geteuid() == 0) {
    if (umount2(mountpoint, MNT_DETACH) == 0 || errno == EINVAL) return 0;
    return errno;
  }

  char *const arguments[] = {"fusermount3", "-u", "-q", "-z", "--", (char *)mountpoint, NULL};
  pid_t helper;
  int error = posix_spawnp(&helper, "fusermount3", NULL, NULL, arguments, environ);
  if (error != 0) return error;
  if (!wait_for_helper) return 0;

  int status = 0;
  while (waitpid(helper, &status, 0) < 0) {
    if (errno != EINTR) return errno;
  }
  return (WIFEXITED(status) && WEXITSTATUS(status) == 0) ? 0 : EPERM;
}

/* ---------------------------------------------------------------- threads */

/*
 * Control thread: sleeps until the earliest deadline or a detach request.
 * An expired request is answered with ETIMEDOUT ("Connection timed out"),
 * which tells an application more plainly than EIO that storage did not
 * respond in time.
 */
static void *control_main(void *argument) {
  bm_session *session = argument;

  pthread_mutex_lock(&session->lock);
  while (!session->control_stop) {
    if (session->detach_requested) {
      session->detach_requested = false;
      pthread_mutex_unlock(&session->lock);
      int error = detach_mount_point(session->mountpoint, true);
      pthread_mutex_lock(&session->lock);
      if (error != 0) post_log_locked(session, "warn", "detaching the mount point failed", error);
      continue;
    }

    int32_t head = session->pending_head;
    if (head < 0) {
      pthread_cond_wait(&session->control_wakeup, &session->lock);
      continue;
    }

    bm_slot *slot = &session->slots[head];
    uint64_t now = bm_now_ns();
    if (slot->deadline_ns > now) {
      struct timespec wake = {
        .tv_sec = (time_t)(slot->deadline_ns / UINT64_C(1000000000)),
        .tv_nsec = (long)(slot->deadline_ns % UINT64_C(1000000000)),
      };
      pthread_cond_timedwait(&session->control_wakeup, &session->lock, &wake);
      continue;
    }

    fuse_req_t request = slot->request;
    bm_message *timeout = bm_message_new(BM_MESSAGE_TIMEOUT);
    if (timeout != NULL) {
      timeout->request_id = slot_id(session, head);
      timeout->operation = (bm_operation)slot->operation;
      timeout->elapsed_ms = (double)(now - slot->started_ns) / 1e6;
      timeout->error = ETIMEDOUT;
    }
    pending_remove(session, head);
    slot->state = BM_SLOT_TIMED_OUT;
    slot->request = NULL;
    if (timeout != NULL && !bm_post_locked(session, timeout)) bm_message_free(timeout);

    pthread_mutex_unlock(&session->lock);
    (void)fuse_reply_err(request, ETIMEDOUT);
    pthread_mutex_lock(&session->lock);
  }
  pthread_mutex_unlock(&session->lock);
  return NULL;
}

/* Decodes in place the octal escapes (\040 for a space) that /proc/self/mountinfo uses in paths. */
static void decode_mountinfo_path(char *path) {
  char *out = path;
  for (const char *in = path; *in != '\0'; out += 1) {
    bool escape = in[0] == '\\' && in[1] >= '0' && in[1] <= '7' && in[2] >= '0' && in[2] <= '7' && in[3] >= '0' && in[3] <= '7';
    if (escape) {
      *out = (char)(((in[1] - '0') << 6) | ((in[2] - '0') << 3) | (in[3] - '0'));
      in += 4;
    } else {
      *out = *in;
      in += 1;
    }
  }
  *out = '\0';
}

/*
 * Finds the device (MAJOR:MINOR) of the last FUSE mount at `mountpoint` in
 * /proc/self/mountinfo. stat(2) of the mount point would send a request to
 * this very session, which is not serving yet. Returns false if there is none.
 */
static bool find_mount_device(const char *mountpoint, char *device, size_t device_size) {
  FILE *mountinfo = fopen("/proc/self/mountinfo", "re");
  if (mountinfo == NULL) return false;

  bool found = false;
  char *line = NULL;
  size_t capacity = 0;
  while (getline(&line, &capacity, mountinfo) > 0) {
    /* Fields: id parent MAJOR:MINOR root mountpoint options [optional...] - fstype source super-options */
    const char *separator = strstr(line, " - ");
    if (separator == NULL || strncmp(separator + 3, "fuse", 4) != 0) continue;

    char *point = malloc(strlen(line) + 1);
    char line_device[32];
    if (point == NULL) break;
    if (sscanf(line, "%*s %*s %31s %*s %s", line_device, point) == 2) {
      decode_mountinfo_path(point);
      if (strcmp(point, mountpoint) == 0) {
        snprintf(device, device_size, "%s", line_device);
        found = true;
      }
    }
    free(point);
  }
  free(line);
  fclose(mountinfo);
  return found;
}

/*
 * Sets the mount's readahead window to session->read_ahead_kib through
 * /sys/class/bdi/MAJOR:MINOR/read_ahead_kb, and records the outcome in the
 * INIT message. The kernel starts a FUSE mount at the block device default
 * of 128 KiB and lowers it to what the INIT reply names, so the window can
 * only be raised after that reply. It is raised before any other request is
 * served, because a file keeps the window it saw when it was opened.
 */
static void set_read_ahead(bm_session *session, bm_message *message) {
  if (session->read_ahead_kib == 0 || session->mounted_by_descriptor) return;

  char device[32];
  if (!find_mount_device(session->mountpoint, device, sizeof device)) {
    message->error = ENOENT;
    return;
  }

  char file[96];
  snprintf(file, sizeof file, "/sys/class/bdi/%s/read_ahead_kb", device);
  message->text = strdup(file);

  int descriptor = open(file, O_WRONLY | O_CLOEXEC);
  if (descriptor < 0) {
    message->error = errno;
    return;
  }
  char value[16];
  int length = snprintf(value, sizeof value, "%u\n", session->read_ahead_kib);
  if (write(descriptor, value, (size_t)length) != length) message->error = errno != 0 ? errno : EIO;
  close(descriptor);
}

/*
 * Serves requests on this thread until the INIT exchange is complete, then
 * sets the readahead window and posts the INIT message. The kernel applies
 * the INIT reply inside the write that fuse_session_process_buf makes, so
 * JavaScript receives INIT only once the connection settings are final.
 */
static void serve_until_initialised(bm_session *session) {
  struct fuse_buf buffer = { .mem = NULL };
  bm_message *message = NULL;

  while (message == NULL && !fuse_session_exited(session->fuse)) {
    int received = fuse_session_receive_buf(session->fuse, &buffer);
    if (received == -EINTR) continue;
    if (received <= 0) break;
    fuse_session_process_buf(session->fuse, &buffer);

    pthread_mutex_lock(&session->lock);
    message = session->init_message;
    session->init_message = NULL;
    pthread_mutex_unlock(&session->lock);
  }
  free(buffer.mem);

  if (message == NULL) return;
  set_read_ahead(session, message);
  pthread_mutex_lock(&session->lock);
  if (!bm_post_locked(session, message)) bm_message_free(message);
  pthread_mutex_unlock(&session->lock);
}

static void *loop_main(void *argument) {
  bm_session *session = argument;
  serve_until_initialised(session);
  int result = fuse_session_loop_mt(session->fuse, session->loop_config);

  bm_message *ended = bm_message_new(BM_MESSAGE_LOOP_ENDED);
  pthread_mutex_lock(&session->lock);
  if (ended != NULL) {
    /* fuse_session_loop_mt returns 0, a negative errno, or a positive signal number. */
    ended->error = result < 0 ? -result : 0;
    if (!bm_post_locked(session, ended)) bm_message_free(ended);
  }
  pthread_mutex_unlock(&session->lock);
  return NULL;
}

/* --------------------------------------------------- JavaScript delivery */

static void call_handler(napi_env env, napi_ref handler, size_t argc, napi_value *argv) {
  napi_value function;
  napi_value receiver;
  if (handler == NULL) return;
  if (napi_get_reference_value(env, handler, &function) != napi_ok) return;
  if (napi_get_undefined(env, &receiver) != napi_ok) return;
  /* A throwing handler leaves the exception pending; Node reports it as uncaught after this callback. */
  (void)napi_call_function(env, receiver, function, argc, argv, NULL);
}

static void delete_reference(napi_env env, napi_ref *reference) {
  if (*reference != NULL) {
    (void)napi_delete_reference(env, *reference);
    *reference = NULL;
  }
}

static void env_cleanup(void *argument);

/* Lock held or threads stopped. Marks every pending request as cancelled and collects it for answering. */
static size_t cancel_pending(bm_session *session, fuse_req_t *requests, bm_operation *operations) {
  size_t count = 0;
  for (uint32_t i = 0; i < session->slot_capacity; i++) {
    bm_slot *slot = &session->slots[i];
    if (slot->state != BM_SLOT_PENDING) continue;
    requests[count] = slot->request;
    operations[count] = (bm_operation)slot->operation;
    count++;
    slot->state = BM_SLOT_CANCELLED;
    slot->request = NULL;
    slot->deadline_ns = 0;
  }
  session->pending_head = -1;
  session->pending_tail = -1;
  return count;
}

static void answer_pending(bm_session *session) {
  pthread_mutex_lock(&session->lock);
  size_t capacity = session->slot_capacity;
  fuse_req_t *requests = malloc(capacity * sizeof(fuse_req_t));
  bm_operation *operations = malloc(capacity * sizeof(bm_operation));
  size_t count = 0;
  if (requests != NULL && operations != NULL) count = cancel_pending(session, requests, operations);
  pthread_mutex_unlock(&session->lock);

  for (size_t i = 0; i < count; i++) reply_failure(requests[i], operations[i], EIO);
  free(requests);
  free(operations);
}

/*
 * Main thread, after the loop ended. Undoes mount() in reverse order and
 * calls the destroy and exit handlers. Safe to call once; later calls return.
 */
static void teardown(napi_env env, bm_session *session, int loop_error) {
  if (session->lifecycle == BM_LIFECYCLE_CLOSED) return;

  if (session->loop_thread_started) {
    pthread_join(session->loop_thread, NULL);
    session->loop_thread_started = false;
  }

  /* Queued replies hold requests of the session, which fuse_session_destroy frees, and references to JavaScript buffers. */
  bm_reply_thread_stop(session);

  if (session->control_thread_started) {
    pthread_mutex_lock(&session->lock);
    session->control_stop = true;
    pthread_cond_signal(&session->control_wakeup);
    pthread_mutex_unlock(&session->lock);
    pthread_join(session->control_thread, NULL);
    session->control_thread_started = false;
  }

  /* Nothing runs on other threads now except a detach helper that already finished. */
  answer_pending(session);

  pthread_mutex_lock(&session->lock);
  session->accepting = false;
  pthread_mutex_unlock(&session->lock);
  if (session->dispatcher != NULL) {
    (void)napi_release_threadsafe_function(session->dispatcher, napi_tsfn_release);
    session->dispatcher = NULL;
  }

  fuse_session_unmount(session->fuse);
  fuse_session_destroy(session->fuse);
  session->fuse = NULL;
  fuse_loop_cfg_destroy(session->loop_config);
  session->loop_config = NULL;

  session->lifecycle = BM_LIFECYCLE_CLOSED;
  if (session->cleanup_hook_added) {
    (void)napi_remove_env_cleanup_hook(env, env_cleanup, session);
    session->cleanup_hook_added = false;
  }

  if (session->destroy_seen) call_handler(env, session->destroy_handler, 0, NULL);

  napi_value info;
  if (napi_create_object(env, &info) == napi_ok && bm_set_number(env, info, "errno", loop_error) == napi_ok) {
    call_handler(env, session->exit_handler, 1, &info);
  }

  delete_reference(env, &session->request_handler);
  delete_reference(env, &session->init_handler);
  delete_reference(env, &session->timeout_handler);
  delete_reference(env, &session->log_handler);
  delete_reference(env, &session->destroy_handler);
  delete_reference(env, &session->exit_handler);
  delete_reference(env, &session->write_buffer_handler);
  delete_reference(env, &session->wrapper);
}

static void call_js(napi_env env, napi_value unused, void *context, void *data) {
  bm_session *session = context;
  bm_message *message = data;

  /* env is NULL only while the environment shuts down; env_cleanup handles the session then. */
  if (env == NULL) {
    bm_message_free(message);
    return;
  }

  if (message->kind == BM_MESSAGE_LOOP_ENDED) {
    teardown(env, session, message->error);
    bm_message_free(message);
    return;
  }

  if (message->kind == BM_MESSAGE_REPLIES_SENT) {
    bm_release_sent_replies(session);
    bm_message_free(message);
    return;
  }

  napi_ref handler = NULL;
  switch (message->kind) {
    case BM_MESSAGE_REQUEST: handler = session->request_handler; break;
    case BM_MESSAGE_INIT: handler = session->init_handler; break;
    case BM_MESSAGE_TIMEOUT: handler = session->timeout_handler; break;
    case BM_MESSAGE_LOG: handler = session->log_handler; break;
    case BM_MESSAGE_LOOP_ENDED: break;
    case BM_MESSAGE_REPLIES_SENT: break;
  }

  napi_value object;
  if (bm_message_to_js(env, message, session->write_buffer_handler, &object) == napi_ok) {
    call_handler(env, handler, 1, &object);
  } else if (message->kind == BM_MESSAGE_REQUEST) {
    fail_request(session, message->request_id, EIO);
  }
  bm_message_free(message);
}

/*
 * The environment is going away (process.exit or a worker terminating) while
 * mounted. No JavaScript can answer requests any more: stop using the
 * thread-safe function, detach, and give the loop a short time to end. If it
 * does not, its threads may still touch the session, so the session is
 * abandoned (never freed) instead.
 */
static void env_cleanup(void *argument) {
  bm_session *session = argument;
  if (session->lifecycle == BM_LIFECYCLE_CLOSED) return;

  pthread_mutex_lock(&session->lock);
  session->accepting = false;
  session->control_stop = true;
  pthread_cond_signal(&session->control_wakeup);
  pthread_mutex_unlock(&session->lock);

  fuse_session_exit(session->fuse);
  if (!session->mounted_by_descriptor) (void)detach_mount_point(session->mountpoint, false);

  if (session->control_thread_started) {
    pthread_join(session->control_thread, NULL);
    session->control_thread_started = false;
  }

  /* A write to /dev/fuse does not wait for the process that reads, so the queued replies go out promptly. */
  bm_reply_thread_stop(session);

  if (session->loop_thread_started) {
    struct timespec limit;
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += BM_EXIT_JOIN_TIMEOUT_SECONDS;
    if (pthread_timedjoin_np(session->loop_thread, NULL, &limit) != 0) {
      session->abandoned = true;
      return;
    }
    session->loop_thread_started = false;
  }

  answer_pending(session);
  fuse_session_unmount(session->fuse);
  fuse_session_destroy(session->fuse);
  session->fuse = NULL;
  fuse_loop_cfg_destroy(session->loop_config);
  session->loop_config = NULL;
  session->lifecycle = BM_LIFECYCLE_CLOSED;
}

static void free_session(bm_session *session) {
  /* Set only when the loop ended before it could post INIT. */
  if (session->init_message != NULL) bm_message_free(session->init_message);
  free(session->slots);
  free(session->mountpoint);
  pthread_cond_destroy(&session->control_wakeup);
  pthread_mutex_destroy(&session->lock);
  pthread_cond_destroy(&session->reply_wakeup);
  pthread_mutex_destroy(&session->reply_lock);
  free(session);
}

static void finalize_session(napi_env env, void *data, void *hint) {
  bm_session *session = data;
  /* The wrapper is strongly referenced while mounted, so this runs only after teardown or at environment exit. */
  if (session->lifecycle != BM_LIFECYCLE_CLOSED || session->abandoned) return;
  free_session(session);
}

/* ------------------------------------------------------------- options */

typedef struct {
  char *mountpoint;
  char *fs_name;
  char *subtype;
  bool allow_other;
  bool read_only;
  bool default_permissions;
  bool auto_unmount;
  bool debug;
  uint32_t max_io_size;
  uint32_t max_threads;
  uint32_t max_background;
  uint32_t congestion_threshold;
  uint32_t read_ahead_kib;
  double request_timeout_ms;
} mount_options;

static void free_mount_options(mount_options *options) {
  free(options->mountpoint);
  free(options->fs_name);
  free(options->subtype);
}

static bool get_property(napi_env env, napi_value object, const char *name, napi_value *value, napi_valuetype *type) {
  if (napi_get_named_property(env, object, name, value) != napi_ok) return false;
  return napi_typeof(env, *value, type) == napi_ok;
}

static bool read_string_option(napi_env env, napi_value object, const char *name, char **result) {
  napi_value value;
  napi_valuetype type;
  if (!get_property(env, object, name, &value, &type)) return false;
  if (type != napi_string) {
    throw_error(env, "ERR_INVALID_ARG_TYPE", "mount option %s must be a string", name);
    return false;
  }

  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) return false;
  if (length == 0) {
    throw_error(env, "ERR_INVALID_ARG_VALUE", "mount option %s must not be empty", name);
    return false;
  }

  *result = malloc(length + 1);
  if (*result == NULL) {
    throw_error(env, "ERR_OUT_OF_MEMORY", "out of memory reading mount option %s", name);
    return false;
  }
  return napi_get_value_string_utf8(env, value, *result, length + 1, &length) == napi_ok;
}

static bool read_bool_option(napi_env env, napi_value object, const char *name, bool *result) {
  napi_value value;
  napi_valuetype type;
  if (!get_property(env, object, name, &value, &type)) return false;
  if (type != napi_boolean) {
    throw_error(env, "ERR_INVALID_ARG_TYPE", "mount option %s must be a boolean", name);
    return false;
  }
  return napi_get_value_bool(env, value, result) == napi_ok;
}

static bool read_number_option(napi_env env, napi_value object, const char *name, double minimum, double maximum,
                               double *result) {
  napi_value value;
  napi_valuetype type;
  if (!get_property(env, object, name, &value, &type)) return false;
  if (type != napi_number || napi_get_value_double(env, value, result) != napi_ok) {
    throw_error(env, "ERR_INVALID_ARG_TYPE", "mount option %s must be a number", name);
    return false;
  }
  if (!(*result >= minimum && *result <= maximum) || *result != (double)(int64_t)*result) {
    throw_error(env, "ERR_OUT_OF_RANGE", "mount option %s must be an integer from %.0f to %.0f, got %g", name,
                minimum, maximum, *result);
    return false;
  }
  return true;
}

static bool read_mount_options(napi_env env, napi_value object, mount_options *options) {
  double number;
  if (!read_string_option(env, object, "mountpoint", &options->mountpoint)) return false;
  if (!read_string_option(env, object, "fsName", &options->fs_name)) return false;
  if (!read_string_option(env, object, "subtype", &options->subtype)) return false;
  if (!read_bool_option(env, object, "allowOther", &options->allow_other)) return false;
  if (!read_bool_option(env, object, "readOnly", &options->read_only)) return false;
  if (!read_bool_option(env, object, "defaultPermissions", &options->default_permissions)) return false;
  if (!read_bool_option(env, object, "autoUnmount", &options->auto_unmount)) return false;
  if (!read_bool_option(env, object, "debug", &options->debug)) return false;

  /* 4 KiB to 1 MiB: libfuse 3.14 receives at most 256 pages per request. */
  if (!read_number_option(env, object, "maxIoSize", 4096, 1048576, &number)) return false;
  options->max_io_size = (uint32_t)number;
  if (!read_number_option(env, object, "maxThreads", 1, 1024, &number)) return false;
  options->max_threads = (uint32_t)number;
  if (!read_number_option(env, object, "maxBackground", 1, 65535, &number)) return false;
  options->max_background = (uint32_t)number;
  if (!read_number_option(env, object, "congestionThreshold", 1, 65535, &number)) return false;
  options->congestion_threshold = (uint32_t)number;
  if (!read_number_option(env, object, "requestTimeoutMs", 1, 86400000, &number)) return false;
  options->request_timeout_ms = number;
  if (!read_number_option(env, object, "readAheadKib", 0, 1048576, &number)) return false;
  options->read_ahead_kib = (uint32_t)number;
  return true;
}

static bool read_handler(napi_env env, napi_value handlers, const char *name, napi_ref *reference) {
  napi_value value;
  napi_valuetype type;
  if (!get_property(env, handlers, name, &value, &type)) return false;
  if (type != napi_function) {
    throw_error(env, "ERR_INVALID_ARG_TYPE", "handler %s must be a function", name);
    return false;
  }
  return napi_create_reference(env, value, 1, reference) == napi_ok;
}

/* Like read_handler, for a handler that may be absent (undefined). */
static bool read_optional_handler(napi_env env, napi_value handlers, const char *name, napi_ref *reference) {
  napi_value value;
  napi_valuetype type;
  if (!get_property(env, handlers, name, &value, &type)) return false;
  if (type == napi_undefined) return true;
  return read_handler(env, handlers, name, reference);
}

/* Builds the libfuse command line: -o with the mount options, and -d for libfuse's request trace. */
static bool build_fuse_arguments(const mount_options *options, struct fuse_args *arguments) {
  char *joined = NULL;
  char buffer[64];
  bool ok = true;

  /* fsname and subtype are escaped because libfuse splits -o values at unescaped commas. */
  size_t fs_name_length = strlen(options->fs_name) + sizeof("fsname=");
  char *fs_name = malloc(fs_name_length);
  size_t subtype_length = strlen(options->subtype) + sizeof("subtype=");
  char *subtype = malloc(subtype_length);
  if (fs_name == NULL || subtype == NULL) ok = false;

  if (ok) {
    snprintf(fs_name, fs_name_length, "fsname=%s", options->fs_name);
    snprintf(subtype, subtype_length, "subtype=%s", options->subtype);
    snprintf(buffer, sizeof(buffer), "max_read=%u", options->max_io_size);
    ok = fuse_opt_add_opt_escaped(&joined, fs_name) == 0 && fuse_opt_add_opt_escaped(&joined, subtype) == 0 &&
         fuse_opt_add_opt(&joined, buffer) == 0;
  }
  if (ok && options->allow_other) ok = fuse_opt_add_opt(&joined, "allow_other") == 0;
  if (ok && options->read_only) ok = fuse_opt_add_opt(&joined, "ro") == 0;
  if (ok && options->default_permissions) ok = fuse_opt_add_opt(&joined, "default_permissions") == 0;
  if (ok && options->auto_unmount) ok = fuse_opt_add_opt(&joined, "auto_unmount") == 0;

  if (ok) ok = fuse_opt_add_arg(arguments, "bucketmount") == 0;
  if (ok) ok = fuse_opt_add_arg(arguments, "-o") == 0;
  if (ok) ok = fuse_opt_add_arg(arguments, joined) == 0;
  if (ok && options->debug) ok = fuse_opt_add_arg(arguments, "-d") == 0;

  free(fs_name);
  free(subtype);
  free(joined);
  return ok;
}

static bool is_descriptor_mountpoint(const char *mountpoint) {
  return strncmp(mountpoint, "/dev/fd/", 8) == 0;
}

/* ---------------------------------------------------------------- mount */

static bm_session *new_session(const mount_options *options) {
  bm_session *session = calloc(1, sizeof(bm_session));
  if (session == NULL) return NULL;

  session->slots = calloc(BM_INITIAL_SLOTS, sizeof(bm_slot));
  session->mountpoint = strdup(options->mountpoint);
  if (session->slots == NULL || session->mountpoint == NULL) {
    free(session->slots);
    free(session->mountpoint);
    free(session);
    return NULL;
  }
  for (uint32_t i = 0; i < BM_INITIAL_SLOTS; i++) {
    session->slots[i].generation = 1;
    session->slots[i].previous = -1;
    session->slots[i].next = (i + 1 < BM_INITIAL_SLOTS) ? (int32_t)(i + 1) : -1;
  }
  session->slot_capacity = BM_INITIAL_SLOTS;
  session->free_head = 0;
  session->pending_head = -1;
  session->pending_tail = -1;

  pthread_mutex_init(&session->lock, NULL);
  pthread_condattr_t condition_attributes;
  pthread_condattr_init(&condition_attributes);
  pthread_condattr_setclock(&condition_attributes, CLOCK_MONOTONIC);
  pthread_cond_init(&session->control_wakeup, &condition_attributes);
  pthread_condattr_destroy(&condition_attributes);
  pthread_mutex_init(&session->reply_lock, NULL);
  pthread_cond_init(&session->reply_wakeup, NULL);

  session->mounted_by_descriptor = is_descriptor_mountpoint(options->mountpoint);
  session->request_timeout_ns = (uint64_t)(options->request_timeout_ms * 1e6);
  session->max_io_size = options->max_io_size;
  session->max_background = options->max_background;
  session->congestion_threshold = options->congestion_threshold;
  session->read_ahead_kib = options->read_ahead_kib;
  session->lifecycle = BM_LIFECYCLE_MOUNTED;
  session->accepting = true;
  return session;
}

/*
 * mount(options, handlers) -> session
 *
 * Mounts and starts serving; returns the session object whose methods reply
 * to requests. Throws when an option is invalid or the mount fails. The
 * caller waits for handlers.init before it treats the filesystem as ready.
 */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  BM_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return throw_error(env, "ERR_MISSING_ARGS", "mount(options, handlers) needs two arguments");

  mount_options options = {0};
  if (!read_mount_options(env, argv[0], &options)) {
    free_mount_options(&options);
    return NULL;
  }

  bm_session *session = new_session(&options);
  if (session == NULL) {
    free_mount_options(&options);
    return throw_error(env, "ERR_OUT_OF_MEMORY", "out of memory creating the FUSE session");
  }
  session->env = env;

  bool handlers_ok = read_handler(env, argv[1], "request", &session->request_handler) &&
                     read_handler(env, argv[1], "init", &session->init_handler) &&
                     read_handler(env, argv[1], "timeout", &session->timeout_handler) &&
                     read_handler(env, argv[1], "log", &session->log_handler) &&
                     read_handler(env, argv[1], "destroy", &session->destroy_handler) &&
                     read_handler(env, argv[1], "exit", &session->exit_handler) &&
                     read_optional_handler(env, argv[1], "writeBuffer", &session->write_buffer_handler);
  if (!handlers_ok) goto fail_handlers;

  /* Step 1: the libfuse session, which parses and validates the options. */
  struct fuse_args arguments = FUSE_ARGS_INIT(0, NULL);
  if (!build_fuse_arguments(&options, &arguments)) {
    fuse_opt_free_args(&arguments);
    throw_error(env, "ERR_OUT_OF_MEMORY", "out of memory building libfuse options");
    goto fail_handlers;
  }
  session->fuse = fuse_session_new(&arguments, &bm_operations, sizeof(bm_operations), session);
  fuse_opt_free_args(&arguments);
  if (session->fuse == NULL) {
    throw_error(env, "ERR_BUCKETMOUNT_MOUNT", "libfuse rejected the mount options for %s (libfuse printed the reason to stderr)",
                options.mountpoint);
    goto fail_handlers;
  }

  /* Step 2: the mount itself, or adoption of a /dev/fuse descriptor passed as /dev/fd/N. */
  if (fuse_session_mount(session->fuse, options.mountpoint) != 0) {
    throw_error(env, "ERR_BUCKETMOUNT_MOUNT",
                "mounting FUSE at %s failed (libfuse printed the reason to stderr); check that the directory exists, "
                "is not already a mount point, and that /dev/fuse is accessible",
                options.mountpoint);
    goto fail_session;
  }

  /* Step 3: the one thread-safe function that carries every message to the main thread. */
  napi_value resource_name;
  if (napi_create_string_utf8(env, "bucketmount.fuse", NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_threadsafe_function(env, NULL, NULL, resource_name, 0, 1, NULL, NULL, session, call_js,
                                      &session->dispatcher) != napi_ok) {
    bm_throw_status(env, napi_generic_failure, "napi_create_threadsafe_function");
    goto fail_mount;
  }

  /* Step 4: the control thread. */
  int error = bm_start_thread(&session->control_thread, control_main, session);
  if (error != 0) {
    throw_error(env, "ERR_BUCKETMOUNT_THREAD", "starting the FUSE control thread failed: %s", strerror(error));
    goto fail_dispatcher;
  }
  session->control_thread_started = true;

  /* Step 5: the reply thread. */
  error = bm_reply_thread_start(session);
  if (error != 0) {
    throw_error(env, "ERR_BUCKETMOUNT_THREAD", "starting the FUSE reply thread failed: %s", strerror(error));
    goto fail_control;
  }

  /* Step 6: the loop thread. Workers are created on demand up to max_threads and kept. */
  session->loop_config = fuse_loop_cfg_create();
  if (session->loop_config == NULL) {
    throw_error(env, "ERR_OUT_OF_MEMORY", "out of memory creating the FUSE loop configuration");
    goto fail_reply;
  }
  fuse_loop_cfg_set_clone_fd(session->loop_config, 0);
  fuse_loop_cfg_set_max_threads(session->loop_config, options.max_threads);
  fuse_loop_cfg_set_idle_threads(session->loop_config, options.max_threads);

  error = bm_start_thread(&session->loop_thread, loop_main, session);
  if (error != 0) {
    throw_error(env, "ERR_BUCKETMOUNT_THREAD", "starting the FUSE loop thread failed: %s", strerror(error));
    goto fail_reply;
  }
  session->loop_thread_started = true;

  /* From here on, failures are reported to JavaScript but the session is live: teardown undoes it. */
  bm_addon *addon = NULL;
  napi_value constructor;
  napi_value wrapper;
  if (napi_get_instance_data(env, (void **)&addon) != napi_ok || addon == NULL ||
      napi_get_reference_value(env, addon->session_constructor, &constructor) != napi_ok ||
      napi_new_instance(env, constructor, 0, NULL, &wrapper) != napi_ok ||
      napi_type_tag_object(env, wrapper, &BM_SESSION_TAG) != napi_ok ||
      napi_wrap(env, wrapper, session, finalize_session, NULL, NULL) != napi_ok ||
      napi_create_reference(env, wrapper, 1, &session->wrapper) != napi_ok) {
    /* Unreachable in practice; the session keeps serving until the process ends, and is leaked. */
    session->abandoned = true;
    free_mount_options(&options);
    bm_throw_status(env, napi_generic_failure, "wrapping the FUSE session");
    return NULL;
  }

  if (napi_add_env_cleanup_hook(env, env_cleanup, session) == napi_ok) session->cleanup_hook_added = true;

  free_mount_options(&options);
  return wrapper;

fail_reply:
  bm_reply_thread_stop(session);
fail_control:
  pthread_mutex_lock(&session->lock);
  session->control_stop = true;
  pthread_cond_signal(&session->control_wakeup);
  pthread_mutex_unlock(&session->lock);
  pthread_join(session->control_thread, NULL);
  if (session->loop_config != NULL) fuse_loop_cfg_destroy(session->loop_config);
fail_dispatcher:
  session->accepting = false;
  (void)napi_release_threadsafe_function(session->dispatcher, napi_tsfn_abort);
fail_mount:
  fuse_session_unmount(session->fuse);
fail_session:
  fuse_session_destroy(session->fuse);
fail_handlers:
  delete_reference(env, &session->request_handler);
  delete_reference(env, &session->init_handler);
  delete_reference(env, &session->timeout_handler);
  delete_reference(env, &session->log_handler);
  delete_reference(env, &session->destroy_handler);
  delete_reference(env, &session->exit_handler);
  delete_reference(env, &session->write_buffer_handler);
  free_session(session);
  free_mount_options(&options);
  return NULL;
}

bm_session *bm_unwrap_session(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  bool tagged = false;
  void *data = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) {
    bm_throw_status(env, napi_generic_failure, "napi_get_cb_info");
    return NULL;
  }
  if (napi_check_object_type_tag(env, self, &BM_SESSION_TAG, &tagged) != napi_ok || !tagged ||
      napi_unwrap(env, self, &data) != napi_ok || data == NULL) {
    throw_error(env, "ERR_INVALID_THIS", "this method must be called on a session returned by mount()");
    return NULL;
  }
  return data;
}

/*
 * unmount(): starts an unmount and returns at once; the exit handler runs
 * when the loop has ended. Idempotent. With a /dev/fd/N mount point the
 * process that mounted the filesystem owns the mount point, so the loop ends
 * when that process unmounts or the next request arrives.
 */
static napi_value js_unmount(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  bm_session *session = bm_unwrap_session(env, info, &argc, NULL);
  if (session == NULL) return NULL;

  if (session->lifecycle == BM_LIFECYCLE_MOUNTED) {
    session->lifecycle = BM_LIFECYCLE_UNMOUNTING;
    fuse_session_exit(session->fuse);
    if (!session->mounted_by_descriptor) {
      pthread_mutex_lock(&session->lock);
      session->detach_requested = true;
      pthread_cond_signal(&session->control_wakeup);
      pthread_mutex_unlock(&session->lock);
    }
  }

  napi_value undefined;
  BM_CHECK(env, napi_get_undefined(env, &undefined));
  return undefined;
}

/*
 * renewDeadline(id) -> boolean: restarts the request's --request-timeout
 * deadline from now. Returns false when the request already got its reply,
 * timed out or was cancelled, or when the id is unknown.
 */
static napi_value js_renew_deadline(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bm_session *session = bm_unwrap_session(env, info, &argc, argv);
  if (session == NULL) return NULL;

  double id = -1;
  if (argc < 1 || napi_get_value_double(env, argv[0], &id) != napi_ok) {
    return throw_error(env, "ERR_INVALID_ARG_TYPE", "renewDeadline(id) needs a request id");
  }

  napi_value result;
  BM_CHECK(env, napi_get_boolean(env, bm_renew_deadline(session, id), &result));
  return result;
}

/* state: 'mounted' | 'unmounting' | 'closed' */
static napi_value js_state(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  bm_session *session = bm_unwrap_session(env, info, &argc, NULL);
  if (session == NULL) return NULL;

  const char *names[] = {"mounted", "unmounting", "closed"};
  napi_value state;
  BM_CHECK(env, napi_create_string_utf8(env, names[session->lifecycle], NAPI_AUTO_LENGTH, &state));
  return state;
}

static napi_value js_session_constructor(napi_env env, napi_callback_info info) {
  napi_value self;
  BM_CHECK(env, napi_get_cb_info(env, info, NULL, NULL, &self, NULL));
  return self;
}

static void finalize_addon(napi_env env, void *data, void *hint) {
  bm_addon *addon = data;
  if (addon->session_constructor != NULL) (void)napi_delete_reference(env, addon->session_constructor);
  free(addon);
}

/*
 * setLargeAllocationThreshold(bytes) -> boolean
 *
 * Makes glibc serve allocations of at least `bytes` with their own mmap, so
 * that freeing a block or part buffer gives its memory back to the system at
 * once. By default glibc raises that threshold after the first such buffer is
 * freed and then carves later ones from its heap, where freed buffers stay
 * resident. Writing and reading 4 GiB under --memory-limit 256MiB peaked at
 * 398 MiB RSS that way and at 333 MiB with a 2 MiB threshold. Returns false
 * where this cannot be set (a C library other than glibc, or a value mallopt
 * rejects).
 */
static napi_value js_set_large_allocation_threshold(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  BM_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));

  double bytes = 0;
  if (argc < 1 || napi_get_value_double(env, argv[0], &bytes) != napi_ok || !(bytes >= 4096 && bytes <= 32.0 * 1024 * 1024)) {
    return throw_error(env, "ERR_INVALID_ARG_VALUE", "setLargeAllocationThreshold(bytes) needs a number of bytes from 4096 to 32 MiB");
  }

  bool applied = false;
#ifdef __GLIBC__
  applied = mallopt(M_MMAP_THRESHOLD, (int)bytes) == 1;
#endif

  napi_value result;
  BM_CHECK(env, napi_get_boolean(env, applied, &result));
  return result;
}

/*
 * releaseFreeMemory() -> boolean
 *
 * Gives the free pages inside glibc's heaps back to the system with
 * malloc_trim(0). Buffers below the large-allocation threshold (64 KiB socket
 * reads, write requests) come from those heaps, and when the garbage
 * collector frees them the pages stay resident unless they sit at the top of
 * a heap. Returns true when memory was released, false when none was or
 * where the C library has no malloc_trim.
 */
static napi_value js_release_free_memory(napi_env env, napi_callback_info info) {
  (void)info;
  bool released = false;
#ifdef __GLIBC__
  released = malloc_trim(0) == 1;
#endif

  napi_value result;
  BM_CHECK(env, napi_get_boolean(env, released, &result));
  return result;
}

static napi_value init_module(napi_env env, napi_value exports) {
  napi_property_descriptor methods[16];
  size_t count = 0;
  BM_CHECK(env, bm_define_reply_methods(env, methods, &count));
  methods[count++] = (napi_property_descriptor){"unmount", NULL, js_unmount, NULL, NULL, NULL, napi_default, NULL};
  methods[count++] = (napi_property_descriptor){"state", NULL, NULL, js_state, NULL, NULL, napi_default, NULL};
  methods[count++] = (napi_property_descriptor){"renewDeadline", NULL, js_renew_deadline, NULL, NULL, NULL, napi_default, NULL};

  napi_value constructor;
  BM_CHECK(env, napi_define_class(env, "FuseNativeSession", NAPI_AUTO_LENGTH, js_session_constructor, NULL, count,
                                  methods, &constructor));

  bm_addon *addon = calloc(1, sizeof(bm_addon));
  if (addon == NULL) return throw_error(env, "ERR_OUT_OF_MEMORY", "out of memory loading bucketmount_fuse");
  if (napi_create_reference(env, constructor, 1, &addon->session_constructor) != napi_ok ||
      napi_set_instance_data(env, addon, finalize_addon, NULL) != napi_ok) {
    free(addon);
    bm_throw_status(env, napi_generic_failure, "napi_set_instance_data");
    return NULL;
  }

  napi_value mount;
  BM_CHECK(env, napi_create_function(env, "mount", NAPI_AUTO_LENGTH, js_mount, NULL, &mount));
  BM_CHECK(env, napi_set_named_property(env, exports, "mount", mount));
  BM_CHECK(env, napi_set_named_property(env, exports, "FuseNativeSession", constructor));

  napi_value threshold;
  BM_CHECK(env, napi_create_function(env, "setLargeAllocationThreshold", NAPI_AUTO_LENGTH, js_set_large_allocation_threshold,
                                     NULL, &threshold));
  BM_CHECK(env, napi_set_named_property(env, exports, "setLargeAllocationThreshold", threshold));

  napi_value release;
  BM_CHECK(env, napi_create_function(env, "releaseFreeMemory", NAPI_AUTO_LENGTH, js_release_free_memory, NULL, &release));
  BM_CHECK(env, napi_set_named_property(env, exports, "releaseFreeMemory", release));

  napi_value version;
  BM_CHECK(env, napi_create_string_utf8(env, fuse_pkgversion(), NAPI_AUTO_LENGTH, &version));
  BM_CHECK(env, napi_set_named_property(env, exports, "libfuseVersion", version));
  BM_CHECK(env, bm_define_descriptor_functions(env, exports));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init_module)
