pub mod cluster;
pub mod example;
pub mod venv;
pub mod venvs;
