//! Caches that remember the old disks. Each is rebuilt on demand, so deleting it is safe;
//! keeping it can hide the new disks.

/// (guest path, why it is deleted).
pub const CACHES: [(&str, &str); 7] = [
    (
        "/etc/blkid.tab",
        "blkid's cache maps filesystems to the old device names; blkid rebuilds it",
    ),
    (
        "/etc/blkid.tab.old",
        "the previous copy of blkid's cache of old device names",
    ),
    (
        "/etc/blkid/blkid.tab",
        "blkid's cache maps filesystems to the old device names; blkid rebuilds it",
    ),
    (
        "/etc/blkid/blkid.tab.old",
        "the previous copy of blkid's cache of old device names",
    ),
    (
        "/etc/lvm/cache/.cache",
        "LVM's cache of which devices hold physical volumes names the old disks; LVM \
         rescans without it",
    ),
    (
        "/etc/lvm/devices/system.devices",
        "LVM's devices file lists the physical volumes by the old disks' IDs and makes LVM \
         ignore every other device, the new disks included; without it LVM scans all \
         devices (recreate it on the target with `vgimportdevices -a` if wanted)",
    ),
    (
        "/run/blkid/blkid.tab",
        "blkid's cache maps filesystems to the old device names; blkid rebuilds it",
    ),
];
