//! A bounds-checked reader over untrusted bytes: every read that would run past the end is
//! an error naming what was being read.

use crate::IngestError;

pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
    error: fn(String) -> IngestError,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8], what: &'static str, error: fn(String) -> IngestError) -> Self {
        Cursor {
            bytes,
            pos: 0,
            what,
            error,
        }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        rest
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], IngestError> {
        if self.remaining() < n {
            return Err((self.error)(format!(
                "{} truncated: wanted {n} more bytes at offset {}, {} left",
                self.what,
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, IngestError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, IngestError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u24(&mut self) -> Result<u32, IngestError> {
        let b = self.take(3)?;
        Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    pub fn u32(&mut self) -> Result<u32, IngestError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn f64(&mut self) -> Result<f64, IngestError> {
        let b = self.take(8)?;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(b);
        Ok(f64::from_be_bytes(raw))
    }
}
