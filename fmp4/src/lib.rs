//! Fragmented MP4 (CMAF) as a live stream: the init segment (`ftyp`+`moov`), then media
//! fragments (`moof`+`mdat`). Enough of ISO BMFF to cut a stream at fragment boundaries,
//! tell which fragments start on a keyframe, and name the codecs for Media Source Extensions.

mod boxes;
mod codec;
mod cutter;
mod error;
mod keyframe;

pub use codec::{mime_type, TrackInfo};
pub use cutter::{Cutter, Segment};
pub use error::Fmp4Error;
