/**
 * The descriptor hand-off on a real mount: a privileged helper
 * (fd-handoff-helper.py) opens /dev/fuse and mounts it, then drops every
 * capability and its root identity with setpriv and executes the daemon with
 * the mount point /dev/fd/N. The daemon serves the bucket without any
 * capability, and programs of other users reach the mount only when the
 * helper mounted it with allow_other.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';

import { startS3Backend, type TestBackend } from './backends.js';
import { CLI_PATH, REPOSITORY_ROOT, daemonEnvironment, python, removeMountpoint, shell } from './daemon.js';

const BUCKET = 'bucketmount-fd-handoff';
const DAEMON_UID = 65534;
const SANDBOX_UID = 1000;
const HELPER = join(REPOSITORY_ROOT, 'test', 'e2e', 'fd-handoff-helper.py');
const READY_TIMEOUT_MS = 60_000;

interface HandoffDaemon {
  process: ChildProcess;
  mountpoint: string;
  logs(): string;
  exited: Promise<number | null>;
}

/** Reads the capability and identity lines of /proc/PID/status. */
async function processStatus(pid: number): Promise<Record<string, string>> {
  const fields: Record<string, string> = {};
  for (const line of (await readFile(`/proc/${pid}/status`, 'utf8')).split('\n')) {
    const [name, value] = line.split(':\t');
    if (name !== undefined && value !== undefined) fields[name] = value.trim();
  }
  return fields;
}

/** Runs a Python program as the sandbox user, with no capabilities. */
async function asSandboxUser(program: string, ...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const quoted = args.map((arg) => `'${arg.replaceAll("'", "'\\''")}'`).join(' ');
  return shell(
    `setpriv --reuid=${SANDBOX_UID} --regid=${SANDBOX_UID} --clear-groups --inh-caps=-all --bounding-set=-all /usr/bin/python3 -c '${program.replaceAll("'", "'\\''")}' ${quoted}`,
  );
}

describe('descriptor hand-off to an unprivileged daemon on s3', () => {
  let backend: TestBackend;
  let scratch: string;
  let tokenFile: string;
  const daemons: HandoffDaemon[] = [];

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'bucketmount-handoff-'));
    await chmod(scratch, 0o755);
    backend = await startS3Backend();
    await backend.createBucket(BUCKET);
    await backend.putObject(BUCKET, 'hello.txt', 'hello from the bucket\n');

    // The token directory belongs to the daemon's user alone, as a projected volume with fsGroup would.
    const tokenDirectory = join(scratch, 'token');
    await mkdir(tokenDirectory, { mode: 0o700 });
    tokenFile = join(tokenDirectory, 'token');
    await writeFile(tokenFile, await readFile(backend.tokenFile), { mode: 0o400 });
    await chown(tokenFile, DAEMON_UID, DAEMON_UID);
    await chown(tokenDirectory, DAEMON_UID, DAEMON_UID);
  });

  afterEach(async () => {
    for (const daemon of daemons.splice(0)) {
      await shell(`umount -l '${daemon.mountpoint}'`);
      const status = await Promise.race([daemon.exited, new Promise((resolve) => setTimeout(() => resolve('running'), 20_000))]);
      if (status === 'running') daemon.process.kill('SIGKILL');
      await removeMountpoint(daemon.mountpoint);
    }
  });

  afterAll(async () => {
    await backend?.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  const startHandoff = async (mountOptions: string): Promise<HandoffDaemon> => {
    const mountpoint = await mkdtemp(join(tmpdir(), 'bucketmount-handoff-mnt-'));
    const args = backend.connectionArgs();
    args[args.indexOf('--token-file') + 1] = tokenFile;

    const child = spawn(
      'python3',
      [
        HELPER,
        mountpoint,
        mountOptions,
        'setpriv',
        `--reuid=${DAEMON_UID}`,
        `--regid=${DAEMON_UID}`,
        '--clear-groups',
        '--inh-caps=-all',
        '--bounding-set=-all',
        CLI_PATH,
        'mount',
        backend.bucketUrl(BUCKET),
        '/dev/fd/{fd}',
        ...args,
        '--uid',
        String(SANDBOX_UID),
        '--gid',
        String(SANDBOX_UID),
      ],
      { env: daemonEnvironment({ HOME: scratch }), stdio: ['ignore', 'pipe', 'pipe'] },
    );

    let logs = '';
    child.stdout.on('data', (chunk: Buffer) => (logs += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (logs += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (status) => resolve(status)));
    const daemon: HandoffDaemon = { process: child, mountpoint, logs: () => logs, exited };
    daemons.push(daemon);

    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!logs.includes('"event":"mount-ready"')) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the daemon did not become ready; its output:\n${logs}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return daemon;
  };

  test('daemon without capabilities serves the mount', async () => {
    const daemon = await startHandoff('allow_other,default_permissions');

    // setpriv executed the daemon in place of the helper, so the helper's pid is the daemon's.
    const status = await processStatus(daemon.process.pid!);
    expect(status.CapEff).toBe('0000000000000000');
    expect(status.CapPrm).toBe('0000000000000000');
    expect(status.CapBnd).toBe('0000000000000000');
    expect(status.Uid?.split(/\s+/)).toEqual([String(DAEMON_UID), String(DAEMON_UID), String(DAEMON_UID), String(DAEMON_UID)]);

    // Root reads through the mount.
    const rootRead = await python('import sys; print(open(sys.argv[1]).read(), end="")', [join(daemon.mountpoint, 'hello.txt')]);
    expect(rootRead.stdout).toBe('hello from the bucket\n');

    // The sandbox user reads and writes; the files appear as its own.
    const program = `
import os, sys
root = sys.argv[1]
print(open(os.path.join(root, "hello.txt")).read(), end="")
with open(os.path.join(root, "from-sandbox.txt"), "w") as f: f.write("written by the sandbox\\n")
print(os.stat(os.path.join(root, "from-sandbox.txt")).st_uid)
`;
    const sandbox = await asSandboxUser(program, daemon.mountpoint);
    expect(sandbox.stderr).toBe('');
    expect(sandbox.stdout).toBe(`hello from the bucket\n${SANDBOX_UID}\n`);
    expect((await backend.getObject(BUCKET, 'from-sandbox.txt'))?.toString()).toBe('written by the sandbox\n');
  });

  test('other users need allow_other', async () => {
    const daemon = await startHandoff('default_permissions');

    const sandbox = await asSandboxUser('import os, sys\ntry:\n    os.stat(sys.argv[1] + "/hello.txt"); print(0)\nexcept OSError as error:\n    print(error.errno)', daemon.mountpoint);
    expect(sandbox.stdout.trim()).toBe('13');

    // The mount's owner (user_id=0) still gets through.
    const rootRead = await python('import sys; print(open(sys.argv[1]).read(), end="")', [join(daemon.mountpoint, 'hello.txt')]);
    expect(rootRead.stdout).toBe('hello from the bucket\n');
  });
});
