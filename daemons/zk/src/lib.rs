//! ZooKeeper jute codec (placeholder).
