/**
 * Seeds a bucket and runs every scenario on the SDK ceiling and on each
 * mount target of one backend.
 *
 * Each mount scenario gets a fresh mount, so that caches start empty, and the
 * page cache is dropped before it. The warm re-read is the exception: it
 * reads again on the mount of the cold read. CPU seconds are those the mount
 * process used during the measured step; peak RSS is its VmHWM at the end of
 * the step, which counts from the mount's start.
 */

import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import type { MountTarget, RunningMount } from './mounts.js';
import { BLOCK_BYTES, IN_FLIGHT, type AdminClient, type CeilingClient } from './object-clients.js';
import type { BenchOptions } from './options.js';
import { sampleProcess } from './process-stats.js';
import { phaseOf, type Phase, type Result } from './results.js';
import { dropPageCache, percentile, RANDOM_READ_PROGRAM, runChecked, runCommand, SMALL_READ_PROGRAM, SMALL_WRITE_PROGRAM } from './workloads.js';

const MiB = 1024 * 1024;
const SEED_CONCURRENCY = 32;
const VISIBLE_TIMEOUT_MS = 300_000;

export const LARGE_KEY = 'large.bin';
const parallelKey = (index: number): string => `parallel/part-${String(index).padStart(2, '0')}.bin`;
const listKey = (index: number): string => `list/file-${String(index).padStart(5, '0')}`;
const treeKey = (directory: number, file: number): string => `tree/dir-${String(directory).padStart(3, '0')}/file-${String(file).padStart(3, '0')}`;

export interface SuiteContext {
  backend: 's3' | 'gcs';
  options: BenchOptions;
  /** A local file of random bytes at least as large as the large file and the write. */
  sourceFile: string;
  admin: AdminClient;
  ceiling: CeilingClient;
  targets: MountTarget[];
  /** Median wall time of `node -e 0`, the reference start of a Node.js process. */
  nodeStartMs: number;
  log(message: string): void;
}

async function runPool<T>(items: T[], concurrency: number, worker: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const runners = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await worker(item);
    }
  });
  await Promise.all(runners);
}

async function readSlice(path: string, start: number, length: number): Promise<Buffer> {
  const file = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    await file.read(buffer, 0, length, start);
    return buffer;
  } finally {
    await file.close();
  }
}

/**
 * Seeds what the selected scenarios read. Start-up lists the bucket root, so
 * it takes the whole seed, to time the same listing as a full run does.
 * Seeding 20,000 small objects into fake-gcs-server takes minutes, which a
 * run of the write or memory scenarios alone does not need.
 */
export async function seedBucket(context: SuiteContext): Promise<void> {
  const { admin, options } = context;
  if (selected(options, ['startup', 'seq-read-cold', 'seq-read-warm', 'random-4k', 'random-128k'])) {
    context.log(`${context.backend}: seeding ${LARGE_KEY} (${options.largeFileBytes / MiB} MiB)`);
    const largeSource = `${context.sourceFile}.large`;
    await runChecked('sh', ['-c', `head -c ${options.largeFileBytes} "${context.sourceFile}" > "${largeSource}"`]);
    await admin.uploadFile(LARGE_KEY, largeSource);
    await runChecked('rm', ['-f', largeSource]);
  }

  if (selected(options, ['startup', 'parallel-read'])) {
    context.log(`${context.backend}: seeding ${options.parallelReaders} files of ${options.parallelFileBytes / MiB} MiB`);
    for (let index = 0; index < options.parallelReaders; index += 1) {
      await admin.putObject(parallelKey(index), await readSlice(context.sourceFile, (index * options.parallelFileBytes) % Math.max(1, options.largeFileBytes - options.parallelFileBytes), options.parallelFileBytes));
    }
  }

  if (!selected(options, ['startup', 'ls-l', 'find'])) return;

  const smallKeys = [
    ...Array.from({ length: options.listFiles }, (_, index) => listKey(index)),
    ...Array.from({ length: options.treeDirectories * options.treeFilesPerDirectory }, (_, index) =>
      treeKey(Math.floor(index / options.treeFilesPerDirectory), index % options.treeFilesPerDirectory),
    ),
  ];
  context.log(`${context.backend}: seeding ${smallKeys.length} small objects`);
  const body = Buffer.alloc(100, 'x');
  await runPool(smallKeys, SEED_CONCURRENCY, (key) => admin.putObject(key, body));
}

