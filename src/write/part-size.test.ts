import { describe, expect, it } from 'vitest';

import { GCS_LIMITS } from '../store/gcs.js';
import { S3_LIMITS } from '../store/limits.js';
import { MAX_OBJECT_SIZE, partSizeFor, planCapacity, planPartSizes } from './part-size.js';

const MiB = 1024 * 1024;

describe('partSizeFor', () => {
  for (const initial of [5 * MiB, 8 * MiB, 16 * MiB, 64 * MiB]) {
    it(`fits 5 TiB with ${initial / MiB} MiB initial parts`, () => {
      const plan = planPartSizes(S3_LIMITS, initial);
      let total = 0;
      for (let partNumber = 1; partNumber <= S3_LIMITS.maxParts; partNumber += 1) {
        const size = partSizeFor(partNumber, plan);
        expect(size).toBeGreaterThanOrEqual(S3_LIMITS.minPartSize);
        expect(size).toBeLessThanOrEqual(S3_LIMITS.maxPartSize);
        total += size;
      }
      expect(total).toBeGreaterThanOrEqual(MAX_OBJECT_SIZE);
      expect(planCapacity(plan)).toBe(total);
    });
  }

  it('keeps the initial size for the first thousand parts', () => {
    const plan = planPartSizes(S3_LIMITS, 8 * MiB);
    expect(plan.doublingInterval).toBeGreaterThanOrEqual(1000);
    expect(partSizeFor(1, plan)).toBe(8 * MiB);
    expect(partSizeFor(1000, plan)).toBe(8 * MiB);
  });

  it('GCS parts sized like S3 parts', () => {
    const plan = planPartSizes(GCS_LIMITS, 8 * MiB);
    expect(plan).toEqual(planPartSizes(S3_LIMITS, 8 * MiB));
    expect(partSizeFor(128, plan)).toBe(8 * MiB);
  });

  it('never shrinks from one part to the next', () => {
    const plan = planPartSizes(S3_LIMITS, 8 * MiB);
    for (let partNumber = 2; partNumber <= S3_LIMITS.maxParts; partNumber += 1) {
      expect(partSizeFor(partNumber, plan)).toBeGreaterThanOrEqual(partSizeFor(partNumber - 1, plan));
    }
  });

  it('raises an initial size below the store minimum', () => {
    const plan = planPartSizes(S3_LIMITS, 1 * MiB);
    expect(partSizeFor(1, plan)).toBe(S3_LIMITS.minPartSize);
  });

  it('uses small parts under small test limits', () => {
    const plan = planPartSizes({ ...S3_LIMITS, minPartSize: 1024 }, 4096);
    expect(partSizeFor(1, plan)).toBe(4096);
    expect(partSizeFor(plan.doublingInterval, plan)).toBe(4096);
    expect(partSizeFor(plan.doublingInterval + 1, plan)).toBe(8192);
  });

  it('grows fastest under a 1,024-part limit', () => {
    // 1,024 parts of at most 5 GiB hold exactly 5 TiB, so growing parts fall just short of it.
    const limits = { ...S3_LIMITS, maxParts: 1024 };
    const plan = planPartSizes(limits, 8 * MiB);
    expect(plan.doublingInterval).toBe(1);
    expect(planCapacity(plan)).toBeGreaterThan(0.99 * MAX_OBJECT_SIZE);
    expect(partSizeFor(1024, plan)).toBe(limits.maxPartSize);
  });
});
