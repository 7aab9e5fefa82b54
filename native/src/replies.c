/*
 * Reply methods of a session object, called from JavaScript on the main
 * thread: replyError, replyEntry, replyCreate, replyAttr, replyOpen,
 * replyBuffer, replyWrite, replyStatfs, replyNone and replyDirectory.
 *
 * Each method first converts and validates every argument, and only then
 * claims the request, so that an invalid argument throws and leaves the
 * request pending for a replyError. A method returns true when it answered
 * the request, and false when the request had already been answered with
 * ETIMEDOUT (deadline passed) or EIO (session closed); the late reply is
 * dropped. An unknown id, a second reply, or a reply kind that does not fit
 * the operation throws.
 */

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "bucketmount.h"

#define MAX_SAFE_INTEGER 9007199254740991.0
#define MAX_NAME_BYTES 255
#define MAX_DIRECTORY_REPLY (16u * 1024u * 1024u)

#define ENTRY_OPERATIONS \
  (BM_OP_BIT(BM_OP_LOOKUP) | BM_OP_BIT(BM_OP_MKDIR) | BM_OP_BIT(BM_OP_MKNOD) | BM_OP_BIT(BM_OP_SYMLINK) | BM_OP_BIT(BM_OP_LINK))
#define FORGET_OPERATIONS (BM_OP_BIT(BM_OP_FORGET) | BM_OP_BIT(BM_OP_FORGET_MULTI))
/* Operations whose successful reply carries no data, so replyError(id, 0) is their success reply. */
#define EMPTY_REPLY_OPERATIONS                                                                              \
  (BM_OP_BIT(BM_OP_UNLINK) | BM_OP_BIT(BM_OP_RMDIR) | BM_OP_BIT(BM_OP_RENAME) | BM_OP_BIT(BM_OP_FLUSH) |  \
   BM_OP_BIT(BM_OP_RELEASE) | BM_OP_BIT(BM_OP_RELEASEDIR) | BM_OP_BIT(BM_OP_FSYNC))
#define ALL_OPERATIONS ((UINT32_C(1) << BM_OP_COUNT) - 1)

static void throw_message(napi_env env, const char *code, const char *format, const char *a, const char *b) {
  char text[512];
  snprintf(text, sizeof(text), format, a, b);
  napi_throw_error(env, code, text);
}

static void throw_type(napi_env env, const char *method, const char *what, const char *expected) {
  char text[512];
  snprintf(text, sizeof(text), "%s: %s must be %s", method, what, expected);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", text);
}

/* ------------------------------------------------------------ conversion */

static bool read_number_value(napi_env env, napi_value value, const char *method, const char *what, double minimum,
                              double maximum, bool integer, double *result) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_number ||
      napi_get_value_double(env, value, result) != napi_ok) {
    throw_type(env, method, what, "a number");
    return false;
  }
  if (!(*result >= minimum && *result <= maximum) || (integer && *result != floor(*result))) {
    char range[160];
    snprintf(range, sizeof(range), "%s from %.17g to %.17g (got %.17g)", integer ? "an integer" : "a number", minimum,
             maximum, *result);
    throw_type(env, method, what, range);
    return false;
  }
  return true;
}

static bool read_number_property(napi_env env, napi_value object, const char *method, const char *name,
                                 double minimum, double maximum, bool integer, double *result) {
  napi_value value;
  if (napi_get_named_property(env, object, name, &value) != napi_ok) {
    throw_type(env, method, name, "readable");
    return false;
  }
  return read_number_value(env, value, method, name, minimum, maximum, integer, result);
}

/* Optional boolean property: undefined means false. */
static bool read_flag_property(napi_env env, napi_value object, const char *method, const char *name, bool *result) {
  napi_value value;
  napi_valuetype type;
  *result = false;
  if (napi_get_named_property(env, object, name, &value) != napi_ok || napi_typeof(env, value, &type) != napi_ok) {
    throw_type(env, method, name, "readable");
    return false;
  }
  if (type == napi_undefined) return true;
  if (type != napi_boolean || napi_get_value_bool(env, value, result) != napi_ok) {
    throw_type(env, method, name, "a boolean or undefined");
    return false;
  }
  return true;
}

