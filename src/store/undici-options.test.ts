import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import { describe, expect, it, vi } from 'vitest';

import type { Logger } from '../observability/logger.js';
import llhttp from './llhttp-wasm.cjs';
import { precompileHttpParser, type WebAssemblyGlobal } from './undici-options.js';

const webAssembly = (globalThis as unknown as { WebAssembly: WebAssemblyGlobal }).WebAssembly;

describe('precompileHttpParser', () => {
  it('loads the parser undici compiles', () => {
    const bytes = llhttp.llhttpSimdWasm();
    expect(webAssembly.validate(bytes)).toBe(true);

    // The module that compiles the parser on undici's first connection names the same file.
    const clientSource = readFileSync(createRequire(import.meta.url).resolve('undici/lib/dispatcher/client-h1.js'), 'utf8');
    expect(clientSource).toContain("require('../llhttp/llhttp_simd-wasm.js')");
  });

  it('compiles without logging a failure', async () => {
    const debug = vi.fn();

    const compiled = await precompileHttpParser({ debug } as unknown as Logger);

    expect(compiled?.constructor.name).toBe('Module');
    expect(debug).not.toHaveBeenCalled();
  });
});
