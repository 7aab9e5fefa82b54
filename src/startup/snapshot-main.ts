/**
 * Main function of the daemon's start-up snapshots (see build-snapshot.ts),
 * shared by the S3 and GCS entries, snapshot-s3.ts and snapshot-gcs.ts.
 *
 * While a snapshot is built, Node runs the bundle of one entry: its imports
 * load the command line and everything a mount of that cloud needs, and the
 * resulting heap is saved. A daemon started with `node --snapshot-blob`
 * resumes from that heap and runs only the main function registered here, so
 * it skips compiling and evaluating those modules.
 */

import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startupSnapshot } from 'node:v8';

import { runCommandLine } from '../cli/command-line.js';
import { enableCompileCache } from '../cli/compile-cache.js';
// Imported only so that they are evaluated into the snapshot; command-line.ts and mount.ts import
// them dynamically and get these instances. The FUSE addon is not among them: session.ts loads it
// on first use, after the snapshot is restored.
import '../cli/mount.js';
import '../fs/config.js';
import '../fs/filesystem.js';
import '../fuse/session.js';
import '../write/stale-uploads.js';
import { bundleFileOf, BUNDLE_URL_GLOBAL } from './snapshot-layout.js';
import { markStartedFromSnapshot } from './startup-mode.js';

/** Returns the blob this process started from, given as `--snapshot-blob PATH` or `--snapshot-blob=PATH`. */
function snapshotBlobPath(execArgv: string[]): string | undefined {
  for (const [index, argument] of execArgv.entries()) {
    if (argument === '--snapshot-blob') return execArgv[index + 1];
    if (argument.startsWith('--snapshot-blob=')) return argument.slice('--snapshot-blob='.length);
  }
  return undefined;
}

/**
 * Runs `warmUp` while the snapshot is built: Node takes the snapshot once the
 * event loop is empty, so the functions it compiles are in the snapshot. A
 * failure fails the build (its message is the build's output), because a
 * warm-up that stops early leaves the start slow without a sign.
 */
export function warmUpWhileBuilding(warmUp: () => Promise<void>): void {
  warmUp().catch((error: unknown) => {
    process.stderr.write(`warming up the start-up snapshot failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  });
}

/** Registers the function that runs the command once the snapshot is restored. */
export function registerSnapshotMain(): void {
  startupSnapshot.setDeserializeMainFunction(() => {
    markStartedFromSnapshot();
    enableCompileCache();

    // The bundle's import.meta.url finds the FUSE addon and the packages left out of the bundle.
    // The snapshot recorded where the bundle was built, so it is set again from the blob's path,
    // because the blob sits next to its bundle wherever the tree is now.
    const blob = snapshotBlobPath(process.execArgv);
    if (blob !== undefined) {
      const bundle = join(dirname(resolve(blob)), bundleFileOf(blob));
      (globalThis as Record<string, unknown>)[BUNDLE_URL_GLOBAL] = pathToFileURL(bundle).href;
    }

    // In a process started from a snapshot, process.argv contains the Node.js binary and then the
    // command's arguments, with no script path to skip.
    void runCommandLine(process.argv.slice(1));
  });
}
