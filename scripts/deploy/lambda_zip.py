#!/usr/bin/env python3
"""The rotation function's package (scripts/deploy/lambda.sh): what it must hold, and making it.

The function verifies the database with the RDS CA bundle at
/var/task/rds-ca/global-bundle.pem (ROTATION_DATABASE__CA_FILE, terraform/modules/stack);
/var/task is the zip's root. cargo-lambda's zip holds only `bootstrap`, so without this step
no rotation could connect.

  lambda_zip.py package BOOTSTRAP CA_BUNDLE OUT.zip   zip the binary (mode 755) and the bundle
  lambda_zip.py check ZIP                             exit 1 unless ZIP holds both, well formed
  lambda_zip.py self-test                             check accepts a good package, refuses bad ones
"""
import io
import os
import stat
import sys
import tempfile
import zipfile

BOOTSTRAP = "bootstrap"
CA_BUNDLE = "rds-ca/global-bundle.pem"


def package(binary, bundle, out):
    with open(bundle, "rb") as f:
        pem = f.read()
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise SystemExit(f"lambda_zip: {bundle} is not a PEM certificate bundle (make rds-ca)")
    tmp = out + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo(BOOTSTRAP, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(binary, "rb") as f:
            z.writestr(info, f.read())
        info = zipfile.ZipInfo(CA_BUNDLE, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, pem)
    os.replace(tmp, out)


def problems(path):
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        return [f"{path}: not a zip ({e})"]
    with z:
        names = {i.filename: i for i in z.infolist()}
        found = []
        if BOOTSTRAP not in names:
            found.append(f"{path}: no `{BOOTSTRAP}` at the root (the provided.al2023 runtime runs /var/task/bootstrap)")
        elif not (names[BOOTSTRAP].external_attr >> 16) & 0o111:
            found.append(f"{path}: `{BOOTSTRAP}` is not executable")
        if CA_BUNDLE not in names:
            found.append(f"{path}: no `{CA_BUNDLE}`: the function reads /var/task/{CA_BUNDLE} (ROTATION_DATABASE__CA_FILE) and could not verify the database")
        elif b"-----BEGIN CERTIFICATE-----" not in z.read(CA_BUNDLE):
            found.append(f"{path}: `{CA_BUNDLE}` holds no certificate")
        return found


def self_test():
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    with tempfile.TemporaryDirectory() as d:
        binary, bundle = os.path.join(d, "bin"), os.path.join(d, "ca.pem")
        with open(binary, "wb") as f:
            f.write(b"\x7fELF stand-in")
        with open(bundle, "wb") as f:
            f.write(pem)
        good = os.path.join(d, "good.zip")
        package(binary, bundle, good)
        assert problems(good) == [], problems(good)
        # What cargo-lambda makes on its own (and `make lambda` shipped before): bootstrap only.
        only_binary = os.path.join(d, "only-binary.zip")
        with zipfile.ZipFile(only_binary, "w") as z:
            info = zipfile.ZipInfo(BOOTSTRAP)
            info.external_attr = (stat.S_IFREG | 0o755) << 16
            z.writestr(info, b"\x7fELF")
        assert any(CA_BUNDLE in p for p in problems(only_binary)), problems(only_binary)
        not_exec = os.path.join(d, "not-exec.zip")
        with zipfile.ZipFile(not_exec, "w") as z:
            z.writestr(BOOTSTRAP, b"\x7fELF")
            z.writestr(CA_BUNDLE, pem)
        assert any("not executable" in p for p in problems(not_exec)), problems(not_exec)
        assert problems(io.BytesIO(b"not a zip")) != []
    print("lambda_zip: self-test OK (a package without the CA bundle or an executable bootstrap is refused)")


def main(argv):
    if len(argv) == 5 and argv[1] == "package":
        package(argv[2], argv[3], argv[4])
        argv = [argv[0], "check", argv[4]]
    if len(argv) == 3 and argv[1] == "check":
        found = problems(argv[2])
        for p in found:
            print(p, file=sys.stderr)
        if not found:
            print(f"lambda_zip: {argv[2]} holds {BOOTSTRAP} (executable) and {CA_BUNDLE}")
        return 1 if found else 0
    if len(argv) == 2 and argv[1] == "self-test":
        self_test()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
