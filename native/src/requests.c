/*
 * libfuse low-level callbacks. They run on libfuse worker threads (init on a
 * worker too, destroy on the main thread inside fuse_session_destroy).
 *
 * Each callback copies its pointer arguments (names, write data) into a
 * message, because libfuse reuses its receive buffer once the callback
 * returns, and hands the message to bm_forward_request. The reply comes
 * later from JavaScript through replies.c.
 *
 * Operations left out of bm_operations get ENOSYS from libfuse. For the
 * extended attribute calls (getxattr, setxattr, listxattr, removexattr) and
 * fallocate, the Linux kernel remembers the ENOSYS and returns EOPNOTSUPP to
 * applications without asking again, so `ls -l` does not pay one round trip
 * per file for security.* attributes. Lock calls (getlk, setlk, flock) are
 * left out so the kernel keeps locks locally, and lseek and copy_file_range
 * fall back to the kernel's generic implementations. readlink is left out
 * because the filesystem never reports a symbolic link.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bucketmount.h"

/* Largest offset or size that a JavaScript number carries exactly (2^53 - 1). */
#define BM_MAX_SAFE_INTEGER UINT64_C(9007199254740991)

static bm_session *session_of(fuse_req_t request) {
  return (bm_session *)fuse_req_userdata(request);
}

static void reply_error_now(fuse_req_t request, int error) {
  /* A failed reply means the kernel already dropped the request (interrupted or unmounted), so nothing waits for it. */
  (void)fuse_reply_err(request, error);
}

/* Allocates a request message with the caller's credentials; replies ENOMEM and returns NULL on failure. */
static bm_message *new_request(fuse_req_t request, bm_operation operation) {
  bm_message *message = bm_message_new(BM_MESSAGE_REQUEST);
  if (message == NULL) {
    if (operation == BM_OP_FORGET || operation == BM_OP_FORGET_MULTI) {
      fuse_reply_none(request);
    } else {
      reply_error_now(request, ENOMEM);
    }
    return NULL;
  }

  message->operation = operation;
  const struct fuse_ctx *context = fuse_req_ctx(request);
  message->uid = context->uid;
  message->gid = context->gid;
  message->pid = context->pid;
  return message;
}

/* Copies `name` into the message; on failure frees the message, replies ENOMEM and returns false. */
static bool copy_name(fuse_req_t request, bm_message *message, char **target, const char *name) {
  *target = strdup(name);
  if (*target != NULL) return true;

  bm_message_free(message);
  reply_error_now(request, ENOMEM);
  return false;
}

static void bm_init(void *userdata, struct fuse_conn_info *connection) {
  bm_session *session = userdata;

  /*
   * 1 MiB requests: libfuse 3.14 sizes its receive buffer for 256 pages and
   * sends max_pages = max_write / page size to the kernel, so reads and
   * writes of up to 1 MiB arrive as one request. max_read must equal the
   * max_read mount option given to fuse_session_new, or libfuse rejects INIT.
   */
  connection->max_write = session->max_io_size;
  connection->max_read = session->max_io_size;

  /* Several reads of one handle may be in flight, so readahead and parallel readers overlap GETs. */
  if (connection->capable & FUSE_CAP_ASYNC_READ) connection->want |= FUSE_CAP_ASYNC_READ;

  /*
   * Always readdirplus, without the kernel's "auto" heuristic. An object
   * listing returns size and modification time with every name, so attributes
   * cost nothing extra and `ls -l` or os.walk need no LOOKUP per entry. The
   * auto mode would switch to plain readdir after the first buffer until the
   * kernel records lookups in that directory, which saves nothing here and makes the lookup count
   * of an entry depend on a kernel heuristic.
   */
  if (connection->capable & FUSE_CAP_READDIRPLUS) connection->want |= FUSE_CAP_READDIRPLUS;
  connection->want &= ~FUSE_CAP_READDIRPLUS_AUTO;

  /*
   * No writeback cache. With it the kernel merges, reorders and delays writes
   * (past close), reads partial pages back before writing them, and treats
   * its own cached size and modification time as authoritative. That breaks
   * the sequential-write detection that streams multipart uploads, hides
   * upload failures from close, and is wrong when the bucket changes
   * underneath.
   */
  connection->want &= ~FUSE_CAP_WRITEBACK_CACHE;

  /* Lookups and readdirs of one directory may run concurrently: the filesystem core serialises what it must. */
  if (connection->capable & FUSE_CAP_PARALLEL_DIROPS) connection->want |= FUSE_CAP_PARALLEL_DIROPS;

  /*
   * Truncation always arrives as setattr(size): without ATOMIC_O_TRUNC the
   * kernel sends open without O_TRUNC followed by a setattr, so the filesystem
   * core has one code path for open(O_TRUNC), truncate and ftruncate.
   */
  connection->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;

  /* Drop cached pages when a getattr shows a new size or mtime, which is how remote changes become visible. */
  if (connection->capable & FUSE_CAP_AUTO_INVAL_DATA) connection->want |= FUSE_CAP_AUTO_INVAL_DATA;

  /* Splicing needs write_buf and a pipe per thread; every request is copied for JavaScript anyway. */
  connection->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);

  /*
   * Background requests are readahead and asynchronous direct I/O. The
   * kernel default of 12 keeps too few readahead GETs in flight against an
   * object store with tens of milliseconds of latency.
   */
  connection->max_background = session->max_background;
  connection->congestion_threshold = session->congestion_threshold;

  /* Times are kept in milliseconds, so the kernel should not expect finer ones. */
  connection->time_gran = 1000000;

  /*
   * "Big writes" (writes larger than one page) need no flag: libfuse 3.0
   * removed -o big_writes and always enables them. The session tests see
   * 1 MiB write requests.
   */

  /*
   * libfuse sends the INIT reply after this callback returns, and the kernel
   * applies it (including a readahead window of at most the 128 KiB it
   * offered) while that reply is written. So the loop thread raises the
   * window and posts this message only after the reply (serve_until_initialised).
   */
  bm_message *message = bm_message_new(BM_MESSAGE_INIT);
  if (message == NULL) return;
  message->connection = *connection;

  pthread_mutex_lock(&session->lock);
  if (session->init_message != NULL) bm_message_free(session->init_message);
  session->init_message = message;
  pthread_mutex_unlock(&session->lock);
}

