# Kernel options the appliance needs (see files/shoal.cfg), with the
# shoal-appliance distro only.
FILESEXTRAPATHS:prepend:shoal-appliance := "${THISDIR}/files:"
SRC_URI:append:shoal-appliance = " file://shoal.cfg"
