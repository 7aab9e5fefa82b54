/**
 * Command-line options of the benchmark and the `--quick` profile.
 */

import { parseArgs } from 'node:util';

import { SCENARIOS } from './results.js';

const MiB = 1024 * 1024;

export interface BenchOptions {
  quick: boolean;
  backends: Array<'s3' | 'gcs'>;
  /** Target names to run; the SDK ceiling always runs. */
  targets: string[] | undefined;
  /** Scenario names to run; undefined runs all. */
  scenarios: string[] | undefined;
  largeFileBytes: number;
  parallelReaders: number;
  parallelFileBytes: number;
  randomReads: number;
  writeBytes: number;
  smallFiles: number;
  smallFileBytes: number;
  listFiles: number;
  treeDirectories: number;
  treeFilesPerDirectory: number;
  /** Bytes written and then read by the memory-bound scenario. */
  memoryCheckBytes: number;
  /** The --memory-limit of the memory-bound scenario's mount, in MiB. */
  memoryCheckLimitMib: number;
  outputDirectory: string;
  recordResults: boolean;
}

export const USAGE = `Usage: node dist/bench/run.js [options]

  --quick                  small sizes for a smoke run (a few minutes)
  --backends s3,gcs        backends to run (default s3,gcs)
  --targets LIST           mounts to run, of bucketmount,s3fs,rclone,goofys,gcsfuse (default all)
  --scenarios LIST         scenarios to run (default all): ${SCENARIOS.map((scenario) => scenario.name).join(',')}
  --large-file-mib N       size of the sequentially read file (default 1024, quick 64)
  --parallel-readers N     number of parallel readers (default 16, quick 16)
  --parallel-file-mib N    size of each parallel reader's file (default 64, quick 4)
  --random-reads N         reads per random-read scenario (default 1000, quick 100)
  --write-mib N            size of the sequential write (default 1024, quick 64)
  --small-files N          files written then read (default 1000, quick 50)
  --list-files N           files in the directory listed with ls -l (default 10000, quick 300)
  --tree-directories N     directories searched with find (default 100, quick 10)
  --tree-files N           files in each of those directories (default 100, quick 20)
  --memory-check-mib N     written then read by bucketmount under a small memory limit (default 10240, quick 256)
  --memory-check-limit-mib N
                           that mount's --memory-limit (default 256)
  --out DIR                output directory (default bench/out)
  --no-record              do not append the run to bench/RESULTS.md
`;

function positiveInteger(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed <= 0) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(value)}`);
  return parsed;
}

export function parseOptions(argv: string[], defaultOutputDirectory: string): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      backends: { type: 'string' },
      targets: { type: 'string' },
      scenarios: { type: 'string' },
      'large-file-mib': { type: 'string' },
      'parallel-readers': { type: 'string' },
      'parallel-file-mib': { type: 'string' },
      'random-reads': { type: 'string' },
      'write-mib': { type: 'string' },
      'small-files': { type: 'string' },
      'list-files': { type: 'string' },
      'tree-directories': { type: 'string' },
      'tree-files': { type: 'string' },
      'memory-check-mib': { type: 'string' },
      'memory-check-limit-mib': { type: 'string' },
      out: { type: 'string' },
      'no-record': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }

  const quick = values.quick ?? false;
  const backends = (values.backends ?? 's3,gcs').split(',').map((name) => name.trim());
  for (const backend of backends) {
    if (backend !== 's3' && backend !== 'gcs') throw new Error(`--backends takes s3 and gcs, got ${JSON.stringify(backend)}`);
  }

  const scenarios = values.scenarios?.split(',').map((name) => name.trim());
  for (const name of scenarios ?? []) {
    if (!SCENARIOS.some((scenario) => scenario.name === name)) {
      throw new Error(`--scenarios takes names of ${SCENARIOS.map((scenario) => scenario.name).join(', ')}; got ${JSON.stringify(name)}`);
    }
  }

  return {
    quick,
    scenarios,
    backends: backends as Array<'s3' | 'gcs'>,
    targets: values.targets?.split(',').map((name) => name.trim()),
    largeFileBytes: positiveInteger('large-file-mib', values['large-file-mib'], quick ? 64 : 1024) * MiB,
    parallelReaders: positiveInteger('parallel-readers', values['parallel-readers'], 16),
    parallelFileBytes: positiveInteger('parallel-file-mib', values['parallel-file-mib'], quick ? 4 : 64) * MiB,
    randomReads: positiveInteger('random-reads', values['random-reads'], quick ? 100 : 1000),
    writeBytes: positiveInteger('write-mib', values['write-mib'], quick ? 64 : 1024) * MiB,
    smallFiles: positiveInteger('small-files', values['small-files'], quick ? 50 : 1000),
    smallFileBytes: 4096,
    listFiles: positiveInteger('list-files', values['list-files'], quick ? 300 : 10_000),
    treeDirectories: positiveInteger('tree-directories', values['tree-directories'], quick ? 10 : 100),
    treeFilesPerDirectory: positiveInteger('tree-files', values['tree-files'], quick ? 20 : 100),
    memoryCheckBytes: positiveInteger('memory-check-mib', values['memory-check-mib'], quick ? 256 : 10_240) * MiB,
    memoryCheckLimitMib: positiveInteger('memory-check-limit-mib', values['memory-check-limit-mib'], 256),
    outputDirectory: values.out ?? defaultOutputDirectory,
    recordResults: !(values['no-record'] ?? false),
  };
}