static bool read_object_property(napi_env env, napi_value object, const char *method, const char *name,
                                 napi_value *result) {
  napi_valuetype type;
  if (napi_get_named_property(env, object, name, result) != napi_ok || napi_typeof(env, *result, &type) != napi_ok ||
      type != napi_object) {
    throw_type(env, method, name, "an object");
    return false;
  }
  return true;
}

static bool require_object(napi_env env, napi_value value, const char *method, const char *what) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_object) {
    throw_type(env, method, what, "an object");
    return false;
  }
  return true;
}

static struct timespec timespec_of_milliseconds(double milliseconds) {
  double seconds = floor(milliseconds / 1000.0);
  long nanoseconds = (long)llround((milliseconds - seconds * 1000.0) * 1e6);
  if (nanoseconds >= 1000000000L) {
    seconds += 1;
    nanoseconds -= 1000000000L;
  }
  return (struct timespec){.tv_sec = (time_t)seconds, .tv_nsec = nanoseconds};
}

/* Converts an `Attributes` object into a struct stat. */
static bool read_attributes(napi_env env, napi_value attr, const char *method, struct stat *result) {
  double ino, mode, nlink, uid, gid, size, atime, mtime, ctime;
  if (!require_object(env, attr, method, "attr")) return false;
  if (!read_number_property(env, attr, method, "ino", 0, MAX_SAFE_INTEGER, true, &ino) ||
      !read_number_property(env, attr, method, "mode", 0, 4294967295.0, true, &mode) ||
      !read_number_property(env, attr, method, "nlink", 0, 4294967295.0, true, &nlink) ||
      !read_number_property(env, attr, method, "uid", 0, 4294967295.0, true, &uid) ||
      !read_number_property(env, attr, method, "gid", 0, 4294967295.0, true, &gid) ||
      !read_number_property(env, attr, method, "size", 0, MAX_SAFE_INTEGER, true, &size) ||
      !read_number_property(env, attr, method, "atimeMs", -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER, false, &atime) ||
      !read_number_property(env, attr, method, "mtimeMs", -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER, false, &mtime) ||
      !read_number_property(env, attr, method, "ctimeMs", -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER, false, &ctime)) {
    return false;
  }

  memset(result, 0, sizeof(*result));
  result->st_ino = (ino_t)ino;
  result->st_mode = (mode_t)mode;
  result->st_nlink = (nlink_t)nlink;
  result->st_uid = (uid_t)uid;
  result->st_gid = (gid_t)gid;
  result->st_size = (off_t)size;
  /* st_blocks counts 512-byte units; st_blksize stays 0 so the kernel uses its default (the page size). */
  result->st_blocks = (blkcnt_t)(((uint64_t)size + 511) / 512);
  result->st_atim = timespec_of_milliseconds(atime);
  result->st_mtim = timespec_of_milliseconds(mtime);
  result->st_ctim = timespec_of_milliseconds(ctime);
  return true;
}

/* Converts an `EntryReply` object. */
static bool read_entry(napi_env env, napi_value entry, const char *method, struct fuse_entry_param *result) {
  napi_value attr;
  double attr_timeout, entry_timeout;
  if (!require_object(env, entry, method, "entry")) return false;
  if (!read_object_property(env, entry, method, "attr", &attr) || !read_attributes(env, attr, method, &result->attr) ||
      !read_number_property(env, entry, method, "attrTimeout", 0, 1e9, false, &attr_timeout) ||
      !read_number_property(env, entry, method, "entryTimeout", 0, 1e9, false, &entry_timeout)) {
    return false;
  }
  result->ino = result->attr.st_ino;
  result->generation = 0;
  result->attr_timeout = attr_timeout;
  result->entry_timeout = entry_timeout;
  return true;
}

