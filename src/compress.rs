//! Opt-in compression of each user record's data (pure).
//!
//! Applied before aggregation, so every consumer that deaggregates gets the
//! compressed bytes. The rule is deliberately simple: a record is compressed
//! exactly when its put or its stream's `compression` asks for it; kpld never
//! decides on its own to skip, so a consumer never has to guess.

use crate::config::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};
use std::io::Write;

/// Compresses `data`; `Compression::None` returns it unchanged.
pub fn compress(data: &[u8], how: Compression, level: u32) -> Option<Vec<u8>> {
    if how == Compression::None {
        return None;
    }
    let level = flate2::Compression::new(level.min(9));
    let out = Vec::with_capacity(data.len() / 2 + 32);
    match how {
        Compression::None => None,
        Compression::Gzip => {
            let mut e = GzEncoder::new(out, level);
            e.write_all(data).expect("writing to a Vec cannot fail");
            Some(e.finish().expect("writing to a Vec cannot fail"))
        }
        Compression::Zlib => {
            let mut e = ZlibEncoder::new(out, level);
            e.write_all(data).expect("writing to a Vec cannot fail");
            Some(e.finish().expect("writing to a Vec cannot fail"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::{GzDecoder, ZlibDecoder};
    use std::io::Read;

    #[test]
    fn gzip_and_zlib_round_trip() {
        let data = br#"{"level":"info","msg":"hello hello hello hello"}"#.repeat(20);
        let gz = compress(&data, Compression::Gzip, 6).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let mut back = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        let z = compress(&data, Compression::Zlib, 9).unwrap();
        let mut back = Vec::new();
        ZlibDecoder::new(&z[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert!(z.len() < data.len() / 4);
        assert!(compress(&data, Compression::None, 6).is_none());
    }
}
