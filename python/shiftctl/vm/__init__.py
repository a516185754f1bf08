"""The VM harness: fetch Debian kernels, build the module, boot QEMU."""
