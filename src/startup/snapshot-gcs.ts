/**
 * Entry of the start-up snapshot for GCS mounts: the modules imported here
 * and by snapshot-main.ts, with google-auth-library and the Cloud Storage
 * client library, are loaded in the snapshot.
 */

import '../credentials/gcp-wif.js';
import '../store/gcs.js';
import { registerSnapshotMain, warmUpWhileBuilding } from './snapshot-main.js';
import { WARM_UP_ARGUMENTS, warmUpMountStart } from './warm-up.js';

registerSnapshotMain();
// TODO: warm up the GCP exchange and the first listing too. Their clients reach the network through
// node:http, which a snapshot cannot hold, so they need a transport with fixed responses like warm-up-s3.ts.
warmUpWhileBuilding(async () => warmUpMountStart(WARM_UP_ARGUMENTS.gcs));
