/**
 * A local file that contains the whole content of a file being written at
 * random offsets, until it is uploaded.
 *
 * The file is created with mode 0600 in the configured spill directory and
 * unlinked at once, so the kernel reclaims its space when it is closed, even
 * if the daemon crashes. Errors of the local disk (ENOSPC, EIO) reject with
 * the Node.js error, whose `code` becomes the errno returned to the writing program.
 */

import { randomUUID } from 'node:crypto';
import { mkdir, open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

export class SpillFile {
  /** Logical size of the content in bytes. */
  size = 0;
  private closed = false;

  private constructor(
    private readonly handle: FileHandle,
    readonly path: string,
  ) {}

  static async create(directory: string): Promise<SpillFile> {
    await mkdir(directory, { recursive: true, mode: 0o700 });
    const path = join(directory, `spill-${randomUUID()}`);
    const handle = await open(path, 'wx+', 0o600);
    try {
      await unlink(path);
    } catch (error) {
      await handle.close();
      throw error;
    }
    return new SpillFile(handle, path);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    let written = 0;
    while (written < data.length) {
      const { bytesWritten } = await this.handle.write(data, written, data.length - written, offset + written);
      written += bytesWritten;
    }
    this.size = Math.max(this.size, offset + data.length);
  }

  /** Returns bytes `[offset, offset + length)`, shorter at the end of the content. */
  async read(offset: number, length: number): Promise<Buffer> {
    const end = Math.min(offset + length, this.size);
    if (offset >= end) return Buffer.alloc(0);

    const buffer = Buffer.alloc(end - offset);
    let filled = 0;
    while (filled < buffer.length) {
      const { bytesRead } = await this.handle.read(buffer, filled, buffer.length - filled, offset + filled);
      // A sparse region past the data written so far reads as zeros, which Buffer.alloc already holds.
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return buffer;
  }

  async truncate(size: number): Promise<void> {
    await this.handle.truncate(size);
    this.size = size;
  }

  /** Closes the file and frees its disk space; safe to call more than once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}
