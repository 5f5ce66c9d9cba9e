//! S3 store
