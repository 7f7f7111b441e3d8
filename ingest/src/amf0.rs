//! AMF0, the encoding of RTMP commands: numbers, booleans, strings, objects, null. Decoding
//! is bounded in depth and size; anything else a client sends is an error naming it.

use crate::cursor::Cursor;
use crate::IngestError;

/// Nesting deeper than this is hostile: commands nest an object or two.
const MAX_DEPTH: usize = 8;
/// Properties in one object or array.
const MAX_PROPERTIES: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Amf {
    Number(f64),
    Boolean(bool),
    String(String),
    Object(Vec<(String, Amf)>),
    Null,
    Undefined,
    Array(Vec<Amf>),
}

impl Amf {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn property(&self, name: &str) -> Option<&Amf> {
        match self {
            Amf::Object(props) => props.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

fn amf_error(message: String) -> IngestError {
    IngestError::Amf(message)
}

/// Every value in `bytes`, in order.
pub(crate) fn decode_all(bytes: &[u8]) -> Result<Vec<Amf>, IngestError> {
    let mut r = Cursor::new(bytes, "AMF0 command", amf_error);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        if out.len() >= MAX_PROPERTIES {
            return Err(amf_error(format!("more than {MAX_PROPERTIES} values")));
        }
        out.push(value(&mut r, 0)?);
    }
    Ok(out)
}

fn value(r: &mut Cursor<'_>, depth: usize) -> Result<Amf, IngestError> {
    if depth > MAX_DEPTH {
        return Err(amf_error(format!("nested deeper than {MAX_DEPTH}")));
    }
    Ok(match r.u8()? {
        0x00 => Amf::Number(r.f64()?),
        0x01 => Amf::Boolean(r.u8()? != 0),
        0x02 => Amf::String(short_string(r)?),
        0x03 => Amf::Object(properties(r, depth)?),
        0x05 => Amf::Null,
        0x06 => Amf::Undefined,
        0x08 => {
            r.u32()?; // the count is a hint; the end marker ends it
            Amf::Object(properties(r, depth)?)
        }
        0x0a => {
            let count = r.u32()? as usize;
            if count > MAX_PROPERTIES {
                return Err(amf_error(format!("strict array of {count} values")));
            }
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(value(r, depth + 1)?);
            }
            Amf::Array(items)
        }
        0x0b => {
            r.take(10)?; // date: ms and time zone
            Amf::Undefined
        }
        0x0c => {
            let len = r.u32()? as usize;
            Amf::String(utf8(r.take(len)?)?)
        }
        marker => return Err(amf_error(format!("unsupported type marker {marker:#04x}"))),
    })
}

fn properties(r: &mut Cursor<'_>, depth: usize) -> Result<Vec<(String, Amf)>, IngestError> {
    let mut props = Vec::new();
    loop {
        let key = short_string(r)?;
        if key.is_empty() {
            let end = r.u8()?;
            if end != 0x09 {
                return Err(amf_error(format!(
                    "object ends with marker {end:#04x}, expected 0x09"
                )));
            }
            return Ok(props);
        }
        if props.len() >= MAX_PROPERTIES {
            return Err(amf_error(format!(
                "object with over {MAX_PROPERTIES} properties"
            )));
        }
        let v = value(r, depth + 1)?;
        props.push((key, v));
    }
}

fn short_string(r: &mut Cursor<'_>) -> Result<String, IngestError> {
    let len = usize::from(r.u16()?);
    utf8(r.take(len)?)
}

fn utf8(bytes: &[u8]) -> Result<String, IngestError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| amf_error("a string that is not UTF-8".into()))
}

pub(crate) fn encode(values: &[Amf]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        put(&mut out, v);
    }
    out
}

fn put(out: &mut Vec<u8>, v: &Amf) {
    match v {
        Amf::Number(n) => {
            out.push(0x00);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf::Boolean(b) => out.extend_from_slice(&[0x01, u8::from(*b)]),
        Amf::String(s) => {
            // Our own strings are short; a long one would need the long-string marker.
            out.push(0x02);
            put_key(out, s);
        }
        Amf::Object(props) => {
            out.push(0x03);
            for (k, v) in props {
                put_key(out, k);
                put(out, v);
            }
            out.extend_from_slice(&[0, 0, 0x09]);
        }
        Amf::Null => out.push(0x05),
        Amf::Undefined => out.push(0x06),
        Amf::Array(items) => {
            out.push(0x0a);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for item in items {
                put(out, item);
            }
        }
    }
}

fn put_key(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// An object from string keys, for the replies we send.
pub(crate) fn object(props: &[(&str, Amf)]) -> Amf {
    Amf::Object(
        props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

pub(crate) fn string(s: &str) -> Amf {
    Amf::String(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_connect_command() {
        let values = vec![
            string("connect"),
            Amf::Number(1.0),
            object(&[("app", string("live")), ("fpad", Amf::Boolean(false))]),
            Amf::Null,
            Amf::Array(vec![Amf::Undefined]),
        ];
        assert_eq!(decode_all(&encode(&values)).unwrap(), values);
    }

    #[test]
    fn deep_nesting_and_truncation_are_errors() {
        let mut deep = Vec::new();
        for _ in 0..20 {
            deep.extend_from_slice(&[0x03, 0, 1, b'a']);
        }
        assert!(decode_all(&deep).is_err());
        let whole = encode(&[object(&[("app", string("live"))])]);
        for len in 1..whole.len() {
            assert!(decode_all(&whole[..len]).is_err(), "length {len}");
        }
    }
}
