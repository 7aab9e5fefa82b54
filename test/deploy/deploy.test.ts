/**
 * Checks of the deployment files: the Dockerfile passes hadolint, every
 * kustomize overlay renders, passes yamllint and validates against the
 * Kubernetes schemas that kubernetes-validate ships (no network needed),
 * the rendered pods wire the mount and the token the way docs/deployment.md
 * describes, their bucketmount settings pass the CLI's own validation, and
 * docs/configuration.md matches both its generator and `--help`.
 *
 * The linters come from test/env/install.sh (install_linters). A test is
 * skipped only when its tool is missing and install_linters never ran on
 * this machine; under CI, or after install_linters ran, a missing tool is a
 * failure.
 */

import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { afterAll, describe, expect, it } from 'vitest';

import { parseMountArguments } from '../../src/cli/config.js';
import { commandHelp } from '../../src/cli/help.js';
import { OPTIONS } from '../../src/cli/options.js';
import { cacheDir } from '../env/paths.js';
import { CONFIGURATION_DOC_PATH, renderConfigurationDoc } from './generate-configuration-doc.js';

const execFileAsync = promisify(execFile);

const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url));
const yamllintConfig = path.join(repositoryRoot, 'test/deploy/yamllint.yaml');
const venvBin = path.join(cacheDir(), 'venv', 'bin');
const lintersInstalledMarker = path.join(cacheDir(), 'venv', 'linters.version');

/** Kubernetes versions validated: the first with native sidecars on by default, and the newest schema shipped. */
const KUBERNETES_VERSIONS = ['1.29.0', '1.37.0'];
const OVERLAYS = ['aws', 'gcp', 'fd-handoff'] as const;

