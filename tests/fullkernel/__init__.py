"""Full-kernel test tier: fullkernel tests run in a qemu VM with Debian's kernel (README.md)."""
