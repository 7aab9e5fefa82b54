/**
 * Bad input to `check` and `mount`: each case must give a clear one-line
 * error, a non-zero exit status, no stack trace and no token in the output.
 */

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { startBackend, type BackendName, type TestBackend } from './backends.js';
import { removeMountpoint, runCli, type CommandResult } from './daemon.js';

/** The discard port on loopback. No test server binds a privileged port, so connections to it are refused. */
const CLOSED_PORT = 9;

const BACKENDS: BackendName[] = (process.env.BUCKETMOUNT_TEST_BACKENDS ?? 's3,gcs').split(',') as BackendName[];

/** Replaces the value that follows `--name` in an argument list. */
function withOption(args: string[], name: string, value: string): string[] {
  const copy = [...args];
  const index = copy.indexOf(`--${name}`);
  if (index === -1) return [...copy, `--${name}`, value];
  copy[index + 1] = value;
  return copy;
}

function expectCleanFailure(result: CommandResult, token: string, pattern: RegExp): void {
  const output = `${result.stdout}${result.stderr}`;
  expect(result.status, output).not.toBe(0);
  expect(output).toMatch(pattern);
  expect(output).not.toMatch(/^\s+at .+\(.*:\d+:\d+\)$/m);
  expect(output).not.toContain(token);
  expect(output).not.toContain(token.split('.')[1] ?? token);
}

describe('usage errors', () => {
  test('invalid option value exits 2 naming the option', async () => {
    const result = await runCli(['mount', 's3://bucket-name', '/tmp/nowhere', '--file-mode', '999', '--token-file', '/t', '--role-arn', 'arn:aws:iam::1:role/r']);
    expect(result.status).toBe(2);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toContain('--file-mode');
  });

  test('unknown option exits 2', async () => {
    const result = await runCli(['check', 's3://bucket-name', '--no-such-option']);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('no-such-option');
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
  });

  test('invalid bucket URL exits 2', async () => {
    const result = await runCli(['check', 'http://bucket-name']);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/s3:\/\/BUCKET/);
  });

  test('missing role ARN names the variable', async () => {
    const result = await runCli(['check', 's3://bucket-name', '--token-file', '/tmp/token']);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('AWS_ROLE_ARN');
  });

  test('environment variable sets an option', async () => {
    const result = await runCli(['check', 's3://bucket-name', '--token-file', '/tmp/token', '--role-arn', 'arn:aws:iam::1:role/r'], { BUCKETMOUNT_ENDPOINT: 'ftp://example' });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('--endpoint');
  });
});

describe.each(BACKENDS)('bad input on %s', (backendName) => {
  const bucket = `bucketmount-badinput-${backendName}`;
  let backend: TestBackend;
  let token: string;
  let work: string;

  beforeAll(async () => {
    backend = await startBackend(backendName);
    await backend.createBucket(bucket);
    token = await readFile(backend.tokenFile, 'utf8');
    work = await mkdtemp(join(tmpdir(), 'bucketmount-badinput-'));
  }, 120_000);

  afterAll(async () => {
    await backend?.writeToken();
    await backend?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  }, 60_000);

  /** Runs `check` and then `mount` with the same arguments; both must fail cleanly. */
  async function expectBothFail(url: string, args: string[], pattern: RegExp, currentToken = token): Promise<void> {
    const check = await runCli(['check', url, ...args]);
    expectCleanFailure(check, currentToken, pattern);
    expect(check.stdout).toMatch(/FAILED/);

    const mountpoint = await mkdtemp(join(work, 'mnt-'));
    try {
      const mount = await runCli(['mount', url, mountpoint, ...args], {}, 90_000);
      expectCleanFailure(mount, currentToken, pattern);
      expect(mount.stderr.trim().split('\n').filter((line) => line.startsWith('bucketmount:'))).toHaveLength(1);
    } finally {
      await removeMountpoint(mountpoint);
    }
  }

  test('check succeeds with valid settings', async () => {
    const result = await runCli(['check', backend.bucketUrl(bucket), ...backend.connectionArgs()]);
    expect(result.stderr).not.toContain(token);
    expect(result.stdout).not.toContain(token);
    expect(result.stdout).not.toMatch(/FAILED/);
    expect(result.status).toBe(0);
  });

  test('unknown bucket', async () => {
    await expectBothFail(backend.bucketUrl('bucketmount-no-such-bucket'), backend.connectionArgs(), /bucketmount-no-such-bucket.*(does not exist|not found)/i);
  });

  test('wrong endpoint', async () => {
    // A privileged port that no test server binds: a free port picked here could be taken by a
    // server of a test file running in parallel before the daemon connects (it was, once, by MinIO).
    const port = CLOSED_PORT;
    await expectBothFail(backend.bucketUrl(bucket), withOption(backend.connectionArgs(), 'endpoint', `http://127.0.0.1:${port}`), new RegExp(`127\\.0\\.0\\.1:${port}`));
  });

  test('missing token file', async () => {
    const missing = join(work, 'no-such-token');
    await expectBothFail(backend.bucketUrl(bucket), withOption(backend.connectionArgs(), 'token-file', missing), new RegExp(`${missing}.*(missing|does not exist|not found)`, 'i'));
  });

  test('unreadable token file', async () => {
    // A directory in place of the file: root can read any file, but no one can read a directory as one.
    await expectBothFail(backend.bucketUrl(bucket), withOption(backend.connectionArgs(), 'token-file', work), new RegExp(`${work}.*(cannot be read|unreadable|directory)`, 'i'));
  });

  test('expired token', async () => {
    await backend.writeToken({ issuedAt: new Date(Date.now() - 7200_000), expiresInSeconds: 600 });
    const expired = await readFile(backend.tokenFile, 'utf8');
    try {
      await expectBothFail(backend.bucketUrl(bucket), backend.connectionArgs(), /expired/i, expired);
    } finally {
      await backend.writeToken();
    }
  });

  test('token with the wrong audience', async () => {
    await backend.writeToken({ audience: 'some-other-audience' });
    const wrongAudience = await readFile(backend.tokenFile, 'utf8');
    try {
      await expectBothFail(backend.bucketUrl(bucket), backend.connectionArgs(), /audience/i, wrongAudience);
    } finally {
      await backend.writeToken();
    }
  });

  test.runIf(backendName === 's3')('wrong role ARN', async () => {
    const args = withOption(backend.connectionArgs(), 'role-arn', 'arn:minio:iam:us-east-1::role/no-such-role');
    await expectBothFail(backend.bucketUrl(bucket), args, /role/i);
  });
});
