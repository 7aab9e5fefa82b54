/**
 * Entry of the start-up snapshot for S3 mounts: the modules imported here
 * and by snapshot-main.ts are loaded in the snapshot, and the calls a mount
 * makes before it is ready run once, so that they are compiled in it too.
 */

import '../credentials/aws-web-identity.js';
import '../store/s3.js';
import { registerSnapshotMain, warmUpWhileBuilding } from './snapshot-main.js';
import { WARM_UP_ARGUMENTS, warmUpMountStart } from './warm-up.js';
import { warmUpS3 } from './warm-up-s3.js';

registerSnapshotMain();
warmUpWhileBuilding(async () => {
  warmUpMountStart(WARM_UP_ARGUMENTS.s3);
  await warmUpS3();
});
