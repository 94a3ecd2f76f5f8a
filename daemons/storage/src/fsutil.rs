//! The info files' format. The durable steps themselves (directory fsync, atomic replace, durable rename,
//! every new file followed by a directory fsync: DESIGN §5) are `logtank-durable`'s; its errors become
//! [`StorageError::Io`] through `From`.

use std::fs;
use std::path::Path;

use crate::error::{IoContext, StorageError};

/// Reads a decimal number written by `logtank_durable::write_atomically`; `None` when the file does not exist.
pub(crate) fn read_u64_file(path: &Path) -> Result<Option<u64>, StorageError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            text.trim().parse::<u64>().map(Some).map_err(|e| {
                StorageError::Invalid(format!("{}: not a number ({e}): {text:?}", path.display()))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(path),
    }
}
