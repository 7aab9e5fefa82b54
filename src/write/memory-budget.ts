/**
 * Memory held by upload buffers across all writers of a mount.
 *
 * Writers reserve the bytes of a part while it is buffered or in flight and
 * release them when the part is uploaded or dropped. A writer whose parts are
 * in flight waits for one of them to finish while the budget is exceeded.
 * A writer with nothing in flight does not wait, because nothing of its own
 * would wake it. So the budget is a soft limit: each writer may exceed it by
 * the part it is filling, its held part 1 and one part in flight
 * (`MultipartUpload.addPart` checks it only while parts are in flight).
 *
 * Changed only synchronously, so `used` is exact between awaits.
 */
export class MemoryBudget {
  private usedBytes = 0;

  constructor(readonly limitBytes: number) {}

  get used(): number {
    return this.usedBytes;
  }

  get exceeded(): boolean {
    return this.usedBytes > this.limitBytes;
  }

  reserve(bytes: number): void {
    this.usedBytes += bytes;
  }

  release(bytes: number): void {
    this.usedBytes = Math.max(0, this.usedBytes - bytes);
  }
}
