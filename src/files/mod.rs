//! Log files: what is made of each line read (`process`) and the partition
//! key each record gets (`key`). Pure logic; the file source does the I/O.

pub mod key;
pub mod process;
