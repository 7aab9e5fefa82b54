/**
 * Benchmark of bucketmount against the direct SDK (the ceiling) and peer
 * mounts (s3fs, rclone, goofys on MinIO; gcsfuse on fake-gcs-server), all on
 * local servers started here. bench/run.sh installs the peers, builds, and
 * runs this file; `--help` lists the options.
 *
 * Outputs go to bench/out/ (Markdown, JSON, PNG), and each run is appended to
 * bench/RESULTS.md unless --no-record is given.
 */

import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';

import { REPOSITORY_ROOT } from '../test/e2e/daemon.js';
import { cacheDir } from '../test/env/paths.js';
import { gcsTargets, s3Targets, type MountTarget, type PeerBinaries } from './mounts.js';
import { gcsAdminClient, gcsCeilingClient, s3AdminClient, s3CeilingClient } from './object-clients.js';
import { parseOptions, type BenchOptions } from './options.js';
import { writeOutputs, type RunRecord } from './report.js';
import { computeRatios, PHASES, type Result } from './results.js';
import { startGcsEnvironment, startS3Environment } from './servers.js';
import { runCeiling, runTarget, seedBucket, type SuiteContext } from './suite.js';
import { percentile, runCommand } from './workloads.js';

const MiB = 1024 * 1024;

function log(message: string): void {
  process.stderr.write(`bench: ${new Date().toISOString().slice(11, 19)} ${message}\n`);
}

async function firstLine(file: string, args: string[]): Promise<string> {
  try {
    const outcome = await runCommand(file, args, 30_000);
    return (outcome.stdout + outcome.stderr).split('\n').find((line) => line.trim() !== '')?.trim() ?? 'unknown';
  } catch (error) {
    return `unknown (${(error as Error).message})`;
  }
}

function readTrimmed(path: string): string {
  return existsSync(path) ? readFileSync(path, 'utf8').trim() : 'not installed';
}

async function collectVersions(benchBin: string): Promise<Record<string, string>> {
  const packageJson = JSON.parse(readFileSync(join(REPOSITORY_ROOT, 'package.json'), 'utf8')) as { version: string };
  const commit = await firstLine('git', ['-C', REPOSITORY_ROOT, 'rev-parse', '--short', 'HEAD']);
  return {
    bucketmount: `${packageJson.version} (commit ${commit.startsWith('fatal') ? 'none' : commit})`,
    node: process.version,
    libfuse3: await firstLine('dpkg-query', ['-W', '-f=${Version}', 'libfuse3-3']),
    minio: readTrimmed(join(cacheDir(), 'bin', 'minio.version')),
    'fake-gcs-server': readTrimmed(join(cacheDir(), 'bin', 'fake-gcs-server.version')),
    s3fs: existsSync('/usr/bin/s3fs') ? await firstLine('/usr/bin/s3fs', ['--version']) : 'not installed',
    rclone: existsSync('/usr/bin/rclone') ? await firstLine('/usr/bin/rclone', ['version']) : 'not installed',
    goofys: existsSync(join(benchBin, 'goofys')) ? `${readTrimmed(join(benchBin, 'goofys.version')).split(' ')[0]}` : 'not installed',
    gcsfuse: existsSync(join(benchBin, 'gcsfuse')) ? readTrimmed(join(benchBin, 'gcsfuse.version')) : 'not installed',
  };
}

