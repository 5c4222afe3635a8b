# Kernel options the appliance needs (see files/shoal.cfg), with the shoal
# distro only.
FILESEXTRAPATHS:prepend:shoal := "${THISDIR}/files:"
SRC_URI:append:shoal = " file://shoal.cfg"
