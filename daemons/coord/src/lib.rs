//! Coordination client wrapper (placeholder).
