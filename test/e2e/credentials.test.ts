/**
 * The credential lifecycle end to end: the daemon runs as its own process,
 * its storage and token-service traffic passes fault proxies, and shell
 * programs use the mount the way sandbox code would. No operation may fail
 * while valid credentials can be had, and revoked access must show as EACCES
 * and heal by itself.
 *
 * Short lifetimes on MinIO: without DurationSeconds, MinIO's
 * AssumeRoleWithWebIdentity returns credentials that expire when the web
 * identity token expires. The tests mint tokens that live 60 s and rotate
 * the token file every 40 s, the way kubelet refreshes a projected token
 * before it expires, so the daemon's credentials live between 20 and 60 s.
 *
 * MinIO keeps every signing key it has fetched, so after a key rotation it
 * would still accept an old token. Which token a renewal used is therefore
 * read from the request that reached STS through the proxy (S3) or from the
 * STS fake's records (GCS), not from whether the exchange succeeded.
 *
 * Sizes: BUCKETMOUNT_CREDENTIALS_UPLOAD_MIB (default 32) is the file
 * uploaded again and again during the short-lifetime run.
 * BUCKETMOUNT_CREDENTIALS_READ_MIB (default 32) is the file read in a loop.
 * The full measurement sets both to 1024.
 */

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { startFaultProxy, type FaultProxy } from '../env/fault-proxy.js';
import { startBackend, type GcpTestControls, type TestBackend } from './backends.js';
import { removeMountpoint, shell, startDaemon, type MountedDaemon } from './daemon.js';

const UPLOAD_MIB = Number(process.env.BUCKETMOUNT_CREDENTIALS_UPLOAD_MIB ?? '32');
const READ_MIB = Number(process.env.BUCKETMOUNT_CREDENTIALS_READ_MIB ?? '32');
const TOKEN_LIFETIME_SECONDS = 60;
const TOKEN_ROTATION_SECONDS = 40;
// Each upload is paced to last at least UPLOAD_SECONDS, so that uploads are in flight for most of
// the test and overlap renewals, the outage and the rotation without keeping MinIO's disk busy.
const UPLOAD_SECONDS = 10;
const UPLOAD_PAUSE_MS = 500;
// Reads come from MinIO's page cache, so a short read loop would only burn CPU the other test files need.
const READ_PAUSE_MS = 1_000;

/** Copies argv[1] to argv[2] in 1 MiB writes with argv[3] seconds of sleep after each; close errors fail it. */
const PACED_COPY_PROGRAM = [
  'import sys, time',
  'source = open(sys.argv[1], "rb")',
  'target = open(sys.argv[2], "wb")',
  'while True:',
  '    chunk = source.read(1 << 20)',
  '    if not chunk: break',
  '    target.write(chunk)',
  '    time.sleep(float(sys.argv[3]))',
  'target.close()',
].join('\n');

type LogEntry = Record<string, unknown> & { msg?: string; level?: number; time?: string };

function parseLog(text: string): LogEntry[] {
  const entries: LogEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      entries.push(JSON.parse(line) as LogEntry);
    } catch {
      // A line cut off at the end of the capture.
    }
  }
  return entries;
}

/** Replaces the value after each named option. */
function replaceOptionValues(args: string[], values: Record<string, string>): string[] {
  const result = [...args];
  for (const [option, value] of Object.entries(values)) {
    const index = result.indexOf(option);
    if (index === -1) throw new Error(`option ${option} is missing from ${args.join(' ')}`);
    result[index + 1] = value;
  }
  return result;
}

function optionValue(args: string[], option: string): string {
  const value = args[args.indexOf(option) + 1];
  if (value === undefined) throw new Error(`option ${option} is missing from ${args.join(' ')}`);
  return value;
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function waitFor(condition: () => Promise<boolean> | boolean, timeoutMs: number, intervalMs = 250): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await sleep(intervalMs);
  }
  return condition();
}

interface TokenRecord {
  writtenAt: number;
  tokenId: string;
  keyId: string;
}

/**
 * Writes a fresh token to the token file every `intervalSeconds`, the way
 * kubelet refreshes a projected service-account token, and records each one.
 */
class TokenRotator {
  readonly written: TokenRecord[] = [];
  private timer: NodeJS.Timeout | undefined;
  private rotating: Promise<void> = Promise.resolve();

  constructor(
    private readonly backend: TestBackend,
    private readonly lifetimeSeconds: number,
  ) {}

  start(intervalSeconds: number): void {
    this.timer = setInterval(() => void this.rotate(), intervalSeconds * 1000);
  }