function mib(bytes: number, seconds: number): number {
  return bytes / MiB / seconds;
}

/** Runs a measured step on a mount and fills time, CPU, RSS and server bytes. */
async function measureOnMount(mount: RunningMount, serverBytes: () => number, step: () => Promise<void>): Promise<Pick<Result, 'seconds' | 'cpuSeconds' | 'peakRssMiB' | 'serverBytes'>> {
  const before = sampleProcess(mount.pid);
  const bytesBefore = serverBytes();
  const started = performance.now();
  await step();
  const seconds = (performance.now() - started) / 1000;
  const after = sampleProcess(mount.pid);
  return {
    seconds,
    serverBytes: serverBytes() - bytesBefore,
    cpuSeconds: before && after ? after.cpuSeconds - before.cpuSeconds : undefined,
    peakRssMiB: after ? after.peakRssBytes / MiB : undefined,
  };
}

async function measureCeiling(ceiling: CeilingClient, step: () => Promise<void>): Promise<Pick<Result, 'seconds' | 'serverBytes'>> {
  // The mounts start every scenario group from an empty page cache, so the server reads its disk
  // again; the ceiling starts each step the same way, or it would compare a warm server with a cold one.
  await dropPageCache();
  const bytesBefore = ceiling.serverBytes();
  const started = performance.now();
  await step();
  return { seconds: (performance.now() - started) / 1000, serverBytes: ceiling.serverBytes() - bytesBefore };
}

/** Reads an object as ranged GETs of BLOCK_BYTES, IN_FLIGHT at a time, the way the ceiling reads. */
async function ceilingParallelRead(ceiling: CeilingClient, key: string, size: number): Promise<void> {
  const starts = Array.from({ length: Math.ceil(size / BLOCK_BYTES) }, (_, index) => index * BLOCK_BYTES);
  let received = 0;
  await runPool(starts, IN_FLIGHT, async (start) => {
    // Awaited first: `received += await ...` would read `received` before the await and lose updates.
    const length = await ceiling.getRange(key, start, Math.min(size, start + BLOCK_BYTES));
    received += length;
  });
  if (received !== size) throw new Error(`the SDK read ${received} bytes of ${key}, expected ${size}`);
}

async function ceilingList(ceiling: CeilingClient, prefix: string, delimiter: string | undefined): Promise<number> {
  let entries = 0;
  let token: string | undefined;
  do {
    const page = await ceiling.listPage(prefix, delimiter, token);
    entries += page.entries;
    token = page.next;
  } while (token !== undefined);
  return entries;
}

async function waitUntilStored(admin: AdminClient, key: string, size: number): Promise<void> {
  const deadline = Date.now() + VISIBLE_TIMEOUT_MS;
  while ((await admin.objectSize(key)) !== size) {
    if (Date.now() > deadline) throw new Error(`${key} did not reach ${size} bytes in the bucket within ${VISIBLE_TIMEOUT_MS} ms`);
    await sleep(10);
  }
}

function ok(context: SuiteContext, scenario: string, target: string, fields: Partial<Result>): Result {
  const result: Result = { backend: context.backend, scenario, target, status: 'ok', ...fields };
  if (result.bytes !== undefined && result.seconds !== undefined && result.seconds > 0) result.mibPerSecond = mib(result.bytes, result.seconds);
  if (result.bytes !== undefined && result.serverBytes !== undefined && result.bytes > 0) result.amplification = result.serverBytes / result.bytes;
  return result;
}