/* Converts an `OpenReply` object. */
static bool read_open(napi_env env, napi_value open, const char *method, struct fuse_file_info *result) {
  double fh;
  bool direct_io, keep_cache, non_seekable, no_flush;
  if (!require_object(env, open, method, "open")) return false;
  if (!read_number_property(env, open, method, "fh", 0, MAX_SAFE_INTEGER, true, &fh) ||
      !read_flag_property(env, open, method, "directIo", &direct_io) ||
      !read_flag_property(env, open, method, "keepCache", &keep_cache) ||
      !read_flag_property(env, open, method, "nonSeekable", &non_seekable) ||
      !read_flag_property(env, open, method, "noFlush", &no_flush)) {
    return false;
  }
  memset(result, 0, sizeof(*result));
  result->fh = (uint64_t)fh;
  result->direct_io = direct_io;
  result->keep_cache = keep_cache;
  result->nonseekable = non_seekable;
  result->noflush = no_flush;
  return true;
}

static bool read_request_id(napi_env env, napi_value value, const char *method, double *id) {
  return read_number_value(env, value, method, "request id", 0, MAX_SAFE_INTEGER, true, id);
}

/* ----------------------------------------------------------------- claim */

/*
 * Claims the request for a reply. Returns 1 when the caller must reply now,
 * 0 when the reply is late (the method then returns false), and -1 after
 * throwing.
 */
static int claim(napi_env env, bm_session *session, const char *method, double id, uint32_t allowed,
                 uint64_t reply_length, fuse_req_t *request) {
  bm_operation operation = BM_OP_COUNT;
  uint64_t reply_limit = UINT64_MAX;
  bm_claim_result result = bm_claim_request(session, id, allowed, reply_length, request, &operation, &reply_limit);

  switch (result) {
    case BM_CLAIM_OK:
      return 1;
    case BM_CLAIM_LATE:
      return 0;
    case BM_CLAIM_UNKNOWN: {
      char id_text[32];
      snprintf(id_text, sizeof(id_text), "%.0f", id);
      throw_message(env, "ERR_BUCKETMOUNT_UNKNOWN_REQUEST", "%s: request %s is unknown or was already answered", method,
                    id_text);
      return -1;
    }
    case BM_CLAIM_WRONG_OPERATION:
      throw_message(env, "ERR_BUCKETMOUNT_WRONG_REPLY", "%s cannot answer a %s request", method,
                    operation < BM_OP_COUNT ? BM_OPERATION_NAMES[operation] : "unknown");
      return -1;
    case BM_CLAIM_TOO_LONG: {
      char lengths[64];
      snprintf(lengths, sizeof(lengths), "%llu bytes, more than the %llu", (unsigned long long)reply_length,
               (unsigned long long)reply_limit);
      throw_message(env, "ERR_OUT_OF_RANGE", "%s: the reply has %s bytes the kernel requested", method, lengths);
      return -1;
    }
  }
  return -1;
}

/* Wraps the outcome of a claim into the JavaScript return value. */
static napi_value claimed_result(napi_env env, int claimed) {
  napi_value result;
  if (claimed < 0) return NULL;
  if (napi_get_boolean(env, claimed == 1, &result) != napi_ok) return NULL;
  return result;
}

/* ---------------------------------------------------------------- methods */

