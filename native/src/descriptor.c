/*
 * receiveDescriptor(path, timeoutMs): receives an open /dev/fuse descriptor
 * over a Unix stream socket, as SCM_RIGHTS ancillary data.
 *
 * A privileged helper in another container opens and mounts /dev/fuse, then
 * sends the descriptor to the first client of its socket. Node.js cannot
 * receive SCM_RIGHTS, so this file does it. The work runs on a libuv pool
 * thread (napi_async_work) because it waits for the helper, and the promise
 * resolves to { descriptor, connection }. The caller keeps `connection` open
 * for the life of the process: the helper takes its end-of-file as the sign
 * that the daemon has exited and that the mount can be detached.
 */

#include "bucketmount.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* /dev/fuse is the misc character device 10:229 (MISC_MAJOR and FUSE_MINOR in the kernel's include/linux/miscdevice.h). */
#define FUSE_DEVICE_MAJOR 10
#define FUSE_DEVICE_MINOR 229

/* Pause between two connection attempts while the helper has not created the socket yet. */
#define CONNECT_RETRY_MS 100

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *path;
  double timeout_ms;

  /* Results, written by the pool thread. */
  int descriptor;
  int connection;
  int error;             /* positive errno, or 0 */
  char message[512];
} receive_job;

static double monotonic_ms(void) {
  return (double)bm_now_ns() / 1e6;
}

static void fail_job(receive_job *job, int error, const char *format, const char *detail) {
  job->error = error;
  snprintf(job->message, sizeof(job->message), format, job->path, detail);
}

/*
 * Connects to the socket, retrying ENOENT and ECONNREFUSED (the helper has not
 * created or not yet listened on it) until `deadline_ms`. Returns the socket or -1.
 */
static int connect_until(receive_job *job, double deadline_ms) {
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  if (strlen(job->path) >= sizeof(address.sun_path)) {
    fail_job(job, ENAMETOOLONG, "the descriptor socket path %s is too long (%s); use a path of at most 107 bytes",
             strerror(ENAMETOOLONG));
    return -1;
  }
  strcpy(address.sun_path, job->path);

  for (;;) {
    int connection = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connection < 0) {
      fail_job(job, errno, "creating a Unix socket to connect to %s failed: %s", strerror(errno));
      return -1;
    }
    if (connect(connection, (struct sockaddr *)&address, sizeof(address)) == 0) return connection;

    int error = errno;
    close(connection);
    if (error != ENOENT && error != ECONNREFUSED) {
      fail_job(job, error, "connecting to the descriptor socket %s failed: %s", strerror(error));
      return -1;
    }
    if (monotonic_ms() >= deadline_ms) {
      char detail[160];
      snprintf(detail, sizeof(detail), "%s after %.0f ms; check that the FUSE helper runs and shares the socket directory",
               strerror(error), job->timeout_ms);
      fail_job(job, ETIMEDOUT, "timed out connecting to the descriptor socket %s: %s", detail);
      return -1;
    }
    struct timespec pause = {.tv_sec = 0, .tv_nsec = CONNECT_RETRY_MS * 1000000L};
    nanosleep(&pause, NULL);
  }
}

/* Waits until `deadline_ms` for one message with exactly one SCM_RIGHTS descriptor. Returns it or -1. */
static int receive_until(receive_job *job, int connection, double deadline_ms) {
  for (;;) {
    double remaining = deadline_ms - monotonic_ms();
    if (remaining <= 0) {
      fail_job(job, ETIMEDOUT, "timed out waiting for the descriptor on %s: %s", "the helper accepted but sent nothing");
      return -1;
    }
    struct pollfd wait = {.fd = connection, .events = POLLIN};
    int ready = poll(&wait, 1, (int)remaining + 1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) {
      fail_job(job, errno, "waiting for the descriptor on %s failed: %s", strerror(errno));
      return -1;
    }
    if (ready > 0) break;
  }

  char byte;
  struct iovec data = {.iov_base = &byte, .iov_len = 1};
  union {
    struct cmsghdr header;
    char buffer[CMSG_SPACE(sizeof(int))];
  } control;
  memset(&control, 0, sizeof(control));
  struct msghdr message = {.msg_iov = &data, .msg_iovlen = 1, .msg_control = control.buffer, .msg_controllen = sizeof(control.buffer)};

  ssize_t received;
  do {
    received = recvmsg(connection, &message, MSG_CMSG_CLOEXEC);
  } while (received < 0 && errno == EINTR);
  if (received < 0) {
    fail_job(job, errno, "receiving the descriptor on %s failed: %s", strerror(errno));
    return -1;
  }
  if (received == 0) {
    fail_job(job, EPROTO, "the helper closed %s without sending a descriptor: %s", "check the helper's log");
    return -1;
  }

  struct cmsghdr *header = CMSG_FIRSTHDR(&message);
  if (header == NULL || header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS ||
      header->cmsg_len != CMSG_LEN(sizeof(int))) {
    /* A truncated control message would leave descriptors the kernel closed for us; nothing to clean up. */
    fail_job(job, EPROTO, "the message on %s carried no single descriptor: %s",
             (message.msg_flags & MSG_CTRUNC) ? "control data truncated" : "no SCM_RIGHTS data");
    return -1;
  }
  int descriptor;
  memcpy(&descriptor, CMSG_DATA(header), sizeof(int));
  return descriptor;
}

