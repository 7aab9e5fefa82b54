import { describe, expect, it } from 'vitest';

import { parseBucketUrl, parseCheckArguments, parseDuration, parseMountArguments, parseSize, UsageError } from './config.js';

const AWS = ['--token-file', '/var/run/token', '--role-arn', 'arn:aws:iam::123456789012:role/sandbox-data'];

function usageMessage(action: () => unknown): string {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as Error).message;
  }
  throw new Error('expected a UsageError');
}

describe('parseBucketUrl', () => {
  it('splits bucket and prefix', () => {
    expect(parseBucketUrl('s3://data-bucket/team/input/')).toEqual({ scheme: 's3', bucket: 'data-bucket', prefix: 'team/input/', url: 's3://data-bucket/team/input/' });
    expect(parseBucketUrl('gs://my_bucket').prefix).toBe('');
  });

  it('rejects invalid names and prefixes', () => {
    expect(usageMessage(() => parseBucketUrl('s3://Upper'))).toContain('invalid bucket name "Upper"');
    expect(usageMessage(() => parseBucketUrl('s3://bucket/a/../b'))).toContain('invalid prefix');
    expect(usageMessage(() => parseBucketUrl('http://bucket'))).toContain('s3://BUCKET');
  });
});

describe('value parsers', () => {
  it('parses sizes and durations', () => {
    expect(parseSize('block-size', '8MiB')).toBe(8 * 1024 * 1024);
    expect(parseSize('block-size', '1GB')).toBe(1e9);
    expect(parseDuration('metadata-ttl', '15m')).toBe(900);
    expect(parseDuration('metadata-ttl', '90')).toBe(90);
  });
});

describe('parseMountArguments', () => {
  it('fills defaults and reads options', () => {
    const config = parseMountArguments(['s3://data-bucket', '/data', ...AWS, '--read-only', '--file-mode', '0600'], {});
    expect(config.readOnly).toBe(true);
    expect(config.fileMode).toBe(0o600);
    expect(config.dirMode).toBe(0o755);
    expect(config.credentials.kind).toBe('aws-web-identity');
  });

  it('takes standard AWS variables', () => {
    const config = parseMountArguments(['s3://data-bucket', '/data'], { AWS_ROLE_ARN: 'arn:aws:iam::1:role/r', AWS_WEB_IDENTITY_TOKEN_FILE: '/t' });
    expect(config.credentials).toMatchObject({ roleArn: 'arn:aws:iam::1:role/r', tokenFile: '/t' });
  });

  it('prefers the option over its variable', () => {
    const config = parseMountArguments(['s3://data-bucket', '/data', ...AWS, '--metadata-ttl', '7'], { BUCKETMOUNT_METADATA_TTL: '9' });
    expect(config.metadataTtlSeconds).toBe(7);
  });

  it('names the variable an invalid value came from', () => {
    const message = usageMessage(() => parseMountArguments(['s3://data-bucket', '/data', ...AWS], { BUCKETMOUNT_METADATA_TTL: 'abc' }));
    expect(message).toContain('BUCKETMOUNT_METADATA_TTL (option --metadata-ttl)');
  });

  it('reports invalid values before missing credentials', () => {
    const message = usageMessage(() => parseMountArguments(['s3://data-bucket', '/data', '--metadata-ttl', 'abc'], {}));
    expect(message).toContain('--metadata-ttl');
  });

  it('rewrites parser errors with a fix', () => {
    expect(usageMessage(() => parseMountArguments(['s3://b-b', '/d', '--metadata-ttl', '-5'], {}))).toBe(
      'missing value for --metadata-ttl: a value that starts with "-" must be written as --metadata-ttl=VALUE',
    );
    expect(usageMessage(() => parseCheckArguments(['s3://b-b', '--bogus'], {}))).toBe('unknown option --bogus: run "bucketmount check --help" for the list of options');
    expect(usageMessage(() => parseMountArguments(['s3://b-b', '/d', '--read-only=yes'], {}))).toBe('--read-only takes no value: give it alone to turn it on');
  });

  it('rejects a GCP provider without the project number', () => {
    const message = usageMessage(() =>
      parseMountArguments(['gs://data-bucket', '/data', '--gcp-wif-provider', 'projects/my-project/locations/global/workloadIdentityPools/pool/providers/prov', '--gcp-service-account', 'reader@p.iam.gserviceaccount.com', '--token-file', '/t'], {}),
    );
    expect(message).toContain('--gcp-wif-provider');
    expect(message).toContain('project number');
  });
});
