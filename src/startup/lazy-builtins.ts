/**
 * esbuild plugin that defers loading some Node.js built-in modules until the
 * daemon runs, so that they stay out of the start-up snapshot.
 *
 * Node cannot serialize the native state of node:http, node:https and
 * node:http2 (building the snapshot aborts), and warns that node:module,
 * node:child_process, node:worker_threads and node:vm are not verified to
 * work after a snapshot is restored. The AWS SDK and pino load them when their modules
 * are evaluated, although they use them only later, when a request is sent or
 * a worker is created.
 *
 * In the bundle, each of these modules is replaced by a proxy. After the
 * snapshot is restored, every property read loads the real module and reads
 * it there. While the snapshot is built, a property read returns a stand-in
 * that loads the real module when it is called, constructed or read.
 * Primitive values and objects of primitives (http2.constants,
 * worker_threads' isMainThread) are copied instead, from the Node.js that runs
 * the build. The launcher runs the snapshot only with that same binary.
 */

import { createRequire } from 'node:module';

import type { Plugin } from 'esbuild';

export const DEFERRED_BUILTINS = ['http', 'https', 'http2', 'child_process', 'module', 'worker_threads', 'vm'];

const NAMESPACE = 'deferred-builtin';

function isPrimitive(value: unknown): boolean {
  return value === null || ['string', 'number', 'boolean', 'undefined'].includes(typeof value);
}

/** Values of `name`'s exports that are primitives or objects of primitives, copied into the bundle. */
function copyableExports(name: string): { keys: string[]; values: Record<string, unknown> } {
  const real = createRequire(import.meta.url)(`node:${name}`) as Record<string, unknown>;
  const values: Record<string, unknown> = {};
  for (const key of Object.keys(real)) {
    const value = real[key];
    const copyable = isPrimitive(value) || (typeof value === 'object' && Object.values(value as object).every(isPrimitive));
    if (copyable) values[key] = value;
  }
  return { keys: Object.keys(real), values };
}

/** Source of the proxy module that stands for built-in module `name`. */
function proxySource(name: string): string {
  const { keys, values } = copyableExports(name);
  return `
const { startupSnapshot } = require('node:v8');
const keys = ${JSON.stringify(keys)};
const copied = ${JSON.stringify(values)};
let real;
const load = () => (real ??= require('node:${name}'));
const standIn = (key) => new Proxy(function () {}, {
  apply: (_target, self, args) => Reflect.apply(load()[key], self, args),
  construct: (_target, args, newTarget) => Reflect.construct(load()[key], args, newTarget),
  get: (_target, property) => load()[key][property],
});
const read = (key) => {
  if (real !== undefined || !startupSnapshot.isBuildingSnapshot()) return load()[key];
  if (Object.hasOwn(copied, key)) return copied[key];
  // Names the module does not export (__esModule, then) read as missing, as on the real module.
  return keys.includes(key) ? standIn(key) : undefined;
};
module.exports = new Proxy({}, {
  get: (_target, key) => read(key),
  has: (_target, key) => keys.includes(key),
  ownKeys: () => keys,
  getOwnPropertyDescriptor: (_target, key) => (keys.includes(key) ? { get: () => read(key), enumerable: true, configurable: true } : undefined),
});
`;
}

export function deferredBuiltins(): Plugin {
  const filter = new RegExp(`^(node:)?(${DEFERRED_BUILTINS.join('|')})$`);
  return {
    name: 'deferred-builtins',
    setup(build) {
      build.onResolve({ filter }, (args) => {
        // The proxy's own require of the real module stays a require.
        if (args.namespace === NAMESPACE) return { path: args.path, external: true };
        return { path: args.path.replace(/^node:/, ''), namespace: NAMESPACE };
      });
      build.onLoad({ filter: /.*/, namespace: NAMESPACE }, (args) => ({ contents: proxySource(args.path), loader: 'js' }));
    },
  };
}
