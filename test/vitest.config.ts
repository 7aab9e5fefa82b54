import { defineConfig } from 'vitest/config';

// Every test file runs in its own forked process, because the end-to-end tests
// mount real FUSE file systems and start servers, and a crash in one must not
// take the others down. Two forks match the two cores the tests are sized for.
export default defineConfig({
  // Vite transforms .ts, .mts and .tsx by default; src/store/gcs-library.cts is TypeScript too.
  oxc: { include: /\.(m?ts|cts|[jt]sx)$/ },
  test: {
    root: new URL('..', import.meta.url).pathname,
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    teardownTimeout: 60_000,
    reporters: ['default'],
  },
});
