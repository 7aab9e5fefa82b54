/**
 * The Markdown table, the JSON record and the entry in bench/RESULTS.md.
 * run.ts draws the plot from the JSON record with plot.py.
 */

import { appendFile, readFile, writeFile } from 'node:fs/promises';

import { SCENARIOS, type Result } from './results.js';

const MiB = 1024 * 1024;

export interface RunRecord {
  date: string;
  command: string;
  machine: Record<string, string>;
  versions: Record<string, string>;
  options: Record<string, unknown>;
  credentials: Record<string, string>;
  skipped: Array<{ backend: string; target: string; reason: string }>;
  results: Result[];
}

function format(value: number | undefined, digits: number): string {
  return value === undefined || Number.isNaN(value) ? '' : value.toFixed(digits);
}

function measurement(result: Result): string {
  if (result.status !== 'ok') return `${result.status}: ${result.reason ?? ''}`;
  if (result.p50Ms !== undefined) return `p50 ${format(result.p50Ms, 2)} ms, p99 ${format(result.p99Ms, 2)} ms`;
  if (result.mibPerSecond !== undefined) return `${format(result.mibPerSecond, 1)} MiB/s (${format(result.seconds, 2)} s)`;
  return `${format(result.seconds, 3)} s`;
}

export function markdownTable(record: RunRecord): string {
  const lines: string[] = [];
  for (const backend of ['s3', 'gcs']) {
    const rows = record.results.filter((result) => result.backend === backend);
    if (rows.length === 0) continue;
    lines.push(`\n#### ${backend === 's3' ? 'S3 (MinIO)' : 'GCS (fake-gcs-server)'}\n`);
    lines.push('| scenario | target | result | server bytes / bytes read | CPU s | peak RSS MiB | ratio to SDK |');
    lines.push('| --- | --- | --- | --- | --- | --- | --- |');
    for (const scenario of SCENARIOS) {
      for (const result of rows.filter((row) => row.scenario === scenario.name)) {
        lines.push(
          `| ${scenario.name} | ${result.target} | ${measurement(result)} | ${format(result.amplification, 2)} | ${format(result.cpuSeconds, 2)} | ${format(result.peakRssMiB, 0)} | ${format(result.ratio, 2)} |`,
        );
      }
    }
  }
  if (record.skipped.length > 0) {
    lines.push('\nSkipped:\n');
    for (const skip of record.skipped) lines.push(`- ${skip.backend} ${skip.target}: ${skip.reason}`);
  }
  const notes = [...new Set(record.results.filter((result) => result.note !== undefined).map((result) => `${result.backend} ${result.target} ${result.scenario}: ${result.note}`))];
  if (notes.length > 0) {
    lines.push('\nNotes:\n');
    for (const note of notes) lines.push(`- ${note}`);
  }
  return lines.join('\n') + '\n';
}

export function recordHeader(record: RunRecord): string {
  const machine = Object.entries(record.machine).map(([name, value]) => `${name} ${value}`).join(', ');
  const versions = Object.entries(record.versions).map(([name, value]) => `${name} ${value}`).join('; ');
  const credentials = Object.entries(record.credentials).map(([name, value]) => `${name}: ${value}`).join('; ');
  const sizes = record.options;
  return [
    `### ${record.date}`,
    '',
    `Command: \`${record.command}\``,
    '',
    `Machine: ${machine}.`,
    '',
    `Versions: ${versions}.`,
    '',
    `Sizes: large file ${Number(sizes.largeFileBytes) / MiB} MiB, ${String(sizes.parallelReaders)} parallel readers of ${Number(sizes.parallelFileBytes) / MiB} MiB, ${String(sizes.randomReads)} random reads per size, write ${Number(sizes.writeBytes) / MiB} MiB, ${String(sizes.smallFiles)} small files of 4 KiB, ls -l of ${String(sizes.listFiles)} files, find over ${String(sizes.treeDirectories)} x ${String(sizes.treeFilesPerDirectory)} files.`,
    '',
    `Credentials: ${credentials}.`,
  ].join('\n');
}

export async function writeOutputs(record: RunRecord, paths: { json: string; markdown: string; resultsFile: string | undefined }): Promise<string> {
  const markdown = `${recordHeader(record)}\n${markdownTable(record)}`;
  await writeFile(paths.json, JSON.stringify(record, null, 2) + '\n');
  await writeFile(paths.markdown, markdown);
  if (paths.resultsFile !== undefined) {
    const existing = await readFile(paths.resultsFile, 'utf8').catch(() => undefined);
    if (existing === undefined) {
      await writeFile(
        paths.resultsFile,
        '# Benchmark results\n\nRecords appended by `bench/run.sh`, newest last. Ratios compare each mount with the direct SDK on the same local server (1 is the ceiling, higher is better): throughput for reads and writes, inverse wall time for the other scenarios, inverse p50 latency for random reads. Every client reaches the server through the same counting proxy.\n',
      );
    }
    await appendFile(paths.resultsFile, `\n${markdown}`);
  }
  return markdown;
}
