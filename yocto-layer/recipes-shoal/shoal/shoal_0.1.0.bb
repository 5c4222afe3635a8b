SUMMARY = "Shoal storage appliance: supervisor, I/O engines and Redfish/Swordfish service"
DESCRIPTION = "shoald supervises one SPDK-style I/O engine per data cluster \
               (shoal-dataplane) and the Redfish/Swordfish management service \
               (shoal-management); hosts reach volumes over NVMe/TCP and NBD."
SECTION = "base"
CVE_PRODUCT = "shoal"
# Shoal's own code has no published licence (CLOSED); the DMTF and SNIA
# schema files it ships are BSD-3-Clause.
LICENSE = "CLOSED & BSD-3-Clause"
LIC_FILES_CHKSUM = "\
    file://management/redfish/LICENSE-DMTF.md;md5=50ce749decd8a3ce7ef38bdde490853b \
    file://management/redfish/LICENSE-SNIA.md;md5=0ba5b712e552bfb3efb2e4abe8ad9ebe \
"

# The layer lives in the workspace it builds: the recipe builds that
# checkout (externalsrc) instead of fetching the project from a server.
# Crates are still fetched and checked, from shoal-crates.inc.
inherit externalsrc
EXTERNALSRC = "${SHOAL_SOURCE_DIR}"
EXTERNALSRC_BUILD = "${WORKDIR}/build"

inherit cargo cargo-update-recipe-crates systemd
require shoal-crates.inc
DEPENDS += "openssl pkgconfig-native"

SRC_URI += "\
    file://shoald.service \
    file://60-shoal-drives.rules \
    file://60-shoal-hugepages.conf \
"

# Every binary of the workspace (cargo's default member is only appliance/).
CARGO_BUILD_FLAGS += "--workspace --bins"

do_install:append() {
    # The DMTF/SNIA schemas and registries the Redfish service serves, with
    # their licences, where shoal-management looks beside its binary.
    install -d ${D}${datadir}/shoal
    cp -R --no-preserve=ownership ${S}/management/redfish ${D}${datadir}/shoal/redfish

    # The same appliance configuration as the quick image.
    install -d ${D}${sysconfdir}/shoal
    install -m 0644 ${S}/image/rootfs/etc/shoal/appliance.toml ${D}${sysconfdir}/shoal/

    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${UNPACKDIR}/shoald.service ${D}${systemd_system_unitdir}/
    install -d ${D}${nonarch_base_libdir}/udev/rules.d
    install -m 0644 ${UNPACKDIR}/60-shoal-drives.rules ${D}${nonarch_base_libdir}/udev/rules.d/
    install -d ${D}${sysconfdir}/sysctl.d
    install -m 0644 ${UNPACKDIR}/60-shoal-hugepages.conf ${D}${sysconfdir}/sysctl.d/
}

SYSTEMD_SERVICE:${PN} = "shoald.service"
SYSTEMD_AUTO_ENABLE = "enable"

FILES:${PN} += "${nonarch_base_libdir}/udev/rules.d"
CONFFILES:${PN} = "${sysconfdir}/shoal/appliance.toml ${sysconfdir}/sysctl.d/60-shoal-hugepages.conf"

# The drives are NVMe; hosts and the in-image checks use NVMe/TCP.
RRECOMMENDS:${PN} = "kernel-module-nvme-tcp"