export async function runCeiling(context: SuiteContext, phase: Phase): Promise<Result[]> {
  const { ceiling, options } = context;
  const results: Result[] = [];
  const record = (scenario: string, fields: Partial<Result>): void => {
    results.push(ok(context, scenario, 'sdk', { note: 'runs in the benchmark process; CPU and RSS not separable from the proxy', ...fields }));
  };
  const isSelected = (scenario: string): boolean => phaseOf(scenario) === phase && selected(options, [scenario]);
  context.log(`${context.backend}: SDK ceiling, ${phase}`);

  // Startup reference: a bare Node.js start, the credential exchange, and a first listing.
  if (isSelected('startup')) {
    const listed = await measureCeiling(ceiling, async () => {
      await ceiling.listPage('', '/', undefined);
    });
    record('startup', {
      seconds: (context.nodeStartMs + ceiling.exchangeMs) / 1000 + (listed.seconds ?? 0),
      note: `node -e 0 ${context.nodeStartMs.toFixed(0)} ms + credential exchange ${ceiling.exchangeMs.toFixed(0)} ms + first listing ${((listed.seconds ?? 0) * 1000).toFixed(0)} ms`,
    });
  }

  if (isSelected('seq-read-cold')) {
    record('seq-read-cold', { bytes: options.largeFileBytes, ...(await measureCeiling(ceiling, () => ceilingParallelRead(ceiling, LARGE_KEY, options.largeFileBytes))) });
  }
  if (isSelected('seq-read-warm')) {
    record('seq-read-warm', {
      bytes: options.largeFileBytes,
      ...(await measureCeiling(ceiling, () => ceilingParallelRead(ceiling, LARGE_KEY, options.largeFileBytes))),
      note: 'the SDK has no cache: read from the server again',
    });
  }

  const parallelBytes = options.parallelReaders * options.parallelFileBytes;
  if (isSelected('parallel-read')) {
    record('parallel-read', {
      bytes: parallelBytes,
      ...(await measureCeiling(ceiling, async () => {
        await Promise.all(Array.from({ length: options.parallelReaders }, (_, index) => ceiling.getObject(parallelKey(index))));
      })),
      note: 'one whole-object GET per file, all at once',
    });
  }

  for (const [scenario, size] of [['random-4k', 4096], ['random-128k', 128 * 1024]] as const) {
    if (!isSelected(scenario)) continue;
    const latencies: number[] = [];
    const random = mulberry32(7);
    const slots = Math.floor(options.largeFileBytes / size);
    const measured = await measureCeiling(ceiling, async () => {
      for (let index = 0; index < options.randomReads; index += 1) {
        const start = Math.floor(random() * slots) * size;
        const started = performance.now();
        await ceiling.getRange(LARGE_KEY, start, start + size);
        latencies.push(performance.now() - started);
      }
    });
    record(scenario, { bytes: options.randomReads * size, ...measured, p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99), note: 'one ranged GET per read' });
  }

  if (isSelected('ls-l')) {
    record('ls-l', { ...(await measureCeiling(ceiling, async () => void (await ceilingList(ceiling, 'list/', '/')))), note: 'listing pages with a delimiter' });
  }
  if (isSelected('find')) {
    record('find', { ...(await measureCeiling(ceiling, async () => void (await ceilingList(ceiling, 'tree/', undefined)))), note: 'listing pages without a delimiter' });
  }

  if (isSelected('seq-write')) {
    const writeSource = `${context.sourceFile}.write`;
    await runChecked('sh', ['-c', `head -c ${options.writeBytes} "${context.sourceFile}" > "${writeSource}"`]);
    record('seq-write', { bytes: options.writeBytes, ...(await measureCeiling(ceiling, () => ceiling.uploadFile('sdk/write.bin', writeSource))), serverBytes: undefined });
    await runChecked('rm', ['-f', writeSource]);
  }

  // The reads need the writes' objects, so the two run together.
  if (isSelected('small-write') || isSelected('small-read')) {
    const smallBody = Buffer.alloc(options.smallFileBytes, 's');
    record('small-write', {
      ...(await measureCeiling(ceiling, async () => {
        for (let index = 0; index < options.smallFiles; index += 1) await ceiling.putObject(`sdk/small/file-${String(index).padStart(5, '0')}`, smallBody);
      })),
      serverBytes: undefined,
      note: 'one PUT after another',
    });
    record('small-read', {
      ...(await measureCeiling(ceiling, async () => {
        for (let index = 0; index < options.smallFiles; index += 1) await ceiling.getObject(`sdk/small/file-${String(index).padStart(5, '0')}`);
      })),
      note: 'one GET after another',
    });
  }

  return results;
}

