pub mod cluster;
pub mod example;
pub mod require;
pub mod venv;
pub mod venvs;