/* replyError(id, errno): errno 0 is the success reply of operations that return no data. */
static napi_value js_reply_error(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  double id, error;
  bm_session *session = bm_unwrap_session(env, info, &argc, argv);
  if (session == NULL) return NULL;
  if (argc < 2) return throw_type(env, "replyError", "arguments", "(id, errno)"), NULL;
  /* The kernel accepts error values from 1 to 999 only. */
  if (!read_request_id(env, argv[0], "replyError", &id) ||
      !read_number_value(env, argv[1], "replyError", "errno", 0, 999, true, &error)) {
    return NULL;
  }

  uint32_t allowed = error == 0 ? EMPTY_REPLY_OPERATIONS : (ALL_OPERATIONS & ~FORGET_OPERATIONS);
  fuse_req_t request;
  int claimed = claim(env, session, error == 0 ? "replyError(id, 0)" : "replyError", id, allowed, 0, &request);
  if (claimed == 1) (void)fuse_reply_err(request, (int)error);
  return claimed_result(env, claimed);
}

static napi_value js_reply_entry(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  double id;
  struct fuse_entry_param entry;
  bm_session *session = bm_unwrap_session(env, info, &argc, argv);
  if (session == NULL) return NULL;
  if (argc < 2) return throw_type(env, "replyEntry", "arguments", "(id, entry)"), NULL;
  if (!read_request_id(env, argv[0], "replyEntry", &id) || !read_entry(env, argv[1], "replyEntry", &entry)) return NULL;

  fuse_req_t request;
  int claimed = claim(env, session, "replyEntry", id, ENTRY_OPERATIONS, 0, &request);
  if (claimed == 1) (void)fuse_reply_entry(request, &entry);
  return claimed_result(env, claimed);
}

static napi_value js_reply_create(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  double id;
  struct fuse_entry_param entry;
  struct fuse_file_info file;
  bm_session *session = bm_unwrap_session(env, info, &argc, argv);
  if (session == NULL) return NULL;
  if (argc < 3) return throw_type(env, "replyCreate", "arguments", "(id, entry, open)"), NULL;
  if (!read_request_id(env, argv[0], "replyCreate", &id) || !read_entry(env, argv[1], "replyCreate", &entry) ||
      !read_open(env, argv[2], "replyCreate", &file)) {
    return NULL;
  }

  fuse_req_t request;
  int claimed = claim(env, session, "replyCreate", id, BM_OP_BIT(BM_OP_CREATE), 0, &request);
  if (claimed == 1) (void)fuse_reply_create(request, &entry, &file);
  return claimed_result(env, claimed);
}

static napi_value js_reply_attr(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  double id, timeout;
  struct stat attributes;
  bm_session *session = bm_unwrap_session(env, info, &argc, argv);
  if (session == NULL) return NULL;
  if (argc < 3) return throw_type(env, "replyAttr", "arguments", "(id, attr, timeout)"), NULL;
  if (!read_request_id(env, argv[0], "replyAttr", &id) || !read_attributes(env, argv[1], "replyAttr", &attributes) ||
      !read_number_value(env, argv[2], "replyAttr", "timeout", 0, 1e9, false, &timeout)) {
    return NULL;
  }

  fuse_req_t request;
  int claimed =
      claim(env, session, "replyAttr", id, BM_OP_BIT(BM_OP_GETATTR) | BM_OP_BIT(BM_OP_SETATTR), 0, &request);
  if (claimed == 1) (void)fuse_reply_attr(request, &attributes, timeout);
  return claimed_result(env, claimed);
}

static napi_value js_reply_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  double id;
  struct fuse_file_info file;
  bm_session *session = bm_unwrap_session(env, info, &argc, argv);
  if (session == NULL) return NULL;
  if (argc < 2) return throw_type(env, "replyOpen", "arguments", "(id, open)"), NULL;
  if (!read_request_id(env, argv[0], "replyOpen", &id) || !read_open(env, argv[1], "replyOpen", &file)) return NULL;

  fuse_req_t request;
  int claimed = claim(env, session, "replyOpen", id, BM_OP_BIT(BM_OP_OPEN) | BM_OP_BIT(BM_OP_OPENDIR), 0, &request);
  if (claimed == 1) (void)fuse_reply_open(request, &file);
  return claimed_result(env, claimed);
}