  /** Writes a new token now; with `newKey`, the issuer first replaces its signing key and drops the old one from the JWKS. */
  rotate(options: { newKey?: boolean } = {}): Promise<void> {
    this.rotating = this.rotating.then(async () => {
      if (options.newKey === true) await this.backend.issuer.rotateSigningKey({ keepOld: false });
      await this.backend.writeToken({ expiresInSeconds: this.lifetimeSeconds });
      const token = await readFile(this.backend.tokenFile, 'utf8');
      this.written.push({ writtenAt: Date.now(), tokenId: String(decodeJwt(token).jti), keyId: String(decodeProtectedHeader(token).kid) });
    });
    return this.rotating;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** Tokens sent to AssumeRoleWithWebIdentity through the STS proxy, in order. */
function stsTokens(proxy: FaultProxy): Array<{ tokenId: string; keyId: string; index: number }> {
  return proxy
    .requests()
    .map((request, index) => ({ request, index }))
    .filter(({ request }) => request.fault === 'none' && request.body?.includes('AssumeRoleWithWebIdentity') === true)
    .map(({ request, index }) => {
      const token = new URLSearchParams(request.body).get('WebIdentityToken') ?? '';
      return { tokenId: String(decodeJwt(token).jti), keyId: String(decodeProtectedHeader(token).kid), index };
    });
}

interface RunRecord {
  startedAt: number;
  endedAt: number;
}

/** Runs `step` again and again until `stop()` is called; records each run and counts failures with their output. */
function repeat(
  step: () => Promise<{ ok: boolean; detail: string }>,
  pauseMs: number,
): { stop: () => Promise<void>; runs: () => number; records: () => RunRecord[]; failures: string[] } {
  let running = true;
  const records: RunRecord[] = [];
  const failures: string[] = [];
  const loop = (async () => {
    while (running) {
      const startedAt = Date.now();
      const outcome = await step();
      records.push({ startedAt, endedAt: Date.now() });
      if (!outcome.ok) failures.push(`${new Date().toISOString()} ${outcome.detail}`);
      if (running) await sleep(pauseMs);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
    },
    runs: () => records.length,
    records: () => [...records],
    failures,
  };
}

describe('credential lifecycle on s3', () => {
  const bucket = 'bucketmount-credentials-s3';
  let backend: TestBackend;
  let stsProxy: FaultProxy;
  let dataProxy: FaultProxy;
  let scratch: string;
  let uploadSource: string;
  let uploadHash: string;
  let readHash: string;
  const daemons: MountedDaemon[] = [];

  beforeAll(async () => {
    backend = await startBackend('s3');
    await backend.createBucket(bucket);
    const endpoint = optionValue(backend.connectionArgs(), '--endpoint');
    // STS is MinIO itself; its own proxy lets it be taken down while storage stays up.
    stsProxy = await startFaultProxy({ upstream: endpoint, flavor: 's3', recordBodies: true });
    dataProxy = await startFaultProxy({ upstream: endpoint, flavor: 's3' });

    scratch = await mkdtemp(join(tmpdir(), 'bucketmount-credentials-'));
    uploadSource = join(scratch, 'upload.bin');
    const readSource = join(scratch, 'read.bin');
    await shell(`head -c ${UPLOAD_MIB}M /dev/urandom > '${uploadSource}' && head -c ${READ_MIB}M /dev/urandom > '${readSource}'`);
    uploadHash = await sha256OfFile(uploadSource);
    readHash = await sha256OfFile(readSource);
    await backend.putFile(bucket, 'read.bin', readSource);
  }, 180_000);

  afterAll(async () => {
    for (const daemon of daemons) {
      await daemon.stop('SIGKILL').catch(() => undefined);
      await removeMountpoint(daemon.mountpoint);
    }
    await stsProxy?.stop();
    await dataProxy?.stop();
    await backend?.stop();
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  }, 120_000);

  async function mount(extraArgs: string[] = []): Promise<MountedDaemon> {
    const args = replaceOptionValues(backend.connectionArgs(), { '--endpoint': dataProxy.endpoint, '--sts-endpoint': stsProxy.endpoint });
    // A small memory budget keeps the read loop from being served by the block cache.
    const daemon = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: [...args, '--memory-limit', '32MiB', ...extraArgs] });
    daemons.push(daemon);
    return daemon;
  }

  test('60 s credentials through an STS outage and a key rotation', async () => {
    const rotator = new TokenRotator(backend, TOKEN_LIFETIME_SECONDS);
    await rotator.rotate();
    rotator.start(TOKEN_ROTATION_SECONDS);
    const daemon = await mount();
    const mnt = daemon.mountpoint;
    const startedAt = Date.now();

    try {
      // Both loops run from the start to the end of the test, so that reads
      // and uploads are in flight across every renewal, the outage and the
      // key rotation. Each upload is checked against the bucket through the
      // SDK before the next one starts.
      const reads = repeat(async () => {
        const result = await shell(`sha256sum '${mnt}/read.bin'`, 600_000);
        const ok = result.status === 0 && result.stdout.startsWith(readHash);
        return { ok, detail: `read: status ${result.status} ${result.stderr.trim()}` };
      }, READ_PAUSE_MS);
      const uploads = repeat(async () => {
        const result = await shell(`python3 -c '${PACED_COPY_PROGRAM}' '${uploadSource}' '${mnt}/upload.bin' ${UPLOAD_SECONDS / UPLOAD_MIB}`, 600_000);
        if (result.status !== 0) return { ok: false, detail: `upload: status ${result.status} ${result.stderr.trim()}` };
        const stored = await backend.hashObject(bucket, 'upload.bin');
        return { ok: stored === uploadHash, detail: `upload: the bucket holds SHA-256 ${stored}, expected ${uploadHash}` };
      }, UPLOAD_PAUSE_MS);

      // STS outage: from just after a renewal that left at least 30 s of
      // credentials until a tenth of their lifetime before they expire. The
      // renewal point, at 80 % of the lifetime, falls inside it, and the
      // outage lasts longer than the renewal margin (the last 20 %).
      let outage: { downAt: number; upAt: number; expiresAt: number; lifetimeMs: number } | undefined;
      const renewalsBefore = new Set<string>();
      await waitFor(() => {
        for (const entry of parseLog(daemon.logs())) {
          if (entry.msg !== 'credentials renewed' || renewalsBefore.has(String(entry.time))) continue;
          renewalsBefore.add(String(entry.time));
          const renewedAt = Date.parse(String(entry.time));
          const expiresAt = Date.parse(String(entry.expiration));
          if (expiresAt - Date.now() >= 30_000) {
            outage = { downAt: 0, upAt: 0, expiresAt, lifetimeMs: expiresAt - renewedAt };
            return true;
          }
        }
        return false;
      }, 120_000);
      expect(outage, `no renewal with 30 s left was logged:\n${daemon.logs().slice(-3000)}`).toBeDefined();

      stsProxy.takeDown('reset');
      outage!.downAt = Date.now();
      await sleep(Math.max(0, outage!.expiresAt - outage!.lifetimeMs / 10 - Date.now()));
      stsProxy.bringUp();
      outage!.upAt = Date.now();

      const marginMs = outage!.lifetimeMs * 0.2;
      expect(outage!.upAt - outage!.downAt).toBeGreaterThan(marginMs);
      expect(stsProxy.counters().rejectedWhileDown).toBeGreaterThan(0);
      const recovered = await waitFor(
        () => parseLog(daemon.logs()).some((entry) => entry.msg === 'credentials renewed' && Date.parse(String(entry.time)) >= outage!.upAt),
        60_000,
      );
      expect(recovered, 'no renewal after STS came back').toBe(true);

      // Key rotation: the issuer drops the old key and kubelet writes a token signed with the new one.
      const stsRequestsBefore = stsProxy.requests().length;
      await rotator.rotate({ newKey: true });
      const rotationIndex = rotator.written.length - 1;
      const rotated = rotator.written[rotationIndex]!;
      const usedNewToken = await waitFor(() => stsTokens(stsProxy).some((sent) => sent.index >= stsRequestsBefore), 90_000);
      expect(usedNewToken, 'no renewal after the key rotation').toBe(true);
      const nextExchange = stsTokens(stsProxy).find((sent) => sent.index >= stsRequestsBefore)!;
      expect(nextExchange.keyId).toBe(rotated.keyId);
      // The rotated token, or a later one that the 40 s rotation wrote before the renewal.
      expect(rotator.written.slice(rotationIndex).map((record) => record.tokenId)).toContain(nextExchange.tokenId);

      // Keep reading and uploading until at least three credential lifetimes have passed.
      await sleep(Math.max(0, startedAt + 3 * TOKEN_LIFETIME_SECONDS * 1000 + 5_000 - Date.now()));
      await Promise.all([reads.stop(), uploads.stop()]);

      const logCopy = join(tmpdir(), 'bucketmount-credentials-s3-daemon.log');
      if (reads.failures.length + uploads.failures.length > 0) await writeFile(logCopy, daemon.logs());
      expect(reads.failures, `daemon log: ${logCopy}`).toEqual([]);
      expect(uploads.failures, `daemon log: ${logCopy}`).toEqual([]);
      expect(reads.runs()).toBeGreaterThanOrEqual(3);
      expect(uploads.runs()).toBeGreaterThanOrEqual(1);

      // The point of the test: a read and an upload were in flight while
      // renewals failed, and one upload's parts were signed with credentials
      // from more than one exchange.
      const renewals = parseLog(daemon.logs()).filter((entry) => entry.msg === 'credentials renewed').map((entry) => Date.parse(String(entry.time)));
      expect(renewals.length).toBeGreaterThanOrEqual(4);
      const failedRenewals = parseLog(daemon.logs())
        .filter((entry) => entry.msg === 'credential exchange failed; retrying with backoff')
        .map((entry) => Date.parse(String(entry.time)));
      expect(failedRenewals.length, 'the outage caused no failed renewal').toBeGreaterThan(0);
      const firstFailure = Math.min(...failedRenewals);
      const ranWhileFailing = (run: RunRecord): boolean => run.startedAt < outage!.upAt && run.endedAt > firstFailure;
      expect(reads.records().some(ranWhileFailing), 'no read ran while renewals failed').toBe(true);
      expect(uploads.records().some(ranWhileFailing), 'no upload ran while renewals failed').toBe(true);
      expect(uploads.records().some((run) => renewals.some((renewedAt) => renewedAt > run.startedAt && renewedAt < run.endedAt)), 'no upload spanned a renewal').toBe(true);
      console.log(
        `s3 credentials: ${reads.runs()} reads of ${READ_MIB} MiB and ${uploads.runs()} uploads of ${UPLOAD_MIB} MiB, ` +
          `${reads.records().filter(ranWhileFailing).length} reads and ${uploads.records().filter(ranWhileFailing).length} uploads in flight while renewals failed, ` +
          `STS down ${((outage!.upAt - outage!.downAt) / 1000).toFixed(1)} s of ${(outage!.lifetimeMs / 1000).toFixed(1)} s credentials, ${renewals.length} renewals`,
      );
      expect(parseLog(daemon.logs()).filter((entry) => entry.msg === 'filesystem operation failed')).toEqual([]);
      expect(await daemon.stop()).toBe(0);
    } finally {
      rotator.stop();
      stsProxy.bringUp();
    }
  }, 900_000);

  test('revoked access is EACCES and recovers', async () => {
    await backend.writeToken({ expiresInSeconds: 3600 });
    const daemon = await mount();
    const mnt = daemon.mountpoint;
    let counter = 0;
    const writeOnce = (): Promise<{ status: number | null; stderr: string }> => shell(`echo data > '${mnt}/probe-${counter++}.txt'`);

    expect((await writeOnce()).status).toBe(0);
    await backend.revokeAccess();
    try {
      // MinIO reads the role policy on every request, so the refusal is immediate.
      const denied = await waitFor(async () => (await writeOnce()).stderr.includes('Permission denied'), 60_000, 200);
      expect(denied).toBe(true);
      for (let attempt = 0; attempt < 10; attempt += 1) {
        const result = await writeOnce();
        expect(result.status).not.toBe(0);
        expect(result.stderr).toContain('Permission denied');
      }
    } finally {
      await backend.restoreAccess();
    }

    const recovered = await waitFor(async () => (await writeOnce()).status === 0, 90_000, 500);
    expect(recovered, `writes did not recover:\n${daemon.logs().slice(-3000)}`).toBe(true);

    // One warning for the whole burst, which says that access was denied.
    const warnings = parseLog(daemon.logs()).filter((entry) => entry.msg === 'filesystem operation failed' && entry.level === 40);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.errno).toBe('EACCES');
    expect(JSON.stringify(warnings[0]?.err)).toMatch(/denied/i);
    expect(await daemon.stop()).toBe(0);
  }, 240_000);
});

