//! Finding messages in relayed bytes without holding the relay up: newline
//! framing (stdio) and Server-Sent Events (HTTP). The relay forwards every
//! chunk as it arrives; these splitters keep a bounded copy until a message
//! is complete.

/// Splits a byte stream into lines (stdio: one JSON-RPC message per line).
/// A line longer than `max` is not kept (and reported as skipped); the bytes
/// are relayed all the same.
#[derive(Debug)]
pub struct LineSplitter {
    buffer: Vec<u8>,
    max: usize,
    overflowed: bool,
    /// Bytes of the current line so far, kept or not.
    seen: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Whole(Vec<u8>),
    /// A line longer than the bound: relayed, not metered.
    Skipped {
        bytes: usize,
    },
}

impl LineSplitter {
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter {
            buffer: Vec::new(),
            max,
            overflowed: false,
            seen: 0,
        }
    }

    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        while !chunk.is_empty() {
            let (part, rest, ended) = match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => (&chunk[..at], &chunk[at + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            chunk = rest;
            self.seen += part.len();
            if !self.overflowed {
                if self.buffer.len() + part.len() > self.max {
                    self.overflowed = true;
                } else {
                    self.buffer.extend_from_slice(part);
                }
            }
            if ended {
                let seen = std::mem::take(&mut self.seen);
                if self.overflowed {
                    lines.push(Line::Skipped { bytes: seen });
                    self.overflowed = false;
                    self.buffer.clear();
                } else {
                    let mut line = std::mem::take(&mut self.buffer);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        lines.push(Line::Whole(line));
                    }
                }
            } else if self.overflowed {
                self.buffer.clear();
            }
        }
        lines
    }
}

/// One Server-Sent Event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

/// Splits an SSE stream into events as the bytes pass. Lines end with LF,
/// CRLF or CR; an event ends at a blank line; comment lines (`:`) are
/// ignored. Events longer than `max` bytes are skipped.
#[derive(Debug)]
pub struct SseSplitter {
    lines: Vec<u8>,
    pending_cr: bool,
    current: SseEvent,
    data_lines: usize,
    size: usize,
    max: usize,
}

impl SseSplitter {
    pub fn new(max: usize) -> SseSplitter {
        SseSplitter {
            lines: Vec::new(),
            pending_cr: false,
            current: SseEvent::default(),
            data_lines: 0,
            size: 0,
            max,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &b in chunk {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.pending_cr = b == b'\r';
                    let line = std::mem::take(&mut self.lines);
                    if let Some(event) = self.line(&line) {
                        events.push(event);
                    }
                }
                _ => {
                    if self.size <= self.max {
                        self.lines.push(b);
                    }
                    self.size += 1;
                }
            }
        }
        events
    }

    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.current);
            let oversize = self.size > self.max;
            self.size = 0;
            self.data_lines = 0;
            let empty = event.event.is_none() && event.id.is_none() && event.data.is_empty();
            return (!oversize && !empty).then_some(event);
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.data_lines > 0 {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.data_lines += 1;
            }
            "event" => self.current.event = Some(value.to_owned()),
            "id" => self.current.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks() {
        let mut split = LineSplitter::new(1024);
        assert_eq!(split.push(b"{\"a\":"), vec![]);
        assert_eq!(
            split.push(b"1}\n{\"b\":2}\r\n\n{\"c\""),
            vec![
                Line::Whole(b"{\"a\":1}".to_vec()),
                Line::Whole(b"{\"b\":2}".to_vec())
            ]
        );
        assert_eq!(
            split.push(b":3}\n"),
            vec![Line::Whole(b"{\"c\":3}".to_vec())]
        );
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_next_one_kept() {
        let mut split = LineSplitter::new(4);
        assert_eq!(split.push(b"12345"), vec![]);
        assert_eq!(
            split.push(b"678\nok\n"),
            vec![Line::Skipped { bytes: 8 }, Line::Whole(b"ok".to_vec())]
        );
    }

    #[test]
    fn sse_events_end_at_blank_lines_in_any_line_ending() {
        let mut split = SseSplitter::new(1024);
        let mut events = split.push(b"event: endpoint\r\ndata: /messages?sessionId=abc\r\n\r\n: ping\n\nid: 7\ndata: {\"a\":");
        events.extend(split.push(b"1}\ndata: x\n\n"));
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("endpoint".into()),
                    id: None,
                    data: "/messages?sessionId=abc".into()
                },
                SseEvent {
                    event: None,
                    id: Some("7".into()),
                    data: "{\"a\":1}\nx".into()
                },
            ]
        );
    }

    #[test]
    fn a_priming_event_with_empty_data_is_kept_for_its_id() {
        let mut split = SseSplitter::new(1024);
        assert_eq!(
            split.push(b"id: 1\ndata:\n\n"),
            vec![SseEvent {
                event: None,
                id: Some("1".into()),
                data: String::new()
            }]
        );
    }

    #[test]
    fn an_oversize_sse_event_is_skipped() {
        let mut split = SseSplitter::new(8);
        assert_eq!(
            split.push(b"data: 0123456789\n\ndata: ok\n\n"),
            vec![SseEvent {
                data: "ok".into(),
                ..Default::default()
            }]
        );
    }
}