/* Reads the bytes of a Buffer or any other Uint8Array. Returns false, without throwing, when `value` is neither. */
static bool read_bytes(napi_env env, napi_value value, void **data, size_t *length) {
  bool is_buffer = false;
  bool is_typed_array = false;
  if (napi_is_buffer(env, value, &is_buffer) == napi_ok && is_buffer) {
    return napi_get_buffer_info(env, value, data, length) == napi_ok;
  }
  if (napi_is_typedarray(env, value, &is_typed_array) == napi_ok && is_typed_array) {
    napi_typedarray_type type;
    if (napi_get_typedarray_info(env, value, &type, length, data, NULL, NULL) == napi_ok && type == napi_uint8_array) {
      return true;
    }
  }
  return false;
}

#define INLINE_PIECES 16

/* The data of a read reply: views of JavaScript memory and the objects that own it. */
typedef struct {
  struct iovec *pieces;    /* `inline_pieces`, or malloc'd for a longer array */
  napi_value *values;      /* `inline_values`, or malloc'd for a longer array */
  size_t count;
  size_t length;           /* bytes in all pieces */
  struct iovec inline_pieces[INLINE_PIECES];
  napi_value inline_values[INLINE_PIECES];
} read_data;

static void free_read_data(read_data *data) {
  if (data->pieces != data->inline_pieces) free(data->pieces);
  if (data->values != data->inline_values) free(data->values);
  data->pieces = data->inline_pieces;
  data->values = data->inline_values;
}

/*
 * Reads `value`, one Uint8Array or an array of them, into `data` and checks
 * that it fits `max_length`. Throws and returns false when it is invalid.
 */
static bool read_reply_data(napi_env env, napi_value value, size_t max_length, read_data *data) {
  const char *m = "replyBuffer";
  data->pieces = data->inline_pieces;
  data->values = data->inline_values;
  data->count = 0;
  data->length = 0;

  bool is_array = false;
  if (napi_is_array(env, value, &is_array) != napi_ok || !is_array) {
    if (!read_bytes(env, value, &data->pieces[0].iov_base, &data->pieces[0].iov_len)) {
      throw_type(env, m, "data", "a Buffer, a Uint8Array or an array of them");
      return false;
    }
    data->values[0] = value;
    data->count = 1;
    data->length = data->pieces[0].iov_len;
  } else {
    uint32_t count = 0;
    if (napi_get_array_length(env, value, &count) != napi_ok) {
      throw_type(env, m, "data", "a readable array");
      return false;
    }
    if (count > INLINE_PIECES) {
      data->pieces = malloc(count * sizeof(struct iovec));
      data->values = malloc(count * sizeof(napi_value));
      if (data->pieces == NULL || data->values == NULL) {
        free(data->pieces);
        free(data->values);
        data->pieces = data->inline_pieces;
        data->values = data->inline_values;
        napi_throw_error(env, "ERR_OUT_OF_MEMORY", "replyBuffer: out of memory");
        return false;
      }
    }

    for (uint32_t i = 0; i < count; i++) {
      napi_value item;
      struct iovec *piece = &data->pieces[i];
      if (napi_get_element(env, value, i, &item) != napi_ok || !read_bytes(env, item, &piece->iov_base, &piece->iov_len)) {
        free_read_data(data);
        throw_type(env, m, "each piece of data", "a Buffer or Uint8Array");
        return false;
      }
      /* Checked per piece, so that the sum cannot overflow. */
      if (piece->iov_len > max_length - data->length) {
        free_read_data(data);
        throw_type(env, m, "data", "no longer than the negotiated max_read");
        return false;
      }
      data->values[i] = item;
      data->length += piece->iov_len;
      data->count++;
    }
  }

  if (data->length > max_length) {
    throw_type(env, m, "data", "no longer than the negotiated max_read");
    return false;
  }
  return true;
}

