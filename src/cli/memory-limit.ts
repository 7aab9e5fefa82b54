/**
 * The default memory budget of a mount, derived from the container's memory
 * limit.
 *
 * The limit is the cgroup memory limit of this process: `memory.max` on
 * cgroup v2, or the `hierarchical_memory_limit` of `memory.stat` (falling
 * back to `memory.limit_in_bytes`) on cgroup v1. The cgroup directory comes
 * from /proc/self/cgroup, and the hierarchy's mount point from
 * /proc/self/mountinfo, because hosts mount v1 and v2 in different places
 * (hybrid hosts put v2 at /sys/fs/cgroup/unified, with the memory controller
 * on v1). On v2 a parent's `memory.max` also binds, so every level up to the
 * mount point is read and the smallest value wins.
 *
 * The budget covers cached blocks, readahead and upload parts, and it is
 * deliberately much smaller than the limit:
 *   budget = min(512 MiB, (limit - 200 MiB) * 0.5)
 * - 200 MiB is kept for the process itself: Node.js with the AWS and Google
 *   SDKs loaded, libfuse's receive buffers (one 1 MiB buffer per worker
 *   thread) and socket buffers.
 *   NOTE: an estimate, checked once: under a 512 MiB cgroup v1 limit (budget
 *   156 MiB), test/e2e/memory-limit.test.ts reading and writing 2 GiB on a
 *   2-core VM peaked at 253 MiB charged to the daemon's cgroup.
 * - Half of the rest, because the budget is a soft limit. Each writer may
 *   exceed the upload share by about three parts (see MemoryBudget). GETs in
 *   flight are not counted until they are cached. Buffers of evicted blocks
 *   are freed only when the garbage collector runs.
 * - At most 512 MiB, the default without a container limit: a cache of half
 *   of that already holds the readahead windows of four sequential readers.
 */

import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { parseMountinfo, type MountinfoEntry } from '../fuse/mountinfo.js';

const MiB = 1024 * 1024;

export const DEFAULT_MEMORY_BUDGET = 512 * MiB;
export const RESERVED_FOR_PROCESS = 200 * MiB;
export const BUDGET_FRACTION = 0.5;

/**
 * Resident memory beyond the budget above which the mount returns the free
 * pages of the C library's heaps to the system. It covers the process itself
 * (about 80 MiB on S3 after start, more on GCS) and buffers that the garbage
 * collector has not freed yet.
 */
export const RESIDENT_ALLOWANCE = 100 * MiB;

/**
 * Growth of buffer memory after which the mount runs a garbage collection:
 * a quarter of the budget, from 32 to 128 MiB. Freed socket buffers wait for
 * a collection, so they sit on top of the budget until then, and each
 * collection of the daemon's heap costs about 15 to 20 ms.
 */
export function garbageThreshold(budgetBytes: number): number {
  return Math.min(128 * MiB, Math.max(32 * MiB, Math.floor(budgetBytes / 4)));
}

/** v1 reports "no limit" as the largest page-aligned 64-bit value; anything this large is no limit. */
const UNLIMITED_THRESHOLD = 2 ** 60;

export interface ContainerMemoryLimit {
  bytes: number;
  /** The file the limit was read from. */
  file: string;
  cgroupVersion: 1 | 2;
}

export interface MemoryLimitFiles {
  /** Contents of /proc/self/cgroup. */
  cgroup: string;
  /** Contents of /proc/self/mountinfo. */
  mountinfo: string;
  /** Reads a file of the cgroup filesystem; resolves undefined when it does not exist. */
  read(file: string): Promise<string | undefined>;
}

/** A mount of a cgroup hierarchy, from mountinfo. */
type CgroupMount = MountinfoEntry & { fstype: 'cgroup' | 'cgroup2' };

function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  return parseMountinfo(mountinfo).filter((entry): entry is CgroupMount => entry.fstype === 'cgroup' || entry.fstype === 'cgroup2');
}

/**
 * Maps a cgroup path from /proc/self/cgroup to a directory under the
 * hierarchy's mount point. When the mount's root is not an ancestor of the
 * path (a container that sees only its own cgroup), the mount point itself
 * is this process's cgroup.
 */
function cgroupDirectory(mount: CgroupMount, cgroupPath: string): string {
  const relative = path.posix.relative(mount.root, cgroupPath);
  if (relative.startsWith('..')) return mount.mountpoint;
  return path.posix.join(mount.mountpoint, relative);
}

function parseLimit(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const value = text.trim();
  if (value === 'max' || !/^\d+$/.test(value)) return undefined;
  const bytes = Number(value);
  return bytes >= UNLIMITED_THRESHOLD ? undefined : bytes;
}

