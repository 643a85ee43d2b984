//! Placeholder of the processors (`processing`): the `process` branch's
//! file replaces this one wholesale. Here a chain is a passthrough and only
//! an empty `processing` is accepted.

/// Where a line comes from, for processors that add metadata.
pub struct LineContext<'a> {
    pub path: &'a str,
    pub file_id: &'a str,
    /// First byte of the record's first line.
    pub offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnParseError {
    SendRaw,
    Skip,
}

/// What a chain made of a line.
pub enum Processed {
    Record(Vec<u8>),
    /// The line is kept for a later record (CRI `P`).
    Held,
    /// Done, nothing sent.
    Skipped,
}

pub struct ParseError {
    pub processor: &'static str,
    pub reason: String,
}

/// One per file.
pub struct Chain {
    _on_parse_error: OnParseError,
}

impl Chain {
    /// `processing`: the `processing` array of a [[files]] table, if any.
    /// Err: a message naming the bad entry.
    pub fn from_toml(
        processing: Option<&toml::Value>,
        on_parse_error: OnParseError,
        _host: &str,
    ) -> Result<Chain, String> {
        match processing {
            None => {}
            Some(toml::Value::Array(a)) if a.is_empty() => {}
            Some(toml::Value::Array(_)) => {
                return Err("processing[0]: no processors in this build".into())
            }
            Some(_) => return Err("processing must be an array of tables".into()),
        }
        Ok(Chain {
            _on_parse_error: on_parse_error,
        })
    }

    pub fn apply(
        &mut self,
        line: &[u8],
        _ctx: &LineContext<'_>,
    ) -> (Processed, Option<ParseError>) {
        (Processed::Record(line.to_vec()), None)
    }

    /// A record still held, to send as is (at rotation or shutdown).
    pub fn take_held(&mut self) -> Option<Vec<u8>> {
        None
    }
}
