/*
 * bucketmount_fuse: a Node-API binding of the libfuse3 low-level API.
 *
 * The binding contains no filesystem logic. It mounts, runs the libfuse
 * multi-threaded loop on its own thread, copies every kernel request into a
 * message and hands it to JavaScript through one thread-safe function, and
 * exposes the fuse_reply_* calls to JavaScript. Requests are answered after
 * their libfuse callback has returned, as fuse_lowlevel.h allows, so a slow
 * object-store call never holds a kernel thread.
 *
 * Threads of one session:
 * - main: the JavaScript thread. It mounts, receives messages, replies and
 *   tears the session down.
 * - loop: runs fuse_session_loop_mt and posts one "loop ended" message.
 * - workers: started by fuse_session_loop_mt. They run the request callbacks
 *   in requests.c, which only copy arguments, register the request and post
 *   a message.
 * - control: answers requests whose deadline passed and detaches the mount
 *   point when JavaScript asks to unmount (a detach can block, and it may
 *   send requests to this very filesystem, so the main thread never does it).
 * - reply: writes large read replies to /dev/fuse (reply_thread.c), straight
 *   from the JavaScript buffers that the main thread keeps referenced, so
 *   that the main thread is free for the next request.
 *
 * Locks: `bm_session.lock` guards the request table and the control flags.
 * Any thread that calls the thread-safe function holds the lock and checks
 * `accepting` first, so that no thread touches the function after teardown
 * released it. `bm_session.reply_lock` guards the reply queue, and no
 * thread holds both locks at once.
 */

#ifndef BUCKETMOUNT_H
#define BUCKETMOUNT_H

/* 3.12 is the first API version with fuse_loop_cfg_set_max_threads; Debian bookworm ships libfuse 3.14. */
#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>
#include <node_api.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/uio.h>

/* Operations forwarded to JavaScript. The order matches BM_OPERATION_NAMES in messages.c. */
typedef enum {
  BM_OP_LOOKUP,
  BM_OP_FORGET,
  BM_OP_FORGET_MULTI,
  BM_OP_GETATTR,
  BM_OP_SETATTR,
  BM_OP_OPENDIR,
  BM_OP_READDIR,
  BM_OP_READDIRPLUS,
  BM_OP_RELEASEDIR,
  BM_OP_OPEN,
  BM_OP_READ,
  BM_OP_WRITE,
  BM_OP_FLUSH,
  BM_OP_RELEASE,
  BM_OP_FSYNC,
  BM_OP_CREATE,
  BM_OP_MKNOD,
  BM_OP_MKDIR,
  BM_OP_UNLINK,
  BM_OP_RMDIR,
  BM_OP_RENAME,
  BM_OP_STATFS,
  BM_OP_SYMLINK,
  BM_OP_LINK,
  BM_OP_COUNT
} bm_operation;

#define BM_OP_BIT(op) (UINT32_C(1) << (op))

typedef enum {
  BM_MESSAGE_REQUEST,
  BM_MESSAGE_INIT,
  BM_MESSAGE_TIMEOUT,
  BM_MESSAGE_LOG,
  BM_MESSAGE_LOOP_ENDED,
  BM_MESSAGE_REPLIES_SENT,   /* the reply thread has sent jobs whose references the main thread must delete */
} bm_message_kind;

/*
 * One message from a native thread to the main thread. The sender allocates
 * it and owns every pointer in it; the main thread frees it after use.
 */
