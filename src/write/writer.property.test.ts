/**
 * Property test of the write path against a plain Buffer as the reference
 * model: random sequences of writes, truncations, flushes and reads through
 * one handle must leave exactly the model's bytes in the bucket.
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { Errno } from '../fs/errno.js';
import { context, createTestMount, O_CREAT, O_RDWR, O_TRUNC, O_WRONLY, patternBytes } from '../fs/test-support.js';
import { joinReadData } from '../fuse/types.js';

const KiB = 1024;

type Step =
  | { kind: 'append'; length: number; seed: number }
  | { kind: 'write'; offset: number; length: number; seed: number }
  | { kind: 'truncate'; size: number }
  | { kind: 'flush' }
  | { kind: 'read'; offset: number; length: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  // Appends dominate, so that sequences stream several parts before anything else happens.
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('append' as const), length: fc.integer({ min: 1, max: 10 * KiB }), seed: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('write' as const), offset: fc.integer({ min: 0, max: 48 * KiB }), length: fc.integer({ min: 1, max: 6 * KiB }), seed: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), size: fc.integer({ min: 0, max: 48 * KiB }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('flush' as const) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('read' as const), offset: fc.integer({ min: 0, max: 48 * KiB }), length: fc.integer({ min: 1, max: 8 * KiB }) }) },
);

function applyWrite(model: Buffer, offset: number, data: Buffer): Buffer {
  const grown = offset + data.length > model.length ? Buffer.concat([model, Buffer.alloc(offset + data.length - model.length)]) : model;
  data.copy(grown, offset);
  return grown;
}

function applyTruncate(model: Buffer, size: number): Buffer {
  return size <= model.length ? Buffer.from(model.subarray(0, size)) : Buffer.concat([model, Buffer.alloc(size - model.length)]);
}

/** Streaming-heavy steps: mostly appends, with patches of part 1 (the first 4 KiB) and rare writes anywhere. */
const streamingStep: fc.Arbitrary<Step> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant('append' as const), length: fc.integer({ min: 1, max: 6 * KiB }), seed: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('write' as const), offset: fc.integer({ min: 0, max: 3 * KiB }), length: fc.integer({ min: 1, max: 1 * KiB }), seed: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('write' as const), offset: fc.integer({ min: 0, max: 48 * KiB }), length: fc.integer({ min: 1, max: 6 * KiB }), seed: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), size: fc.integer({ min: 0, max: 48 * KiB }) }) },
);

async function runSteps(steps: Step[], readWrite: boolean, existingSize: number | undefined): Promise<void> {
  const { memory, mount, fs } = createTestMount({
    store: { limits: { minPartSize: 4 * KiB } },
    config: { partSize: 4 * KiB, uploadConcurrency: 2, blockSize: 4 * KiB },
  });

  let model: Buffer = Buffer.alloc(0);
  let flags = (readWrite ? O_RDWR : O_WRONLY) | O_CREAT | O_TRUNC;
  if (existingSize !== undefined) {
    model = patternBytes(existingSize, 7);
    memory.putRaw('file.bin', model);
    flags &= ~O_TRUNC;
  }
  const file = await mount.open('file.bin', flags);
  // A created file nobody has written yet is uploaded at close, not at an earlier flush.
  let changed = false;

  for (const action of steps) {
    if (action.kind === 'append' || action.kind === 'write' || action.kind === 'truncate') changed = true;
    if (action.kind === 'append') {
      const data = patternBytes(action.length, action.seed);
      await fs.write(file.ino, file.fh, model.length, data, context);
      model = applyWrite(model, model.length, data);
    } else if (action.kind === 'write') {
      const data = patternBytes(action.length, action.seed);
      await fs.write(file.ino, file.fh, action.offset, data, context);
      model = applyWrite(model, action.offset, data);
    } else if (action.kind === 'truncate') {
      await fs.setattr(file.ino, { size: action.size, fh: file.fh }, context);
      model = applyTruncate(model, action.size);
    } else if (action.kind === 'flush') {
      await fs.flush(file.ino, file.fh, context);
      if (!changed && existingSize === undefined) expect(memory.getRaw('file.bin')).toBeUndefined();
      else expect(memory.getRaw('file.bin')!.equals(model)).toBe(true);
    } else if (readWrite) {
      // Only O_RDWR handles read. Spill mode serves every byte; EIO is allowed only for bytes already streamed away.
      try {
        const bytes = joinReadData(await fs.read(file.ino, file.fh, action.offset, action.length, context));
        expect(bytes.equals(model.subarray(action.offset, action.offset + action.length))).toBe(true);
      } catch (error) {
        expect((error as { errno?: number }).errno).toBe(Errno.EIO);
      }
    }
    expect((await fs.getattr(file.ino, file.fh, context)).attr.size).toBe(model.length);
  }

  await mount.close(file);
  expect(memory.getRaw('file.bin')!.equals(model)).toBe(true);
  expect(memory.pendingUploadCount()).toBe(0);
  await fs.shutdown({ drain: false });
}

describe('write path against a reference model', () => {
  it('stores the predicted bytes for mixed steps', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(step, { minLength: 1, maxLength: 40 }),
        fc.boolean(),
        fc.option(fc.integer({ min: 0, max: 20 * KiB }), { nil: undefined, freq: 2 }),
        runSteps,
      ),
      { numRuns: 200 },
    );
  });

  it('stores the predicted bytes while streaming', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(streamingStep, { minLength: 1, maxLength: 40 }), (steps) => runSteps(steps, false, undefined)),
      { numRuns: 150 },
    );
  });
});