const scratch = mkdtempSync(path.join(tmpdir(), 'bucketmount-deploy-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function isExecutable(file: string): boolean {
  try {
    execFileSync('test', ['-x', file]);
    return true;
  } catch {
    return false;
  }
}

function findInPath(name: string): string | undefined {
  for (const directory of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(directory, name);
    if (directory !== '' && isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** A command prefix (binary and leading arguments), or the reason why the tool is unavailable. */
type Tool = { command: string[] } | { missing: string };

function findVenvTool(name: string): Tool {
  const inVenv = path.join(venvBin, name);
  if (isExecutable(inVenv)) return { command: [inVenv] };
  const inPath = findInPath(name);
  if (inPath !== undefined) return { command: [inPath] };
  return { missing: `${name} is not in ${venvBin} or PATH` };
}

function findKustomize(): Tool {
  const cached = path.join(cacheDir(), 'bin', 'kustomize');
  if (isExecutable(cached)) return { command: [cached, 'build'] };
  const kubectl = findInPath('kubectl');
  if (kubectl !== undefined) return { command: [kubectl, 'kustomize'] };
  const kustomize = findInPath('kustomize');
  if (kustomize !== undefined) return { command: [kustomize, 'build'] };
  return { missing: `kustomize is not in ${path.dirname(cached)}, and neither kubectl nor kustomize is in PATH` };
}

const hadolint = findVenvTool('hadolint');
const yamllint = findVenvTool('yamllint');
const kubernetesValidate = findVenvTool('kubernetes-validate');
const kustomize = findKustomize();
const python = findVenvTool('python3');

/**
 * Whether a test may skip for a missing tool: only on a developer machine
 * that never ran install_linters. Under CI, or after an install, a missing
 * tool fails the test with the reason.
 */
const maySkip = process.env.CI !== 'true' && !existsSync(lintersInstalledMarker);

function testWithTools(name: string, tools: Tool[], body: (...commands: string[][]) => Promise<void>): void {
  const missing = tools.flatMap((tool) => ('missing' in tool ? [tool.missing] : []));
  if (missing.length > 0 && maySkip) {
    it.skip(`${name} (skipped: ${missing.join('; ')}, and test/env/install.sh has not been run)`, () => {});
    return;
  }
  it(name, async () => {
    expect(missing, 'missing tools; run test/env/install.sh').toEqual([]);
    await body(...tools.map((tool) => (tool as { command: string[] }).command));
  });
}

async function run(command: string[], extraArguments: string[], options: { input?: string } = {}): Promise<{ code: number; output: string }> {
  const [file, ...leading] = command;
  try {
    const child = execFileAsync(file!, [...leading, ...extraArguments], { cwd: repositoryRoot, maxBuffer: 64 * 1024 * 1024 });
    if (options.input !== undefined) {
      child.child.stdin?.end(options.input);
    }
    const { stdout, stderr } = await child;
    return { code: 0, output: `${stdout}${stderr}` };
  } catch (error) {
    const failure = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof failure.code === 'number' ? failure.code : -1, output: `${failure.stdout ?? ''}${failure.stderr ?? ''}` };
  }
}

async function render(kustomizeCommand: string[], overlay: string): Promise<string> {
  const result = await run(kustomizeCommand, [path.join('deploy/overlays', overlay)]);
  expect(result.code, `kustomize build deploy/overlays/${overlay}:\n${result.output}`).toBe(0);
  return result.output;
}

interface VolumeMount {
  name: string;
  mountPath: string;
  mountPropagation?: string;
}
interface Container {
  name: string;
  args?: string[];
  env?: { name: string; value?: string }[];
  restartPolicy?: string;
  securityContext?: { privileged?: boolean; runAsNonRoot?: boolean; allowPrivilegeEscalation?: boolean };
  startupProbe?: { exec?: { command: string[] }; httpGet?: { path: string; port: string | number } };
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  ports?: { name?: string; containerPort: number; protocol?: string }[];
  volumeMounts?: VolumeMount[];
}
interface Pod {
  kind: 'Pod';
  spec: {
    initContainers: Container[];
    containers: Container[];
    volumes: { name: string; projected?: { sources: { serviceAccountToken?: { audience: string; expirationSeconds: number; path: string } }[] } }[];
  };
}

/** Parses rendered manifests with the PyYAML that yamllint brings, since no YAML parser is among the npm dependencies. */
async function parseManifests(pythonCommand: string[], text: string): Promise<{ kind: string }[]> {
  const result = await run(pythonCommand, ['-c', 'import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))'], { input: text });
  expect(result.code, result.output).toBe(0);
  return JSON.parse(result.output) as { kind: string }[];
}

function podOf(manifests: { kind: string }[]): Pod {
  const pods = manifests.filter((manifest) => manifest.kind === 'Pod');
  expect(pods).toHaveLength(1);
  return pods[0] as Pod;
}

function containerNamed(containers: Container[], name: string): Container {
  const container = containers.find((candidate) => candidate.name === name);
  expect(container, `container ${name}`).toBeDefined();
  return container!;
}

function environmentOf(container: Container): Record<string, string> {
  return Object.fromEntries((container.env ?? []).map((variable) => [variable.name, variable.value ?? '']));
}

/** Expands $(NAME) references in container arguments the way the kubelet does. */
function expandArguments(container: Container): string[] {
  const environment = environmentOf(container);
  return (container.args ?? []).map((argument) => argument.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => environment[name] ?? whole));
}

function tokenAudienceOf(pod: Pod): string | undefined {
  const volume = pod.spec.volumes.find((candidate) => candidate.name === 'cloud-token');
  return volume?.projected?.sources.find((source) => source.serviceAccountToken !== undefined)?.serviceAccountToken?.audience;
}

describe('Dockerfile', () => {
  testWithTools('passes hadolint', [hadolint], async (command) => {
    const result = await run(command, ['--failure-threshold', 'style', 'Dockerfile']);
    expect(result.output).toBe('');
    expect(result.code).toBe(0);
  });

  testWithTools('hadolint rejects a bad Dockerfile', [hadolint], async (command) => {
    const bad = path.join(scratch, 'Dockerfile.bad');
    writeFileSync(bad, 'FROM node:latest\nRUN apt-get install curl\n');
    const result = await run(command, [bad]);
    expect(result.code).not.toBe(0);
    expect(result.output).toContain('DL3007');
  });

  it('runs the mount command as user 65532', () => {
    const text = readFileSync(path.join(repositoryRoot, 'Dockerfile'), 'utf8');
    expect(text).toMatch(/^USER 65532:65532$/m);
    expect(text).toMatch(/^ENTRYPOINT \[.*"\/app\/src\/startup\/bucketmount", "mount"\]$/m);
    expect(text).toMatch(/^HEALTHCHECK /m);
  });

  it('makes the start-up snapshots with the runtime Node.js', () => {
    const text = readFileSync(path.join(repositoryRoot, 'Dockerfile'), 'utf8');
    const runtimeStage = text.slice(text.indexOf(' AS runtime'));
    expect(runtimeStage).toMatch(/^COPY --from=builder \/app\/src\/startup\/bucketmount /m);
    expect(runtimeStage).toMatch(/^RUN node \/app\/dist\/src\/startup\/build-snapshot\.js --snapshot-only$/m);
  });
});

describe('deploy manifests', () => {
  testWithTools('sources pass yamllint', [yamllint], async (command) => {
    const result = await run(command, ['--strict', '-c', yamllintConfig, 'deploy']);
    expect(result.output).toBe('');
    expect(result.code).toBe(0);
  });

  for (const overlay of OVERLAYS) {
    testWithTools(`${overlay} overlay renders and validates`, [kustomize, yamllint, kubernetesValidate], async (kustomizeCommand, yamllintCommand, validateCommand) => {
      const rendered = await render(kustomizeCommand, overlay);
      const file = path.join(scratch, `${overlay}.yaml`);
      writeFileSync(file, rendered);

      const lint = await run(yamllintCommand, ['--strict', '-c', yamllintConfig, file]);
      expect(lint.output).toBe('');
      expect(lint.code).toBe(0);

      for (const version of KUBERNETES_VERSIONS) {
        const validation = await run(validateCommand, ['--strict', '--quiet', '-k', version, file]);
        expect(validation.output, `kubernetes-validate ${version}`).toBe('');
        expect(validation.code, `kubernetes-validate ${version}`).toBe(0);
      }
    });
  }

  testWithTools('schema validation rejects an unknown field', [kustomize, kubernetesValidate], async (kustomizeCommand, validateCommand) => {
    const rendered = await render(kustomizeCommand, 'aws');
    const file = path.join(scratch, 'invalid.yaml');
    writeFileSync(file, rendered.replace('restartPolicy: Always', 'restartPolicy: Always\n    restartPolicyTypo: Always'));
    const validation = await run(validateCommand, ['--strict', '--quiet', '-k', KUBERNETES_VERSIONS[0]!, file]);
    expect(validation.code).not.toBe(0);
    expect(validation.output).toContain('restartPolicyTypo');
  });

  for (const overlay of ['aws', 'gcp'] as const) {
    testWithTools(`${overlay} pod wires mount and token`, [kustomize, python], async (kustomizeCommand, pythonCommand) => {
      const pod = podOf(await parseManifests(pythonCommand, await render(kustomizeCommand, overlay)));
      const sidecar = containerNamed(pod.spec.initContainers, 'bucketmount');
      const sandbox = containerNamed(pod.spec.containers, 'sandbox');

      expect(sidecar.restartPolicy).toBe('Always');
      expect(sidecar.startupProbe?.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
      expect(sidecar.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
      expect(sidecar.volumeMounts).toContainEqual({ name: 'data', mountPath: '/data', mountPropagation: 'Bidirectional' });
      // The API server rejects Bidirectional propagation on an unprivileged container.
      expect(sidecar.securityContext?.privileged).toBe(true);
      expect(sidecar.securityContext?.runAsNonRoot).toBe(true);

      expect(sandbox.volumeMounts).toContainEqual({ name: 'data', mountPath: '/data', mountPropagation: 'HostToContainer' });
      expect(sandbox.securityContext?.privileged).not.toBe(true);
      expect(sandbox.securityContext?.allowPrivilegeEscalation).toBe(false);
      expect(sandbox.volumeMounts?.map((mount) => mount.name)).not.toContain('cloud-token');

      const environment = environmentOf(sidecar);
      const tokenMount = sidecar.volumeMounts?.find((mount) => mount.name === 'cloud-token');
      expect(environment.BUCKETMOUNT_TOKEN_FILE).toBe(`${tokenMount?.mountPath}/token`);

      const audience = tokenAudienceOf(pod);
      if (overlay === 'aws') {
        expect(audience).toBe('sts.amazonaws.com');
      } else {
        expect(audience).toBe(`//iam.googleapis.com/${environment.BUCKETMOUNT_GCP_WIF_PROVIDER}`);
      }
    });

    testWithTools(`${overlay} sidecar settings pass validation`, [kustomize, python], async (kustomizeCommand, pythonCommand) => {
      const pod = podOf(await parseManifests(pythonCommand, await render(kustomizeCommand, overlay)));
      const sidecar = containerNamed(pod.spec.initContainers, 'bucketmount');

      // The same parser as `bucketmount mount`, with only the container's environment.
      const config = parseMountArguments(expandArguments(sidecar), environmentOf(sidecar));
      expect(config.mountpoint).toBe('/data');
      expect(config.location.scheme).toBe(overlay === 'aws' ? 's3' : 'gs');
      expect(config.allowOther).toBe(true);
      // kubelet probes the pod IP, so the endpoint must listen beyond loopback on the port the probes name.
      expect(config.metricsAddress).toBe('0.0.0.0');
      expect(sidecar.ports).toContainEqual({ name: 'metrics', containerPort: config.metricsPort, protocol: 'TCP' });
      expect(config.credentials.kind).toBe(overlay === 'aws' ? 'aws-web-identity' : 'gcp-wif');
    });
  }
});

/** Option names (without the leading --) listed by `bucketmount COMMAND --help`. */
async function helpOptions(command: 'mount' | 'check'): Promise<Set<string>> {
  const built = path.join(repositoryRoot, 'dist/src/cli/main.js');
  let text: string;
  if (existsSync(built)) {
    const result = await run([process.execPath], [built, command, '--help']);
    expect(result.code, result.output).toBe(0);
    text = result.output;
  } else {
    text = commandHelp(command);
  }
  return new Set([...text.matchAll(/^ {2}--([a-z0-9-]+)/gm)].map((match) => match[1]!));
}

describe('docs/configuration.md', () => {
  const committed = readFileSync(CONFIGURATION_DOC_PATH, 'utf8');

  it('matches its generator', () => {
    // On a mismatch, run: npx tsx test/deploy/generate-configuration-doc.ts --write
    expect(committed).toBe(renderConfigurationDoc());
  });

  it('lists the options of --help', async () => {
    const documented = new Map<string, string>();
    for (const match of committed.matchAll(/^### ([a-z0-9-]+)\n[\s\S]*?^- Commands: (.*)$/gm)) {
      documented.set(match[1]!, match[2]!);
    }

    const mount = await helpOptions('mount');
    const check = await helpOptions('check');
    expect(mount.size).toBeGreaterThan(0);
    expect(check.size).toBeGreaterThan(0);
    expect(new Set(documented.keys())).toEqual(new Set([...mount, ...check]));

    for (const [name, commands] of documented) {
      expect(commands.includes('`mount`'), `--${name} for mount`).toBe(mount.has(name));
      expect(commands.includes('`check`'), `--${name} for check`).toBe(check.has(name));
    }
    expect(documented.size).toBe(OPTIONS.length);
  });
});
