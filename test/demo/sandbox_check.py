"""The sandbox check: what sandbox code does with the mounted bucket.

Run as `python3 sandbox_check.py ROOT MANIFEST WRITE_TEXT`, where ROOT is the
mounted directory (normally /data), MANIFEST is a JSON file mapping each
seeded object's relative path to its SHA-256, and WRITE_TEXT is written to
ROOT/wif-test.txt. Prints one line per step and exits non-zero when any step
fails, so the caller can report what happened.
"""

import hashlib
import json
import os
import sys
import time


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1024 * 1024)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def main():
    root, manifest_path, write_text = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(manifest_path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    failures = 0

    # Step 1: the top level of the bucket, as os.listdir shows it.
    expected_top = sorted({path.split("/")[0] for path in manifest})
    listed = sorted(os.listdir(root))
    missing = [name for name in expected_top if name not in listed]
    print(f"listdir({root}): {len(listed)} entries: {', '.join(listed[:12])}{' ...' if len(listed) > 12 else ''}")
    if missing:
        failures += 1
        print(f"FAILED listdir: missing {missing}")
    else:
        print("OK listdir: every seeded top-level entry is present")

    # Step 2: write a new file, then read it back through the mount.
    target = os.path.join(root, "wif-test.txt")
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(write_text)
    with open(target, encoding="utf-8") as handle:
        read_back = handle.read()
    if read_back == write_text:
        print(f"OK write and read back {target}: {len(write_text)} bytes")
    else:
        failures += 1
        print(f"FAILED read back {target}: got {len(read_back)} bytes that differ from the {len(write_text)} written")

    # Step 3: every seeded file, compared by SHA-256 with its source.
    started = time.monotonic()
    total_bytes = 0
    mismatched = []
    for relative_path, expected in sorted(manifest.items()):
        path = os.path.join(root, relative_path)
        try:
            actual = sha256_of(path)
            total_bytes += os.path.getsize(path)
        except OSError as error:
            mismatched.append(f"{relative_path}: {error.strerror} (errno {error.errno})")
            continue
        if actual != expected:
            mismatched.append(f"{relative_path}: SHA-256 {actual} differs from the source's {expected}")
    elapsed = time.monotonic() - started
    if mismatched:
        failures += 1
        print(f"FAILED checksums of {len(mismatched)} of {len(manifest)} files:")
        for line in mismatched[:20]:
            print(f"  {line}")
    else:
        rate = total_bytes / elapsed / 1024 / 1024 if elapsed > 0 else 0.0
        print(f"OK read {len(manifest)} files, {total_bytes / 1024 / 1024:.1f} MiB in {elapsed:.1f} s ({rate:.0f} MiB/s): every SHA-256 matches its source")

    print("sandbox check passed" if failures == 0 else f"sandbox check FAILED: {failures} step(s) failed")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