/*
 * replyBuffer(id, data): the data of a read, at most `size` bytes of the
 * request. `data` is one Uint8Array or an array of them sent in order as one
 * reply, so that JavaScript need not join pieces of cached blocks. A reply of
 * BM_QUEUED_REPLY_MIN_BYTES (64 KiB) or more is written later by the reply
 * thread straight from this memory, which stays referenced until then: its
 * bytes must not change.
 */
static napi_value js_reply_buffer(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  double id;
  read_data data;
  bm_session *session = bm_unwrap_session(env, info, &argc, argv);
  if (session == NULL) return NULL;
  if (argc < 2) return throw_type(env, "replyBuffer", "arguments", "(id, data)"), NULL;
  if (!read_request_id(env, argv[0], "replyBuffer", &id) ||
      !read_reply_data(env, argv[1], session->max_io_size, &data)) {
    return NULL;
  }

  fuse_req_t request;
  int claimed = claim(env, session, "replyBuffer", id, BM_OP_BIT(BM_OP_READ), data.length, &request);
  if (claimed == 1) bm_send_read_reply(session, request, data.pieces, data.values, data.count, data.length);
  free_read_data(&data);
  return claimed_result(env, claimed);
}

static napi_value js_reply_write(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  double id, count;
  bm_session *session = bm_unwrap_session(env, info, &argc, argv);
  if (session == NULL) return NULL;
  if (argc < 2) return throw_type(env, "replyWrite", "arguments", "(id, count)"), NULL;
  if (!read_request_id(env, argv[0], "replyWrite", &id) ||
      !read_number_value(env, argv[1], "replyWrite", "count", 0, session->max_io_size, true, &count)) {
    return NULL;
  }

  fuse_req_t request;
  int claimed = claim(env, session, "replyWrite", id, BM_OP_BIT(BM_OP_WRITE), 0, &request);
  if (claimed == 1) (void)fuse_reply_write(request, (size_t)count);
  return claimed_result(env, claimed);
}

static napi_value js_reply_statfs(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  double id, block_size, fragment_size, blocks, blocks_free, blocks_available, files, files_free, files_available,
      name_max;
  bm_session *session = bm_unwrap_session(env, info, &argc, argv);
  if (session == NULL) return NULL;
  if (argc < 2) return throw_type(env, "replyStatfs", "arguments", "(id, statfs)"), NULL;
  const char *m = "replyStatfs";
  if (!read_request_id(env, argv[0], m, &id) || !require_object(env, argv[1], m, "statfs") ||
      !read_number_property(env, argv[1], m, "blockSize", 0, 4294967295.0, true, &block_size) ||
      !read_number_property(env, argv[1], m, "fragmentSize", 0, 4294967295.0, true, &fragment_size) ||
      !read_number_property(env, argv[1], m, "blocks", 0, MAX_SAFE_INTEGER, true, &blocks) ||
      !read_number_property(env, argv[1], m, "blocksFree", 0, MAX_SAFE_INTEGER, true, &blocks_free) ||
      !read_number_property(env, argv[1], m, "blocksAvailable", 0, MAX_SAFE_INTEGER, true, &blocks_available) ||
      !read_number_property(env, argv[1], m, "files", 0, MAX_SAFE_INTEGER, true, &files) ||
      !read_number_property(env, argv[1], m, "filesFree", 0, MAX_SAFE_INTEGER, true, &files_free) ||
      !read_number_property(env, argv[1], m, "filesAvailable", 0, MAX_SAFE_INTEGER, true, &files_available) ||
      !read_number_property(env, argv[1], m, "nameMax", 0, 4294967295.0, true, &name_max)) {
    return NULL;
  }

  struct statvfs statistics;
  memset(&statistics, 0, sizeof(statistics));
  statistics.f_bsize = (unsigned long)block_size;
  statistics.f_frsize = (unsigned long)fragment_size;
  statistics.f_blocks = (fsblkcnt_t)blocks;
  statistics.f_bfree = (fsblkcnt_t)blocks_free;
  statistics.f_bavail = (fsblkcnt_t)blocks_available;
  statistics.f_files = (fsfilcnt_t)files;
  statistics.f_ffree = (fsfilcnt_t)files_free;
  statistics.f_favail = (fsfilcnt_t)files_available;
  statistics.f_namemax = (unsigned long)name_max;

  fuse_req_t request;
  int claimed = claim(env, session, m, id, BM_OP_BIT(BM_OP_STATFS), 0, &request);
  if (claimed == 1) (void)fuse_reply_statfs(request, &statistics);
  return claimed_result(env, claimed);
}

