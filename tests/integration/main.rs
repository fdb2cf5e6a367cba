mod bootenv_grub_qemu;
mod bootenv_interop;
mod bootenv_powercut;
