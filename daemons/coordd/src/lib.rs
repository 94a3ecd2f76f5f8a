//! coordd (placeholder).
