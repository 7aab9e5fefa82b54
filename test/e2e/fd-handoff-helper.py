"""Plays the privileged helper of the descriptor hand-off, for tests.

Usage: fd-handoff-helper.py MOUNTPOINT MOUNT_OPTIONS COMMAND [ARGUMENT...]

Opens /dev/fuse, mounts it at MOUNTPOINT with mount(2) (which needs
CAP_SYS_ADMIN), then executes COMMAND with the descriptor inherited. Every
"{fd}" in the arguments becomes the descriptor number, so COMMAND can drop
its privileges (setpriv) and run the daemon with the mount point /dev/fd/N.
MOUNT_OPTIONS are added to fd=N,rootmode=40000,user_id=0,group_id=0, such as
"allow_other,default_permissions".
"""

import ctypes
import os
import sys

MS_NOSUID = 2
MS_NODEV = 4


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    mountpoint, extra_options, command = sys.argv[1], sys.argv[2], sys.argv[3:]

    # Python opens descriptors close-on-exec; the daemon must inherit this one.
    descriptor = os.open('/dev/fuse', os.O_RDWR)
    os.set_inheritable(descriptor, True)

    options = f'fd={descriptor},rootmode=40000,user_id=0,group_id=0'
    if extra_options:
        options += ',' + extra_options
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b'bucketmount-handoff', mountpoint.encode(), b'fuse.bucketmount', MS_NOSUID | MS_NODEV, options.encode()) != 0:
        error = ctypes.get_errno()
        sys.exit(f'mount of {mountpoint} with {options} failed: {os.strerror(error)}')

    arguments = [argument.replace('{fd}', str(descriptor)) for argument in command]
    os.execvp(arguments[0], arguments)


if __name__ == '__main__':
    main()
