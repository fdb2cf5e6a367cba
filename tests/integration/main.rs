mod bootenv_interop;
mod bootenv_powercut;
