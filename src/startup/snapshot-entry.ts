/**
 * Entry point of the daemon's start-up snapshot (see build-snapshot.ts).
 *
 * While the snapshot is built, Node runs this module's bundle: the imports
 * below load the command line and everything an S3 mount needs, and the
 * resulting heap is saved. A daemon started with `node --snapshot-blob`
 * resumes from that heap and runs only the main function registered here, so
 * it skips compiling and evaluating those modules.
 *
 * GCS mounts start from the snapshot too, but load the Google Cloud client
 * libraries when they connect: those libraries read files next to their
 * modules at run time, so they are not bundled.
 */

import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startupSnapshot } from 'node:v8';

import { runCommandLine } from '../cli/command-line.js';
import { enableCompileCache } from '../cli/compile-cache.js';
// Imported only so that they are evaluated into the snapshot; command-line.ts, mount.ts and
// connection.ts import them dynamically and get these instances. The FUSE addon is not among
// them: session.ts loads it on first use, after the snapshot is restored.
import '../cli/mount.js';
import '../credentials/aws-web-identity.js';
import '../fs/config.js';
import '../fs/filesystem.js';
import '../fuse/session.js';
import '../store/s3.js';
import '../write/stale-uploads.js';
import { BUNDLE_FILE, BUNDLE_URL_GLOBAL } from './snapshot-layout.js';
import { markStartedFromSnapshot } from './startup-mode.js';

/** Returns the blob this process started from, given as `--snapshot-blob PATH` or `--snapshot-blob=PATH`. */
function snapshotBlobPath(execArgv: string[]): string | undefined {
  for (const [index, argument] of execArgv.entries()) {
    if (argument === '--snapshot-blob') return execArgv[index + 1];
    if (argument.startsWith('--snapshot-blob=')) return argument.slice('--snapshot-blob='.length);
  }
  return undefined;
}

startupSnapshot.setDeserializeMainFunction(() => {
  markStartedFromSnapshot();
  enableCompileCache();

  // The bundle's import.meta.url finds the FUSE addon and the packages left out of the bundle. The
  // snapshot recorded where the bundle was built, so it is set again from the blob's path, because
  // the blob sits next to the bundle wherever the tree is now.
  const blob = snapshotBlobPath(process.execArgv);
  if (blob !== undefined) {
    (globalThis as Record<string, unknown>)[BUNDLE_URL_GLOBAL] = pathToFileURL(join(dirname(resolve(blob)), BUNDLE_FILE)).href;
  }

  // In a process started from a snapshot, process.argv contains the Node.js binary and then the
  // command's arguments, with no script path to skip.
  void runCommandLine(process.argv.slice(1));
});
