/**
 * CPU time and peak memory of a running process, read from procfs (Linux).
 *
 * CPU time is utime + stime of the process plus cutime + cstime of the
 * children it has waited for, in clock ticks of `getconf CLK_TCK` (100 on
 * Linux for every architecture this runs on). Peak memory is VmHWM, the
 * largest resident set size the process has had since it started.
 */

import { readFileSync } from 'node:fs';

const CLOCK_TICKS_PER_SECOND = 100;

export interface ProcessSample {
  cpuSeconds: number;
  peakRssBytes: number;
}

/** Reads one sample, or undefined when the process has exited. */
export function sampleProcess(pid: number): ProcessSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses, so the
    // fields are counted from the last closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime, stime, cutime and cstime are fields 14 to 17.
    const ticks = [11, 12, 13, 14].reduce((sum, index) => sum + Number(fields[index]), 0);

    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /^VmHWM:\s+(\d+) kB$/m.exec(status);
    return { cpuSeconds: ticks / CLOCK_TICKS_PER_SECOND, peakRssBytes: match ? Number(match[1]) * 1024 : 0 };
  } catch {
    return undefined;
  }
}

/** The same figures for the benchmark process itself, which runs the SDK ceiling. */
export function sampleSelf(): ProcessSample {
  const usage = process.resourceUsage();
  return { cpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6, peakRssBytes: usage.maxRSS * 1024 };
}