static void bm_destroy(void *userdata) {
  bm_session *session = userdata;
  pthread_mutex_lock(&session->lock);
  session->destroy_seen = true;
  pthread_mutex_unlock(&session->lock);
}

static void bm_lookup(fuse_req_t request, fuse_ino_t parent, const char *name) {
  bm_message *message = new_request(request, BM_OP_LOOKUP);
  if (message == NULL) return;
  message->ino = parent;
  if (!copy_name(request, message, &message->name, name)) return;
  bm_forward_request(session_of(request), request, message);
}

static void bm_forget(fuse_req_t request, fuse_ino_t ino, uint64_t lookups) {
  bm_message *message = new_request(request, BM_OP_FORGET);
  if (message == NULL) return;
  message->ino = ino;
  message->size = lookups;
  bm_forward_request(session_of(request), request, message);
}

static void bm_forget_multi(fuse_req_t request, size_t count, struct fuse_forget_data *forgets) {
  bm_message *message = new_request(request, BM_OP_FORGET_MULTI);
  if (message == NULL) return;

  message->forgets = malloc(count * sizeof(*forgets) + 1);
  if (message->forgets == NULL) {
    /* Forget has no error reply: the lookups stay counted, which only keeps inodes longer. */
    bm_message_free(message);
    fuse_reply_none(request);
    return;
  }
  memcpy(message->forgets, forgets, count * sizeof(*forgets));
  message->forget_count = count;
  bm_forward_request(session_of(request), request, message);
}

static void bm_getattr(fuse_req_t request, fuse_ino_t ino, struct fuse_file_info *file) {
  bm_message *message = new_request(request, BM_OP_GETATTR);
  if (message == NULL) return;
  message->ino = ino;
  if (file != NULL) {
    message->fh = file->fh;
    message->has_fh = true;
  }
  bm_forward_request(session_of(request), request, message);
}

static void bm_setattr(fuse_req_t request, fuse_ino_t ino, struct stat *values, int fields, struct fuse_file_info *file) {
  if ((fields & FUSE_SET_ATTR_SIZE) && (uint64_t)values->st_size > BM_MAX_SAFE_INTEGER) {
    reply_error_now(request, EFBIG);
    return;
  }

  bm_message *message = new_request(request, BM_OP_SETATTR);
  if (message == NULL) return;
  message->ino = ino;
  message->setattr_fields = fields;
  message->setattr_values = *values;
  if (file != NULL) {
    message->fh = file->fh;
    message->has_fh = true;
  }
  bm_forward_request(session_of(request), request, message);
}

static void forward_open(fuse_req_t request, bm_operation operation, fuse_ino_t ino, struct fuse_file_info *file) {
  bm_message *message = new_request(request, operation);
  if (message == NULL) return;
  message->ino = ino;
  message->flags = (uint32_t)file->flags;
  bm_forward_request(session_of(request), request, message);
}

