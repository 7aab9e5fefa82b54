/**
 * Builds the daemon's start-up snapshot: `npm run build:snapshot`, after the
 * TypeScript build.
 *
 * A daemon that loads its modules spends most of its start-up compiling and
 * evaluating them (the AWS SDK alone is about 70 ms on a 2-core VM). Node can
 * instead start from a V8 heap snapshot taken after those modules ran. This
 * script makes one in two steps:
 *
 * 1. bundle: esbuild bundles `snapshot-entry.js` and the modules it imports
 *    into one CommonJS file, because a snapshot's entry cannot load modules
 *    from files. The Google Cloud libraries and prom-client are left out
 *    (loaded from node_modules when used), and some built-in modules are
 *    deferred (see lazy-builtins.ts).
 * 2. snapshot: `node --build-snapshot` runs the bundle and writes the blob,
 *    and the stamp of the Node.js binary that made it.
 *
 * `--snapshot-only` runs step 2 on an existing bundle, for an image whose
 * runtime stage has Node.js but not esbuild. Any warning from Node while it
 * builds the snapshot fails the build: it means a module that Node does not
 * support in snapshots was loaded, and the snapshot could misbehave.
 */

import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { BLOB_FILE, BUNDLE_FILE, BUNDLE_URL_GLOBAL, NODE_STAMP_FILE, SNAPSHOT_DIRECTORY } from './snapshot-layout.js';

/** Returns the repository root. This script runs compiled, from dist/src/startup/. */
function repositoryRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
}

/** Packages loaded from node_modules at run time instead of being bundled. */
const EXTERNAL_PACKAGES = ['@google-cloud/storage', 'google-auth-library', 'prom-client'];

/**
 * Prepended to the bundle. Code in a snapshot entry gets a `require` that
 * loads only built-in modules, so packages left out of the bundle are loaded
 * through a require created for the bundle's location when first needed.
 * The location is kept in a global that the snapshot's main function sets
 * again at run time (see snapshot-entry.ts), so the tree can move after the
 * build.
 */
const BANNER = [
  `globalThis.${BUNDLE_URL_GLOBAL} = require('node:url').pathToFileURL(__filename).href;`,
  'var require = ((builtinRequire) => {',
  `  const externals = ${JSON.stringify(EXTERNAL_PACKAGES)};`,
  '  let packageRequire;',
  '  return (id) => {',
  '    if (!externals.some((name) => id === name || id.startsWith(name + "/"))) return builtinRequire(id);',
  `    packageRequire ??= builtinRequire('node:module').createRequire(globalThis.${BUNDLE_URL_GLOBAL});`,
  '    return packageRequire(id);',
  '  };',
  '})(require);',
].join('\n');

async function bundle(entry: string, output: string): Promise<void> {
  // esbuild is a development dependency, loaded only for this step.
  const esbuild = await import('esbuild');
  const { deferredBuiltins } = await import('./lazy-builtins.js');
  await esbuild.build({
    entryPoints: [entry],
    outfile: output,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node24',
    mainFields: ['module', 'main'],
    // A smaller bundle is a smaller snapshot, which Node restores faster.
    minify: true,
    // Error classes are recognized by name in places (AbortError, TimeoutError, the SDK's exceptions).
    keepNames: true,
    external: EXTERNAL_PACKAGES.flatMap((name) => [name, `${name}/*`]),
    define: { 'import.meta.url': `globalThis.${BUNDLE_URL_GLOBAL}` },
    banner: { js: BANNER },
    plugins: [deferredBuiltins()],
    logLevel: 'warning',
  });
}

function buildBlob(bundleFile: string, blobFile: string, stampFile: string): void {
  rmSync(blobFile, { force: true });
  const result = spawnSync(process.execPath, ['--snapshot-blob', blobFile, '--build-snapshot', bundleFile], { encoding: 'utf8' });
  const messages = `${result.stdout}${result.stderr}`.trim();
  if (result.status !== 0 || messages !== '') {
    rmSync(blobFile, { force: true });
    throw new Error(
      `node --build-snapshot ${bundleFile} ${result.status === 0 ? 'printed warnings' : `failed with ${result.signal ?? `status ${result.status}`}`}; ` +
        `a module the snapshot loads is not supported in snapshots, so defer it in lazy-builtins.ts or load it on first use:\n${messages.slice(0, 4000)}`,
    );
  }

  const node = statSync(process.execPath);
  writeFileSync(stampFile, `${node.size} ${Math.floor(node.mtimeMs / 1000)}\n`);
}

async function main(argv: string[]): Promise<void> {
  const root = repositoryRoot();
  const directory = join(root, SNAPSHOT_DIRECTORY);
  const bundleFile = join(directory, BUNDLE_FILE);
  const blobFile = join(directory, BLOB_FILE);
  const stampFile = join(directory, NODE_STAMP_FILE);
  const started = performance.now();

  if (!argv.includes('--snapshot-only')) {
    mkdirSync(directory, { recursive: true });
    await bundle(join(root, 'dist/src/startup/snapshot-entry.js'), bundleFile);
  }
  buildBlob(bundleFile, blobFile, stampFile);

  const size = (statSync(blobFile).size / 1024 / 1024).toFixed(1);
  process.stdout.write(`start-up snapshot ${relative(process.cwd(), blobFile) || blobFile} (${size} MiB) built in ${Math.round(performance.now() - started)} ms with Node.js ${process.version}\n`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`build-snapshot: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
