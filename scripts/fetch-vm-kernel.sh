#!/bin/bash
# Prepare the full-kernel test VM (tests/fullkernel): install qemu + busybox, fetch Debian's
# kernel package, and build the boot artifacts (vmlinux, initramfs.cpio) into a cache directory.
#
# Why: the CI kernel lacks 802.1Q, dummy, bonding and the OVS datapath; tests needing them run
# under qemu with Debian's kernel, which has them as modules. Idempotent: a stamp file records the
# kernel package version and a hash of the builder, so a second run (or a restored CI cache)
# does nothing unless one of them changed.
#
# Environment:
#   PLUMBER_VM_DIR          cache directory (default /var/cache/plumber-vm)
#   PLUMBER_VM_KERNEL_PKG   kernel package (default: what linux-image-amd64 depends on)
#   PYTHON                  interpreter for the builder (default python3)
set -euo pipefail

VM_DIR="${PLUMBER_VM_DIR:-/var/cache/plumber-vm}"
PYTHON="${PYTHON:-python3}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILDER="$REPO_DIR/tests/fullkernel/build_initramfs.py"
# qemu-system-data ships /usr/share/qemu/qboot.rom; kmod provides depmod (the .deb has no
# modules.dep); busybox-static is the initramfs userland.
PACKAGES=(qemu-system-x86 qemu-system-data busybox-static kmod)

log() { echo "fetch-vm-kernel: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "packages missing (${missing[*]}); run as root"
    log "installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

kernel_package() {
    if [ -n "${PLUMBER_VM_KERNEL_PKG:-}" ]; then
        echo "$PLUMBER_VM_KERNEL_PKG"
        return 0
    fi
    local pkg
    pkg="$(apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }')"
    if [ -z "$pkg" ]; then
        # Package lists may be empty on a fresh image.
        apt-get update -q >&2
        pkg="$(apt-cache depends linux-image-amd64 \
            | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }')"
    fi
    [ -n "$pkg" ] || die "cannot resolve linux-image-amd64 to a versioned kernel package"
    echo "$pkg"
}

main() {
    install_packages
    [ -f "$BUILDER" ] || die "$BUILDER not found"

    local pkg kver pkg_version builder_hash stamp
    pkg="$(kernel_package)"
    kver="${pkg#linux-image-}"
    pkg_version="$(apt-cache policy "$pkg" | awk '$1 == "Candidate:" { print $2 }')"
    if [ -z "$pkg_version" ] || [ "$pkg_version" = "(none)" ]; then
        die "no installable version of $pkg"
    fi
    builder_hash="$(sha256sum "$BUILDER" | cut -d' ' -f1)"
    stamp="pkg=$pkg version=$pkg_version builder=$builder_hash"

    mkdir -p "$VM_DIR"
    if [ -f "$VM_DIR/STAMP" ] && [ "$(cat "$VM_DIR/STAMP")" = "$stamp" ] \
        && [ -f "$VM_DIR/vmlinux" ] && [ -f "$VM_DIR/initramfs.cpio" ]; then
        log "up to date ($stamp) in $VM_DIR"
        return 0
    fi

    local deb_dir="$VM_DIR/debs"
    mkdir -p "$deb_dir"
    local deb
    deb="$(find "$deb_dir" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)"
    if [ -z "$deb" ] || ! dpkg-deb -f "$deb" Version | grep -qxF "$pkg_version"; then
        rm -f "$deb_dir"/linux-image-*.deb
        log "downloading $pkg $pkg_version"
        (cd "$deb_dir" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$pkg_version")
        deb="$(find "$deb_dir" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)"
        [ -n "$deb" ] || die "download of $pkg produced no .deb"
    fi

    local work
    work="$(mktemp -d "$VM_DIR/unpack.XXXXXX")"
    # shellcheck disable=SC2064  # expand $work now: it is local to main
    trap "rm -rf '$work'" EXIT
    log "unpacking $(basename "$deb")"
    dpkg-deb -x "$deb" "$work/root"
    [ -d "$work/root/lib/modules/$kver" ] || die "$deb has no lib/modules/$kver"
    depmod -b "$work/root" "$kver"
    "$PYTHON" "$BUILDER" --kernel-root "$work/root" --kernel-version "$kver" --out-dir "$VM_DIR"
    echo "$stamp" > "$VM_DIR/STAMP"
    log "ready: $VM_DIR ($stamp)"
}

main "$@"
