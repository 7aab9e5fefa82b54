/**
 * One row of the benchmark: a scenario on one target (the SDK ceiling or a mount).
 */

export interface Result {
  backend: 's3' | 'gcs';
  scenario: string;
  target: string;
  status: 'ok' | 'skipped' | 'failed';
  reason?: string;
  /** Wall time of the measured step. */
  seconds?: number;
  /** Bytes the workload read or wrote. */
  bytes?: number;
  mibPerSecond?: number;
  p50Ms?: number;
  p99Ms?: number;
  /** Bytes the object server sent, counted by the proxy in front of it. */
  serverBytes?: number;
  /** serverBytes / bytes: how many bytes were fetched per byte read. */
  amplification?: number;
  cpuSeconds?: number;
  peakRssMiB?: number;
  /** Performance relative to the SDK ceiling; 1 is the ceiling, higher is better. */
  ratio?: number;
  note?: string;
}

export type ScenarioKind = 'throughput' | 'time' | 'latency';

/** Scenarios in report order, with how their ratio to the ceiling is computed. */
export const SCENARIOS: Array<{ name: string; kind: ScenarioKind; description: string }> = [
  { name: 'startup', kind: 'time', description: 'process start to the first readdir result of the mount point' },
  { name: 'seq-read-cold', kind: 'throughput', description: 'sequential read of the large file, page cache dropped, fresh mount' },
  { name: 'seq-read-warm', kind: 'throughput', description: 'the same read again on the same mount' },
  { name: 'parallel-read', kind: 'throughput', description: 'parallel readers of different files, one dd each' },
  { name: 'random-4k', kind: 'latency', description: 'random 4 KiB preads of the large file' },
  { name: 'random-128k', kind: 'latency', description: 'random 128 KiB preads of the large file' },
  { name: 'seq-write', kind: 'throughput', description: 'dd of a random file into the mount, until the object is in the bucket' },
  { name: 'small-write', kind: 'time', description: 'writing small files, one open-write-close each' },
  { name: 'small-read', kind: 'time', description: 'reading them back after the page cache is dropped' },
  { name: 'ls-l', kind: 'time', description: 'ls -l of one directory, fresh mount' },
  { name: 'find', kind: 'time', description: 'find -type f over a tree of directories, fresh mount' },
  { name: 'memory-bound', kind: 'throughput', description: 'bucketmount only: a large write then read under a small --memory-limit, with the peak RSS' },
];

/**
 * The benchmark runs every runner's read scenarios before any runner's
 * write scenarios, so that reads and listings meet the server as the
 * seeding left it (see runBackend in run.ts).
 */
export type Phase = 'reads' | 'writes';
export const PHASES: readonly Phase[] = ['reads', 'writes'];

const WRITING_SCENARIOS = new Set(['seq-write', 'small-write', 'small-read', 'memory-bound']);

/** Returns the phase a scenario runs in: small-read reads what small-write wrote, so it runs with the writes. */
export function phaseOf(scenario: string): Phase {
  return WRITING_SCENARIOS.has(scenario) ? 'writes' : 'reads';
}

export function scenarioKind(name: string): ScenarioKind {
  return SCENARIOS.find((scenario) => scenario.name === name)?.kind ?? 'time';
}

/** Fills `ratio` of every result from the SDK row of the same backend and scenario. */
export function computeRatios(results: Result[]): void {
  for (const result of results) {
    if (result.status !== 'ok' || result.target === 'sdk') continue;
    const ceiling = results.find((candidate) => candidate.backend === result.backend && candidate.scenario === result.scenario && candidate.target === 'sdk' && candidate.status === 'ok');
    if (ceiling === undefined) continue;
    const kind = scenarioKind(result.scenario);
    if (kind === 'throughput' && ceiling.mibPerSecond && result.mibPerSecond !== undefined) result.ratio = result.mibPerSecond / ceiling.mibPerSecond;
    if (kind === 'time' && ceiling.seconds !== undefined && result.seconds) result.ratio = ceiling.seconds / result.seconds;
    if (kind === 'latency' && ceiling.p50Ms !== undefined && result.p50Ms) result.ratio = ceiling.p50Ms / result.p50Ms;
  }
}
