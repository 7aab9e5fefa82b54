#!/usr/bin/env python3
"""Mount /dev/fuse for an unprivileged bucketmount daemon in another container.

Usage: fuse-fd-helper.py --mountpoint DIR --socket PATH --uid UID --gid GID [--allow-other]

The helper needs CAP_SYS_ADMIN (root) for mount(2) and umount2(2); the daemon
needs no capability at all. Steps:

1. Open /dev/fuse and mount it at DIR with
   fd=N,rootmode=40000,user_id=UID,group_id=GID,default_permissions[,allow_other].
2. Listen on the Unix socket PATH (mode 0600, owned by UID:GID) and send the
   open descriptor as SCM_RIGHTS data to the first client whose peer
   credentials carry UID. The daemon is started with
   "bucketmount mount URL DIR --fuse-fd-socket PATH" and serves the descriptor.
3. Close its own copy of the descriptor and wait until the daemon closes the
   socket, which happens when the daemon process exits.
4. Detach DIR (umount2 with MNT_DETACH, the same as "umount -l") and exit.

Why step 4 is needed: the kernel ends a FUSE connection when the last
descriptor of /dev/fuse closes, but the mount stays in the mount table as a
dead mount where every access fails with ENOTCONN, until someone unmounts it.
The daemon cannot unmount it, because it has no capability, so the helper,
which mounted it, also removes it. After the helper exits, a restart (the
Kubernetes restartPolicy of a sidecar) mounts afresh for a restarted daemon.

Only the Python standard library is used: ctypes for mount(2) and
umount2(2), socket.send_fds (Python 3.9 or later) for SCM_RIGHTS.
"""

import argparse
import ctypes
import logging
import os
import signal
import socket
import stat
import struct
import sys

MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2
FILESYSTEM_TYPE = b'fuse.bucketmount'
SOURCE = b'bucketmount'

logger = logging.getLogger('fuse-fd-helper')
libc = ctypes.CDLL(None, use_errno=True)


class HelperError(Exception):
    """A failure that ends the helper with a message and status 1."""


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Mount /dev/fuse and send the descriptor to an unprivileged bucketmount daemon.')
    parser.add_argument('--mountpoint', required=True, help='directory to mount, as the sandbox sees it (the daemon\'s MOUNTPOINT)')
    parser.add_argument('--socket', required=True, help='path of the Unix socket to create; the daemon\'s --fuse-fd-socket')
    parser.add_argument('--uid', type=int, required=True, help='user id of the daemon: owner of the mount (user_id) and of the socket')
    parser.add_argument('--gid', type=int, required=True, help='group id of the daemon: group of the mount (group_id) and of the socket')
    parser.add_argument('--allow-other', action='store_true', help='let users other than UID access the mount (mount option allow_other)')
    return parser.parse_args(argv)


def mount_fuse(mountpoint: str, descriptor: int, arguments: argparse.Namespace) -> None:
    # default_permissions makes the kernel check modes, as the daemon's own mounts request.
    options = f'fd={descriptor},rootmode=40000,user_id={arguments.uid},group_id={arguments.gid},default_permissions'
    if arguments.allow_other:
        options += ',allow_other'
    if libc.mount(SOURCE, mountpoint.encode(), FILESYSTEM_TYPE, MS_NOSUID | MS_NODEV, options.encode()) != 0:
        error = ctypes.get_errno()
        raise HelperError(f'mount of {mountpoint} with options {options} failed: {os.strerror(error)}; the helper needs root with CAP_SYS_ADMIN')
    logger.info('mounted %s with options %s', mountpoint, options)


def detach_mount(mountpoint: str) -> None:
    if libc.umount2(mountpoint.encode(), MNT_DETACH) != 0:
        error = ctypes.get_errno()
        # EINVAL: not a mount point any more, for example after an unmount by an administrator.
        logger.error('detaching %s failed: %s', mountpoint, os.strerror(error))
        return
    logger.info('detached %s', mountpoint)


def listen_on(path: str, uid: int, gid: int) -> socket.socket:
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise HelperError(f'{path} exists and is not a socket; remove it or choose another --socket path')
        # A socket left by an earlier helper of this pod; nobody listens on it any more.
        logger.info('removing the stale socket %s', path)
        os.unlink(path)

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask keeps the socket private between bind and chmod.
    previous_umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(previous_umask)
    os.chown(path, uid, gid)
    os.chmod(path, 0o600)
    listener.listen(4)
    logger.info('listening on %s (mode 0600, owner %d:%d)', path, uid, gid)
    return listener


def peer_credentials(connection: socket.socket) -> tuple[int, int, int]:
    """Return (pid, uid, gid) of the connected process, from SO_PEERCRED."""
    data = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
    return struct.unpack('3i', data)


def send_descriptor(listener: socket.socket, descriptor: int, uid: int) -> socket.socket:
    """Send the descriptor to the first client running as `uid` and return that connection."""
    while True:
        connection, _ = listener.accept()
        pid, peer_uid, peer_gid = peer_credentials(connection)
        if peer_uid != uid:
            logger.warning('rejected a client with pid %d and uid %d: only uid %d receives the descriptor', pid, peer_uid, uid)
            connection.close()
            continue
        socket.send_fds(connection, [b'F'], [descriptor])
        logger.info('sent the /dev/fuse descriptor to pid %d (uid %d, gid %d)', pid, peer_uid, peer_gid)
        return connection


def wait_for_close(connection: socket.socket) -> None:
    """Block until the daemon closes its end of the socket; data it might send is read and ignored."""
    while connection.recv(4096):
        pass


def run(arguments: argparse.Namespace) -> None:
    mountpoint = os.path.abspath(arguments.mountpoint)
    if not os.path.isdir(mountpoint):
        raise HelperError(f'mount point {mountpoint} is not a directory; create it or share the volume with this container')

    # Python opens descriptors close-on-exec; nothing here executes another program.
    descriptor = os.open('/dev/fuse', os.O_RDWR)
    mount_fuse(mountpoint, descriptor, arguments)

    # From here on, every exit path detaches the mount, including SIGTERM from the kubelet.
    def on_signal(number: int, _frame: object) -> None:
        logger.info('received %s', signal.Signals(number).name)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        listener = listen_on(arguments.socket, arguments.uid, arguments.gid)
        try:
            connection = send_descriptor(listener, descriptor, arguments.uid)
        finally:
            listener.close()
            os.unlink(arguments.socket)

        # Only the daemon holds the descriptor now, so the FUSE connection ends with the daemon.
        os.close(descriptor)
        descriptor = -1
        logger.info('waiting for the daemon to close the socket')
        wait_for_close(connection)
        logger.info('the daemon closed the socket; it has exited')
        connection.close()
    finally:
        if descriptor >= 0:
            os.close(descriptor)
        detach_mount(mountpoint)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(asctime)s %(name)s %(levelname)s %(message)s')
    arguments = parse_arguments(sys.argv[1:])
    try:
        run(arguments)
    except HelperError as error:
        logger.error('%s', error)
        return 1
    logger.info('stopped')
    return 0


if __name__ == '__main__':
    sys.exit(main())