/** A small seeded generator, so that every run reads the same offsets. */
function mulberry32(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let value = Math.imul(state ^ (state >>> 15), 1 | state);
    value = (value + Math.imul(value ^ (value >>> 7), 61 | value)) ^ value;
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
}

/** Returns whether any of `scenarios` is selected (all are, without --scenarios). */
function selected(options: BenchOptions, scenarios: string[]): boolean {
  return options.scenarios === undefined || scenarios.some((scenario) => options.scenarios!.includes(scenario));
}

/**
 * Mounts, runs `body` and unmounts, also on failure. A failure becomes one
 * failed row per scenario. Scenarios left out by --scenarios or of another
 * phase do not mount.
 */
async function withMount(
  context: SuiteContext,
  phase: Phase,
  target: MountTarget,
  scenarios: string[],
  body: (mount: RunningMount) => Promise<Result[]>,
  extraArgs: string[] = [],
): Promise<Result[]> {
  const inPhase = scenarios.filter((scenario) => phaseOf(scenario) === phase);
  if (inPhase.length === 0 || !selected(context.options, inPhase)) return [];
  const dropNote = await dropPageCache();
  let mount: RunningMount | undefined;
  try {
    mount = await target.mount(extraArgs);
    const results = (await body(mount)).filter((result) => selected(context.options, [result.scenario]));
    if (dropNote !== undefined) for (const result of results) result.note = [result.note, dropNote].filter(Boolean).join('; ');
    return results;
  } catch (error) {
    const reason = (error as Error).message.replace(/\s+/g, ' ').slice(0, 600);
    context.log(`${context.backend}: ${target.name} failed in ${scenarios.join(', ')}: ${reason}`);
    return scenarios.map((scenario) => ({ backend: context.backend, scenario, target: target.name, status: 'failed' as const, reason }));
  } finally {
    await mount?.stop();
  }
}

