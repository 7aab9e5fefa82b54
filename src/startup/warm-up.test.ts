import { afterEach, describe, expect, it, vi } from 'vitest';

import { parseMountArguments } from '../cli/config.js';
import { warmUpWhileBuilding } from './snapshot-main.js';
import { WARM_UP_ARGUMENTS, warmUpMountStart } from './warm-up.js';
import { warmUpS3 } from './warm-up-s3.js';

describe('snapshot warm-ups', () => {
  afterEach(() => {
    vi.restoreAllMocks();
    process.exitCode = undefined;
  });

  it('parse each cloud\'s command line', () => {
    expect(parseMountArguments(WARM_UP_ARGUMENTS.s3, {}).location.url).toBe('s3://warm-up/prefix');
    expect(parseMountArguments(WARM_UP_ARGUMENTS.gcs, {}).location.url).toBe('gs://warm-up/prefix');
    expect(() => warmUpMountStart(WARM_UP_ARGUMENTS.s3)).not.toThrow();
    expect(() => warmUpMountStart(WARM_UP_ARGUMENTS.gcs)).not.toThrow();
  });

  it('parse the canned S3 responses', async () => {
    // warmUpS3 throws when the SDK returns no credentials or no entries from the canned responses.
    await expect(warmUpS3()).resolves.toBeUndefined();
  });

  it('fail the build on errors', async () => {
    const written: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
      written.push(String(chunk));
      return true;
    });

    warmUpWhileBuilding(async () => {
      throw new Error('the canned response no longer parses');
    });
    await vi.waitFor(() => expect(process.exitCode).toBe(1));

    expect(written.join('')).toContain('warming up the start-up snapshot failed: Error: the canned response no longer parses');
  });
});