describe('credential lifecycle on gcs', () => {
  const bucket = 'bucketmount-credentials-gcs';
  const tokenLifetimeSeconds = 30;
  let backend: TestBackend;
  let gcp: GcpTestControls;
  const daemons: MountedDaemon[] = [];
  let scratch: string;
  let fileSource: string;
  let fileHash: string;

  beforeAll(async () => {
    backend = await startBackend('gcs');
    if (backend.gcp === undefined) throw new Error('the GCS test backend did not expose its GCP fakes');
    gcp = backend.gcp;
    await backend.createBucket(bucket);
    await backend.putObject(bucket, 'hello.txt', 'hello\n');

    scratch = await mkdtemp(join(tmpdir(), 'bucketmount-credentials-gcs-'));
    fileSource = join(scratch, 'file.bin');
    await shell(`head -c ${READ_MIB}M /dev/urandom > '${fileSource}'`);
    fileHash = await sha256OfFile(fileSource);
    await backend.putFile(bucket, 'read.bin', fileSource);
  }, 180_000);

  afterAll(async () => {
    for (const started of daemons) {
      await started.stop('SIGKILL').catch(() => undefined);
      await removeMountpoint(started.mountpoint);
    }
    await backend?.stop();
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  }, 120_000);

  test('STS and IAM outage longer than the renewal margin', async () => {
    // Access tokens that live 30 s: renewal at 24 s, a margin of 6 s.
    const outageDaemon = await startDaemon({
      bucketUrl: backend.bucketUrl(bucket),
      args: [...backend.connectionArgs(), '--token-lifetime', String(tokenLifetimeSeconds), '--memory-limit', '32MiB'],
    });
    daemons.push(outageDaemon);
    const mnt = outageDaemon.mountpoint;

    const reads = repeat(async () => {
      const result = await shell(`sha256sum '${mnt}/read.bin'`, 300_000);
      return { ok: result.status === 0 && result.stdout.startsWith(fileHash), detail: `read: status ${result.status} ${result.stderr.trim()}` };
    }, 200);
    const writes = repeat(async () => {
      const result = await shell(`dd if='${fileSource}' of='${mnt}/written.bin' bs=1M status=none`, 300_000);
      if (result.status !== 0) return { ok: false, detail: `write: status ${result.status} ${result.stderr.trim()}` };
      const stored = await backend.hashObject(bucket, 'written.bin');
      return { ok: stored === fileHash, detail: `write: the bucket holds SHA-256 ${stored}, expected ${fileHash}` };
    }, 200);

    try {
      // Down from just after a renewal that left at least 20 s until 3 s
      // before the held access token expires: the renewal point falls inside.
      const seen = new Set<string>();
      let expiresAt = 0;
      let lifetimeMs = 0;
      const renewedWithTimeLeft = await waitFor(() => {
        for (const entry of parseLog(outageDaemon.logs())) {
          if (entry.msg !== 'credentials renewed' || seen.has(String(entry.time))) continue;
          seen.add(String(entry.time));
          const expiration = Date.parse(String(entry.expiration));
          if (expiration - Date.now() >= 20_000) {
            expiresAt = expiration;
            lifetimeMs = expiration - Date.parse(String(entry.time));
            return true;
          }
        }
        return false;
      }, 90_000);
      expect(renewedWithTimeLeft, `no renewal with 20 s left was logged:\n${outageDaemon.logs().slice(-3000)}`).toBe(true);

      gcp.fakes.setStsAvailability('reset');
      gcp.fakes.setIamAvailability('unavailable');
      const downAt = Date.now();
      await sleep(Math.max(0, expiresAt - 3_000 - Date.now()));
      gcp.fakes.setStsAvailability('up');
      gcp.fakes.setIamAvailability('up');
      const upAt = Date.now();
      expect(upAt - downAt).toBeGreaterThan(lifetimeMs * 0.2);

      const recovered = await waitFor(
        () => parseLog(outageDaemon.logs()).some((entry) => entry.msg === 'credentials renewed' && Date.parse(String(entry.time)) >= upAt),
        60_000,
      );
      expect(recovered, 'no renewal after STS and IAM came back').toBe(true);
      await Promise.all([reads.stop(), writes.stop()]);

      const logCopy = join(tmpdir(), 'bucketmount-credentials-gcs-daemon.log');
      if (reads.failures.length + writes.failures.length > 0) await writeFile(logCopy, outageDaemon.logs());
      expect(reads.failures, `daemon log: ${logCopy}`).toEqual([]);
      expect(writes.failures, `daemon log: ${logCopy}`).toEqual([]);
      const failedRenewals = parseLog(outageDaemon.logs()).filter(
        (entry) => entry.msg === 'credential exchange failed; retrying with backoff' && Date.parse(String(entry.time)) >= downAt,
      );
      expect(failedRenewals.length, 'the outage caused no failed renewal').toBeGreaterThan(0);
      const duringOutage = (run: RunRecord): boolean => run.startedAt < upAt && run.endedAt > downAt;
      expect(reads.records().filter(duringOutage).length).toBeGreaterThan(0);
      expect(writes.records().filter(duringOutage).length).toBeGreaterThan(0);
      expect(parseLog(outageDaemon.logs()).filter((entry) => entry.msg === 'filesystem operation failed')).toEqual([]);
      expect(await outageDaemon.stop()).toBe(0);
    } finally {
      gcp.fakes.setStsAvailability('up');
      gcp.fakes.setIamAvailability('up');
      await Promise.all([reads.stop(), writes.stop()]);
    }
  }, 240_000);

  test('key rotation, revoked binding and recovery', async () => {
    const daemon = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: [...backend.connectionArgs(), '--token-lifetime', String(tokenLifetimeSeconds)] });
    daemons.push(daemon);
    const mnt = daemon.mountpoint;
    let counter = 0;
    const writeOnce = (): Promise<{ status: number | null; stderr: string }> => shell(`echo data > '${mnt}/probe-${counter++}.txt'`);
    expect((await writeOnce()).status).toBe(0);

    // The next renewal after a key rotation sends the new token. The rotation
    // waits for one renewal first, because the STS fake's JWKS client (jose)
    // fetches the key set again for an unknown key id only 30 s after its last fetch.
    expect(await waitFor(() => gcp.fakes.exchanges().length >= 2, 60_000)).toBe(true);
    const rotator = new TokenRotator(backend, 3600);
    const exchangesBefore = gcp.fakes.exchanges().length;
    await rotator.rotate({ newKey: true });
    // The fake records an exchange when it arrives and fills in the token id once the token is verified.
    const renewed = await waitFor(() => {
      const next = gcp.fakes.exchanges()[exchangesBefore];
      return next !== undefined && (next.tokenId !== undefined || next.outcome !== 'ok');
    }, 60_000);
    expect(renewed).toBe(true);
    const next = gcp.fakes.exchanges()[exchangesBefore]!;
    expect(next.outcome, JSON.stringify(gcp.fakes.exchanges())).toBe('ok');
    expect(next.tokenId).toBe(rotator.written.at(-1)!.tokenId);

    // Revoked: the held access token works until it expires, then every operation is EACCES.
    const binding = { serviceAccount: gcp.serviceAccount, member: gcp.fakes.principalSetForPool() };
    gcp.fakes.removeBinding(binding);
    const revokedAt = Date.now();
    try {
      const denied = await waitFor(async () => (await writeOnce()).stderr.includes('Permission denied'), (tokenLifetimeSeconds + 10) * 1000, 500);
      expect(denied).toBe(true);
      expect(Date.now() - revokedAt).toBeLessThan((tokenLifetimeSeconds + 10) * 1000);
      for (let attempt = 0; attempt < 5; attempt += 1) expect((await writeOnce()).stderr).toContain('Permission denied');
    } finally {
      gcp.fakes.addBinding(binding);
    }

    // The refresher's retries pick the binding up; no restart or operator step.
    const recovered = await waitFor(async () => (await writeOnce()).status === 0, 120_000, 1_000);
    expect(recovered, `writes did not recover:\n${daemon.logs().slice(-3000)}`).toBe(true);

    const entries = parseLog(daemon.logs());
    // One warning per minute of denied access, however many operations failed.
    const operationWarnings = entries.filter((entry) => entry.msg === 'filesystem operation failed' && entry.level === 40);
    const deniedMinutes = Math.floor((Date.now() - revokedAt) / 60_000);
    expect(operationWarnings.length).toBeGreaterThanOrEqual(1);
    expect(operationWarnings.length, JSON.stringify(operationWarnings)).toBeLessThanOrEqual(1 + deniedMinutes);
    expect(operationWarnings.map((entry) => entry.errno)).toEqual(operationWarnings.map(() => 'EACCES'));
    const exchangeWarnings = entries.filter((entry) => entry.msg === 'credential exchange failed; retrying with backoff');
    expect(exchangeWarnings.length).toBeGreaterThanOrEqual(1);
    // At most one warning per minute of the outage, however many operations failed.
    expect(exchangeWarnings.length).toBeLessThanOrEqual(Math.ceil((Date.now() - revokedAt) / 60_000) + 1);
    expect(String(exchangeWarnings[0]?.reason)).toMatch(/denied|PERMISSION_DENIED|getAccessToken/i);
  }, 300_000);
});
