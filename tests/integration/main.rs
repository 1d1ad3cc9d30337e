//! opal integration tests, one binary with a module per area.
