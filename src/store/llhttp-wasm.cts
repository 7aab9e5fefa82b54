/**
 * undici's HTTP parser (llhttp compiled to WebAssembly with SIMD), loaded
 * on the first call. A CommonJS module of its own: the parser's module
 * exports a Buffer, and an ES module import of it would have the snapshot's
 * bundler copy each of its bytes into a property of a wrapper object.
 */

/** Returns the bytes undici compiles on its first connection. */
function llhttpSimdWasm(): Buffer {
  return require('undici/lib/llhttp/llhttp_simd-wasm.js') as Buffer;
}

export = { llhttpSimdWasm };
