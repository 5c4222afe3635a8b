//! Splitting a byte stream into JSON values.

use serde_json::Value;

/// Largest single message accepted, in bytes. Large enough for any SPDK-style
/// JSON config a client sends in one call; a peer that sends more is cut off.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("message larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
}

/// Accumulates bytes and yields each complete JSON value in order.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete value, `Ok(None)` if more bytes are needed.
    /// After an error the stream cannot be resynchronised: close it.
    pub fn next_value(&mut self) -> Result<Option<Value>, FrameError> {
        let start = self
            .buf
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.buf.len());
        self.buf.drain(..start);
        if self.buf.is_empty() {
            return Ok(None);
        }
        let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        match values.next() {
            Some(Ok(value)) => {
                let used = values.byte_offset();
                self.buf.drain(..used);
                Ok(Some(value))
            }
            Some(Err(e)) if e.is_eof() => {
                if self.buf.len() > MAX_MESSAGE_BYTES {
                    Err(FrameError::TooLarge)
                } else {
                    Ok(None)
                }
            }
            Some(Err(e)) => Err(FrameError::Syntax(e.to_string())),
            None => Ok(None),
        }
    }

    /// Bytes received but not yet part of a complete value.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_split_across_and_within_reads() {
        let mut d = Decoder::new();
        d.push(br#"{"a":1}  {"b":"#);
        assert_eq!(d.next_value().unwrap(), Some(json!({"a": 1})));
        assert_eq!(d.next_value().unwrap(), None);
        d.push(b"[2]}\n");
        assert_eq!(d.next_value().unwrap(), Some(json!({"b": [2]})));
        assert_eq!(d.next_value().unwrap(), None);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn garbage_is_a_syntax_error() {
        let mut d = Decoder::new();
        d.push(b"{\"a\": nope}");
        assert!(matches!(d.next_value(), Err(FrameError::Syntax(_))));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let mut d = Decoder::new();
        d.push(&vec![b'['; 100_000]);
        assert!(matches!(d.next_value(), Err(FrameError::Syntax(_))));
    }

    #[test]
    fn an_endless_value_is_cut_off() {
        let mut d = Decoder::new();
        d.push(b"\"");
        d.push(&vec![b'x'; MAX_MESSAGE_BYTES + 1]);
        assert_eq!(d.next_value(), Err(FrameError::TooLarge));
    }
}
