/**
 * GCS credentials end to end. The daemon runs as its own process with
 * Workload Identity Federation credentials from the STS and IAM fakes. Every
 * storage request passes the authorizing proxy, which accepts only unexpired
 * access tokens that the IAM fake minted.
 *
 * The first suite reads through a mount for longer than three access-token
 * lifetimes and checks that background renewal kept every request
 * authorized. The second breaks one part of the federation setup at a time
 * and checks that `check` and `mount` name the exact value or binding to fix.
 */

import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { startBackend, type GcpTestControls, type TestBackend } from './backends.js';
import { python, removeMountpoint, runCli, startDaemon, type CommandResult, type MountedDaemon } from './daemon.js';

const MiB = 1024 * 1024;

/** Parses the daemon's pino JSON log lines and skips any other line. */
function parseLogLines(logs: string): Array<Record<string, unknown>> {
  const entries: Array<Record<string, unknown>> = [];
  for (const line of logs.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      entries.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // A line cut off by the end of the capture.
    }
  }
  return entries;
}

function requireGcp(backend: TestBackend): GcpTestControls {
  if (backend.gcp === undefined) throw new Error('the GCS test backend did not expose its GCP fakes');
  return backend.gcp;
}

describe('GCS access token renewal', () => {
  const bucket = 'bucketmount-e2e-token-renewal';
  const tokenLifetimeSeconds = 60;
  // Longer than three token lifetimes, so at least four tokens must authorize requests.
  const readingSeconds = 200;
  const fileCount = 12;
  const fileSize = 4 * MiB;

  let backend: TestBackend;
  let gcp: GcpTestControls;
  let daemon: MountedDaemon | undefined;
  const expectedHashes: Record<string, string> = {};

  beforeAll(async () => {
    backend = await startBackend('gcs');
    gcp = requireGcp(backend);
    await backend.createBucket(bucket);
    for (let index = 0; index < fileCount; index += 1) {
      const name = `data-${String(index).padStart(2, '0')}.bin`;
      const body = randomBytes(fileSize);
      expectedHashes[name] = createHash('sha256').update(body).digest('hex');
      await backend.putObject(bucket, `renewal/${name}`, body);
    }
  }, 180_000);

  afterAll(async () => {
    if (daemon !== undefined) {
      await daemon.stop();
      await removeMountpoint(daemon.mountpoint);
    }
    await backend?.stop();
  }, 120_000);

  test('continuous reads outlive three token lifetimes', async () => {
    // 48 MiB of files read round robin against a 16 MiB block cache (two 8 MiB blocks) keep missing the cache,
    // so the daemon sends GETs, each with its current token, for the whole run.
    daemon = await startDaemon({
      bucketUrl: backend.bucketUrl(bucket),
      args: [...backend.connectionArgs(), '--token-lifetime', String(tokenLifetimeSeconds), '--memory-limit', '16MiB'],
    });
    const generateRequestsAtStart = gcp.fakes.generateRequestCount();

    const reader = await python(
      `import hashlib, json, os, sys, time
root, expected, seconds = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
names = sorted(expected)
reads, failures = 0, []
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for name in names:
        try:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                digest = hashlib.sha256()
                while True:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        break
                    digest.update(chunk)
            finally:
                os.close(fd)
            if digest.hexdigest() != expected[name]:
                failures.append(name + ": wrong contents")
        except OSError as error:
            failures.append(name + ": " + os.strerror(error.errno))
        reads += 1
        # A short pause keeps the two cores usable for other work; requests still arrive several times a second.
        time.sleep(0.2)
print(json.dumps({"reads": reads, "failures": failures}))`,
      [join(daemon.mountpoint, 'renewal'), JSON.stringify(expectedHashes), String(readingSeconds)],
      (readingSeconds + 120) * 1000,
    );
    expect(reader.stderr).toBe('');
    const outcome = JSON.parse(reader.stdout) as { reads: number; failures: string[] };
    expect(outcome.failures).toEqual([]);
    expect(outcome.reads).toBeGreaterThan(fileCount * 3);

    // Every request reached the emulator with a valid token: none was rejected, so none waited for a 401 retry.
    expect(gcp.proxy.rejectedCount()).toBe(0);
    // A token authorizes requests for at most 60 s, and requests arrived throughout 200 s.
    expect(gcp.proxy.acceptedTokenCount()).toBeGreaterThanOrEqual(4);
    expect(gcp.fakes.generateRequestCount() - generateRequestsAtStart).toBeGreaterThanOrEqual(3);
    expect(gcp.fakes.exchanges().filter((record) => record.outcome === 'ok').length).toBeGreaterThanOrEqual(4);

    const logs = daemon.logs();
    const entries = parseLogLines(logs);
    const renewals = entries.filter((entry) => entry.msg === 'credentials renewed' && entry.source === 'gcp-wif');
    expect(renewals.length, logs.slice(-4000)).toBeGreaterThanOrEqual(4);
    expect(renewals[0]?.trigger).toBe('start');
    // Renewals ran from the background timer, never because a token had expired or was rejected.
    expect(renewals.slice(1).map((entry) => entry.trigger)).toEqual(renewals.slice(1).map(() => 'renewal'));
    for (const renewal of renewals) {
      const lifetime = renewal.lifetimeSeconds as number;
      const nextRenewal = renewal.nextRenewalInSeconds as number;
      // expireTime has whole seconds, so a 60 s token arrives with 59 to 60 s left.
      expect(lifetime).toBeGreaterThanOrEqual(tokenLifetimeSeconds - 2);
      expect(lifetime).toBeLessThanOrEqual(tokenLifetimeSeconds);
      // The default refresh fraction 0.8: renewal about 48 s after each exchange.
      expect(Math.abs(nextRenewal - lifetime * 0.8)).toBeLessThanOrEqual(1);
    }

    expect(entries.filter((entry) => entry.msg === 'credential exchange failed; retrying with backoff')).toEqual([]);
    expect(entries.filter((entry) => entry.msg === 'filesystem operation failed')).toEqual([]);
    expect(entries.filter((entry) => (entry.level as number) >= 50)).toEqual([]);

    expect(await daemon.stop()).toBe(0);
  }, (readingSeconds + 300) * 1000);
});

