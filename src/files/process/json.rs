//! A JSON object written straight into the output buffer, in field order:
//! no intermediate map, and strings escaped by serde_json.

/// Writes `s` as a JSON string.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    // Most log text needs no escape: one branch-free scan (it vectorizes)
    // and one copy, instead of serde_json's fragment-by-fragment writes.
    let needs_escape = s.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !needs_escape {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing to a Vec cannot fail; serde_json's only errors here are I/O ones.
    serde_json::to_writer(&mut *out, s).expect("writing JSON to a Vec");
}

/// An object being written: `{` on creation, `}` on [`Obj::end`].
pub(crate) struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// Writes `"name":` and hands back the buffer for the value.
    pub(crate) fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, name);
        self.out.push(b':');
        self.out
    }

    /// The buffer, to go on writing the current value.
    pub(crate) fn buf(&mut self) -> &mut Vec<u8> {
        self.out
    }

    pub(crate) fn str(&mut self, name: &str, value: &str) {
        let out = self.key(name);
        write_str(out, value);
    }

    /// A string, or `null` for `None`.
    pub(crate) fn opt_str(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => self.str(name, v),
            None => self.null(name),
        }
    }

    pub(crate) fn num(&mut self, name: &str, value: u64) {
        let out = self.key(name);
        let b = itoa_buf(value);
        out.extend_from_slice(b.as_bytes());
    }

    pub(crate) fn opt_num(&mut self, name: &str, value: Option<u64>) {
        match value {
            Some(v) => self.num(name, v),
            None => self.null(name),
        }
    }

    pub(crate) fn null(&mut self, name: &str) {
        self.key(name).extend_from_slice(b"null");
    }

    pub(crate) fn end(self) {
        self.out.push(b'}');
    }
}

/// Decimal digits of a u64 on the stack.
pub(crate) struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

pub(crate) fn itoa_buf(mut v: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    Digits { buf, start: i }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_read_back_as_written() {
        for s in [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "tab\tnl\n\u{1}",
            "é\u{7f}\u{2028}",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(
                serde_json::from_slice::<String>(&out).unwrap(),
                s,
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    #[test]
    fn object_fields_are_written_in_order_and_escaped() {
        let mut out = Vec::new();
        let mut o = Obj::new(&mut out);
        o.str("a", "x\"y\n");
        o.num("n", 0);
        o.opt_num("m", Some(18446744073709551615));
        o.opt_str("s", None);
        o.end();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":"x\"y\n","n":0,"m":18446744073709551615,"s":null}"#
        );
    }
}
