/**
 * The workloads run against a mount point by separate processes (dd, ls,
 * find, Python), the way programs use a mount, and the helpers that run them.
 */

import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';

export interface CommandOutcome {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program with an explicit environment and a hard timeout. */
export function runCommand(file: string, args: string[], timeoutMs = 1_800_000): Promise<CommandOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: process.env.HOME ?? '/root' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

export async function runChecked(file: string, args: string[]): Promise<string> {
  const outcome = await runCommand(file, args);
  if (outcome.status !== 0) {
    // A program passed with -c is shown by its flag only, so that the error stays one readable line.
    const shown = args.map((argument, index) => (args[index - 1] === '-c' && file === 'python3' ? '<program>' : argument));
    throw new Error(`${file} ${shown.join(' ').slice(0, 300)} failed with status ${outcome.status}: ${outcome.stderr.trim().slice(-800)}`);
  }
  return outcome.stdout;
}

/**
 * Drops the kernel's clean page cache, dentries and inodes after a sync, so
 * that a cold read fetches from the mount and not from memory. Needs root.
 */
export async function dropPageCache(): Promise<string | undefined> {
  try {
    await runChecked('sync', []);
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return undefined;
  } catch (error) {
    return `page cache not dropped: ${(error as Error).message}`;
  }
}

/** Python run by `python3 -c`: random preads of one size, printing latencies in ms as JSON. */
export const RANDOM_READ_PROGRAM = `
import json, os, random, sys, time
path, size, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
length = os.path.getsize(path)
rng = random.Random(seed)
fd = os.open(path, os.O_RDONLY)
latencies = []
for _ in range(count):
    offset = rng.randrange(0, (length - size) // size + 1) * size
    started = time.perf_counter()
    data = os.pread(fd, size, offset)
    latencies.append((time.perf_counter() - started) * 1000)
    if len(data) != size:
        sys.exit(f"short read at offset {offset}: {len(data)} of {size} bytes")
os.close(fd)
print(json.dumps(latencies))
`;

/** Python: writes COUNT files of SIZE bytes into DIR, one open-write-close each. */
export const SMALL_WRITE_PROGRAM = `
import os, sys
directory, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(directory, exist_ok=True)
for index in range(count):
    with open(os.path.join(directory, f"file-{index:05d}"), "wb") as handle:
        handle.write(index.to_bytes(8, "big") * (size // 8))
`;

/** Python: reads the files SMALL_WRITE_PROGRAM wrote and checks their content. */
export const SMALL_READ_PROGRAM = `
import os, sys
directory, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for index in range(count):
    with open(os.path.join(directory, f"file-{index:05d}"), "rb") as handle:
        if handle.read() != index.to_bytes(8, "big") * (size // 8):
            sys.exit(f"file-{index:05d} has other content than was written")
`;

export function percentile(values: number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1);
  return sorted[Math.max(0, index)] as number;
}
