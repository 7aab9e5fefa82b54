/**
 * The way this daemon process started: from Node's start-up snapshot, with
 * its modules already loaded, or by loading its modules. Logged when a mount
 * starts, so that a fallback start is visible when a mount is slow to become ready.
 */

export type StartupMode = 'snapshot' | 'modules';

let mode: StartupMode = 'modules';

export function startupMode(): StartupMode {
  return mode;
}

/** Called by the snapshot's main function, before the command runs. */
export function markStartedFromSnapshot(): void {
  mode = 'snapshot';
}
