/**
 * Memory held by upload buffers across all writers of a mount.
 *
 * Writers reserve the bytes of a part while it is buffered or in flight and
 * release them when the part is uploaded or dropped. A writer whose parts are
 * in flight waits for one of them to finish while the budget is exceeded.
 * A writer with nothing in flight never waits, because nothing of its own
 * would ever wake it: the budget is a soft limit that at least one part per
 * writer may cross.
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