static void bm_opendir(fuse_req_t request, fuse_ino_t ino, struct fuse_file_info *file) {
  forward_open(request, BM_OP_OPENDIR, ino, file);
}

static void bm_open(fuse_req_t request, fuse_ino_t ino, struct fuse_file_info *file) {
  forward_open(request, BM_OP_OPEN, ino, file);
}

static void forward_readdir(fuse_req_t request, bm_operation operation, fuse_ino_t ino, size_t size, off_t offset,
                            struct fuse_file_info *file) {
  /* Offsets come from our own nextOffset values; one beyond 2^53 (a seekdir to garbage) means end of directory. */
  if ((uint64_t)offset > BM_MAX_SAFE_INTEGER) {
    (void)fuse_reply_buf(request, NULL, 0);
    return;
  }

  bm_message *message = new_request(request, operation);
  if (message == NULL) return;
  message->ino = ino;
  message->fh = file->fh;
  message->has_fh = true;
  message->offset = (uint64_t)offset;
  message->size = size;
  bm_forward_request(session_of(request), request, message);
}

static void bm_readdir(fuse_req_t request, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *file) {
  forward_readdir(request, BM_OP_READDIR, ino, size, offset, file);
}

static void bm_readdirplus(fuse_req_t request, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *file) {
  forward_readdir(request, BM_OP_READDIRPLUS, ino, size, offset, file);
}

static void forward_handle(fuse_req_t request, bm_operation operation, fuse_ino_t ino, struct fuse_file_info *file) {
  bm_message *message = new_request(request, operation);
  if (message == NULL) return;
  message->ino = ino;
  message->fh = file->fh;
  message->has_fh = true;
  message->flags = (uint32_t)file->flags;
  bm_forward_request(session_of(request), request, message);
}

static void bm_releasedir(fuse_req_t request, fuse_ino_t ino, struct fuse_file_info *file) {
  forward_handle(request, BM_OP_RELEASEDIR, ino, file);
}

static void bm_flush(fuse_req_t request, fuse_ino_t ino, struct fuse_file_info *file) {
  forward_handle(request, BM_OP_FLUSH, ino, file);
}

static void bm_release(fuse_req_t request, fuse_ino_t ino, struct fuse_file_info *file) {
  forward_handle(request, BM_OP_RELEASE, ino, file);
}

static void bm_fsync(fuse_req_t request, fuse_ino_t ino, int data_only, struct fuse_file_info *file) {
  bm_message *message = new_request(request, BM_OP_FSYNC);
  if (message == NULL) return;
  message->ino = ino;
  message->fh = file->fh;
  message->has_fh = true;
  message->data_only = data_only != 0;
  bm_forward_request(session_of(request), request, message);
}

static void bm_fsyncdir(fuse_req_t request, fuse_ino_t ino, int data_only, struct fuse_file_info *file) {
  /* Directories are listings of keys with nothing buffered, so there is nothing to persist. */
  reply_error_now(request, 0);
}

static void bm_access(fuse_req_t request, fuse_ino_t ino, int mask) {
  /*
   * Permission checks belong to the kernel (default_permissions) and, in the
   * end, to the bucket's access policy. Without default_permissions every
   * access is granted here, in place of ENOSYS, so that the result does not
   * depend on how the kernel treats an unimplemented ACCESS.
   */
  reply_error_now(request, 0);
}

static void bm_read(fuse_req_t request, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *file) {
  /* No object is larger than 2^53 bytes, so a read beyond that is at end of file. */
  if ((uint64_t)offset > BM_MAX_SAFE_INTEGER) {
    (void)fuse_reply_buf(request, NULL, 0);
    return;
  }

  bm_message *message = new_request(request, BM_OP_READ);
  if (message == NULL) return;
  message->ino = ino;
  message->fh = file->fh;
  message->has_fh = true;
  message->offset = (uint64_t)offset;
  message->size = size;
  bm_forward_request(session_of(request), request, message);
}

static void bm_write(fuse_req_t request, fuse_ino_t ino, const char *data, size_t size, off_t offset,
                     struct fuse_file_info *file) {
  if ((uint64_t)offset + size > BM_MAX_SAFE_INTEGER) {
    reply_error_now(request, EFBIG);
    return;
  }

  bm_message *message = new_request(request, BM_OP_WRITE);
  if (message == NULL) return;

  /* The one copy of write data: libfuse reuses `data` after we return. */
  message->data = malloc(size > 0 ? size : 1);
  if (message->data == NULL) {
    bm_message_free(message);
    reply_error_now(request, ENOMEM);
    return;
  }
  memcpy(message->data, data, size);
  message->data_length = size;

  message->ino = ino;
  message->fh = file->fh;
  message->has_fh = true;
  message->offset = (uint64_t)offset;
  bm_forward_request(session_of(request), request, message);
}

