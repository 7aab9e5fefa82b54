/**
 * The write path of one file: the content written through every open handle
 * of one inode, until it is uploaded.
 *
 * Modes:
 * - clean: nothing is staged locally. The content is the `base` object (or
 *   empty when there is none, after O_TRUNC or create).
 * - streaming: writes arrive in order from offset 0 and are cut into parts of
 *   `partSizeFor(n)` bytes, uploaded in parallel as one multipart upload
 *   (`MultipartUpload` applies the backpressure). Part 1 is kept in memory and
 *   uploaded last, at completion, because programs often go back to patch a
 *   header at the start of the file (WAV headers, the local header of a ZIP
 *   file's first member, HDF5 superblocks). Writes into part 1 or into the
 *   part being filled patch memory. A file that stays within one part is a
 *   single PUT.
 * - spill: the content lives in a local spill file and is uploaded whole on
 *   flush or fsync. A writer enters this mode on any write it cannot stream:
 *   a write behind the uploaded parts, an append to or overwrite of an
 *   existing object, a shrinking truncate, or the first write of a handle
 *   opened for reading too (O_RDWR), whose program may read back what it
 *   wrote. The spill file is filled from the base object when entering the
 *   mode, which is what "lazily" means here: opening without O_TRUNC costs no
 *   download until the first write.
 *
 * Nothing is visible in the bucket before an upload completes, with one
 * exception: a streaming writer that must go back behind parts it already
 * sent completes the upload with what it has, then continues in spill mode
 * from that object, because the bytes of the sent parts exist nowhere else.
 *
 * Reads through any handle of the inode see the bytes written so far: from
 * the spill file, or from memory in streaming mode. Bytes of streamed parts
 * that already left memory cannot be read back (EIO).
 *
 * Concurrency: the public methods run one at a time in call order through
 * `exclusive`, so the mode, the size and the buffers never change across the
 * awaits of another call. Part uploads complete concurrently inside
 * `MultipartUpload`.
 */

import type { Logger } from 'pino';

import type { ObjectInfo, ObjectStore } from '../store/types.js';
import { Errno, FilesystemError } from '../fs/errno.js';
import { StoreError } from '../store/errors.js';
import { getWithRetry } from '../read/get-retry.js';
import type { MemoryBudget } from './memory-budget.js';
import { MultipartUpload } from './multipart.js';
import type { BufferPool } from '../cache/buffer-pool.js';
import type { PendingAborts } from './pending-aborts.js';
import { partSizeFor, type PartSizePlan } from './part-size.js';
import { SpillFile } from './spill-file.js';

export interface FileWriterSettings {
  plan: PartSizePlan;
  uploadConcurrency: number;
  /** Bytes per ranged GET when a spill file is filled from the base object. */
  downloadChunkSize: number;
  spillDirectory: string;
}

export interface FileWriterOptions {
  store: ObjectStore;
  key: string;
  logger: Logger;
  budget: MemoryBudget;
  settings: FileWriterSettings;
  /** The object at the key when the writer was created, if any. */
  base: ObjectInfo | undefined;
  /** Start empty (O_TRUNC or a new file); the empty object is written at flush even without writes. */
  truncate: boolean;
  /** Aborted at shutdown. */
  signal: AbortSignal;
  now: () => number;
  /** Retries aborts of failed multipart uploads that could not be aborted at once. */
  pendingAborts?: PendingAborts;
  /** Buffers for parts, shared by the writers of a mount. */
  partBuffers: BufferPool;
}

export interface FlushOptions {
  /**
   * Called whenever the upload moves on: a part or a block of the base object
   * is transferred, and every second while the completion request runs. The
   * FUSE adapter renews the request's deadline with it.
   */
  onProgress?: () => void;
}

export interface WriteOptions {
  /** O_APPEND: write at the end whatever the offset. */
  append?: boolean;
  /** The handle was opened O_RDWR, so its program may read back. */
  readable?: boolean;
}

interface CleanState {
  kind: 'clean';
}

interface StreamingState {
  kind: 'streaming';
  /** Part 1, once full; uploaded at completion. */
  heldFirstPart: Buffer | undefined;
  /** Number of the part being filled in `part`. */
  partNumber: number;
  /** Buffer of the part being filled, as large as the part; its first `bufferedLength` bytes are content. */
  part: Buffer | undefined;
  bufferedLength: number;
  /** File offset of the first byte in `part`. */
  bufferStart: number;
  /** Created when part 2 is cut; a file of at most two parts without it is one PUT. */
  upload: MultipartUpload | undefined;
}

