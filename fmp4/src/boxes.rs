//! ISO BMFF box headers and a bounds-checked byte reader. Every read of file or network
//! data goes through here, so malformed input is an error, never a panic.

use crate::Fmp4Error;

pub(crate) struct BoxHeader {
    pub kind: [u8; 4],
    /// Header length: 8, or 16 with a 64-bit size.
    pub header_len: usize,
    /// Whole box length including the header.
    pub size: u64,
}

/// Reads a box header at the start of `bytes`, or `None` when more bytes are needed.
pub(crate) fn header(bytes: &[u8]) -> Result<Option<BoxHeader>, Fmp4Error> {
    if bytes.len() < 8 {
        return Ok(None);
    }
    let size32 = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let kind = [bytes[4], bytes[5], bytes[6], bytes[7]];
    let (size, header_len) = match size32 {
        0 => {
            return Err(Fmp4Error::Invalid(format!(
                "box {} extends to end of file, which a live stream cannot have",
                fourcc(kind)
            )))
        }
        1 => {
            if bytes.len() < 16 {
                return Ok(None);
            }
            let mut large = [0u8; 8];
            large.copy_from_slice(&bytes[8..16]);
            (u64::from_be_bytes(large), 16)
        }
        n => (u64::from(n), 8),
    };
    if size < header_len as u64 {
        return Err(Fmp4Error::Invalid(format!(
            "box {} has size {size}, smaller than its header",
            fourcc(kind)
        )));
    }
    Ok(Some(BoxHeader {
        kind,
        header_len,
        size,
    }))
}

/// A box's four-character type and its payload.
pub(crate) type RawBox<'a> = ([u8; 4], &'a [u8]);

/// The child boxes of a container's payload.
pub(crate) fn children(payload: &[u8]) -> Result<Vec<RawBox<'_>>, Fmp4Error> {
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let h = header(rest)?.ok_or_else(|| Fmp4Error::Invalid("truncated box header".into()))?;
        let size =
            usize::try_from(h.size).map_err(|_| Fmp4Error::Invalid("box too large".into()))?;
        if size > rest.len() {
            return Err(Fmp4Error::Invalid(format!(
                "box {} of {size} bytes overruns its parent",
                fourcc(h.kind)
            )));
        }
        out.push((h.kind, &rest[h.header_len..size]));
        rest = &rest[size..];
    }
    Ok(out)
}

/// The payload of the first child of `kind`.
pub(crate) fn child<'a>(payload: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, Fmp4Error> {
    Ok(children(payload)?
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, p)| p))
}

pub(crate) fn fourcc(kind: [u8; 4]) -> String {
    kind.iter()
        .map(|b| {
            if b.is_ascii_graphic() {
                *b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Bounds-checked big-endian reads.
pub(crate) struct Bytes<'a> {
    pub rest: &'a [u8],
    what: &'static str,
}

impl<'a> Bytes<'a> {
    pub fn new(rest: &'a [u8], what: &'static str) -> Bytes<'a> {
        Bytes { rest, what }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Fmp4Error> {
        if self.rest.len() < n {
            return Err(Fmp4Error::Invalid(format!("{} truncated", self.what)));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, Fmp4Error> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, Fmp4Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}