export async function runTarget(context: SuiteContext, target: MountTarget, phase: Phase): Promise<Result[]> {
  const { options, admin } = context;
  const serverBytes = target.serverBytes ?? ((): number => context.ceiling.serverBytes());
  const results: Result[] = [];
  context.log(`${context.backend}: ${target.name}, ${phase}`);
  const add = (scenario: string, fields: Partial<Result>): Result => ok(context, scenario, target.name, fields);

  results.push(
    ...(await withMount(context, phase, target, ['startup', 'seq-read-cold', 'seq-read-warm'], async (mount) => {
      const path = join(mount.mountpoint, LARGE_KEY);
      const dd = (): Promise<string> => runChecked('dd', [`if=${path}`, 'of=/dev/null', 'bs=1M', 'status=none']);
      const cold = await measureOnMount(mount, serverBytes, async () => void (await dd()));
      const warm = await measureOnMount(mount, serverBytes, async () => void (await dd()));
      return [
        add('startup', { seconds: mount.firstListMs / 1000, note: `mount point ready after ${mount.readyMs.toFixed(0)} ms` }),
        add('seq-read-cold', { bytes: options.largeFileBytes, ...cold }),
        add('seq-read-warm', { bytes: options.largeFileBytes, ...warm }),
      ];
    })),
  );

  results.push(
    ...(await withMount(context, phase, target, ['parallel-read'], async (mount) => {
      const measured = await measureOnMount(mount, serverBytes, async () => {
        await Promise.all(
          Array.from({ length: options.parallelReaders }, (_, index) => runChecked('dd', [`if=${join(mount.mountpoint, parallelKey(index))}`, 'of=/dev/null', 'bs=1M', 'status=none'])),
        );
      });
      return [add('parallel-read', { bytes: options.parallelReaders * options.parallelFileBytes, ...measured })];
    })),
  );

  for (const [scenario, size] of [['random-4k', 4096], ['random-128k', 128 * 1024]] as const) {
    results.push(
      ...(await withMount(context, phase, target, [scenario], async (mount) => {
        let latencies: number[] = [];
        const measured = await measureOnMount(mount, serverBytes, async () => {
          const output = await runChecked('python3', ['-c', RANDOM_READ_PROGRAM, join(mount.mountpoint, LARGE_KEY), String(size), String(options.randomReads), '7']);
          latencies = JSON.parse(output) as number[];
        });
        return [add(scenario, { bytes: options.randomReads * size, ...measured, p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99) })];
      })),
    );
  }

  results.push(
    ...(await withMount(context, phase, target, ['ls-l'], async (mount) => {
      let lines = 0;
      const measured = await measureOnMount(mount, serverBytes, async () => {
        const outcome = await runCommand('ls', ['-l', join(mount.mountpoint, 'list')]);
        if (outcome.status !== 0) throw new Error(`ls -l failed: ${outcome.stderr.slice(0, 300)}`);
        lines = outcome.stdout.split('\n').filter((line) => line.startsWith('-')).length;
      });
      if (lines !== options.listFiles) throw new Error(`ls -l listed ${lines} files, expected ${options.listFiles}`);
      return [add('ls-l', measured)];
    })),
  );

  results.push(
    ...(await withMount(context, phase, target, ['find'], async (mount) => {
      let files = 0;
      const measured = await measureOnMount(mount, serverBytes, async () => {
        const output = await runChecked('find', [join(mount.mountpoint, 'tree'), '-type', 'f']);
        files = output.split('\n').filter(Boolean).length;
      });
      const expected = options.treeDirectories * options.treeFilesPerDirectory;
      if (files !== expected) throw new Error(`find found ${files} files, expected ${expected}`);
      return [add('find', measured)];
    })),
  );

  // Memory stays bounded however much passes through: the write waits for
  // parts to finish and the read's prefetch shrinks when the budget is full.
  // The peers have no memory limit to compare with, so only bucketmount runs.
  if (target.name === 'bucketmount') {
    const limitMib = options.memoryCheckLimitMib;
    results.push(
      ...(await withMount(
        context,
        phase,
        target,
        ['memory-bound'],
        async (mount) => {
          const files = memoryCheckFiles(context.backend, options.memoryCheckBytes);
          const copies = Math.ceil(Math.max(...files) / (await sourceFileSize(context.sourceFile)));
          const keyOf = (index: number): string => `${target.name}/memory-bound-${index}.bin`;
          const measured = await measureOnMount(mount, serverBytes, async () => {
            await runChecked('mkdir', ['-p', join(mount.mountpoint, target.name)]);
            // Each file is removed once read, so that the in-memory emulator does not hold them all.
            for (const [index, bytes] of files.entries()) {
              const path = join(mount.mountpoint, keyOf(index));
              // The source file repeated up to the size. When head exits, the loop's cat ends with SIGPIPE.
              const source = `for copy in $(seq ${copies}); do cat "${context.sourceFile}"; done | head -c ${bytes}`;
              await runChecked('sh', ['-c', `${source} | dd of="${path}" bs=1M iflag=fullblock status=none`]);
              await waitUntilStored(admin, keyOf(index), bytes);
              await dropPageCache();
              const counted = Number((await runChecked('sh', ['-c', `dd if="${path}" bs=1M status=none | wc -c`])).trim());
              if (counted !== bytes) throw new Error(`reading ${keyOf(index)} back gave ${counted} bytes, expected ${bytes}`);
              await runChecked('rm', ['-f', path]);
            }
          });
          const boundMib = limitMib + 150;
          const peakMib = measured.peakRssMiB ?? Number.NaN;
          const verdict = peakMib <= boundMib ? 'within' : 'OVER';
          return [
            add('memory-bound', {
              bytes: 2 * options.memoryCheckBytes,
              ...measured,
              serverBytes: undefined,
              note: `${options.memoryCheckBytes / MiB} MiB written then read${files.length > 1 ? ` as ${files.length} files of at most ${GCS_MEMORY_CHECK_FILE_BYTES / MiB} MiB (fake-gcs-server composes at about 25 MiB/s)` : ''} with --memory-limit ${limitMib}MiB: peak RSS ${peakMib.toFixed(0)} MiB, ${verdict} the bound of ${boundMib} MiB (limit + 150 MiB)`,
            }),
          ];
        },
        ['--memory-limit', `${limitMib}MiB`],
      )),
    );
  }
  results.push(
    ...(await withMount(context, phase, target, ['seq-write'], async (mount) => {
      const key = `${target.name}/write.bin`;
      const measured = await measureOnMount(mount, serverBytes, async () => {
        await runChecked('mkdir', ['-p', join(mount.mountpoint, target.name)]);
        await runChecked('dd', [`if=${context.sourceFile}`, `of=${join(mount.mountpoint, key)}`, 'bs=1M', `count=${options.writeBytes / MiB}`, 'status=none']);
        await waitUntilStored(admin, key, options.writeBytes);
      });
      return [add('seq-write', { bytes: options.writeBytes, ...measured, serverBytes: undefined })];
    })),
  );

  results.push(
    ...(await withMount(context, phase, target, ['small-write', 'small-read'], async (mount) => {
      const directory = join(mount.mountpoint, target.name, 'small');
      const args = [directory, String(options.smallFiles), String(options.smallFileBytes)];
      const written = await measureOnMount(mount, serverBytes, async () => void (await runChecked('python3', ['-c', SMALL_WRITE_PROGRAM, ...args])));
      await dropPageCache();
      const read = await measureOnMount(mount, serverBytes, async () => void (await runChecked('python3', ['-c', SMALL_READ_PROGRAM, ...args])));
      return [add('small-write', { ...written, serverBytes: undefined }), add('small-read', { ...read, note: 'same mount as the writes; page cache dropped in between' })];
    })),
  );

  return results;
}

/**
 * Largest file of the memory check on GCS. fake-gcs-server copies every byte
 * of a compose, at about 25 MiB/s here (composing 1 GiB took 41 s, 2 GiB
 * 78 s). The final compose of a 10 GiB object would therefore outlast the
 * client's 60 s request timeout, while GCS itself composes without copying.
 * Files of 1 GiB pass the same volume through the same mount.
 */
const GCS_MEMORY_CHECK_FILE_BYTES = 1024 * MiB;

/** Sizes of the files the memory check writes and reads: one on S3, pieces of at most 1 GiB on GCS. */
function memoryCheckFiles(backend: string, total: number): number[] {
  if (backend !== 'gcs') return [total];
  const sizes: number[] = [];
  for (let remaining = total; remaining > 0; remaining -= GCS_MEMORY_CHECK_FILE_BYTES) sizes.push(Math.min(remaining, GCS_MEMORY_CHECK_FILE_BYTES));
  return sizes;
}

export async function sourceFileSize(path: string): Promise<number> {
  return (await stat(path)).size;
}