interface SpillState {
  kind: 'spill';
  file: SpillFile;
}

type WriterState = CleanState | StreamingState | SpillState;

export class FileWriter {
  key: string;
  /** Size of the content written so far. */
  size: number;
  /** Whether the content differs from the object in the bucket. */
  dirty: boolean;
  /** The object the content started from, or the last one this writer uploaded. */
  base: ObjectInfo | undefined;
  /** Set by unlink: the content has no name any more and is never uploaded. */
  unlinked = false;
  /** Clock time of the last change, for mtime. */
  modifiedAtMs: number;

  private readonly options: FileWriterOptions;
  private state: WriterState = { kind: 'clean' };
  /** Failure of a streaming upload, whose data is gone; later writes and flushes fail with EIO. */
  private failure: FilesystemError | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  /** The `onProgress` of the flush that is running, if any. */
  private progressListener: (() => void) | undefined;
  /** Whether a write or truncate happened since the writer was created. */
  private changed = false;

  constructor(options: FileWriterOptions) {
    this.options = options;
    this.key = options.key;
    this.modifiedAtMs = options.now();

    if (options.truncate) {
      this.base = undefined;
      this.size = 0;
      this.dirty = true;
    } else {
      this.base = options.base;
      this.size = options.base?.size ?? 0;
      this.dirty = options.base === undefined;
    }
  }

  /**
   * Whether the only change is the empty content of a create or O_TRUNC,
   * with no write or truncate since. The filesystem leaves such a file to
   * the final release: `dd` and shells flush a descriptor they dup and close
   * before writing, and an upload then would show an empty object in the
   * bucket (or truncate an existing one) while the real content is written.
   */
  get onlyEmptied(): boolean {
    return this.dirty && !this.changed;
  }

  /** Current mode, for tests and logs. */
  get mode(): WriterState['kind'] {
    return this.state.kind;
  }

  /** Whether reads must come from this writer instead of the base object. */
  get hasLocalContent(): boolean {
    return this.state.kind !== 'clean' || this.base === undefined;
  }

  write(offset: number, data: Buffer, options: WriteOptions = {}): Promise<number> {
    return this.exclusive(async () => {
      this.throwIfFailed();
      const at = options.append === true ? this.size : offset;
      await this.writeAt(at, data, options.readable === true);
      this.dirty = true;
      this.changed = true;
      this.modifiedAtMs = this.options.now();
      return data.length;
    });
  }

  /** Returns bytes written so far, or undefined when the content is the base object unchanged. */
  read(offset: number, length: number): Promise<Buffer | undefined> {
    return this.exclusive(async () => {
      const state = this.state;
      if (state.kind === 'spill') return state.file.read(offset, length);
      if (state.kind === 'streaming') return this.readStreaming(state, offset, length);
      if (this.base !== undefined) return undefined;
      return Buffer.alloc(0);
    });
  }

  truncate(size: number): Promise<void> {
    return this.exclusive(async () => {
      this.throwIfFailed();
      // Truncating an unchanged object to its own size changes nothing. Marking
      // it dirty here would upload the clean state, which stands for an empty file.
      if (this.state.kind === 'clean' && !this.dirty && size === this.size) {
        this.modifiedAtMs = this.options.now();
        return;
      }
      await this.truncateTo(size);
      this.dirty = true;
      this.changed = true;
      this.modifiedAtMs = this.options.now();
    });
  }

  /**
   * Uploads the content if it changed. Returns the new object, or undefined
   * when nothing was uploaded. Rejects with EIO naming the key when the upload
   * failed; a failed multipart upload has been aborted by then.
   */
  flush(options: FlushOptions = {}): Promise<ObjectInfo | undefined> {
    return this.exclusive(async () => {
      this.throwIfFailed();
      if (!this.dirty) return undefined;

      if (this.unlinked) {
        await this.dropStaged();
        this.dirty = false;
        return undefined;
      }

      this.progressListener = options.onProgress;
      try {
        const info = await this.upload();
        this.base = info;
        this.size = info.size;
        this.dirty = false;
        return info;
      } finally {
        this.progressListener = undefined;
      }
    });
  }

  /** Points later uploads at another key (after a rename); the caller flushes first. */
  retarget(key: string): void {
    this.key = key;
  }

