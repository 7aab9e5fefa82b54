/**
 * The `bucketmount` command line: parses the command, runs it and turns its
 * outcome into the exit status, for both ways the daemon starts (`main.ts`
 * from the modules, `startup/snapshot-main.ts` from a start-up snapshot).
 *
 * Exit status: 0 on success, 1 when the command ran and failed (credentials
 * refused, bucket missing, mount failed), 2 for invalid usage. Failures print
 * one line to standard error with no stack trace; set BUCKETMOUNT_DEBUG=1 to
 * get the stack of an unexpected error.
 */

import { UsageError } from './config.js';
import { commandHelp, generalHelp } from './help.js';
import { unmount } from './unmount.js';

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Node.js major version the daemon is built and tested on; older ones lack APIs the SDKs use. */
const MINIMUM_NODE_MAJOR = 24;

async function run(argv: string[]): Promise<number> {
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  if (nodeMajor < MINIMUM_NODE_MAJOR) {
    // Not a usage error (exit status 2): the command line may be right, the environment is not.
    throw new Error(
      `Node.js ${MINIMUM_NODE_MAJOR} or newer is required, but this is ${process.version}: from a checkout, set BUCKETMOUNT_NODE to the node_modules/.bin/node that npm installs from the node package`,
    );
  }

  const [command, ...rest] = argv;

  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(generalHelp());
    return command === undefined ? EXIT_USAGE : 0;
  }
  if (command !== 'mount' && command !== 'check' && command !== 'unmount') {
    throw new UsageError(`unknown command "${command}": use mount, check or unmount`);
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(commandHelp(command));
    return 0;
  }

  switch (command) {
    case 'mount': {
      const { runMount } = await import('./mount.js');
      return runMount(rest);
    }
    case 'check': {
      const { runCheck } = await import('./check.js');
      return runCheck(rest);
    }
    case 'unmount':
      await unmount(rest);
      return 0;
  }
}

function describeFailure(error: unknown): string {
  if (error instanceof Error) {
    const explanation = (error as Error & { explanation?: string }).explanation;
    return explanation ?? error.message;
  }
  return String(error);
}

/** Runs the command in `argv` (the arguments after the program name) and sets the process's exit status. */
export function runCommandLine(argv: string[]): Promise<void> {
  return run(argv).then(
    (status) => {
      process.exitCode = status;
    },
    (error: unknown) => {
      const usage = error instanceof UsageError;
      process.stderr.write(`bucketmount: ${describeFailure(error)}\n`);
      if (!usage && process.env.BUCKETMOUNT_DEBUG === '1' && error instanceof Error) {
        process.stderr.write(`${error.stack}\n`);
      }
      process.exitCode = usage ? EXIT_USAGE : EXIT_FAILURE;
    },
  );
}
