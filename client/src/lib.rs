//! Relay client library.
