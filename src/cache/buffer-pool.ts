/**
 * Reuses large buffers: the ones multipart parts are assembled in, and the
 * ones the FUSE session copies write requests into.
 *
 * Such a buffer is memory outside the JavaScript heap, and V8 runs a full
 * garbage collection whenever that memory grows by tens of megabytes. With a
 * new buffer for every part, garbage collection took 2.3 s of CPU in a
 * streaming write of 1 GiB to MinIO, and 1.2 s with reuse. Most of the rest
 * came from the buffers of the write requests, which are pooled too now.
 *
 * A buffer is given back only when nothing refers to it any more. A part
 * buffer comes back after its part or object was uploaded successfully. A
 * failed upload drops its buffer, because the HTTP layer may still hold the
 * failed request's body. A write request buffer comes back once the write
 * finished.
 */

/** Idle buffers kept per size by default; a streaming writer needs one while its last part uploads. */
const IDLE_BUFFERS_PER_SIZE = 2;

/** Idle buffers are freed after this long without use, so a mount that stopped writing gives the memory back. */
const IDLE_RELEASE_MS = 30_000;

export class BufferPool {
  private readonly idle = new Map<number, Buffer[]>();
  private releaseTimer: NodeJS.Timeout | undefined;

  constructor(private readonly idlePerSize = IDLE_BUFFERS_PER_SIZE) {}

  /** Bytes held by idle buffers. */
  get idleBytes(): number {
    let total = 0;
    for (const [size, buffers] of this.idle) total += size * buffers.length;
    return total;
  }

  /** Returns a buffer of exactly `size` bytes with unspecified content. */
  take(size: number): Buffer {
    const reused = this.idle.get(size)?.pop();
    return reused ?? Buffer.allocUnsafeSlow(size);
  }

  /** Takes back a buffer from `take` once nothing refers to it. */
  give(buffer: Buffer): void {
    const buffers = this.idle.get(buffer.length) ?? [];
    if (buffers.length >= this.idlePerSize) return;
    buffers.push(buffer);
    this.idle.set(buffer.length, buffers);

    clearTimeout(this.releaseTimer);
    this.releaseTimer = setTimeout(() => this.clear(), IDLE_RELEASE_MS);
    this.releaseTimer.unref();
  }

  /** Frees every idle buffer. */
  clear(): void {
    clearTimeout(this.releaseTimer);
    this.releaseTimer = undefined;
    this.idle.clear();
  }
}