async function readVersion2(files: MemoryLimitFiles, mount: CgroupMount, cgroupPath: string): Promise<ContainerMemoryLimit | undefined> {
  let directory = cgroupDirectory(mount, cgroupPath);
  let found: ContainerMemoryLimit | undefined;
  let sawControllerFile = false;

  for (;;) {
    const file = path.posix.join(directory, 'memory.max');
    const text = await files.read(file);
    if (text !== undefined) sawControllerFile = true;
    const bytes = parseLimit(text);
    if (bytes !== undefined && (found === undefined || bytes < found.bytes)) found = { bytes, file, cgroupVersion: 2 };

    if (directory === mount.mountpoint || directory === '/') break;
    directory = path.posix.dirname(directory);
  }
  return sawControllerFile ? found : undefined;
}

async function readVersion1(files: MemoryLimitFiles, mount: CgroupMount, cgroupPath: string): Promise<ContainerMemoryLimit | undefined> {
  const directory = cgroupDirectory(mount, cgroupPath);

  // hierarchical_memory_limit already is the smallest limit of this cgroup and its ancestors.
  const statFile = path.posix.join(directory, 'memory.stat');
  const stat = await files.read(statFile);
  const hierarchical = /^hierarchical_memory_limit (\d+)$/m.exec(stat ?? '')?.[1];
  if (hierarchical !== undefined) {
    const bytes = parseLimit(hierarchical);
    return bytes === undefined ? undefined : { bytes, file: statFile, cgroupVersion: 1 };
  }

  const limitFile = path.posix.join(directory, 'memory.limit_in_bytes');
  const bytes = parseLimit(await files.read(limitFile));
  return bytes === undefined ? undefined : { bytes, file: limitFile, cgroupVersion: 1 };
}

/**
 * Returns the memory limit of this process's cgroup, or undefined when there
 * is none (or no cgroup memory controller is visible).
 */
export async function findContainerMemoryLimit(files: MemoryLimitFiles): Promise<ContainerMemoryLimit | undefined> {
  const mounts = parseCgroupMounts(files.mountinfo);
  const entries = files.cgroup
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const [, , controllers = '', cgroupPath = '/'] = /^(\d+):([^:]*):(.*)$/.exec(line) ?? [];
      return { controllers: controllers.split(','), cgroupPath };
    });

  // cgroup v2: the entry with an empty controller list.
  const unified = entries.find((entry) => entry.controllers.length === 1 && entry.controllers[0] === '');
  const version2Mount = mounts.find((mount) => mount.fstype === 'cgroup2');
  if (unified !== undefined && version2Mount !== undefined) {
    const limit = await readVersion2(files, version2Mount, unified.cgroupPath);
    if (limit !== undefined) return limit;
  }

  // cgroup v1: the hierarchy that carries the memory controller.
  const memoryEntry = entries.find((entry) => entry.controllers.includes('memory'));
  const version1Mount = mounts.find((mount) => mount.fstype === 'cgroup' && mount.superOptions.includes('memory'));
  if (memoryEntry !== undefined && version1Mount !== undefined) {
    return readVersion1(files, version1Mount, memoryEntry.cgroupPath);
  }
  return undefined;
}

/** Reads this process's cgroup files from /proc and /sys. */
export async function systemMemoryLimitFiles(): Promise<MemoryLimitFiles> {
  const readOptional = async (file: string): Promise<string | undefined> => {
    try {
      return await readFile(file, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EACCES') return undefined;
      throw error;
    }
  };
  return {
    cgroup: (await readOptional('/proc/self/cgroup')) ?? '',
    mountinfo: (await readOptional('/proc/self/mountinfo')) ?? '',
    read: readOptional,
  };
}

/** Returns the memory budget for a container limit: min(512 MiB, (limit - 200 MiB) * 0.5), never below `minimum`. */
export function memoryBudgetForLimit(limitBytes: number, minimum: number): number {
  const derived = Math.floor(Math.min(DEFAULT_MEMORY_BUDGET, (limitBytes - RESERVED_FOR_PROCESS) * BUDGET_FRACTION));
  return Math.max(minimum, derived);
}

export interface MemoryBudgetDecision {
  bytes: number;
  source: 'option' | 'cgroup' | 'default';
  containerLimit?: ContainerMemoryLimit;
}

/**
 * Chooses the memory budget: the explicit option wins; otherwise it derives
 * from the container limit; without a limit it is DEFAULT_MEMORY_BUDGET.
 * `minimum` is the smallest budget the filesystem accepts (two blocks).
 */
export async function chooseMemoryBudget(explicitBytes: number | undefined, minimum: number, files?: MemoryLimitFiles): Promise<MemoryBudgetDecision> {
  if (explicitBytes !== undefined) return { bytes: explicitBytes, source: 'option' };

  const containerLimit = await findContainerMemoryLimit(files ?? (await systemMemoryLimitFiles()));
  if (containerLimit === undefined) return { bytes: Math.max(minimum, DEFAULT_MEMORY_BUDGET), source: 'default' };
  return { bytes: memoryBudgetForLimit(containerLimit.bytes, minimum), source: 'cgroup', containerLimit };
}
