/**
 * Start-up of the daemon through the `bucketmount` launcher, on real mounts:
 * - from the cloud's start-up snapshot when the build made it for the
 *   Node.js the launcher runs (the log line has `"startup":"snapshot"`), on
 *   S3 and on GCS;
 * - from the modules with BUCKETMOUNT_SNAPSHOT=0, or when the Node.js binary
 *   is not the one that made the snapshot.
 * Every way serves the same files, and the launcher finds the repository
 * through a symbolic link and from a relative path. Options before the
 * command reach bucketmount, not Node.js, either way. A SIGTERM right at
 * ready drains and unmounts, and the spill directory the daemon created is
 * removed when it stops.
 */

import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';

import { startBackend, type BackendName, type TestBackend } from './backends.js';
import { CLI_PATH, daemonEnvironment, removeMountpoint, runCli, runProcess, startDaemon, type MountedDaemon } from './daemon.js';

const BACKENDS: BackendName[] = (process.env.BUCKETMOUNT_TEST_BACKENDS ?? 's3,gcs').split(',') as BackendName[];

function startupOf(daemon: MountedDaemon): string | undefined {
  const starting = daemon
    .logs()
    .split('\n')
    .find((line) => line.includes('"event":"mount-starting"'));
  return starting === undefined ? undefined : (JSON.parse(starting) as { startup?: string }).startup;
}

describe.each<{ start: string; environment: Record<string, string> }>([
  { start: 'snapshot', environment: {} },
  { start: 'modules', environment: { BUCKETMOUNT_SNAPSHOT: '0' } },
])('launcher options from the $start', ({ environment }) => {
  test('--help prints the usage', async () => {
    const result = await runCli(['--help'], environment);

    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toContain('Commands:');
  });

  test('an unknown option is a usage error', async () => {
    const result = await runCli(['--bogus'], environment);

    expect(result.status).toBe(2);
    expect(result.stderr).toContain('unknown command "--bogus"');
  });
});

describe.each(BACKENDS)('launcher start-up on %s', (backendName) => {
  const bucket = `bucketmount-startup-${backendName}`;
  const content = `contents of the seeded object on ${backendName}\n`;
  let backend: TestBackend;
  let scratch: string;
  const daemons: MountedDaemon[] = [];

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'bucketmount-startup-'));
    backend = await startBackend(backendName);
    await backend.createBucket(bucket);
    await backend.putObject(bucket, 'seeded.txt', content);
  });

  afterEach(async () => {
    for (const daemon of daemons.splice(0)) {
      await daemon.stop();
      await removeMountpoint(daemon.mountpoint);
    }
  });

  afterAll(async () => {
    await backend?.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  const mount = async (environment: Record<string, string> = {}): Promise<MountedDaemon> => {
    const daemon = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: backend.connectionArgs(), environment });
    daemons.push(daemon);
    return daemon;
  };

  const expectServesSeededObject = async (daemon: MountedDaemon): Promise<void> => {
    expect(await readdir(daemon.mountpoint)).toContain('seeded.txt');
    expect(await readFile(join(daemon.mountpoint, 'seeded.txt'), 'utf8')).toBe(content);
  };

  test('starts from the snapshot built for this Node.js', async () => {
    const daemon = await mount();

    expect(startupOf(daemon)).toBe('snapshot');
    await expectServesSeededObject(daemon);
  });

  test('starts from the modules with BUCKETMOUNT_SNAPSHOT=0', async () => {
    const daemon = await mount({ BUCKETMOUNT_SNAPSHOT: '0' });

    expect(startupOf(daemon)).toBe('modules');
    await expectServesSeededObject(daemon);
  });

  test('starts from the modules with another Node.js binary', async () => {
    // Another file than the stamped binary, as after an upgrade of Node.js. It runs the same Node.js.
    const otherNode = join(scratch, 'node');
    await writeFile(otherNode, `#!/bin/sh\nexec ${process.execPath} "$@"\n`);
    await chmod(otherNode, 0o755);

    const daemon = await mount({ BUCKETMOUNT_NODE: otherNode });

    expect(startupOf(daemon)).toBe('modules');
    await expectServesSeededObject(daemon);
  });

  test('SIGTERM at ready unmounts cleanly', async () => {
    // startDaemon returns as soon as the ready line is logged, so the signal follows it at once.
    const daemon = await mount();

    expect(await daemon.stop('SIGTERM')).toBe(0);
    expect(daemon.logs()).toContain('"event":"shutdown-requested"');
    expect(daemon.logs()).toContain('"event":"mount-stopped"');
  });

  test('removes the spill directory it created', async () => {
    const created = join(scratch, 'spill-created');
    const existing = await mkdtemp(join(scratch, 'spill-existing-'));

    const first = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: [...backend.connectionArgs(), '--spill-dir', created] });
    daemons.push(first);
    expect(existsSync(created)).toBe(true);
    expect(await first.stop()).toBe(0);
    expect(existsSync(created)).toBe(false);

    const second = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: [...backend.connectionArgs(), '--spill-dir', existing] });
    daemons.push(second);
    expect(await second.stop()).toBe(0);
    expect(existsSync(existing)).toBe(true);
  });

  test('removes the spill directory after a failed start', async () => {
    const created = join(scratch, 'spill-failed-start');
    const mountpoint = await mkdtemp(join(scratch, 'mountpoint-'));

    const result = await runCli(['mount', backend.bucketUrl('bucketmount-startup-missing'), mountpoint, ...backend.connectionArgs(), '--spill-dir', created]);

    expect(result.status, result.stderr).toBe(1);
    expect(existsSync(created)).toBe(false);
  });

  test('runs the check command from the snapshot', async () => {
    const result = await runCli(['check', backend.bucketUrl(bucket), ...backend.connectionArgs()]);

    expect(result.status, result.stderr).toBe(0);
  });

  test('finds the repository through a symbolic link', async () => {
    // A link like npm's link of the package's bin. The launcher must find dist/ next to its own file.
    const link = join(scratch, 'bucketmount');
    await rm(link, { force: true });
    await symlink(CLI_PATH, link);

    const result = await runProcess(link, ['check', backend.bucketUrl(bucket), ...backend.connectionArgs()], { environment: daemonEnvironment() });

    expect(result.status, result.stderr).toBe(0);
  });

  test('finds the repository from a relative path', async () => {
    const result = await runProcess(relative(process.cwd(), CLI_PATH), ['check', backend.bucketUrl(bucket), ...backend.connectionArgs()], {
      environment: daemonEnvironment(),
    });

    expect(result.status, result.stderr).toBe(0);
  });
});
