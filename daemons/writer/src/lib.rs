//! logtank-writer (being written).
