/**
 * Entry of the start-up snapshot for S3 mounts: the modules imported here
 * and by snapshot-main.ts are loaded in the snapshot.
 */

import '../credentials/aws-web-identity.js';
import '../store/s3.js';
import { registerSnapshotMain } from './snapshot-main.js';

registerSnapshotMain();