async function collectMachine(): Promise<Record<string, string>> {
  return {
    nproc: String(cpus().length),
    cpu: cpus()[0]?.model ?? 'unknown',
    memory: `${(totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    kernel: await firstLine('uname', ['-r']),
  };
}

/** Median wall time of a bare `node -e 0`, the start-up floor of any Node.js program. */
async function measureNodeStart(): Promise<number> {
  const samples: number[] = [];
  for (let run = 0; run < 5; run += 1) {
    const started = performance.now();
    await runCommand(process.execPath, ['-e', '0']);
    samples.push(performance.now() - started);
  }
  return percentile(samples, 0.5);
}

function selectTargets(targets: MountTarget[], options: BenchOptions, skipped: RunRecord['skipped']): MountTarget[] {
  const selected: MountTarget[] = [];
  for (const target of targets) {
    if (options.targets !== undefined && !options.targets.includes(target.name)) continue;
    if (target.unavailable !== undefined) {
      skipped.push({ backend: target.backend, target: target.name, reason: target.unavailable });
      continue;
    }
    selected.push(target);
  }
  return selected;
}

/**
 * Deletes the objects that one target wrote (all under its name), so that
 * every target finds the server with only the seeded objects.
 * fake-gcs-server keeps objects in memory, and its requests slowed down in
 * full runs as objects accumulated. NOTE: the deletions did not bring a full
 * GCS run back to a freshly seeded server's listing times.
 */
async function deleteWrites(context: SuiteContext, name: string): Promise<void> {
  const started = performance.now();
  const deleted = await context.admin.deletePrefix(`${name}/`);
  log(`${context.backend}: deleted the ${deleted} objects that ${name} wrote in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

async function runBackend(backend: 's3' | 'gcs', base: Omit<SuiteContext, 'backend' | 'admin' | 'ceiling' | 'targets'>, peers: PeerBinaries, record: RunRecord): Promise<Result[]> {
  log(`${backend}: starting servers`);
  const environment = backend === 's3' ? await startS3Environment() : await startGcsEnvironment();
  const results: Result[] = [];
  try {
    const admin = backend === 's3' ? s3AdminClient(environment as Awaited<ReturnType<typeof startS3Environment>>) : gcsAdminClient(environment as Awaited<ReturnType<typeof startGcsEnvironment>>);
    const ceiling = backend === 's3' ? await s3CeilingClient(environment as Awaited<ReturnType<typeof startS3Environment>>) : await gcsCeilingClient(environment as Awaited<ReturnType<typeof startGcsEnvironment>>);
    const allTargets = backend === 's3' ? s3Targets(environment as Awaited<ReturnType<typeof startS3Environment>>, peers) : gcsTargets(environment as Awaited<ReturnType<typeof startGcsEnvironment>>, peers);
    for (const target of allTargets) record.credentials[`${backend} ${target.name}`] = target.credentials;
    const targets = selectTargets(allTargets, base.options, record.skipped);
    const context: SuiteContext = { ...base, backend, admin, ceiling, targets };

    await seedBucket(context);
    try {
      // Every runner's reads come before anyone's writes: fake-gcs-server served reads and listings more
      // slowly after large writes of the same run, even once those objects were deleted.
      for (const phase of PHASES) {
        results.push(...(await runCeiling(context, phase)));
        if (phase === 'writes') await deleteWrites(context, 'sdk');
        for (const target of targets) {
          results.push(...(await runTarget(context, target, phase)));
          if (phase === 'writes') await deleteWrites(context, target.name);
        }
      }
    } finally {
      ceiling.close();
    }
  } finally {
    await environment.stop();
  }
  return results;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), join(REPOSITORY_ROOT, 'bench', 'out'));
  const benchBin = join(cacheDir(), 'bench-bin');
  const versions = await collectVersions(benchBin);
  const peers: PeerBinaries = { benchBin, versions };
  const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const record: RunRecord = {
    date,
    command: `bench/run.sh ${process.argv.slice(2).join(' ')}`.trim(),
    machine: await collectMachine(),
    versions,
    options: { ...options },
    credentials: { sdk: 'web identity: one AssumeRoleWithWebIdentity (S3) or STS exchange plus impersonation (GCS)' },
    skipped: [],
    results: [],
  };

  await mkdir(options.outputDirectory, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), 'bucketmount-bench-'));
  try {
    const sourceFile = join(work, 'source.bin');
    const sourceBytes = Math.max(options.largeFileBytes, options.writeBytes, options.parallelFileBytes);
    log(`generating ${sourceBytes / MiB} MiB of random data`);
    const generated = await runCommand('sh', ['-c', `head -c ${sourceBytes} /dev/urandom > "${sourceFile}"`]);
    if (generated.status !== 0) throw new Error(`generating ${sourceFile} failed: ${generated.stderr}`);

    const nodeStartMs = await measureNodeStart();
    for (const backend of options.backends) {
      try {
        record.results.push(...(await runBackend(backend, { options, sourceFile, nodeStartMs, log }, peers, record)));
      } catch (error) {
        const reason = (error as Error).message.replace(/\s+/g, ' ').slice(0, 600);
        log(`${backend}: section failed: ${reason}`);
        record.skipped.push({ backend, target: 'all', reason: `section failed: ${reason}` });
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }

  computeRatios(record.results);
  const stem = join(options.outputDirectory, `bench-${date.replace(/[:]/g, '')}`);
  const markdown = await writeOutputs(record, {
    json: `${stem}.json`,
    markdown: `${stem}.md`,
    resultsFile: options.recordResults ? join(REPOSITORY_ROOT, 'bench', 'RESULTS.md') : undefined,
  });

  const python = join(cacheDir(), 'bench-venv', 'bin', 'python');
  if (existsSync(python)) {
    const plotted = await runCommand(python, [join(REPOSITORY_ROOT, 'bench', 'plot.py'), `${stem}.json`, `${stem}.png`]);
    if (plotted.status !== 0) log(`plot failed: ${plotted.stderr.trim()}`);
    else log(`plot written to ${stem}.png`);
  } else {
    log(`plot skipped: ${python} not found (test/env/install.sh --bench installs matplotlib)`);
  }
  process.stdout.write(markdown);
  log(`results in ${stem}.json and ${stem}.md`);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
