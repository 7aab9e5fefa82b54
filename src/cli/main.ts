#!/usr/bin/env node
/**
 * Entry point of the `bucketmount` command when it starts by loading its
 * modules. The launcher (src/startup/bucketmount) runs this file when there
 * is no start-up snapshot for its Node.js; the command line itself is in
 * command-line.ts.
 */

import { enableCompileCache } from './compile-cache.js';

// First, so that the command line and the modules it imports are compiled through the cache.
enableCompileCache();
const { runCommandLine } = await import('./command-line.js');

void runCommandLine(process.argv.slice(2));
