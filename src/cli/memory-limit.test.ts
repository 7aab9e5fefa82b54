import { describe, expect, it } from 'vitest';

import { chooseMemoryBudget, findContainerMemoryLimit, garbageThreshold, memoryBudgetForLimit, type MemoryLimitFiles } from './memory-limit.js';

const MiB = 1024 * 1024;

const V2_MOUNTINFO = '30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate';
const HYBRID_MOUNTINFO = [
  '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
].join('\n');

function files(cgroup: string, mountinfo: string, contents: Record<string, string>): MemoryLimitFiles {
  return { cgroup, mountinfo, read: async (file) => contents[file] };
}

describe('findContainerMemoryLimit', () => {
  it('reads memory.max on cgroup v2', async () => {
    const limit = await findContainerMemoryLimit(
      files('0::/kubepods/pod1/container\n', V2_MOUNTINFO, {
        '/sys/fs/cgroup/kubepods/pod1/container/memory.max': '805306368\n',
        '/sys/fs/cgroup/kubepods/pod1/memory.max': 'max\n',
        '/sys/fs/cgroup/kubepods/memory.max': 'max\n',
      }),
    );
    expect(limit).toEqual({ bytes: 768 * MiB, file: '/sys/fs/cgroup/kubepods/pod1/container/memory.max', cgroupVersion: 2 });
  });

  it('takes the smallest limit of the v2 ancestors', async () => {
    const limit = await findContainerMemoryLimit(
      files('0::/pod/container\n', V2_MOUNTINFO, {
        '/sys/fs/cgroup/pod/container/memory.max': 'max\n',
        '/sys/fs/cgroup/pod/memory.max': '268435456\n',
      }),
    );
    expect(limit?.bytes).toBe(256 * MiB);
    expect(limit?.file).toBe('/sys/fs/cgroup/pod/memory.max');
  });

  it('maps a namespaced cgroup path to the mount point', async () => {
    const mountinfo = '30 23 0:26 /kubepods/pod1/container /sys/fs/cgroup rw - cgroup2 cgroup2 rw';
    const limit = await findContainerMemoryLimit(files('0::/\n', mountinfo, { '/sys/fs/cgroup/memory.max': '536870912\n' }));
    expect(limit?.bytes).toBe(512 * MiB);
  });

  it('falls back to v1 on a hybrid host', async () => {
    const limit = await findContainerMemoryLimit(
      files('4:memory:/session/test\n0::/\n', HYBRID_MOUNTINFO, {
        '/sys/fs/cgroup/memory/session/test/memory.stat': 'cache 0\nhierarchical_memory_limit 536870912\nhierarchical_memsw_limit 9223372036854771712\n',
      }),
    );
    expect(limit).toEqual({ bytes: 512 * MiB, file: '/sys/fs/cgroup/memory/session/test/memory.stat', cgroupVersion: 1 });
  });

  it('reads memory.limit_in_bytes without memory.stat', async () => {
    const limit = await findContainerMemoryLimit(
      files('4:memory:/test\n', HYBRID_MOUNTINFO, { '/sys/fs/cgroup/memory/test/memory.limit_in_bytes': '1073741824\n' }),
    );
    expect(limit?.bytes).toBe(1024 * MiB);
  });

  it('treats the v1 maximum as no limit', async () => {
    const limit = await findContainerMemoryLimit(
      files('4:memory:/\n0::/\n', HYBRID_MOUNTINFO, { '/sys/fs/cgroup/memory/memory.stat': 'hierarchical_memory_limit 9223372036854771712\n' }),
    );
    expect(limit).toBeUndefined();
  });

  it('returns undefined without cgroup mounts', async () => {
    expect(await findContainerMemoryLimit(files('0::/\n', '', {}))).toBeUndefined();
  });
});

describe('memoryBudgetForLimit', () => {
  it('applies min(512 MiB, (limit - 200 MiB) / 2)', () => {
    expect(memoryBudgetForLimit(512 * MiB, 16 * MiB)).toBe(156 * MiB);
    expect(memoryBudgetForLimit(768 * MiB, 16 * MiB)).toBe(284 * MiB);
    expect(memoryBudgetForLimit(4096 * MiB, 16 * MiB)).toBe(512 * MiB);
  });

  it('never goes below the minimum', () => {
    expect(memoryBudgetForLimit(128 * MiB, 16 * MiB)).toBe(16 * MiB);
  });
});

describe('chooseMemoryBudget', () => {
  it('prefers the explicit option', async () => {
    const decision = await chooseMemoryBudget(100 * MiB, 16 * MiB, files('0::/\n', V2_MOUNTINFO, { '/sys/fs/cgroup/memory.max': '536870912' }));
    expect(decision).toEqual({ bytes: 100 * MiB, source: 'option' });
  });

  it('derives from the container limit', async () => {
    const decision = await chooseMemoryBudget(undefined, 16 * MiB, files('0::/\n', V2_MOUNTINFO, { '/sys/fs/cgroup/memory.max': '536870912' }));
    expect(decision.source).toBe('cgroup');
    expect(decision.bytes).toBe(156 * MiB);
  });

  it('uses 512 MiB without a limit', async () => {
    const decision = await chooseMemoryBudget(undefined, 16 * MiB, files('0::/\n', V2_MOUNTINFO, { '/sys/fs/cgroup/memory.max': 'max' }));
    expect(decision).toEqual({ bytes: 512 * MiB, source: 'default' });
  });
});

describe('garbageThreshold', () => {
  it('is a quarter of the budget within bounds', () => {
    expect(garbageThreshold(256 * MiB)).toBe(64 * MiB);
    expect(garbageThreshold(64 * MiB)).toBe(32 * MiB);
    expect(garbageThreshold(2048 * MiB)).toBe(128 * MiB);
  });
});
