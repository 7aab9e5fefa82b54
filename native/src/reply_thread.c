/*
 * The reply thread of a session: it writes large read replies to /dev/fuse
 * so that the main thread does not.
 *
 * replyBuffer claims the request on the main thread as before. A reply of at
 * least BM_QUEUED_REPLY_MIN_BYTES then becomes a job: the main thread takes
 * a strong reference to each piece of the JavaScript data, which keeps its
 * memory alive, and queues the job. The reply thread sends the pieces from
 * that memory with one writev, the only copy of the data, and hands the job
 * back, because only the main thread may delete references. A reply
 * of more than BM_MAX_REFERENCED_PIECES pieces is copied into the job
 * instead. libfuse's reply functions may run on any thread:
 * fuse_session_loop_mt calls them from all its workers, and they take the
 * session lock only to unlink the request.
 *
 * Copying on the main thread instead costs it more than the write it saves.
 * Measured with dd reading 1 GiB through a MemoryFilesystem mount on a
 * 2-core machine, the main thread used 0.36 s of CPU when it wrote the
 * replies itself. It used 0.48 s when it copied them into malloc'd jobs for
 * this thread, and 0.07 s when this thread wrote them from the referenced
 * buffers.
 *
 * Smaller replies are sent at once: their write takes a few microseconds,
 * and waking the reply thread would add latency to small random reads. A
 * reply is also sent at once when its job cannot be allocated or the thread
 * is stopping, so that no claimed request is lost.
 *
 * The main thread deletes the references of sent jobs when it queues the
 * next job, when the reply thread posts BM_MESSAGE_REPLIES_SENT after it has
 * emptied the queue, and at stop. The queue contains at most one job per read
 * request the kernel has in flight (max_background asynchronous reads plus
 * the synchronous ones), each of at most max_read bytes.
 *
 * Teardown calls bm_reply_thread_stop before fuse_session_destroy: the
 * thread sends every queued reply, then exits, and is joined. Writes to a
 * connection that the kernel already ended fail with ENOENT or ENODEV and
 * are dropped, as for replies sent from the main thread.
 */

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "bucketmount.h"

/*
 * Small random reads (a 4 KiB database page) stay on the main thread, while
 * sequential reads, which the kernel sends as requests of 128 KiB to 1 MiB,
 * are queued. NOTE: chosen without measuring other sizes between 4 KiB and
 * 128 KiB.
 */
#define BM_QUEUED_REPLY_MIN_BYTES (64u * 1024u)

/* Fewer than IOV_MAX - 1, so that libfuse can add its header and write the pieces with one writev. */
#define BM_MAX_REFERENCED_PIECES 64u

/* The references of a referenced job, stored after its pieces. */
static napi_ref *job_references(bm_reply_job *job) {
  return (napi_ref *)(job->pieces + job->count);
}

/* Sends the jobs of a list taken off the queue, in order, and returns the referenced ones for the main thread to free. */
static bm_reply_job *send_jobs(bm_reply_job *job) {
  bm_reply_job *sent = NULL;
  bm_reply_job **sent_tail = &sent;

  while (job != NULL) {
    bm_reply_job *next = job->next;

    /* A failed reply means the kernel already dropped the request (interrupted or unmounted). */
    if (job->count == 1) {
      (void)fuse_reply_buf(job->request, job->pieces[0].iov_base, job->pieces[0].iov_len);
    } else {
      (void)fuse_reply_iov(job->request, job->pieces, (int)job->count);
    }

    if (job->referenced) {
      job->next = NULL;
      *sent_tail = job;
      sent_tail = &job->next;
    } else {
      free(job);
    }
    job = next;
  }
  return sent;
}

/* Reply thread. Posts BM_MESSAGE_REPLIES_SENT, so that the main thread deletes the references of sent jobs. */
static void post_replies_sent(bm_session *session) {
  bm_message *message = bm_message_new(BM_MESSAGE_REPLIES_SENT);
  bool posted = false;
  if (message != NULL) {
    pthread_mutex_lock(&session->lock);
    posted = bm_post_locked(session, message);
    pthread_mutex_unlock(&session->lock);
  }
  if (posted) return;

  /* The session is closing or out of memory: the next job or the stop frees the sent jobs. */
  bm_message_free(message);
  pthread_mutex_lock(&session->reply_lock);
  session->reply_release_posted = false;
  pthread_mutex_unlock(&session->reply_lock);
}

