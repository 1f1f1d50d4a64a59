//! Runs untrusted code (custom transforms, ad-hoc profiling scripts) in a hardened Docker
//! container driven by bollard. Knows nothing about agents or LLMs.
//!
//! Empty until issue 7 builds it; the crate exists so the workspace layout is the final one.
