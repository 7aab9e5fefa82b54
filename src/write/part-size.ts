/**
 * Part sizes of multipart uploads.
 *
 * A streaming writer does not know the final size of its object, yet every
 * object up to the store's maximum must fit in `maxParts` parts. Parts start
 * at the configured size and double every `doublingInterval` parts, clamped to
 * the store's part limits. The interval is the largest one whose capacity
 * still reaches `MAX_OBJECT_SIZE`: parts stay small (little memory per
 * writer) for as long as possible and grow only for very large objects.
 *
 * With S3 limits (5 MiB to 5 GiB, 10,000 parts) and 8 MiB initial parts, the
 * first 1,089 parts are 8 MiB, so objects up to about 9 GB never use a larger
 * part. A store with far fewer parts (1,024, say) doubles after every part and
 * still reaches a little under 5 TiB, at the cost of huge parts early on.
 */

import type { StoreLimits } from '../store/types.js';

/** Largest object on S3 and on GCS: 5 TiB. */
export const MAX_OBJECT_SIZE = 5 * 1024 ** 4;

export interface PartSizePlan {
  initialPartSize: number;
  minPartSize: number;
  maxPartSize: number;
  maxParts: number;
  /** Parts between two doublings of the part size. */
  doublingInterval: number;
}

/** Size of part `partNumber` (1-based) under a plan. Pure: no state, no clock. */
export function partSizeFor(partNumber: number, plan: PartSizePlan): number {
  const doublings = Math.floor((partNumber - 1) / plan.doublingInterval);
  // Beyond 2^40 times any initial size exceeds every store's part limit, and the clamp below applies anyway.
  const grown = plan.initialPartSize * 2 ** Math.min(doublings, 40);
  return Math.min(plan.maxPartSize, Math.max(plan.minPartSize, grown));
}

/** Total bytes that `maxParts` parts of a plan can hold. */
export function planCapacity(plan: PartSizePlan): number {
  let total = 0;
  for (let first = 1; first <= plan.maxParts; first += plan.doublingInterval) {
    const count = Math.min(plan.doublingInterval, plan.maxParts - first + 1);
    const size = partSizeFor(first, plan);
    if (size === plan.maxPartSize) {
      // Every later part has the maximum size too.
      return total + (plan.maxParts - first + 1) * size;
    }
    total += count * size;
  }
  return total;
}

/**
 * Chooses the doubling interval for an initial part size under a store's
 * limits. When even doubling after every part cannot reach
 * `maxObjectSize` (a store with tiny limits), the plan doubles every part and
 * reaches as far as it can.
 */
export function planPartSizes(limits: StoreLimits, initialPartSize: number, maxObjectSize = MAX_OBJECT_SIZE): PartSizePlan {
  const base = {
    initialPartSize: Math.min(limits.maxPartSize, Math.max(limits.minPartSize, initialPartSize)),
    minPartSize: limits.minPartSize,
    maxPartSize: limits.maxPartSize,
    maxParts: limits.maxParts,
  };

  // Capacity shrinks as the interval grows, so a binary search finds the largest interval that fits.
  let low = 1;
  let high = limits.maxParts;
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (planCapacity({ ...base, doublingInterval: middle }) >= maxObjectSize) {
      low = middle;
    } else {
      high = middle - 1;
    }
  }
  return { ...base, doublingInterval: low };
}