static void *reply_main(void *argument) {
  bm_session *session = argument;

  pthread_mutex_lock(&session->reply_lock);
  for (;;) {
    bm_reply_job *jobs = session->reply_head;
    if (jobs == NULL) {
      /* The queue is empty, so after a stop request nothing is left to send. */
      if (!session->reply_accepting) break;
      pthread_cond_wait(&session->reply_wakeup, &session->reply_lock);
      continue;
    }

    /* Takes the whole queue, so the main thread can queue more while these are written. */
    session->reply_head = NULL;
    session->reply_tail = NULL;
    pthread_mutex_unlock(&session->reply_lock);
    bm_reply_job *sent = send_jobs(jobs);
    pthread_mutex_lock(&session->reply_lock);

    while (sent != NULL) {
      bm_reply_job *next = sent->next;
      sent->next = session->reply_sent;
      session->reply_sent = sent;
      sent = next;
    }

    /*
     * Once the queue is empty, one message requests the main thread to free
     * the sent jobs, and no other is posted until it has. The post takes
     * `lock`, so reply_lock is released first.
     */
    bool post = session->reply_head == NULL && session->reply_sent != NULL && !session->reply_release_posted &&
                session->reply_accepting;
    if (post) {
      session->reply_release_posted = true;
      pthread_mutex_unlock(&session->reply_lock);
      post_replies_sent(session);
      pthread_mutex_lock(&session->reply_lock);
    }
  }
  pthread_mutex_unlock(&session->reply_lock);
  return NULL;
}

/* Main thread. Deletes the references of sent jobs and frees them. */
void bm_release_sent_replies(bm_session *session) {
  pthread_mutex_lock(&session->reply_lock);
  bm_reply_job *job = session->reply_sent;
  session->reply_sent = NULL;
  session->reply_release_posted = false;
  pthread_mutex_unlock(&session->reply_lock);

  while (job != NULL) {
    bm_reply_job *next = job->next;
    napi_ref *references = job_references(job);
    for (size_t i = 0; i < job->count; i++) (void)napi_delete_reference(session->env, references[i]);
    free(job);
    job = next;
  }
}

/* Main thread. Returns 0 or the error of pthread_create. */
int bm_reply_thread_start(bm_session *session) {
  pthread_mutex_lock(&session->reply_lock);
  session->reply_accepting = true;
  pthread_mutex_unlock(&session->reply_lock);

  int error = bm_start_thread(&session->reply_thread, reply_main, session);
  if (error != 0) {
    pthread_mutex_lock(&session->reply_lock);
    session->reply_accepting = false;
    pthread_mutex_unlock(&session->reply_lock);
    return error;
  }
  session->reply_thread_started = true;
  return 0;
}

/*
 * Main thread. Sends what is queued, stops the thread, joins it and frees
 * the sent jobs; later replies are sent at once. Does nothing when the
 * thread is not running.
 */
void bm_reply_thread_stop(bm_session *session) {
  if (!session->reply_thread_started) return;

  pthread_mutex_lock(&session->reply_lock);
  session->reply_accepting = false;
  pthread_cond_signal(&session->reply_wakeup);
  pthread_mutex_unlock(&session->reply_lock);

  pthread_join(session->reply_thread, NULL);
  session->reply_thread_started = false;
  bm_release_sent_replies(session);
}

/* Returns a job that refers to the JavaScript memory of the pieces, or NULL when that is not possible. */
static bm_reply_job *new_referenced_job(bm_session *session, fuse_req_t request, const struct iovec *pieces,
                                        const napi_value *values, size_t count) {
  if (values == NULL || count == 0 || count > BM_MAX_REFERENCED_PIECES) return NULL;

  bm_reply_job *job = malloc(sizeof(bm_reply_job) + count * (sizeof(struct iovec) + sizeof(napi_ref)));
  if (job == NULL) return NULL;
  job->next = NULL;
  job->request = request;
  job->count = count;
  job->referenced = true;
  memcpy(job->pieces, pieces, count * sizeof(struct iovec));

  napi_ref *references = job_references(job);
  for (size_t i = 0; i < count; i++) {
    if (napi_create_reference(session->env, values[i], 1, &references[i]) != napi_ok) {
      while (i > 0) (void)napi_delete_reference(session->env, references[--i]);
      free(job);
      return NULL;
    }
  }
  return job;
}

