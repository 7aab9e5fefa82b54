import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as esbuild from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { deferredBuiltins } from './lazy-builtins.js';

// Reads http2.constants and https.Agent while the snapshot is built, as the AWS SDK's modules do,
// and uses them after the snapshot is restored.
const ENTRY = `
import https from 'node:https';
import { constants } from 'node:http2';
import { startupSnapshot } from 'node:v8';

const { HTTP2_HEADER_STATUS } = constants;
const AgentAtLoad = https.Agent;

startupSnapshot.setDeserializeMainFunction(() => {
  const agent = new AgentAtLoad({ keepAlive: true, maxSockets: 3 });
  process.stdout.write(JSON.stringify({
    status: HTTP2_HEADER_STATUS,
    isAgent: agent instanceof https.Agent,
    maxSockets: agent.maxSockets,
    request: typeof https.request,
  }));
  agent.destroy();
});
`;

let directory: string;

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'bucketmount-snapshot-test-'));
  await writeFile(join(directory, 'entry.mjs'), ENTRY);
});

afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

async function buildSnapshot(name: string, withPlugin: boolean): Promise<{ status: number | null; output: string; blob: string }> {
  const bundle = join(directory, `${name}.cjs`);
  const blob = join(directory, `${name}.blob`);
  await esbuild.build({
    entryPoints: [join(directory, 'entry.mjs')],
    outfile: bundle,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    logLevel: 'silent',
    plugins: withPlugin ? [deferredBuiltins()] : [],
  });
  const result = spawnSync(process.execPath, ['--snapshot-blob', blob, '--build-snapshot', bundle], { encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}`, blob };
}

describe('deferredBuiltins', () => {
  it('is needed: Node cannot build a snapshot that loaded node:https and node:http2', async () => {
    const { status } = await buildSnapshot('plain', false);

    expect(status).not.toBe(0);
  }, 30_000);

  it('builds the snapshot without warnings, and the modules work once it is restored', async () => {
    const built = await buildSnapshot('deferred', true);
    expect(built.status, built.output).toBe(0);
    expect(built.output).toBe('');

    const run = spawnSync(process.execPath, ['--snapshot-blob', built.blob], { encoding: 'utf8' });

    expect(run.status, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({ status: ':status', isAgent: true, maxSockets: 3, request: 'function' });
  }, 30_000);
});
