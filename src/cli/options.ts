/**
 * Every command-line option, declared once.
 *
 * Each declaration gives the option's name, value type, default, unit, the
 * commands that take it and its help text. The parser, the environment
 * variable lookup (`BUCKETMOUNT_<NAME>` in upper snake case, plus the standard
 * variable some options fall back to) and the help output are all generated
 * from this table, so they cannot drift apart. Validation of values and the
 * derived configuration live in `config.ts`.
 */

export type OptionType = 'string' | 'boolean' | 'integer' | 'number' | 'size' | 'duration' | 'mode' | 'url';

export type CommandName = 'mount' | 'check';

export interface OptionDeclaration {
  name: string;
  type: OptionType;
  help: string;
  /** Default as the user would type it; absent means unset. */
  defaultValue?: string;
  /** Unit of a number, shown in help. */
  unit?: string;
  /** A standard variable read when neither the option nor BUCKETMOUNT_<NAME> is set. */
  fallbackEnvironment?: string;
  commands: readonly CommandName[];
  /** Allowed values, for enumerations. */
  choices?: readonly string[];
}

const BOTH: readonly CommandName[] = ['mount', 'check'];
const MOUNT: readonly CommandName[] = ['mount'];

export const OPTIONS: readonly OptionDeclaration[] = [
  // Storage endpoint.
  { name: 'endpoint', type: 'url', commands: BOTH, help: 'S3 or GCS API endpoint URL; default is the cloud provider\'s public endpoint' },
  { name: 'region', type: 'string', commands: BOTH, defaultValue: 'us-east-1', fallbackEnvironment: 'AWS_REGION', help: 'AWS region of the bucket and of STS' },
  { name: 'path-style', type: 'boolean', commands: BOTH, help: 'address S3 buckets as ENDPOINT/BUCKET instead of BUCKET.ENDPOINT; on by default when --endpoint is set' },

  // AWS web identity.
  { name: 'token-file', type: 'string', commands: BOTH, fallbackEnvironment: 'AWS_WEB_IDENTITY_TOKEN_FILE', help: 'path of the projected service-account token (OIDC JWT), read again at every exchange' },
  { name: 'role-arn', type: 'string', commands: BOTH, fallbackEnvironment: 'AWS_ROLE_ARN', help: 'ARN of the AWS role to assume with the web identity token (s3:// URLs)' },
  { name: 'role-session-name', type: 'string', commands: BOTH, fallbackEnvironment: 'AWS_ROLE_SESSION_NAME', help: 'session name recorded by AWS STS; default bucketmount-HOSTNAME' },
  { name: 'sts-endpoint', type: 'url', commands: BOTH, help: 'AWS STS endpoint URL for AssumeRoleWithWebIdentity; default is the regional AWS STS endpoint' },
  { name: 'credential-duration', type: 'duration', unit: 'seconds', commands: BOTH, help: 'requested lifetime of the AWS temporary credentials; default is the role\'s default' },

  // GCP Workload Identity Federation.
  { name: 'gcp-wif-provider', type: 'string', commands: BOTH, help: 'workload identity provider, projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER (gs:// URLs)' },
  { name: 'gcp-service-account', type: 'string', commands: BOTH, help: 'email of the service account to impersonate (gs:// URLs)' },
  { name: 'gcp-credentials', type: 'string', commands: BOTH, fallbackEnvironment: 'GOOGLE_APPLICATION_CREDENTIALS', help: 'path of a ready external_account JSON file, instead of --gcp-wif-provider and --gcp-service-account' },
  { name: 'gcp-sts-endpoint', type: 'url', commands: BOTH, help: 'GCP STS token endpoint URL; default https://sts.googleapis.com/v1/token' },
  { name: 'gcp-iam-endpoint', type: 'url', commands: BOTH, help: 'GCP IAM Credentials endpoint URL; default https://iamcredentials.googleapis.com' },
  { name: 'token-lifetime', type: 'duration', unit: 'seconds', defaultValue: '3600', commands: BOTH, help: 'lifetime requested for GCP service account access tokens' },

  // Credential renewal.
  { name: 'refresh-fraction', type: 'number', defaultValue: '0.8', commands: MOUNT, help: 'fraction of the credentials\' lifetime after which they are renewed in the background, between 0.1 and 0.95' },

  // What the mount shows.
  { name: 'read-only', type: 'boolean', commands: MOUNT, help: 'mount read-only; every change fails with EROFS' },
  { name: 'uid', type: 'integer', commands: MOUNT, help: 'owner user id of every file; default is the daemon\'s user id' },
  { name: 'gid', type: 'integer', commands: MOUNT, help: 'owner group id of every file; default is the daemon\'s group id' },
  { name: 'file-mode', type: 'mode', defaultValue: '0644', commands: MOUNT, help: 'permission bits of files, in octal' },
  { name: 'dir-mode', type: 'mode', defaultValue: '0755', commands: MOUNT, help: 'permission bits of directories, in octal' },
  {
    name: 'fuse-fd-socket',
    type: 'string',
    commands: MOUNT,
    help: 'path of a Unix socket on which a privileged helper sends an open /dev/fuse descriptor that it has already mounted at MOUNTPOINT; the daemon then needs no capability. It waits up to --fuse-fd-timeout for the socket',
  },
  { name: 'fuse-fd-timeout', type: 'duration', unit: 'seconds', defaultValue: '60', commands: MOUNT, help: 'how long to wait for the --fuse-fd-socket helper to create its socket and send the descriptor' },
  { name: 'allow-other', type: 'boolean', commands: MOUNT, help: 'let users other than the daemon\'s user access the mount (needs user_allow_other in /etc/fuse.conf unless root)' },
  { name: 'metadata-ttl', type: 'duration', unit: 'seconds', defaultValue: '5', commands: MOUNT, help: 'how long attributes, listings and negative lookups are cached' },

  // Performance.
  { name: 'block-size', type: 'size', unit: 'bytes', defaultValue: '8MiB', commands: MOUNT, help: 'size of each ranged GET and of each cached block' },
  { name: 'max-readahead', type: 'size', unit: 'bytes', defaultValue: '64MiB', commands: MOUNT, help: 'largest readahead window of one sequential reader' },
  {
    name: 'memory-limit',
    type: 'size',
    unit: 'bytes',
    commands: MOUNT,
    help: 'memory for cached blocks, readahead and upload parts together; default is derived from the container\'s cgroup memory limit as min(512MiB, (limit - 200MiB) / 2), or 512MiB without a limit',
  },
  { name: 'part-size', type: 'size', unit: 'bytes', defaultValue: '8MiB', commands: MOUNT, help: 'first multipart upload part size; it grows so that the largest object fits in the part limit' },
  { name: 'upload-concurrency', type: 'integer', defaultValue: '8', commands: MOUNT, help: 'parts of one file uploaded in parallel' },
  { name: 'spill-dir', type: 'string', commands: MOUNT, help: 'directory for files staged before upload (random writes); default is a directory under the system temporary directory' },
  { name: 'request-timeout', type: 'duration', unit: 'seconds', defaultValue: '120', commands: MOUNT, help: 'a kernel request still unanswered after this long is answered with ETIMEDOUT; a close waiting for its upload restarts it with each part uploaded and each second its completion runs' },

  // Operation.
  { name: 'log-level', type: 'string', defaultValue: 'info', commands: BOTH, choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], help: 'minimum level of log lines written to standard error' },
  { name: 'metrics-port', type: 'integer', commands: MOUNT, help: 'TCP port of the HTTP endpoint that serves Prometheus /metrics and the /healthz and /readyz checks; 0 or unset turns it off' },
  { name: 'metrics-address', type: 'string', defaultValue: '127.0.0.1', commands: MOUNT, help: 'IP address the metrics and health endpoint binds to; 0.0.0.0 or :: lets kubelet probes and Prometheus reach it on the pod IP' },
  { name: 'shutdown-timeout', type: 'duration', unit: 'seconds', defaultValue: '30', commands: MOUNT, help: 'on SIGTERM, how long open files may take to be closed and uploaded before uploads are aborted' },
  {
    name: 'stale-upload-age',
    type: 'duration',
    unit: 'seconds',
    defaultValue: '24h',
    commands: MOUNT,
    help: 'at start, abort incomplete multipart uploads under the mounted prefix that are older than this (left by a killed daemon); keep it above the longest write of any daemon sharing the bucket, whose live uploads look the same',
  },
];

export function environmentVariableOf(optionName: string): string {
  return `BUCKETMOUNT_${optionName.toUpperCase().replaceAll('-', '_')}`;
}

export function findOption(name: string): OptionDeclaration | undefined {
  return OPTIONS.find((option) => option.name === name);
}