/* Returns a job with a copy of the pieces joined into one, or NULL when out of memory. */
static bm_reply_job *new_copied_job(fuse_req_t request, const struct iovec *pieces, size_t count, size_t length) {
  bm_reply_job *job = malloc(sizeof(bm_reply_job) + sizeof(struct iovec) + length);
  if (job == NULL) return NULL;
  job->next = NULL;
  job->request = request;
  job->count = 1;
  job->referenced = false;

  char *data = (char *)(job->pieces + 1);
  size_t used = 0;
  for (size_t i = 0; i < count; i++) {
    memcpy(data + used, pieces[i].iov_base, pieces[i].iov_len);
    used += pieces[i].iov_len;
  }
  job->pieces[0] = (struct iovec){.iov_base = data, .iov_len = length};
  return job;
}

/* Deletes the references a job took; main thread. */
static void discard_job(bm_session *session, bm_reply_job *job) {
  if (job->referenced) {
    napi_ref *references = job_references(job);
    for (size_t i = 0; i < job->count; i++) (void)napi_delete_reference(session->env, references[i]);
  }
  free(job);
}

/* Queues the reply; returns false, with the request still unanswered, when that is not possible. */
static bool queue_reply(bm_session *session, fuse_req_t request, const struct iovec *pieces, const napi_value *values,
                        size_t count, size_t length) {
  bm_reply_job *job = new_referenced_job(session, request, pieces, values, count);
  if (job == NULL) job = new_copied_job(request, pieces, count, length);
  if (job == NULL) return false;

  pthread_mutex_lock(&session->reply_lock);
  if (!session->reply_accepting) {
    pthread_mutex_unlock(&session->reply_lock);
    discard_job(session, job);
    return false;
  }
  if (session->reply_tail != NULL) {
    session->reply_tail->next = job;
  } else {
    session->reply_head = job;
    pthread_cond_signal(&session->reply_wakeup);
  }
  session->reply_tail = job;
  pthread_mutex_unlock(&session->reply_lock);
  return true;
}

/* Sends the reply on the calling thread, straight from the pieces when libfuse can take them as they are. */
static void send_now(fuse_req_t request, const struct iovec *pieces, size_t count, size_t length) {
  if (count == 0 || length == 0) {
    (void)fuse_reply_buf(request, NULL, 0);
    return;
  }
  if (count == 1) {
    (void)fuse_reply_buf(request, pieces[0].iov_base, pieces[0].iov_len);
    return;
  }

  /* fuse_reply_iov adds one vector for the reply header, and writev takes at most IOV_MAX. */
  if (count < IOV_MAX) {
    (void)fuse_reply_iov(request, pieces, (int)count);
    return;
  }

  char *joined = malloc(length);
  if (joined == NULL) {
    (void)fuse_reply_err(request, ENOMEM);
    return;
  }
  size_t used = 0;
  for (size_t i = 0; i < count; i++) {
    memcpy(joined + used, pieces[i].iov_base, pieces[i].iov_len);
    used += pieces[i].iov_len;
  }
  (void)fuse_reply_buf(request, joined, length);
  free(joined);
}

/*
 * Main thread. Answers a claimed read request with the concatenation of
 * `pieces` (`length` bytes in all), through the reply thread when the reply
 * is large. `values` are the JavaScript objects that own the pieces, or
 * NULL; a queued reply keeps them alive until it is sent, and the caller
 * must not change their bytes until then.
 */
void bm_send_read_reply(bm_session *session, fuse_req_t request, const struct iovec *pieces, const napi_value *values,
                        size_t count, size_t length) {
  if (length >= BM_QUEUED_REPLY_MIN_BYTES) {
    bm_release_sent_replies(session);
    if (queue_reply(session, request, pieces, values, count, length)) return;
  }
  send_now(request, pieces, count, length);
}
