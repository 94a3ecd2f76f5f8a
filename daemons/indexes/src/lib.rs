//! logtank-indexes (being written).