  /** Drops staged content without uploading: aborts a multipart upload and closes the spill file. */
  discard(): Promise<void> {
    return this.exclusive(async () => {
      await this.dropStaged();
      this.dirty = false;
      this.size = this.base?.size ?? 0;
    });
  }

  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task, task);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  // ---------------------------------------------------------------------------
  // Writes and truncation

  private async writeAt(offset: number, data: Buffer, readable: boolean): Promise<void> {
    if (this.state.kind === 'clean') {
      // Only an empty file can start streaming; anything else keeps existing bytes and needs the spill file.
      if (this.size === 0 && !readable) {
        this.state = this.newStreamingState();
      } else {
        await this.enterSpill();
      }
    }

    const state = this.state;
    if (state.kind === 'streaming') {
      if (await this.writeStreaming(state, offset, data)) return;
      await this.enterSpill();
    }

    const spill = this.state as SpillState;
    await spill.file.write(offset, data);
    this.size = spill.file.size;
  }

  /** Returns false when the write cannot be streamed and the writer must switch to spill mode. */
  private async writeStreaming(state: StreamingState, offset: number, data: Buffer): Promise<boolean> {
    const end = offset + data.length;

    // Past the end: the gap becomes zeros, which the object must contain anyway.
    if (offset >= this.size) {
      await this.appendZeros(state, offset - this.size);
      await this.appendStreaming(state, data);
      return true;
    }

    // Into the part being filled, possibly running past the end.
    if (offset >= state.bufferStart) {
      const current = this.partContent(state);
      const overlap = Math.min(end, this.size) - offset;
      data.copy(current, offset - state.bufferStart, 0, overlap);
      if (overlap < data.length) await this.appendStreaming(state, data.subarray(overlap));
      return true;
    }

    // Into part 1, which stays in memory until completion.
    if (state.heldFirstPart !== undefined && end <= state.heldFirstPart.length) {
      data.copy(state.heldFirstPart, offset);
      return true;
    }

    return false;
  }

  private async truncateTo(size: number): Promise<void> {
    let state = this.state;

    if (state.kind === 'clean') {
      if (size === this.size) return;
      if (size === 0) {
        this.base = undefined;
        this.size = 0;
        return;
      }
      if (this.size === 0) {
        state = this.newStreamingState();
        this.state = state;
      } else {
        if (size < this.size) this.size = size;
        await this.enterSpill();
        state = this.state;
      }
    }

    if (state.kind === 'streaming') {
      if (size >= this.size) {
        await this.appendZeros(state, size - this.size);
        return;
      }
      if (size >= state.bufferStart) {
        const kept = size - state.bufferStart;
        this.options.budget.release(state.bufferedLength - kept);
        state.bufferedLength = kept;
        this.size = size;
        return;
      }
      if (size === 0) {
        await this.dropStaged();
        this.base = undefined;
        this.size = 0;
        return;
      }
      await this.enterSpill();
      state = this.state;
    }

    if (state.kind === 'spill') {
      await state.file.truncate(size);
      this.size = size;
    }
  }

  // ---------------------------------------------------------------------------
  // Streaming

  private newStreamingState(): StreamingState {
    return { kind: 'streaming', heldFirstPart: undefined, partNumber: 1, part: undefined, bufferedLength: 0, bufferStart: 0, upload: undefined };
  }

  private partSize(partNumber: number): number {
    return partSizeFor(partNumber, this.options.settings.plan);
  }

  private async appendStreaming(state: StreamingState, data: Buffer): Promise<void> {
    let remaining = data;
    while (remaining.length > 0) {
      const partSize = this.partSize(state.partNumber);
      state.part ??= this.options.partBuffers.take(partSize);

      // A copy, because the caller may reuse its buffer once the write returns.
      const count = Math.min(partSize - state.bufferedLength, remaining.length);
      remaining.copy(state.part, state.bufferedLength, 0, count);
      remaining = remaining.subarray(count);

      state.bufferedLength += count;
      this.options.budget.reserve(count);
      this.size += count;

      if (state.bufferedLength === partSize) await this.cutPart(state);
    }
  }

  /** Hands the buffers back once their upload succeeded; nothing refers to them then. */
  private recycle(...buffers: (Buffer | undefined)[]): void {
    for (const buffer of buffers) if (buffer !== undefined) this.options.partBuffers.give(buffer);
  }

  private async appendZeros(state: StreamingState, count: number): Promise<void> {
    const piece = 1024 * 1024;
    for (let left = count; left > 0; left -= piece) {
      await this.appendStreaming(state, Buffer.alloc(Math.min(piece, left)));
    }
  }

  /** Moves the full part out of the buffer: part 1 into memory, later parts to the upload. */
  private async cutPart(state: StreamingState): Promise<void> {
    const body = this.partContent(state);
    const partNumber = state.partNumber;
    state.part = undefined;
    state.bufferStart += state.bufferedLength;
    state.bufferedLength = 0;
    state.partNumber += 1;

    if (partNumber === 1) {
      // Stays reserved in the budget while held.
      state.heldFirstPart = body;
      return;
    }

    this.options.budget.release(body.length);
    state.upload ??= this.newMultipartUpload();
    try {
      await state.upload.addPart(partNumber, body, () => this.recycle(body));
    } catch (error) {
      throw await this.failStreaming(state, error);
    }
  }

  /** Returns the content of the part being filled, a view of its buffer. */
  private partContent(state: StreamingState): Buffer {
    return state.part === undefined ? Buffer.alloc(0) : state.part.subarray(0, state.bufferedLength);
  }

  private readStreaming(state: StreamingState, offset: number, length: number): Buffer {
    const end = Math.min(offset + length, this.size);
    const pieces: Buffer[] = [];
    const held = state.heldFirstPart;
    let position = offset;

    while (position < end) {
      if (held !== undefined && position < held.length) {
        const stop = Math.min(end, held.length);
        pieces.push(held.subarray(position, stop));
        position = stop;
      } else if (position >= state.bufferStart) {
        const current = this.partContent(state);
        pieces.push(current.subarray(position - state.bufferStart, end - state.bufferStart));
        position = end;
      } else {
        throw new FilesystemError(
          Errno.EIO,
          `cannot read bytes ${position}-${end} of ${this.key} in bucket ${this.options.store.bucket} while it is being written: they were already sent as parts of a multipart upload; read the file after close`,
        );
      }
    }
    // A copy: the part buffers are reused once uploaded, while a read reply may still refer to its data.
    return Buffer.concat(pieces);
  }

  /** Sends part 1 and the last part and completes; a file that never needed parts is one PUT. */
  private async finishStreaming(state: StreamingState): Promise<ObjectInfo> {
    const { store } = this.options;
    const held = state.heldFirstPart;
    const current = this.partContent(state);

    try {
      if (state.upload === undefined) {
        const body = held === undefined ? current : Buffer.concat([held, current]);
        const info = await store.put(this.key, body, { signal: this.options.signal });
        // The caller drops the state next, and this writer reads nothing in between.
        this.recycle(held, state.part);
        return info;
      }

      const upload = state.upload;
      await upload.addPart(1, held!, () => this.recycle(held));
      const last = state.part;
      if (current.length > 0) await upload.addPart(state.partNumber, current, () => this.recycle(last));
      return await upload.complete();
    } catch (error) {
      throw await this.failStreaming(state, error);
    }
  }

  /** Aborts the upload, frees the buffers and makes the failure sticky: the streamed bytes are gone. */
  private async failStreaming(state: StreamingState, error: unknown): Promise<FilesystemError> {
    await state.upload?.abort();
    this.releaseStreamingMemory(state);
    this.state = { kind: 'clean' };

    const { store, logger } = this.options;
    this.failure = new FilesystemError(
      uploadFailureErrno(error),
      `upload of ${this.key} to bucket ${store.bucket} failed and was aborted: ${messageOf(error)}; the data written to this open file is lost, write the file again`,
      { cause: error },
    );
    logger.error({ bucket: store.bucket, key: this.key, err: error }, 'streaming upload failed and was aborted');
    return this.failure;
  }

  private releaseStreamingMemory(state: StreamingState): void {
    this.options.budget.release(state.bufferedLength + (state.heldFirstPart?.length ?? 0));
    state.part = undefined;
    state.bufferedLength = 0;
    state.heldFirstPart = undefined;
  }

  private newMultipartUpload(): MultipartUpload {
    const { store, logger, budget, settings, signal, pendingAborts } = this.options;
    return new MultipartUpload({
      store,
      key: this.key,
      logger,
      budget,
      signal,
      pendingAborts,
      maxConcurrentParts: settings.uploadConcurrency,
      maxInFlightBytes: settings.uploadConcurrency * settings.plan.initialPartSize,
      onProgress: () => this.progressListener?.(),
    });
  }

  // ---------------------------------------------------------------------------
  // Spill

  /** Switches to spill mode, copying the current content into a new spill file. */
  private async enterSpill(): Promise<void> {
    const state = this.state;
    if (state.kind === 'spill') return;

    const { spillDirectory } = this.options.settings;
    const { store, logger } = this.options;

    if (state.kind === 'streaming' && state.upload === undefined) {
      // Everything is still in memory: move it to disk.
      const file = await SpillFile.create(spillDirectory);
      try {
        if (state.heldFirstPart !== undefined) await file.write(0, state.heldFirstPart);
        await file.write(state.bufferStart, this.partContent(state));
      } catch (error) {
        await file.close();
        throw error;
      }
      this.releaseStreamingMemory(state);
      this.state = { kind: 'spill', file };
      return;
    }

    if (state.kind === 'streaming') {
      // Parts already left memory, so the only copy of them is the upload: complete it and start over from that object.
      logger.info(
        { bucket: store.bucket, key: this.key, size: this.size },
        'non-sequential write behind uploaded parts: completing the streaming upload early and continuing in a spill file',
      );
      this.base = await this.finishStreaming(state);
      this.releaseStreamingMemory(state);
      this.state = { kind: 'clean' };
    }

    const file = await SpillFile.create(spillDirectory);
    try {
      await this.downloadBase(file);
    } catch (error) {
      await file.close();
      throw error;
    }
    this.state = { kind: 'spill', file };
  }

  /** Fills a spill file with the first `size` bytes of the base object, pinned to its version. */
  private async downloadBase(file: SpillFile): Promise<void> {
    const base = this.base;
    if (base === undefined || this.size === 0) return;

    // A shrinking truncate has already lowered `size`: only the prefix that stays is needed.
    const length = Math.min(base.size, this.size);
    const { store, settings, signal } = this.options;
    for (let start = 0; start < length; start += settings.downloadChunkSize) {
      const end = Math.min(length, start + settings.downloadChunkSize);
      const { body } = await getWithRetry(store, base.key, { range: { start, end }, ifVersion: base.version, signal }, { logger: this.options.logger });
      await file.write(start, body);
      this.progressListener?.();
    }
    if (file.size !== this.size) await file.truncate(this.size);
  }

  private async uploadSpill(file: SpillFile): Promise<ObjectInfo> {
    const { store, signal } = this.options;
    const total = file.size;

    if (total <= this.partSize(1)) {
      return store.put(this.key, await file.read(0, total), { signal });
    }

    const upload = this.newMultipartUpload();
    try {
      let partNumber = 1;
      for (let offset = 0; offset < total; partNumber += 1) {
        const body = await file.read(offset, Math.min(this.partSize(partNumber), total - offset));
        await upload.addPart(partNumber, body);
        offset += body.length;
      }
      return await upload.complete();
    } catch (error) {
      await upload.abort();
      throw error;
    }
  }

  // ---------------------------------------------------------------------------
  // Upload and cleanup

  private async upload(): Promise<ObjectInfo> {
    const state = this.state;
    const { store, logger } = this.options;

    if (state.kind === 'streaming') {
      const info = await this.finishStreaming(state);
      this.releaseStreamingMemory(state);
      this.state = { kind: 'clean' };
      return info;
    }

    try {
      if (state.kind === 'spill') return await this.uploadSpill(state.file);
      // Clean and dirty: an empty file after create or O_TRUNC.
      return await store.put(this.key, Buffer.alloc(0), { signal: this.options.signal });
    } catch (error) {
      logger.error({ bucket: store.bucket, key: this.key, size: this.size, err: error }, 'upload failed; the content stays staged for the next flush');
      throw new FilesystemError(
        uploadFailureErrno(error),
        `upload of ${this.key} (${this.size} bytes) to bucket ${store.bucket} failed: ${messageOf(error)}; the data is kept and the next flush or fsync retries`,
        { cause: error },
      );
    }
  }

  private async dropStaged(): Promise<void> {
    const state = this.state;
    this.state = { kind: 'clean' };
    if (state.kind === 'streaming') {
      await state.upload?.abort();
      this.releaseStreamingMemory(state);
    } else if (state.kind === 'spill') {
      await state.file.close();
    }
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The errno a failed upload reports to the writer. A refusal (access denied,
 * credentials rejected) and a full local disk keep their own errno, so the
 * program sees why; every other failure is EIO, because the data of a failed
 * streaming upload is gone and EAGAIN or EINTR would invite a retry that
 * cannot succeed.
 */
function uploadFailureErrno(error: unknown): number {
  if (error instanceof StoreError && (error.code === 'AccessDenied' || error.code === 'InvalidCredentials')) return Errno.EACCES;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return Errno[code];
  return Errno.EIO;
}