typedef struct bm_message {
  bm_message_kind kind;
  bm_operation operation;
  double request_id;

  /* Request arguments; which ones are set depends on the operation. */
  uint64_t ino;            /* ino, or the parent directory for operations on a name */
  uint64_t new_parent;     /* rename and link */
  uint64_t fh;
  bool has_fh;
  uint64_t offset;
  uint64_t size;           /* read and readdir size, or the lookup count of forget */
  uint32_t mode;
  uint32_t flags;
  uint32_t rdev;
  bool data_only;          /* fsync */
  uid_t uid;
  gid_t gid;
  pid_t pid;
  char *name;
  char *new_name;          /* rename and link target name, symlink target */
  void *data;              /* write data */
  size_t data_length;
  int setattr_fields;      /* FUSE_SET_ATTR_* bits */
  struct stat setattr_values;
  struct fuse_forget_data *forgets;
  size_t forget_count;

  /*
   * BM_MESSAGE_INIT: the connection parameters after negotiation. `text` is
   * the read_ahead_kb file that was written, or failed with `error` (NULL
   * with ENOENT: the mount was not in /proc/self/mountinfo; NULL with 0: not
   * attempted).
   */
  struct fuse_conn_info connection;

  /* BM_MESSAGE_TIMEOUT */
  double elapsed_ms;

  /* BM_MESSAGE_LOG and BM_MESSAGE_LOOP_ENDED */
  const char *level;       /* static string */
  char *text;
  int error;               /* positive errno, or 0 */
} bm_message;

typedef enum {
  BM_SLOT_FREE,
  BM_SLOT_PENDING,
  BM_SLOT_TIMED_OUT,   /* the control thread answered; a later JavaScript reply returns false */
  BM_SLOT_CANCELLED,   /* teardown answered; a later JavaScript reply returns false */
} bm_slot_state;

/* One registered request. A request id is generation * BM_SLOT_LIMIT + index. */
typedef struct {
  fuse_req_t request;      /* NULL once answered */
  uint64_t started_ns;
  uint64_t deadline_ns;    /* 0 when the request has no deadline (forget) */
  uint64_t reply_limit;    /* maximum reply length in bytes: the size of read and readdir, else UINT64_MAX */
  uint32_t generation;
  int32_t previous;        /* neighbours in the deadline list, or -1 */
  int32_t next;            /* next in the deadline list or in the free list, or -1 */
  uint8_t state;           /* bm_slot_state */
  uint8_t operation;       /* bm_operation */
} bm_slot;

#define BM_SLOT_LIMIT 16777216.0          /* 2^24 slots, far above any in-flight count */
#define BM_GENERATION_LIMIT 536870912u    /* 2^29, so that ids stay below 2^53 */

/*
 * One read reply for the reply thread: the claimed request and its data,
 * either `count` pieces of JavaScript memory followed by one reference per
 * piece (`referenced`), or one piece that points to a copy stored after it.
 */
typedef struct bm_reply_job {
  struct bm_reply_job *next;
  fuse_req_t request;
  size_t count;
  bool referenced;
  struct iovec pieces[];
} bm_reply_job;

typedef enum {
  BM_LIFECYCLE_MOUNTED,
  BM_LIFECYCLE_UNMOUNTING,
  BM_LIFECYCLE_CLOSED,
} bm_lifecycle;

typedef struct bm_session {
  /* Main thread only. */
  napi_env env;
  napi_ref wrapper;            /* strong while mounted so the session cannot be collected */
  napi_ref request_handler;
  napi_ref init_handler;
  napi_ref timeout_handler;
  napi_ref log_handler;
  napi_ref destroy_handler;
  napi_ref exit_handler;
  napi_ref write_buffer_handler;   /* optional: lends pooled Buffers for write data */
  struct fuse_loop_config *loop_config;
  bool loop_thread_started;
  bool control_thread_started;
  bool reply_thread_started;
  pthread_t loop_thread;
  pthread_t control_thread;
  pthread_t reply_thread;
  bm_lifecycle lifecycle;
  bool cleanup_hook_added;
  bool abandoned;              /* threads outlived the environment: never free this struct */

  /* Set on the main thread before any other thread starts, then read-only until teardown. */
  struct fuse_session *fuse;
  char *mountpoint;
  bool mounted_by_descriptor;  /* mount point was /dev/fd/N: the process that mounted it unmounts it */
  uint64_t request_timeout_ns;
  unsigned max_io_size;        /* max_read and max_write in bytes */
  unsigned max_background;
  unsigned congestion_threshold;
  unsigned read_ahead_kib;     /* readahead window set after INIT; 0 keeps the kernel's */
  napi_threadsafe_function dispatcher;

  /* Guarded by lock. */
  pthread_mutex_t lock;
  pthread_cond_t control_wakeup;   /* signalled on a new earliest deadline, a detach request or stop */
  bool accepting;              /* false once teardown began: no thread may call `dispatcher` after that */
  bool control_stop;
  bool detach_requested;
  bool destroy_seen;           /* libfuse called the destroy callback */
  bm_message *init_message;    /* made by the init callback; loop_main posts it once the INIT reply is sent */
  bm_slot *slots;
  uint32_t slot_capacity;
  int32_t free_head;
  int32_t pending_head;        /* earliest deadline; deadlines grow in arrival order */
  int32_t pending_tail;

  /* Guarded by reply_lock. */
  pthread_mutex_t reply_lock;
  pthread_cond_t reply_wakeup;     /* signalled on the first job of an empty queue and on stop */
  bool reply_accepting;        /* false once the reply thread was asked to stop: replies are then sent at once */
  bool reply_release_posted;   /* a BM_MESSAGE_REPLIES_SENT is on its way to the main thread */
  bm_reply_job *reply_head;    /* oldest job */
  bm_reply_job *reply_tail;
  bm_reply_job *reply_sent;    /* sent referenced jobs, for the main thread to free */
} bm_session;