/* replyNone(id): the end of a forget or forgetMulti request, which the kernel does not wait for. */
static napi_value js_reply_none(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double id;
  bm_session *session = bm_unwrap_session(env, info, &argc, argv);
  if (session == NULL) return NULL;
  if (argc < 1) return throw_type(env, "replyNone", "arguments", "(id)"), NULL;
  if (!read_request_id(env, argv[0], "replyNone", &id)) return NULL;

  fuse_req_t request;
  int claimed = claim(env, session, "replyNone", id, FORGET_OPERATIONS, 0, &request);
  if (claimed == 1) fuse_reply_none(request);
  return claimed_result(env, claimed);
}

/*
 * Reads one `DirectoryEntry` and appends it to `buffer` at `used`. Returns
 * the entry's length, 0 when it does not fit, or -1 after throwing.
 */
static ssize_t append_directory_entry(napi_env env, napi_value item, bool plus, char *buffer, size_t size,
                                      size_t used) {
  const char *m = "replyDirectory";
  char name[MAX_NAME_BYTES + 2];
  size_t name_length = 0;
  napi_value value;
  napi_valuetype type;
  double ino, mode, next_offset;

  if (!require_object(env, item, m, "each entry")) return -1;
  if (napi_get_named_property(env, item, "name", &value) != napi_ok || napi_typeof(env, value, &type) != napi_ok ||
      type != napi_string || napi_get_value_string_utf8(env, value, name, sizeof(name), &name_length) != napi_ok) {
    throw_type(env, m, "entry.name", "a string");
    return -1;
  }
  if (name_length == 0 || name_length > MAX_NAME_BYTES || memchr(name, '/', name_length) != NULL ||
      strlen(name) != name_length) {
    throw_type(env, m, "entry.name", "1 to 255 bytes of UTF-8 without '/' or NUL");
    return -1;
  }
  if (!read_number_property(env, item, m, "ino", 0, MAX_SAFE_INTEGER, true, &ino) ||
      !read_number_property(env, item, m, "mode", 0, 4294967295.0, true, &mode) ||
      !read_number_property(env, item, m, "nextOffset", 1, MAX_SAFE_INTEGER, true, &next_offset)) {
    return -1;
  }

  size_t remaining = size - used;
  size_t length;
  if (plus) {
    struct fuse_entry_param entry;
    memset(&entry, 0, sizeof(entry));
    if (napi_get_named_property(env, item, "entry", &value) != napi_ok || napi_typeof(env, value, &type) != napi_ok) {
      throw_type(env, m, "entry.entry", "readable");
      return -1;
    }
    if (type == napi_undefined) {
      /* No attributes: with ino 0 the kernel lists the name without creating an inode or counting a lookup. */
      entry.attr.st_ino = (ino_t)ino;
      entry.attr.st_mode = (mode_t)mode;
    } else if (!read_entry(env, value, m, &entry)) {
      return -1;
    }
    length = fuse_add_direntry_plus(NULL, buffer + used, remaining, name, &entry, (off_t)next_offset);
  } else {
    struct stat attributes;
    memset(&attributes, 0, sizeof(attributes));
    attributes.st_ino = (ino_t)ino;
    attributes.st_mode = (mode_t)mode;
    length = fuse_add_direntry(NULL, buffer + used, remaining, name, &attributes, (off_t)next_offset);
  }

  /* fuse_add_direntry* return the length the entry needs and write nothing when it does not fit. */
  return length > remaining ? 0 : (ssize_t)length;
}