describe('GCS workload identity mistakes', () => {
  const bucket = 'bucketmount-e2e-wif-mistakes';
  let backend: TestBackend;
  let gcp: GcpTestControls;
  let work: string;

  beforeAll(async () => {
    backend = await startBackend('gcs');
    gcp = requireGcp(backend);
    await backend.createBucket(bucket);
    work = await mkdtemp(join(tmpdir(), 'bucketmount-wif-'));
  }, 120_000);

  afterAll(async () => {
    await backend?.stop();
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  }, 60_000);

  function expectCleanOutput(result: CommandResult, token: string): void {
    const output = `${result.stdout}${result.stderr}`;
    expect(output).not.toMatch(/^\s+at .+:\d+:\d+\)?$/m);
    expect(output).not.toContain(token);
    for (const segment of token.split('.')) expect(output).not.toContain(segment);
    // Federated tokens of the STS fake and access tokens of the IAM fake.
    expect(output).not.toMatch(/fed\.[A-Za-z0-9_-]{20}|ya29\./);
  }

  /**
   * Runs `check` and then `mount` with the backend's settings. Both must fail, `check` on the step
   * `failedStep`, and each explanation must contain every one of `expected`.
   */
  async function expectExplainedFailure(failedStep: string, expected: string[]): Promise<void> {
    const token = (await readFile(backend.tokenFile, 'utf8')).trim();
    const url = backend.bucketUrl(bucket);

    const check = await runCli(['check', url, ...backend.connectionArgs()]);
    expectCleanOutput(check, token);
    expect(check.status, check.stdout).toBe(1);
    const failedLine = check.stdout.split('\n').find((line) => line.startsWith('FAILED'));
    expect(failedLine, check.stdout).toMatch(new RegExp(`^FAILED +${failedStep}: `));
    for (const text of expected) expect(failedLine).toContain(text);

    const mountpoint = await mkdtemp(join(work, 'mnt-'));
    try {
      const mount = await runCli(['mount', url, mountpoint, ...backend.connectionArgs()], {}, 90_000);
      expectCleanOutput(mount, token);
      expect(mount.status, mount.stderr).toBe(1);
      const errorLines = mount.stderr.split('\n').filter((line) => line.startsWith('bucketmount:'));
      expect(errorLines, mount.stderr).toHaveLength(1);
      for (const text of expected) expect(errorLines[0]).toContain(text);
    } finally {
      await removeMountpoint(mountpoint);
    }
  }

  test('check passes with the correct setup', async () => {
    const result = await runCli(['check', backend.bucketUrl(bucket), ...backend.connectionArgs()]);
    expect(result.stdout).not.toMatch(/FAILED/);
    expect(result.status).toBe(0);
  });

  test('token minted for another audience', async () => {
    // The API server's own audience on many clusters, which a projected token gets when its volume sets none.
    const wrongAudience = 'https://kubernetes.default.svc';
    await backend.writeToken({ audience: wrongAudience });
    try {
      await expectExplainedFailure('credentials', [`"${wrongAudience}"`, `"//iam.googleapis.com/${gcp.fakes.providerName}"`, 'audience']);
    } finally {
      await backend.writeToken();
    }
  });

  test('provider trusts another issuer', async () => {
    gcp.fakes.setTrustedIssuer(`${backend.issuer.issuerUrl}/another-cluster`);
    try {
      await expectExplainedFailure('credentials', [`"${backend.issuer.issuerUrl}"`, `--issuer-uri=${backend.issuer.issuerUrl}`, gcp.fakes.providerName]);
    } finally {
      gcp.fakes.setTrustedIssuer(backend.issuer.issuerUrl);
    }
  });

  test('pool lacks the workloadIdentityUser binding', async () => {
    const binding = { serviceAccount: gcp.serviceAccount, member: gcp.fakes.principalSetForPool() };
    gcp.fakes.removeBinding(binding);
    try {
      await expectExplainedFailure('credentials', [
        'roles/iam.workloadIdentityUser',
        gcp.serviceAccount,
        `--member="${gcp.fakes.principalSetForPool()}"`,
        'gcloud iam service-accounts add-iam-policy-binding',
      ]);
    } finally {
      gcp.fakes.addBinding(binding);
    }
  });

  test('service account lacks access to the bucket', async () => {
    const grant = { serviceAccount: gcp.serviceAccount, bucket, role: 'roles/storage.objectAdmin' } as const;
    gcp.fakes.revokeBucket(grant);
    try {
      await expectExplainedFailure('list', [
        `the list request to bucket "${bucket}" was denied`,
        `gcloud storage buckets add-iam-policy-binding gs://${bucket} --member=serviceAccount:${gcp.serviceAccount} --role=roles/storage.objectAdmin`,
      ]);
    } finally {
      gcp.fakes.grantBucket(grant);
    }
  });
});