/* session.c */
uint64_t bm_now_ns(void);
int bm_start_thread(pthread_t *thread, void *(*main)(void *), void *argument);
void bm_forward_request(bm_session *session, fuse_req_t request, bm_message *message);
bool bm_post_locked(bm_session *session, bm_message *message);
void bm_message_free(bm_message *message);
bm_message *bm_message_new(bm_message_kind kind);

/* requests.c */
extern const struct fuse_lowlevel_ops bm_operations;

/* messages.c */
extern const char *const BM_OPERATION_NAMES[BM_OP_COUNT];
/* `write_lender` is the optional writeBuffer handler that lends Buffers for write data (NULL: none). */
napi_status bm_message_to_js(napi_env env, const bm_message *message, napi_ref write_lender, napi_value *result);
napi_status bm_set_number(napi_env env, napi_value object, const char *name, double value);
napi_status bm_set_string(napi_env env, napi_value object, const char *name, const char *value);
napi_status bm_set_bool(napi_env env, napi_value object, const char *name, bool value);

typedef enum {
  BM_CLAIM_OK,               /* the caller now owns `request` and must reply exactly once */
  BM_CLAIM_LATE,             /* the control thread or teardown already answered */
  BM_CLAIM_UNKNOWN,          /* no such id, or already answered from JavaScript */
  BM_CLAIM_WRONG_OPERATION,  /* the reply kind does not fit the operation; the request stays pending */
  BM_CLAIM_TOO_LONG,         /* the reply is longer than the kernel asked for; the request stays pending */
} bm_claim_result;

/*
 * session.c, main thread: takes a pending request out of the table if its
 * operation is in `allowed` and `reply_length` fits what the kernel asked for.
 */
bool bm_renew_deadline(bm_session *session, double id);
bm_claim_result bm_claim_request(bm_session *session, double id, uint32_t allowed, uint64_t reply_length,
                                 fuse_req_t *request, bm_operation *operation, uint64_t *reply_limit);

/* reply_thread.c, main thread only */
int bm_reply_thread_start(bm_session *session);
void bm_reply_thread_stop(bm_session *session);
void bm_release_sent_replies(bm_session *session);
void bm_send_read_reply(bm_session *session, fuse_req_t request, const struct iovec *pieces, const napi_value *values,
                        size_t count, size_t length);

/* descriptor.c: adds receiveDescriptor(path, timeoutMs) to the exports. */
napi_status bm_define_descriptor_functions(napi_env env, napi_value exports);

/* replies.c */
napi_status bm_define_reply_methods(napi_env env, napi_property_descriptor *properties, size_t *count);
bm_session *bm_unwrap_session(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv);

/* Throws a JavaScript Error and returns false when a Node-API call did not succeed. */
#define BM_CHECK(env, call)                                        \
  do {                                                             \
    napi_status bm_status_ = (call);                               \
    if (bm_status_ != napi_ok) {                                   \
      bm_throw_status((env), bm_status_, #call);                   \
      return NULL;                                                 \
    }                                                              \
  } while (0)

void bm_throw_status(napi_env env, napi_status status, const char *call);

#endif