/*
 * replyDirectory(id, size, entries, plus) -> number | false
 *
 * Packs entries in order into a buffer of `size` bytes until the next one
 * does not fit, sends the buffer, and returns how many entries the kernel
 * received. With plus, each of them except "." and ".." (and entries without
 * attributes) now counts one kernel lookup. Returns false for a late reply.
 * fuse_add_direntry and fuse_add_direntry_plus ignore their request
 * argument in libfuse 3, which lets the buffer be built before the claim.
 */
static napi_value js_reply_directory(napi_env env, napi_callback_info info) {
  const char *m = "replyDirectory";
  size_t argc = 4;
  napi_value argv[4];
  double id, size;
  bool plus = false;
  bool is_array = false;
  uint32_t entry_count = 0;
  bm_session *session = bm_unwrap_session(env, info, &argc, argv);
  if (session == NULL) return NULL;
  if (argc < 4) return throw_type(env, m, "arguments", "(id, size, entries, plus)"), NULL;
  if (!read_request_id(env, argv[0], m, &id) ||
      !read_number_value(env, argv[1], m, "size", 1, MAX_DIRECTORY_REPLY, true, &size)) {
    return NULL;
  }
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[2], &entry_count) != napi_ok) {
    throw_type(env, m, "entries", "an array");
    return NULL;
  }
  if (napi_get_value_bool(env, argv[3], &plus) != napi_ok) {
    throw_type(env, m, "plus", "a boolean");
    return NULL;
  }

  char *buffer = malloc((size_t)size);
  if (buffer == NULL) {
    napi_throw_error(env, "ERR_OUT_OF_MEMORY", "replyDirectory: out of memory");
    return NULL;
  }

  size_t used = 0;
  uint32_t added = 0;
  for (; added < entry_count; added++) {
    napi_value item;
    if (napi_get_element(env, argv[2], added, &item) != napi_ok) {
      free(buffer);
      throw_type(env, m, "entries", "readable");
      return NULL;
    }
    ssize_t length = append_directory_entry(env, item, plus, buffer, (size_t)size, used);
    if (length < 0) {
      free(buffer);
      return NULL;
    }
    if (length == 0) break;
    used += (size_t)length;
  }

  if (added == 0 && entry_count > 0) {
    free(buffer);
    throw_type(env, m, "size", "large enough for the first entry");
    return NULL;
  }

  uint32_t allowed = BM_OP_BIT(plus ? BM_OP_READDIRPLUS : BM_OP_READDIR);
  fuse_req_t request;
  int claimed = claim(env, session, m, id, allowed, used, &request);
  if (claimed == 1) (void)fuse_reply_buf(request, buffer, used);
  free(buffer);

  napi_value result;
  if (claimed < 0) return NULL;
  if (claimed == 0) {
    if (napi_get_boolean(env, false, &result) != napi_ok) return NULL;
    return result;
  }
  if (napi_create_uint32(env, added, &result) != napi_ok) return NULL;
  return result;
}

napi_status bm_define_reply_methods(napi_env env, napi_property_descriptor *properties, size_t *count) {
  static const struct {
    const char *name;
    napi_callback method;
  } methods[] = {
    {"replyError", js_reply_error},   {"replyEntry", js_reply_entry},         {"replyCreate", js_reply_create},
    {"replyAttr", js_reply_attr},     {"replyOpen", js_reply_open},           {"replyBuffer", js_reply_buffer},
    {"replyWrite", js_reply_write},   {"replyStatfs", js_reply_statfs},       {"replyNone", js_reply_none},
    {"replyDirectory", js_reply_directory},
  };

  for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
    properties[*count] =
        (napi_property_descriptor){methods[i].name, NULL, methods[i].method, NULL, NULL, NULL, napi_default, NULL};
    (*count)++;
  }
  return napi_ok;
}