static void bm_create(fuse_req_t request, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *file) {
  bm_message *message = new_request(request, BM_OP_CREATE);
  if (message == NULL) return;
  message->ino = parent;
  message->mode = mode;
  message->flags = (uint32_t)file->flags;
  if (!copy_name(request, message, &message->name, name)) return;
  bm_forward_request(session_of(request), request, message);
}

static void bm_mknod(fuse_req_t request, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  bm_message *message = new_request(request, BM_OP_MKNOD);
  if (message == NULL) return;
  message->ino = parent;
  message->mode = mode;
  message->rdev = (uint32_t)rdev;
  if (!copy_name(request, message, &message->name, name)) return;
  bm_forward_request(session_of(request), request, message);
}

static void bm_mkdir(fuse_req_t request, fuse_ino_t parent, const char *name, mode_t mode) {
  bm_message *message = new_request(request, BM_OP_MKDIR);
  if (message == NULL) return;
  message->ino = parent;
  message->mode = mode;
  if (!copy_name(request, message, &message->name, name)) return;
  bm_forward_request(session_of(request), request, message);
}

static void forward_name(fuse_req_t request, bm_operation operation, fuse_ino_t parent, const char *name) {
  bm_message *message = new_request(request, operation);
  if (message == NULL) return;
  message->ino = parent;
  if (!copy_name(request, message, &message->name, name)) return;
  bm_forward_request(session_of(request), request, message);
}

static void bm_unlink(fuse_req_t request, fuse_ino_t parent, const char *name) {
  forward_name(request, BM_OP_UNLINK, parent, name);
}

static void bm_rmdir(fuse_req_t request, fuse_ino_t parent, const char *name) {
  forward_name(request, BM_OP_RMDIR, parent, name);
}

static void bm_rename(fuse_req_t request, fuse_ino_t parent, const char *name, fuse_ino_t new_parent,
                      const char *new_name, unsigned int flags) {
  bm_message *message = new_request(request, BM_OP_RENAME);
  if (message == NULL) return;
  message->ino = parent;
  message->new_parent = new_parent;
  message->flags = flags;
  if (!copy_name(request, message, &message->name, name)) return;
  if (!copy_name(request, message, &message->new_name, new_name)) return;
  bm_forward_request(session_of(request), request, message);
}

static void bm_statfs(fuse_req_t request, fuse_ino_t ino) {
  bm_message *message = new_request(request, BM_OP_STATFS);
  if (message == NULL) return;
  message->ino = ino;
  bm_forward_request(session_of(request), request, message);
}

/* symlink and link reach JavaScript so that the adapter logs and counts them before it rejects them. */
static void bm_symlink(fuse_req_t request, const char *target, fuse_ino_t parent, const char *name) {
  bm_message *message = new_request(request, BM_OP_SYMLINK);
  if (message == NULL) return;
  message->ino = parent;
  if (!copy_name(request, message, &message->name, name)) return;
  if (!copy_name(request, message, &message->new_name, target)) return;
  bm_forward_request(session_of(request), request, message);
}

static void bm_link(fuse_req_t request, fuse_ino_t ino, fuse_ino_t new_parent, const char *new_name) {
  bm_message *message = new_request(request, BM_OP_LINK);
  if (message == NULL) return;
  message->ino = ino;
  message->new_parent = new_parent;
  if (!copy_name(request, message, &message->new_name, new_name)) return;
  bm_forward_request(session_of(request), request, message);
}

const struct fuse_lowlevel_ops bm_operations = {
  .init = bm_init,
  .destroy = bm_destroy,
  .lookup = bm_lookup,
  .forget = bm_forget,
  .forget_multi = bm_forget_multi,
  .getattr = bm_getattr,
  .setattr = bm_setattr,
  .opendir = bm_opendir,
  .readdir = bm_readdir,
  .readdirplus = bm_readdirplus,
  .releasedir = bm_releasedir,
  .fsyncdir = bm_fsyncdir,
  .open = bm_open,
  .read = bm_read,
  .write = bm_write,
  .flush = bm_flush,
  .release = bm_release,
  .fsync = bm_fsync,
  .create = bm_create,
  .mknod = bm_mknod,
  .mkdir = bm_mkdir,
  .unlink = bm_unlink,
  .rmdir = bm_rmdir,
  .rename = bm_rename,
  .statfs = bm_statfs,
  .access = bm_access,
  .symlink = bm_symlink,
  .link = bm_link,
};
