//! `single_line`: a multi-line record made one line. Each line break, with
//! the spaces and tabs around it (and a `\r` before it), becomes one space;
//! lines that are blank disappear. A record without `\n` is copied as is.

pub(crate) fn apply(input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    if !input.contains(&b'\n') {
        out.extend_from_slice(input);
        return Ok(());
    }
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r');
    let mut pieces = input.split(|&b| b == b'\n').peekable();
    let mut first = true;
    let mut wrote = false;
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        let mut p = piece;
        if !first {
            let n = p.iter().take_while(|b| is_ws(b)).count();
            p = &p[n..];
        }
        if !last {
            let n = p.iter().rev().take_while(|b| is_ws(b)).count();
            p = &p[..p.len() - n];
        }
        first = false;
        if p.is_empty() {
            continue;
        }
        if wrote {
            out.push(b' ');
        }
        out.extend_from_slice(p);
        wrote = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    fn one(s: &str) -> String {
        let mut out = Vec::new();
        super::apply(s.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn line_breaks_and_the_indentation_after_them_become_one_space() {
        assert_eq!(
            one("java.lang.Exception: boom\n\tat a.b(C.java:1)\r\n    at d.e(F.java:2)"),
            "java.lang.Exception: boom at a.b(C.java:1) at d.e(F.java:2)"
        );
        assert_eq!(
            one("  keeps its indent and tail  "),
            "  keeps its indent and tail  "
        );
        assert_eq!(one("a\n\n   \nb"), "a b");
        assert_eq!(one("\n\n  b"), "b");
        assert_eq!(one("a\n"), "a");
        assert_eq!(one("\n"), "");
    }
}
