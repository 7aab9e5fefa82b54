/**
 * Help text generated from the option declarations, so that `--help` and
 * `docs/configuration.md` describe exactly the options the parser accepts.
 */

import { OPTIONS, environmentVariableOf, type CommandName, type OptionDeclaration } from './options.js';

const USAGE: Record<CommandName | 'unmount', string> = {
  mount: 'bucketmount mount s3://BUCKET[/PREFIX] | gs://BUCKET[/PREFIX] MOUNTPOINT [options]',
  check: 'bucketmount check s3://BUCKET[/PREFIX] | gs://BUCKET[/PREFIX] [options]',
  unmount: 'bucketmount unmount MOUNTPOINT [--lazy]',
};

const SUMMARY: Record<CommandName | 'unmount', string> = {
  mount: 'Mounts the bucket at MOUNTPOINT and serves it in the foreground until SIGTERM or SIGINT.',
  check: 'Tests the connection without mounting: gets credentials, lists, writes, reads back and deletes a test object.',
  unmount: 'Unmounts a bucketmount mount point (--lazy detaches it even while files are open).',
};

function describeOption(option: OptionDeclaration): string {
  const valueName = option.choices !== undefined ? 'LEVEL' : (option.unit ?? option.type).toUpperCase();
  const value = option.type === 'boolean' ? '' : ` ${valueName}`;
  const details = [option.help];
  if (option.choices !== undefined) details.push(`one of ${option.choices.join(', ')}`);
  if (option.defaultValue !== undefined) details.push(`default ${option.defaultValue}`);
  const variables = [environmentVariableOf(option.name), option.fallbackEnvironment].filter(Boolean).join(', ');
  details.push(`environment ${variables}`);
  return `  --${option.name}${value}\n      ${details.join('; ')}`;
}

export function commandHelp(command: CommandName | 'unmount'): string {
  const lines = [`Usage: ${USAGE[command]}`, '', SUMMARY[command]];
  if (command !== 'unmount') {
    lines.push('', 'Options:');
    for (const option of OPTIONS.filter((candidate) => candidate.commands.includes(command))) {
      lines.push(describeOption(option));
    }
  }
  return `${lines.join('\n')}\n`;
}

export function generalHelp(): string {
  return [
    'bucketmount: mount an S3 or GCS bucket as a directory, with Workload Identity Federation credentials',
    '',
    'Commands:',
    `  ${USAGE.mount}`,
    `  ${USAGE.check}`,
    `  ${USAGE.unmount}`,
    '',
    'Run "bucketmount COMMAND --help" for the options of a command.',
    '',
  ].join('\n');
}
