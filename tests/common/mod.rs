pub mod cluster;
pub mod example;
