pub mod diff;
pub mod manifest;
pub mod model;
