/**
 * Builds the daemon's start-up snapshot: `npm run build:snapshot`, after the
 * TypeScript build.
 *
 * A daemon that loads its modules spends most of its start-up compiling and
 * evaluating them (the AWS SDK alone is about 70 ms on a 2-core VM). Node can
 * instead start from a V8 heap snapshot taken after those modules ran. This
 * script makes one snapshot per cloud, so that each holds only one cloud's
 * libraries (a smaller heap is restored faster), in two steps:
 *
 * 1. bundle: esbuild bundles the entry (`snapshot-s3.js`, `snapshot-gcs.js`)
 *    and the modules it imports into one CommonJS file, because a snapshot's
 *    entry cannot load modules from files. The other cloud's libraries and
 *    prom-client are left out (loaded from node_modules if ever used), and
 *    some built-in modules are deferred (see lazy-builtins.ts).
 * 2. snapshot: `node --build-snapshot` runs the bundle and writes the blob.
 *    Then the stamp of the Node.js binary that made the blobs is written.
 *
 * `--snapshot-only` runs step 2 on existing bundles, for an image whose
 * runtime stage has Node.js but not esbuild. Any warning from Node while it
 * builds a snapshot fails the build: it means that a module Node does not
 * support in snapshots was loaded, and the snapshot could misbehave.
 * Deprecation warnings are turned off for the build: the Google libraries
 * load the deprecated built-in punycode module, which is harmless here.
 */

import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import type { Plugin } from 'esbuild';

import { blobFileOf, bundleFileOf, BUNDLE_URL_GLOBAL, NODE_STAMP_FILE, SNAPSHOT_CLOUDS, SNAPSHOT_DIRECTORY, type SnapshotCloud } from './snapshot-layout.js';

/** Returns the repository root. This script runs compiled, from dist/src/startup/. */
function repositoryRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
}

/** Packages of each snapshot that are loaded from node_modules at run time instead of being bundled. */
const EXTERNAL_PACKAGES: Record<SnapshotCloud, string[]> = {
  s3: ['@google-cloud/storage', 'google-auth-library', 'prom-client'],
  gcs: ['@aws-sdk', '@smithy', 'prom-client'],
};

/**
 * Prepended to the bundle. Code in a snapshot entry gets a `require` that
 * loads only built-in modules, so packages left out of the bundle are loaded
 * through a require created for the bundle's location when first needed.
 * The location is kept in a global that the snapshot's main function sets
 * again at run time (see snapshot-main.ts), so the tree can move after the
 * build.
 */
function banner(externals: string[]): string {
  return [
    `globalThis.${BUNDLE_URL_GLOBAL} = require('node:url').pathToFileURL(__filename).href;`,
    'var require = ((builtinRequire) => {',
    `  const externals = ${JSON.stringify(externals)};`,
    '  let packageRequire;',
    '  return (id) => {',
    '    if (!externals.some((name) => id === name || id.startsWith(name + "/"))) return builtinRequire(id);',
    `    packageRequire ??= builtinRequire('node:module').createRequire(globalThis.${BUNDLE_URL_GLOBAL});`,
    '    return packageRequire(id);',
    '  };',
    '})(require);',
  ].join('\n');
}

/**
 * esbuild plugin that gives the bundle only undici's dispatchers and their
 * request method. The S3 store's HTTP handler (@smithy/undici-http-handler)
 * takes Agent, Dispatcher and getGlobalDispatcher from the package's index,
 * and the GCS store takes Agent. The index also loads fetch, WebSocket and
 * the cache interceptors: about 60 ms more start-up from the modules, and
 * state that Node cannot put into a snapshot. The handler calls
 * getGlobalDispatcher only when it was given no dispatcher options, and the
 * S3 store and the STS client always give them.
 */
function undiciDispatchersOnly(): Plugin {
  const namespace = 'undici-dispatchers';
  return {
    name: namespace,
    setup(build) {
      build.onResolve({ filter: /^undici$/ }, () => ({ path: 'undici', namespace }));
      build.onLoad({ filter: /.*/, namespace }, () => ({
        contents: [
          "exports.Agent = require('undici/lib/dispatcher/agent.js');",
          "exports.Dispatcher = require('undici/lib/dispatcher/dispatcher.js');",
          // undici's index makes request() a method of every dispatcher, and the handler calls nothing else of
          // that API. Its module defines a subclass of node:async_hooks' AsyncResource, a module that Node does
          // not support in snapshots, so the bundle evaluates it on the first request.
          "exports.Dispatcher.prototype.request = function request(...args) { return require('undici/lib/api/api-request.js').apply(this, args); };",
          "exports.getGlobalDispatcher = () => { throw new Error('the start-up snapshot contains no global undici dispatcher: pass dispatcher options to the handler'); };",
        ].join('\n'),
        resolveDir: repositoryRoot(),
        loader: 'js',
      }));
    },
  };
}

async function bundle(entry: string, output: string, externals: string[]): Promise<void> {
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
    external: externals.flatMap((name) => [name, `${name}/*`]),
    define: { 'import.meta.url': `globalThis.${BUNDLE_URL_GLOBAL}` },
    banner: { js: banner(externals) },
    plugins: [deferredBuiltins(), undiciDispatchersOnly()],
    logLevel: 'warning',
  });
}

function buildBlob(bundleFile: string, blobFile: string): void {
  rmSync(blobFile, { force: true });
  const result = spawnSync(process.execPath, ['--no-deprecation', '--snapshot-blob', blobFile, '--build-snapshot', bundleFile], { encoding: 'utf8' });
  const messages = `${result.stdout}${result.stderr}`.trim();
  if (result.status !== 0 || messages !== '') {
    rmSync(blobFile, { force: true });
    const outcome = result.status === 0 ? 'printed warnings' : `failed with ${result.signal ?? `status ${result.status}`}`;
    throw new Error(
      `node --build-snapshot ${bundleFile} ${outcome}. When the output below names a built-in module that snapshots do not ` +
        `support, load it on first use or add it to DEFERRED_BUILTINS in src/startup/lazy-builtins.ts:\n${messages.slice(0, 4000)}`,
    );
  }
}

async function main(argv: string[]): Promise<void> {
  const directory = join(repositoryRoot(), SNAPSHOT_DIRECTORY);
  const stampFile = join(directory, NODE_STAMP_FILE);
  mkdirSync(directory, { recursive: true });
  // Removed first, so that an interrupted build leaves no stamp that matches blobs of another build.
  rmSync(stampFile, { force: true });

  for (const cloud of SNAPSHOT_CLOUDS) {
    const started = performance.now();
    const blobFile = join(directory, blobFileOf(cloud));
    const bundleFile = join(directory, bundleFileOf(blobFile));
    if (!argv.includes('--snapshot-only')) {
      await bundle(join(repositoryRoot(), `dist/src/startup/snapshot-${cloud}.js`), bundleFile, EXTERNAL_PACKAGES[cloud]);
    }
    buildBlob(bundleFile, blobFile);

    const size = (statSync(blobFile).size / 1024 / 1024).toFixed(1);
    process.stdout.write(`start-up snapshot ${relative(process.cwd(), blobFile) || blobFile} (${size} MiB) built in ${Math.round(performance.now() - started)} ms with Node.js ${process.version}\n`);
  }

  const node = statSync(process.execPath);
  writeFileSync(stampFile, `${node.size} ${Math.floor(node.mtimeMs / 1000)}\n`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`build-snapshot: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
