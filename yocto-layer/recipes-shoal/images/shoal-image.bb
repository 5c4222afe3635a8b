SUMMARY = "Shoal storage appliance image"
DESCRIPTION = "A systemd image running the Shoal appliance (shoald, its data \
               clusters and the Redfish service), with nvme-cli and fio."
SECTION = "images"
CVE_PRODUCT = "shoal"
LICENSE = "MIT"

inherit core-image features_check

# shoald relies on systemd (sd_notify, watchdog, udev names).
REQUIRED_DISTRO_FEATURES = "systemd"

IMAGE_INSTALL:append = " shoal nvme-cli fio e2fsprogs-mke2fs kernel-module-nvme-tcp"
IMAGE_ROOTFS_EXTRA_SPACE = "131072"

# runqemu settings mirroring image/boot.conf of the quick image: memory,
# vCPUs, hugepages on the kernel command line, the Redfish, NVMe/TCP,
# discovery and NBD ports forwarded to the host's loopback, and four
# virtual NVMe drives whose serials name them for the data clusters.
QB_MEM = "-m 1536"
QB_SMP = "-smp 4"
# nooelint: oelint.vars.mispell.unknown - QB_CPU is read by oe-core's scripts/runqemu
QB_CPU = "-cpu max"
QB_KERNEL_CMDLINE_APPEND = "hugepages=64"
# nooelint: oelint.vars.mispell.unknown - QB_SLIRP_OPT is read by oe-core's scripts/runqemu
QB_SLIRP_OPT = "-netdev user,id=net0,hostfwd=tcp:127.0.0.1:10443-:443,hostfwd=tcp:127.0.0.1:10080-:80,hostfwd=tcp:127.0.0.1:18009-:8009,hostfwd=tcp:127.0.0.1:14420-:4420,hostfwd=tcp:127.0.0.1:14421-:4421,hostfwd=tcp:127.0.0.1:14422-:4422,hostfwd=tcp:127.0.0.1:14423-:4423,hostfwd=tcp:127.0.0.1:20809-:10809,hostfwd=tcp:127.0.0.1:20810-:10810,hostfwd=tcp:127.0.0.1:20811-:10811,hostfwd=tcp:127.0.0.1:20812-:10812"
QB_OPT_APPEND = "\
    -drive file=${DEPLOY_DIR_IMAGE}/shoal-nvme0.raw,if=none,id=nvme0,format=raw -device nvme,drive=nvme0,serial=drive0 \
    -drive file=${DEPLOY_DIR_IMAGE}/shoal-nvme1.raw,if=none,id=nvme1,format=raw -device nvme,drive=nvme1,serial=drive1 \
    -drive file=${DEPLOY_DIR_IMAGE}/shoal-nvme2.raw,if=none,id=nvme2,format=raw -device nvme,drive=nvme2,serial=drive2 \
    -drive file=${DEPLOY_DIR_IMAGE}/shoal-nvme3.raw,if=none,id=nvme3,format=raw -device nvme,drive=nvme3,serial=drive3 \
"

# The NVMe drive images runqemu attaches: 1 GiB each, sparse, created
# once and kept (they hold the volumes' data across image rebuilds).
shoal_nvme_drives() {
    for i in 0 1 2 3; do
        drive=${DEPLOY_DIR_IMAGE}/shoal-nvme$i.raw
        [ -f $drive ] || dd if=/dev/zero of=$drive bs=1 count=0 seek=1G 2>/dev/null
    done
}
shoal_nvme_drives[doc] = "Creates the four sparse NVMe drive images runqemu attaches, once"
IMAGE_POSTPROCESS_COMMAND += "shoal_nvme_drives"
