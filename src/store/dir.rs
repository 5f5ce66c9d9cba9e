//! dir store
