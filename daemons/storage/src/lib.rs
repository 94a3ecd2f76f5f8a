//! logtank storage data layer.
#![forbid(unsafe_code)]
