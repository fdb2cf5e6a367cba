mod bootenv_grub_qemu;
mod bootenv_interop;
mod bootenv_powercut;
mod bootenv_uboot_qemu;
