/**
 * Runs the AWS SDK calls of an S3 mount's start once while the S3 start-up
 * snapshot is built, with a request handler that returns fixed responses.
 *
 * V8 compiles a function the first time it runs, and a snapshot keeps the
 * bytecode of every function compiled before it was taken. A daemon started
 * from a snapshot without this compiles the SDK's client set-up, middleware,
 * request signing and XML parsing on its first credential exchange and its
 * first listing, on the main thread, while the mount waits for both.
 *
 * The clients here never touch the network: their handler returns a fixed
 * response to every request, so node:http (which cannot be in a
 * snapshot, see lazy-builtins.ts) is never loaded. They use the options of
 * the daemon's own clients, so that the same middleware runs.
 */

import { Readable } from 'node:stream';

import { ListMultipartUploadsCommand, ListObjectsV2Command, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { AssumeRoleWithWebIdentityCommand, STSClient } from '@aws-sdk/client-sts';

import { S3_CLIENT_BEHAVIOR } from '../store/s3.js';
import { UNUSED_ENDPOINT } from './warm-up.js';

const BUCKET = 'warm-up';

const STS_RESPONSE = [
  '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult>',
  '<Credentials><AccessKeyId>WARMUPACCESSKEY</AccessKeyId><SecretAccessKey>warm-up</SecretAccessKey><SessionToken>warm-up</SessionToken>',
  '<Expiration>2030-01-01T00:00:00Z</Expiration></Credentials><SubjectFromWebIdentityToken>warm-up</SubjectFromWebIdentityToken>',
  '<AssumedRoleUser><Arn>arn:aws:sts::000000000000:assumed-role/warm-up/warm-up</Arn><AssumedRoleId>AROAWARMUP:warm-up</AssumedRoleId></AssumedRoleUser>',
  '</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>warm-up</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>',
].join('');

const LIST_OBJECTS_RESPONSE = [
  '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
  `<Name>${BUCKET}</Name><Prefix></Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter><IsTruncated>false</IsTruncated>`,
  '<Contents><Key>file</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>"d41d8cd98f00b204e9800998ecf8427e"</ETag><Size>0</Size><StorageClass>STANDARD</StorageClass></Contents>',
  '<CommonPrefixes><Prefix>directory/</Prefix></CommonPrefixes></ListBucketResult>',
].join('');

const LIST_UPLOADS_RESPONSE = [
  '<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
  `<Bucket>${BUCKET}</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>`,
  '</ListMultipartUploadsResult>',
].join('');

/** Returns an SDK request handler that responds to every request with `body`, streamed like a socket's response. */
function fixedResponseHandler(body: string) {
  return {
    handle: async () => ({
      response: {
        statusCode: 200,
        reason: 'OK',
        headers: { 'content-type': 'text/xml', 'x-amz-request-id': 'warm-up', date: new Date().toUTCString() },
        body: Readable.from([Buffer.from(body)]),
      },
    }),
    updateHttpClientConfig: () => undefined,
    httpHandlerConfigs: () => ({}),
    destroy: () => undefined,
  };
}

/** Exchanges a made-up token and lists a made-up bucket, with fixed responses. */
export async function warmUpS3(): Promise<void> {
  // The options of createStsClient (aws-web-identity.ts), but for the handler.
  const sts = new STSClient({ region: 'us-east-1', endpoint: UNUSED_ENDPOINT, maxAttempts: 1, requestHandler: fixedResponseHandler(STS_RESPONSE) });
  const exchanged = await sts.send(
    new AssumeRoleWithWebIdentityCommand({ RoleArn: 'arn:aws:iam::000000000000:role/warm-up', RoleSessionName: 'warm-up', WebIdentityToken: 'warm-up', DurationSeconds: 3600 }),
  );
  const credentials = exchanged.Credentials;
  if (credentials?.AccessKeyId === undefined || credentials.SecretAccessKey === undefined) {
    throw new Error('the warm-up exchange returned no credentials: the canned STS response no longer parses');
  }

  const options: S3ClientConfig = {
    ...S3_CLIENT_BEHAVIOR,
    region: 'us-east-1',
    endpoint: UNUSED_ENDPOINT,
    forcePathStyle: true,
    credentials: async () => ({ accessKeyId: credentials.AccessKeyId!, secretAccessKey: credentials.SecretAccessKey!, sessionToken: credentials.SessionToken }),
    maxAttempts: 5,
  };

  const listing = await new S3Client({ ...options, requestHandler: fixedResponseHandler(LIST_OBJECTS_RESPONSE) }).send(
    new ListObjectsV2Command({ Bucket: BUCKET, Prefix: '', Delimiter: '/', MaxKeys: 1000 }),
  );
  if (listing.Contents?.length !== 1 || listing.CommonPrefixes?.length !== 1) {
    throw new Error('the warm-up listing returned no entries: the canned ListObjectsV2 response no longer parses');
  }

  await new S3Client({ ...options, requestHandler: fixedResponseHandler(LIST_UPLOADS_RESPONSE) }).send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: '' }));
}
