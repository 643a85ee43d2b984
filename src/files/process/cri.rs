//! `cri`: Kubernetes container log lines as the kubelet writes them (the
//! CRI logging format): `<RFC 3339 time> <stdout|stderr> <tags> <message>`,
//! tags `:`-separated, the first `P` (partial: the container's line goes on
//! in the next one) or `F` (full, or the last part).
//!
//! Partial lines are joined per stream (stdout and stderr interleave in one
//! file) up to their `F`. The record is the message alone (`output =
//! "message"`, the default, so a later processor parses the container's own
//! format) or `{"time", "stream", "message"}` (`output = "json"`), with the
//! time of the first part. A join is cut at `max_bytes`: what is held is sent
//! then and the rest starts a new record, so memory stays bounded.

use super::json::Obj;
use super::text::{is_rfc3339, utf8};
use super::{Rec, StepError, StepOut};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Message,
    Json,
}

/// A record being joined from partial lines.
pub(crate) struct Held {
    pub(crate) message: Vec<u8>,
    pub(crate) time: String,
    pub(crate) stream: &'static str,
    pub(crate) offset: u64,
    pub(crate) path: String,
    pub(crate) file_id: String,
}

pub(crate) struct Cri {
    pub(crate) output: Output,
    pub(crate) max_bytes: usize,
    /// stdout's and stderr's partial record.
    held: [Option<Held>; 2],
}

struct Line<'a> {
    time: &'a str,
    stream: usize,
    partial: bool,
    message: &'a [u8],
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

fn parse(line: &[u8]) -> Result<Line<'_>, String> {
    let sp = |from: usize| {
        line[from..]
            .iter()
            .position(|&b| b == b' ')
            .map(|n| from + n)
    };
    let t_end = sp(0).ok_or("no space after the time")?;
    let time = std::str::from_utf8(&line[..t_end])
        .ok()
        .filter(|t| is_rfc3339(t));
    let time = time.ok_or("the line does not start with an RFC 3339 time")?;
    let s_end = sp(t_end + 1).ok_or("no space after the stream")?;
    let stream = match &line[t_end + 1..s_end] {
        b"stdout" => 0,
        b"stderr" => 1,
        other => {
            return Err(format!(
                "stream {:?} at byte {} is neither stdout nor stderr",
                String::from_utf8_lossy(other),
                t_end + 1
            ))
        }
    };
    let tag_end = sp(s_end + 1).unwrap_or(line.len());
    let tags = &line[s_end + 1..tag_end];
    let first = tags.split(|&b| b == b':').next().unwrap_or_default();
    let partial = match first {
        b"P" => true,
        b"F" => false,
        _ => {
            return Err(format!(
                "tag {:?} at byte {} is neither P nor F",
                String::from_utf8_lossy(tags),
                s_end + 1
            ))
        }
    };
    let message = line.get(tag_end + 1..).unwrap_or_default();
    Ok(Line {
        time,
        stream,
        partial,
        message,
    })
}

impl Cri {
    pub(crate) fn new(output: Output, max_bytes: usize) -> Cri {
        Cri {
            output,
            max_bytes,
            held: [None, None],
        }
    }

    pub(crate) fn apply(
        &mut self,
        line: &[u8],
        rec: &mut Rec<'_>,
        out: &mut Vec<u8>,
    ) -> Result<StepOut, StepError> {
        let l = parse(line)?;
        let slot = &mut self.held[l.stream];
        if let Some(h) = slot {
            if l.partial && h.message.len() + l.message.len() > self.max_bytes {
                // Too long to join further: send what is held; this part
                // begins the next record. A final part is always joined, so
                // a record is at most max_bytes plus one line.
                let h = slot.take().expect("checked");
                self.start(&l, rec);
                rec.offset = h.offset;
                return self.finish(h, out);
            }
            h.message.extend_from_slice(l.message);
            if l.partial {
                return Ok(StepOut::Held);
            }
            let h = slot.take().expect("checked");
            rec.offset = h.offset;
            return self.finish(h, out);
        }
        if l.partial {
            self.start(&l, rec);
            return Ok(StepOut::Held);
        }
        match self.output {
            Output::Message => out.extend_from_slice(l.message),
            Output::Json => json(out, l.time, STREAMS[l.stream], utf8(l.message)?),
        }
        Ok(StepOut::Done)
    }

    /// A joined record; if it cannot be written, the joined message is what
    /// `send_raw` sends (the partial lines are gone by now).
    fn finish(&self, h: Held, out: &mut Vec<u8>) -> Result<StepOut, StepError> {
        match write_record(self.output, &h, out) {
            Ok(()) => Ok(StepOut::Done),
            Err(reason) => Err(StepError {
                reason,
                raw: Some(h.message),
            }),
        }
    }

    fn start(&mut self, l: &Line<'_>, rec: &Rec<'_>) {
        self.held[l.stream] = Some(Held {
            message: l.message.to_vec(),
            time: l.time.to_string(),
            stream: STREAMS[l.stream],
            offset: rec.offset,
            path: rec.path.to_string(),
            file_id: rec.file_id.to_string(),
        });
    }

    /// The held record that began first.
    pub(crate) fn take_held(&mut self) -> Option<Held> {
        let i = match &self.held {
            [Some(a), Some(b)] => usize::from(b.offset < a.offset),
            [Some(_), None] => 0,
            [None, Some(_)] => 1,
            [None, None] => return None,
        };
        self.held[i].take()
    }

    pub(crate) fn held_offset(&self) -> Option<u64> {
        self.held.iter().flatten().map(|h| h.offset).min()
    }

    pub(crate) fn write_record(&self, h: &Held, out: &mut Vec<u8>) -> Result<(), String> {
        write_record(self.output, h, out)
    }
}

fn write_record(output: Output, h: &Held, out: &mut Vec<u8>) -> Result<(), String> {
    match output {
        Output::Message => out.extend_from_slice(&h.message),
        Output::Json => json(out, &h.time, h.stream, utf8(&h.message)?),
    }
    Ok(())
}

fn json(out: &mut Vec<u8>, time: &str, stream: &str, message: &str) {
    let mut o = Obj::new(out);
    o.str("time", time);
    o.str("stream", stream);
    o.str("message", message);
    o.end();
}