/* Rejects a descriptor that is not /dev/fuse, so that the mount fails with a clear message and not in libfuse. */
static bool check_fuse_device(receive_job *job, int descriptor) {
  struct stat info;
  if (fstat(descriptor, &info) != 0) {
    fail_job(job, errno, "fstat of the descriptor received on %s failed: %s", strerror(errno));
    return false;
  }
  if (!S_ISCHR(info.st_mode) || major(info.st_rdev) != FUSE_DEVICE_MAJOR || minor(info.st_rdev) != FUSE_DEVICE_MINOR) {
    char detail[160];
    snprintf(detail, sizeof(detail), "mode 0%o, device %u:%u; the helper must send an open /dev/fuse (10:229)",
             (unsigned)info.st_mode, major(info.st_rdev), minor(info.st_rdev));
    fail_job(job, EINVAL, "the descriptor received on %s is not /dev/fuse: %s", detail);
    return false;
  }
  return true;
}

static void execute_receive(napi_env env, void *data) {
  receive_job *job = data;
  double deadline_ms = monotonic_ms() + job->timeout_ms;

  int connection = connect_until(job, deadline_ms);
  if (connection < 0) return;

  int descriptor = receive_until(job, connection, deadline_ms);
  if (descriptor < 0) {
    close(connection);
    return;
  }
  if (!check_fuse_device(job, descriptor)) {
    close(descriptor);
    close(connection);
    return;
  }

  /* libfuse uses the descriptor directly; it stays close-on-exec so that no child process inherits the mount. */
  job->descriptor = descriptor;
  job->connection = connection;
}

static void complete_receive(napi_env env, napi_status status, void *data) {
  receive_job *job = data;
  napi_value result = NULL;
  bool resolved = false;

  if (status == napi_ok && job->error == 0) {
    napi_value descriptor, connection;
    if (napi_create_object(env, &result) == napi_ok && napi_create_int32(env, job->descriptor, &descriptor) == napi_ok &&
        napi_create_int32(env, job->connection, &connection) == napi_ok &&
        napi_set_named_property(env, result, "descriptor", descriptor) == napi_ok &&
        napi_set_named_property(env, result, "connection", connection) == napi_ok) {
      resolved = napi_resolve_deferred(env, job->deferred, result) == napi_ok;
    }
    if (!resolved) {
      close(job->descriptor);
      close(job->connection);
      job->error = EIO;
      snprintf(job->message, sizeof(job->message), "building the result of receiveDescriptor(%s) failed", job->path);
    }
  } else if (status != napi_ok && job->error == 0) {
    job->error = ECANCELED;
    snprintf(job->message, sizeof(job->message), "receiving the descriptor on %s was cancelled (status %d)", job->path, (int)status);
  }

  if (!resolved) {
    napi_value message, code, error, number;
    /* If any of these fail the promise stays pending; there is no other channel to report on. */
    if (napi_create_string_utf8(env, job->message, NAPI_AUTO_LENGTH, &message) == napi_ok &&
        napi_create_string_utf8(env, "ERR_BUCKETMOUNT_DESCRIPTOR", NAPI_AUTO_LENGTH, &code) == napi_ok &&
        napi_create_error(env, code, message, &error) == napi_ok &&
        napi_create_int32(env, job->error, &number) == napi_ok) {
      napi_set_named_property(env, error, "errno", number);
      napi_reject_deferred(env, job->deferred, error);
    }
  }

  napi_delete_async_work(env, job->work);
  free(job->path);
  free(job);
}

static napi_value js_receive_descriptor(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  BM_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));

  napi_valuetype path_type = napi_undefined, timeout_type = napi_undefined;
  if (argc >= 2) {
    BM_CHECK(env, napi_typeof(env, argv[0], &path_type));
    BM_CHECK(env, napi_typeof(env, argv[1], &timeout_type));
  }
  if (path_type != napi_string || timeout_type != napi_number) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "receiveDescriptor(path, timeoutMs) needs a string and a number");
    return NULL;
  }

  double timeout_ms;
  BM_CHECK(env, napi_get_value_double(env, argv[1], &timeout_ms));
  if (!(timeout_ms >= 0 && timeout_ms <= 86400000.0)) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "receiveDescriptor timeoutMs must be from 0 to 86400000");
    return NULL;
  }

  size_t length;
  BM_CHECK(env, napi_get_value_string_utf8(env, argv[0], NULL, 0, &length));
  receive_job *job = calloc(1, sizeof(receive_job));
  char *path = malloc(length + 1);
  if (job == NULL || path == NULL) {
    free(job);
    free(path);
    napi_throw_error(env, "ERR_OUT_OF_MEMORY", "out of memory in receiveDescriptor");
    return NULL;
  }
  job->path = path;
  job->timeout_ms = timeout_ms;
  job->descriptor = -1;
  job->connection = -1;

  napi_value promise, name;
  napi_status status = napi_get_value_string_utf8(env, argv[0], path, length + 1, &length);
  if (status == napi_ok) status = napi_create_promise(env, &job->deferred, &promise);
  if (status == napi_ok) status = napi_create_string_utf8(env, "bucketmount.receiveDescriptor", NAPI_AUTO_LENGTH, &name);
  if (status == napi_ok) status = napi_create_async_work(env, NULL, name, execute_receive, complete_receive, job, &job->work);
  if (status == napi_ok) {
    status = napi_queue_async_work(env, job->work);
    if (status != napi_ok) napi_delete_async_work(env, job->work);
  }
  if (status != napi_ok) {
    /* NOTE: a promise created before the failure stays pending; the thrown error reports the failure instead. */
    free(path);
    free(job);
    bm_throw_status(env, status, "receiveDescriptor setup");
    return NULL;
  }
  return promise;
}

napi_status bm_define_descriptor_functions(napi_env env, napi_value exports) {
  napi_value function;
  napi_status status = napi_create_function(env, "receiveDescriptor", NAPI_AUTO_LENGTH, js_receive_descriptor, NULL, &function);
  if (status != napi_ok) return status;
  return napi_set_named_property(env, exports, "receiveDescriptor", function);
}
